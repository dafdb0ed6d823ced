# Alerts and a dashboard. Every service exports traces to Cloud Trace and metrics to
# Cloud Monitoring (TELEMETRY_EXPORTER=gcp; infra/telemetry.py), htbase's own under
# workload.googleapis.com/htbase.* (infra/metrics.py). Alerts on those use PromQL, which
# needs no metric to exist yet at apply time; alerts on Google's own metrics (Pub/Sub,
# Cloud Run, Cloud SQL) use filters. Every alert pages var.notification_channels.

locals {
  # PromQL's name for an htbase metric in Cloud Monitoring.
  htbase_metric = { for name in ["captures", "capture_duration", "outbox_oldest_age", "outbox_depth", "summary_tokens", "dead_letters"] :
    name => "workload_googleapis_com:htbase_${name}"
  }
  archivers = { for topic, route in var.topology.routes : route.archiver => route if route.archiver != "" }

  api_requests = "resource.type = \"cloud_run_revision\" AND resource.label.service_name = \"${google_cloud_run_v2_service.api.name}\""
  sql_database = "${var.project_id}:${google_sql_database_instance.ledger.name}"

  alert_documentation = "htbase: see terraform/README.md (Monitoring) for what each alert means and what to do."
}

# A subscription whose oldest message waits: its service is down, failing, or too small.
resource "google_monitoring_alert_policy" "backlog" {
  for_each     = var.topology.routes
  display_name = "htbase ${google_pubsub_subscription.push[each.key].name}: oldest unacked message older than ${var.alerts.backlog_age_seconds} s"
  combiner     = "OR"

  conditions {
    display_name = "oldest unacked message age"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${google_pubsub_subscription.push[each.key].name}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alerts.backlog_age_seconds
      duration        = "120s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  notification_channels = var.notification_channels
  documentation {
    content = local.alert_documentation
  }
}

# Anything at all reaching the dead-letter topic: a message exhausted its deliveries.
resource "google_monitoring_alert_policy" "dead_letter" {
  display_name = "htbase: a message reached the dead-letter topic"
  combiner     = "OR"

  conditions {
    display_name = "messages published to ${google_pubsub_topic.topic[local.dead_letter_topic].name}"
    condition_threshold {
      filter          = "resource.type = \"pubsub_topic\" AND resource.label.topic_id = \"${google_pubsub_topic.topic[local.dead_letter_topic].name}\" AND metric.type = \"pubsub.googleapis.com/topic/send_message_operation_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  notification_channels = var.notification_channels
  documentation {
    content = local.alert_documentation
  }
}

# Captures failing for good, as a share of all capture attempts, per archiver.
resource "google_monitoring_alert_policy" "capture_failures" {
  for_each     = local.archivers
  display_name = "htbase ${each.key}: over ${var.alerts.capture_failure_ratio * 100}% of captures fail"
  combiner     = "OR"

  conditions {
    display_name = "${each.key} capture failure ratio"
    condition_prometheus_query_language {
      query    = "sum(rate(${local.htbase_metric.captures}{archiver=\"${each.key}\",outcome=\"failed\"}[10m])) / sum(rate(${local.htbase_metric.captures}{archiver=\"${each.key}\"}[10m])) > ${var.alerts.capture_failure_ratio}"
      duration = "300s"
    }
  }

  notification_channels = var.notification_channels
  documentation {
    content = local.alert_documentation
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "api_errors" {
  display_name = "htbase API: over ${var.alerts.api_5xx_ratio * 100}% of requests answer 5xx"
  combiner     = "OR"

  conditions {
    display_name = "API 5xx ratio"
    condition_threshold {
      filter                  = "${local.api_requests} AND metric.type = \"run.googleapis.com/request_count\" AND metric.label.response_code_class = \"5xx\""
      denominator_filter      = "${local.api_requests} AND metric.type = \"run.googleapis.com/request_count\""
      comparison              = "COMPARISON_GT"
      threshold_value         = var.alerts.api_5xx_ratio
      duration                = "300s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  notification_channels = var.notification_channels
  documentation {
    content = local.alert_documentation
  }
}

resource "google_monitoring_alert_policy" "api_latency" {
  display_name = "htbase API: p95 latency over ${var.alerts.api_p95_latency_ms} ms"
  combiner     = "OR"

  conditions {
    display_name = "API p95 latency"
    condition_threshold {
      filter          = "${local.api_requests} AND metric.type = \"run.googleapis.com/request_latencies\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alerts.api_p95_latency_ms
      duration        = "300s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_95"
      }
    }
  }

  notification_channels = var.notification_channels
  documentation {
    content = local.alert_documentation
  }
}

# Messages written but not published: the broker is down, or the relay is not running.
resource "google_monitoring_alert_policy" "outbox_age" {
  display_name = "htbase: an outbox message unpublished for over ${var.alerts.outbox_oldest_age_seconds} s"
  combiner     = "OR"

  conditions {
    display_name = "outbox oldest age"
    condition_prometheus_query_language {
      query    = "max(${local.htbase_metric.outbox_oldest_age}) > ${var.alerts.outbox_oldest_age_seconds}"
      duration = "120s"
    }
  }

  notification_channels = var.notification_channels
  documentation {
    content = local.alert_documentation
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "sql_connections" {
  display_name = "htbase Cloud SQL: connections over ${var.alerts.sql_connections_ratio * 100}% of max_connections"
  combiner     = "OR"

  conditions {
    display_name = "Postgres backends"
    condition_threshold {
      filter          = "resource.type = \"cloudsql_database\" AND resource.label.database_id = \"${local.sql_database}\" AND metric.type = \"cloudsql.googleapis.com/database/postgresql/num_backends\""
      comparison      = "COMPARISON_GT"
      threshold_value = floor(var.sql.max_connections * var.alerts.sql_connections_ratio)
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  notification_channels = var.notification_channels
  documentation {
    content = local.alert_documentation
  }
}

# The series the alerts watch, on one page.
locals {
  dashboard_charts = [
    { title = "Oldest unacked message age by subscription (s)", filter = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = starts_with(\"${var.prefix}\") AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\"", aligner = "ALIGN_MAX", reducer = "REDUCE_MAX", group_by = ["resource.label.subscription_id"] },
    { title = "Undelivered messages by subscription", filter = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = starts_with(\"${var.prefix}\") AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\"", aligner = "ALIGN_MAX", reducer = "REDUCE_MAX", group_by = ["resource.label.subscription_id"] },
    { title = "Messages to the dead-letter topic", filter = "resource.type = \"pubsub_topic\" AND resource.label.topic_id = \"${google_pubsub_topic.topic[local.dead_letter_topic].name}\" AND metric.type = \"pubsub.googleapis.com/topic/send_message_operation_count\"", aligner = "ALIGN_SUM", reducer = "REDUCE_SUM", group_by = [] },
    { title = "API requests by status class (/s)", filter = "${local.api_requests} AND metric.type = \"run.googleapis.com/request_count\"", aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = ["metric.label.response_code_class"] },
    { title = "API p95 latency (ms)", filter = "${local.api_requests} AND metric.type = \"run.googleapis.com/request_latencies\"", aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_95", group_by = [] },
    { title = "Cloud SQL connections", filter = "resource.type = \"cloudsql_database\" AND resource.label.database_id = \"${local.sql_database}\" AND metric.type = \"cloudsql.googleapis.com/database/postgresql/num_backends\"", aligner = "ALIGN_MAX", reducer = "REDUCE_SUM", group_by = [] },
  ]
  dashboard_queries = [
    { title = "Capture failure ratio by archiver", query = "sum by (archiver) (rate(${local.htbase_metric.captures}{outcome=\"failed\"}[10m])) / sum by (archiver) (rate(${local.htbase_metric.captures}[10m]))" },
    { title = "Captures by archiver and outcome (/s)", query = "sum by (archiver, outcome) (rate(${local.htbase_metric.captures}[5m]))" },
    { title = "Capture p95 duration by archiver (s)", query = "histogram_quantile(0.95, sum by (archiver, le) (rate(${local.htbase_metric.capture_duration}_bucket[10m])))" },
    { title = "Outbox: unpublished messages and the oldest one's age (s)", query = "max(${local.htbase_metric.outbox_depth}) or max(${local.htbase_metric.outbox_oldest_age})" },
    { title = "Dead letters by source subscription (/s)", query = "sum by (subscription) (rate(${local.htbase_metric.dead_letters}[10m]))" },
    { title = "Summary tokens by provider (/s)", query = "sum by (provider, direction) (rate(${local.htbase_metric.summary_tokens}[10m]))" },
  ]
  dashboard_tiles = concat(
    [for chart in local.dashboard_charts : {
      title = chart.title
      xyChart = {
        dataSets = [{
          plotType = "LINE"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = chart.filter
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = chart.aligner, crossSeriesReducer = chart.reducer, groupByFields = chart.group_by }
            }
          }
        }]
      }
    }],
    [for chart in local.dashboard_queries : {
      title   = chart.title
      xyChart = { dataSets = [{ plotType = "LINE", timeSeriesQuery = { prometheusQuery = chart.query } }] }
    }],
  )
}

resource "google_monitoring_dashboard" "htbase" {
  dashboard_json = jsonencode({
    displayName = "htbase (${var.prefix})"
    mosaicLayout = {
      columns = 48
      tiles = [for index, widget in local.dashboard_tiles : {
        xPos = (index % 2) * 24, yPos = floor(index / 2) * 16, width = 24, height = 16, widget = widget
      }]
    }
  })

  depends_on = [google_project_service.apis]
}
