locals {
  apis = concat([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com", # signBlob: the API signs download URLs without a key
    "cloudtrace.googleapis.com",     # traces (TELEMETRY_EXPORTER=gcp)
    "monitoring.googleapis.com",     # metrics, alerts and the dashboard (monitoring.tf)
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
  ], var.private_network == "" ? [] : ["compute.googleapis.com", "servicenetworking.googleapis.com"])
}

resource "google_project_service" "apis" {
  for_each = toset(local.apis)
  service  = each.value

  # Other deployments in the project may use the same APIs: destroying this one leaves them on.
  disable_on_destroy = false
}
