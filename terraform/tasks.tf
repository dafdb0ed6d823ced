# The Cloud Tasks queues of htbase/topology.py (QUEUES), named TOPIC_PREFIX + name as
# the code derives them, in TASKS_LOCATION (the region).

locals {
  # Who enqueues where: webhook deliveries go out through the outbox relay, which any
  # runtime process may run. (Re-captures need no queue: housekeeping adds the snapshots due.)
  queue_enqueuers = {
    webhooks = local.runtime_accounts
  }

  queue_grants = merge([
    for queue in keys(var.topology.queues) : { for account in local.queue_enqueuers[queue] : "${queue}/${account}" => { queue = queue, account = account } }
  ]...)
}

resource "google_cloud_tasks_queue" "queue" {
  for_each = var.topology.queues
  name     = "${var.prefix}${each.key}"
  location = var.region

  rate_limits {
    max_dispatches_per_second = coalesce(try(var.tasks_rate_limits[each.key].max_dispatches_per_second, null), each.value.max_dispatches_per_second)
    max_concurrent_dispatches = try(var.tasks_rate_limits[each.key].max_concurrent_dispatches, 10)
  }

  retry_config {
    max_attempts  = var.tasks_retry.max_attempts
    min_backoff   = "${var.tasks_retry.min_backoff_seconds}s"
    max_backoff   = "${var.tasks_retry.max_backoff_seconds}s"
    max_doublings = var.tasks_retry.max_doublings
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.apis]
}

# An enqueuer names the tasks account as its tasks' OIDC identity, so it must be allowed to act
# as it; Cloud Tasks' own agent mints the tokens.
resource "google_service_account_iam_member" "enqueuer_acts_as_tasks" {
  for_each           = toset(local.runtime_accounts)
  service_account_id = google_service_account.role["tasks"].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.role[each.key].member
}

resource "google_project_service_identity" "cloudtasks" {
  provider = google-beta
  project  = var.project_id
  service  = "cloudtasks.googleapis.com"
}

resource "google_service_account_iam_member" "cloudtasks_signs_tokens" {
  service_account_id = google_service_account.role["tasks"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_project_service_identity.cloudtasks.member
}

resource "google_cloud_tasks_queue_iam_member" "enqueuer" {
  for_each = local.queue_grants
  name     = google_cloud_tasks_queue.queue[each.value.queue].name
  location = google_cloud_tasks_queue.queue[each.value.queue].location
  role     = "roles/cloudtasks.enqueuer"
  member   = google_service_account.role[each.value.account].member
}
