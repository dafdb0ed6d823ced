# Cloud Build's own account rolls out what Terraform created (cloudbuild.yaml): it pushes
# to the one repository, updates and runs the migrate job, updates each service, and
# calls the API's health. Every grant is on the resource it touches.

locals {
  deployed_accounts = concat(local.runtime_accounts, ["migrate"]) # Cloud Run runs as these; a deployer must act as them
  rolled_services = merge(
    { api = google_cloud_run_v2_service.api.name },
    { for name, worker in module.worker : name => worker.name },
  )
}

resource "google_artifact_registry_repository_iam_member" "build_pushes" {
  repository = google_artifact_registry_repository.images.name
  location   = google_artifact_registry_repository.images.location
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.role["build"].member
}

resource "google_service_account_iam_member" "build_acts_as" {
  for_each           = toset(local.deployed_accounts)
  service_account_id = google_service_account.role[each.value].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.role["build"].member
}

resource "google_cloud_run_v2_service_iam_member" "build_rolls" {
  for_each = local.rolled_services
  name     = each.value
  location = var.region
  role     = "roles/run.developer"
  member   = google_service_account.role["build"].member
}

resource "google_cloud_run_v2_job_iam_member" "build_migrates" {
  name     = google_cloud_run_v2_job.migrate.name
  location = google_cloud_run_v2_job.migrate.location
  role     = "roles/run.developer"
  member   = google_service_account.role["build"].member
}

resource "google_cloud_run_v2_service_iam_member" "build_smoke_tests" {
  name     = google_cloud_run_v2_service.api.name
  location = google_cloud_run_v2_service.api.location
  role     = "roles/run.invoker"
  member   = google_service_account.role["build"].member
}

resource "google_cloudbuild_trigger" "deploy" {
  count           = var.github == null ? 0 : 1
  name            = "${var.prefix}deploy"
  location        = "global"
  description     = "Tests, builds and rolls out htbase on every push to ${var.github.branch}"
  filename        = "cloudbuild.yaml"
  service_account = google_service_account.role["build"].id

  github {
    owner = var.github.owner
    name  = var.github.repository
    push {
      branch = "^${var.github.branch}$"
    }
  }

  substitutions = {
    _REGION          = var.region
    _REPOSITORY      = google_artifact_registry_repository.images.repository_id
    _SERVICE_PREFIX  = var.prefix
    _MONOLITH_SHA256 = var.monolith_sha256
  }

  depends_on = [google_project_service.apis]
}
