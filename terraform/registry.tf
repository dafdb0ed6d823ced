resource "google_artifact_registry_repository" "images" {
  repository_id = trimsuffix(var.prefix, "-")
  location      = var.region
  format        = "DOCKER"
  description   = "htbase images, pushed by Cloud Build (cloudbuild.yaml)"

  docker_config {
    immutable_tags = true # a tag names one build forever
  }

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s" # 30 days; the ten newest are kept regardless
    }
  }

  depends_on = [google_project_service.apis]
}

locals {
  image_repository = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}
