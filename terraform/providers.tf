provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = merge(var.labels, { app = "htbase" })
}

# Only for the Pub/Sub service agent's identity (google_project_service_identity).
provider "google-beta" {
  project = var.project_id
  region  = var.region
}
