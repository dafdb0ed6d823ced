# The topics and push subscriptions of htbase/topology.py (var.topology), as
# emulators/bootstrap.py lays them on the emulator: one topic and one push
# subscription per route, each pushing to the route's Cloud Run service.

locals {
  dead_letter_topic = var.topology.dead_letter_topic

  # Who publishes where: the API (new tasks, re-summaries) and housekeeping (the outbox
  # relay, expired leases) to every work topic; archivers to summarize (readability done).
  # Only Pub/Sub itself publishes to the dead-letter topic.
  topic_publishers = merge([
    for topic in keys(var.topology.routes) : {
      for account in concat(["api", "operations"], topic == var.topology.summarize_topic ? ["archiver"] : []) :
      "${topic}/${account}" => { topic = topic, account = account }
    } if topic != local.dead_letter_topic
  ]...)

  # The audience of every push token; each worker service lists it in custom_audiences,
  # and PUSH_AUDIENCE makes the code check it.
  push_audience = "https://${var.prefix}push.${var.project_id}.htbase.internal"
}

resource "google_pubsub_topic" "topic" {
  for_each = var.topology.routes
  name     = "${var.prefix}${each.key}"

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic_iam_member" "publisher" {
  for_each = local.topic_publishers
  topic    = google_pubsub_topic.topic[each.value.topic].id
  role     = "roles/pubsub.publisher"
  member   = google_service_account.role[each.value.account].member
}

resource "google_pubsub_subscription" "push" {
  for_each = var.topology.routes
  name     = "${google_pubsub_topic.topic[each.key].name}-push"
  topic    = google_pubsub_topic.topic[each.key].id

  ack_deadline_seconds       = var.topology.ack_deadline_seconds
  message_retention_duration = "604800s" # 7 days: the longest outage a message survives

  expiration_policy {
    ttl = "" # never expire (the default deletes a subscription idle for 31 days)
  }

  retry_policy {
    minimum_backoff = "${var.retry_backoff_seconds}s"
    maximum_backoff = "${max(var.topology.max_backoff_seconds, var.retry_backoff_seconds)}s"
  }

  # Every subscription but the dead-letter topic's own hands exhausted messages on.
  dynamic "dead_letter_policy" {
    for_each = each.value.dead_lettered ? [local.dead_letter_topic] : []
    content {
      dead_letter_topic     = google_pubsub_topic.topic[dead_letter_policy.value].id
      max_delivery_attempts = var.max_delivery_attempts
    }
  }

  push_config {
    push_endpoint = "${module.worker[each.value.service].uri}${each.value.path}"
    oidc_token {
      service_account_email = google_service_account.role["push"].email
      audience              = local.push_audience
    }
  }

  # Without these grants the first dead-lettered message would be lost.
  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

# The Pub/Sub service agent: it signs push tokens as the push account, publishes
# exhausted messages to the dead-letter topic, and acknowledges them at the source.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta
  project  = var.project_id
  service  = "pubsub.googleapis.com"
}

resource "google_service_account_iam_member" "pubsub_signs_push_tokens" {
  service_account_id = google_service_account.role["push"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_project_service_identity.pubsub.member
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.topic[local.dead_letter_topic].id
  role   = "roles/pubsub.publisher"
  member = google_project_service_identity.pubsub.member
}

resource "google_pubsub_subscription_iam_member" "dead_letter_source" {
  for_each     = { for topic, route in var.topology.routes : topic => route if route.dead_lettered }
  subscription = google_pubsub_subscription.push[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = google_project_service_identity.pubsub.member
}
