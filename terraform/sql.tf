# The ledger: Cloud SQL for PostgreSQL, reached only through the Cloud SQL connector
# (IAM-authorized mTLS; no authorized networks), backed up with point-in-time recovery.

locals {
  # Every process keeps its own pool; at full scale-out the pools must fit
  # max_connections, less what Postgres reserves for superusers and Cloud SQL's agents.
  database_connections = {
    api        = var.api_service.max_instances * var.api_service.web_workers * var.api_service.db_pool_size
    archiver   = length([for w in values(local.workers) : w if w.kind == "archiver"]) * var.archiver_service.max_instances * var.archiver_service.db_pool_size
    summarizer = length([for w in values(local.workers) : w if w.kind == "summarizer"]) * var.summarizer_service.max_instances * var.summarizer_service.db_pool_size
    operations = length([for w in values(local.workers) : w if w.kind == "operations"]) * var.operations_service.max_instances * var.operations_service.db_pool_size
    migrate    = 1
  }
  database_reserved_connections = 10

  # The Postgres user of each IAM-authenticated account (its email without the domain suffix).
  database_users = { for account in local.runtime_accounts : account => trimsuffix(google_service_account.role[account].email, ".gserviceaccount.com") }
}

resource "google_sql_database_instance" "ledger" {
  name                = "${var.prefix}ledger"
  region              = var.region
  database_version    = var.sql.database_version
  deletion_protection = var.deletion_protection

  settings {
    edition                     = "ENTERPRISE" # the db-custom tiers; ENTERPRISE_PLUS wants db-perf-optimized ones
    tier                        = var.sql.tier
    availability_type           = var.sql.availability_type
    disk_size                   = var.sql.disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection
    user_labels                 = merge(var.labels, { app = "htbase" })

    ip_configuration {
      ipv4_enabled    = var.private_network == ""
      private_network = var.private_network == "" ? null : var.private_network
      ssl_mode        = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED" # the connector always presents one
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "03:00"
      transaction_log_retention_days = var.sql.log_retention_days
      backup_retention_settings {
        retained_backups = var.sql.backup_retained_count
      }
    }

    maintenance_window {
      day  = 7
      hour = 4
    }

    insights_config {
      query_insights_enabled = true
    }

    database_flags {
      name  = "max_connections"
      value = tostring(var.sql.max_connections)
    }
    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
  }

  lifecycle {
    precondition {
      condition     = sum(values(local.database_connections)) + local.database_reserved_connections <= var.sql.max_connections
      error_message = "The services' database pools at their max instances (${jsonencode(local.database_connections)}) plus ${local.database_reserved_connections} reserved exceed sql.max_connections (${var.sql.max_connections}): lower max_instances or db_pool_size, or raise max_connections with a larger tier."
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_sql_database" "htbase" {
  name     = "htbase"
  instance = google_sql_database_instance.ledger.name
}

# The schema's owner: a password user (a member of cloudsqlsuperuser), used only by the
# migrate job, or by every service when IAM database authentication is off.
resource "random_password" "database_owner" {
  length  = 32
  special = false
}

resource "google_sql_user" "owner" {
  name     = "htbase"
  instance = google_sql_database_instance.ledger.name
  password = random_password.database_owner.result
}

resource "google_sql_user" "service" {
  for_each = var.database_iam_auth ? local.database_users : {}
  name     = each.value
  instance = google_sql_database_instance.ledger.name
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
}
