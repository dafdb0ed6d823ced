# Housekeeping on Cloud Run has no background CPU between requests (billed per request),
# so Cloud Scheduler drives it: the lease sweeper, the outbox relay and the replica's retries.
resource "google_cloud_scheduler_job" "housekeeping" {
  name             = "${var.prefix}housekeeping"
  region           = var.region
  description      = "Calls htbase housekeeping (functions/main.py: housekeeping) with OIDC"
  schedule         = var.housekeeping_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${var.operations_service.timeout_seconds}s"

  retry_config {
    retry_count = 0 # the next tick is the retry
  }

  http_target {
    http_method = "POST"
    uri         = "${module.worker[var.topology.housekeeping.service].uri}${var.topology.housekeeping.path}"

    oidc_token {
      service_account_email = google_service_account.role["scheduler"].email
      audience              = local.push_audience
    }
  }

  depends_on = [google_project_service.apis]
}
