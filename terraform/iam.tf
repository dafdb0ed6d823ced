# One service account per role, each granted only what its code uses. Resource-level
# grants (a topic, the bucket, a secret, a queue, a service) live beside the resource;
# project-level ones are only those that have no narrower resource: Cloud SQL and Firestore.

locals {
  service_accounts = {
    api        = "htbase API"
    archiver   = "htbase archivers (one Cloud Run service per archiver)"
    summarizer = "htbase summarizer"
    operations = "htbase dead-letter handler and housekeeping"
    push       = "Pub/Sub push identity (OIDC) of the worker services"
    scheduler  = "Cloud Scheduler identity (OIDC) calling housekeeping"
    tasks      = "Cloud Tasks identity (OIDC) calling the webhooks service"
    migrate    = "htbase migrate job (alembic upgrade head)"
    build      = "Cloud Build: tests, image, migration, roll-out"
  }

  # The accounts that run htbase code against the ledger, the bucket and the replica.
  runtime_accounts = ["api", "archiver", "summarizer", "operations"]

  project_grants = merge(
    { for account in concat(local.runtime_accounts, ["migrate"]) : "${account}/cloudsql.client" => { account = account, role = "roles/cloudsql.client" } },
    { for account in local.runtime_accounts : "${account}/cloudsql.instanceUser" => { account = account, role = "roles/cloudsql.instanceUser" } if var.database_iam_auth },
    { for account in local.runtime_accounts : "${account}/datastore.user" => { account = account, role = "roles/datastore.user" } },
    # Telemetry: spans to Cloud Trace, metrics to Cloud Monitoring (TELEMETRY_EXPORTER=gcp).
    { for account in local.runtime_accounts : "${account}/cloudtrace.agent" => { account = account, role = "roles/cloudtrace.agent" } },
    { for account in local.runtime_accounts : "${account}/monitoring.metricWriter" => { account = account, role = "roles/monitoring.metricWriter" } },
    { "build/logging.logWriter" = { account = "build", role = "roles/logging.logWriter" } }, # options.logging: CLOUD_LOGGING_ONLY
  )
}

resource "google_service_account" "role" {
  for_each     = local.service_accounts
  account_id   = "${var.prefix}${each.key}"
  display_name = each.value

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "grant" {
  for_each = local.project_grants
  project  = var.project_id
  role     = each.value.role
  member   = google_service_account.role[each.value.account].member
}

# The API signs GCS download URLs through IAM signBlob as itself (SIGNED_URL_SERVICE_ACCOUNT).
resource "google_service_account_iam_member" "api_signs_urls" {
  service_account_id = google_service_account.role["api"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.role["api"].member
}
