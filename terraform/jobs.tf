# The schema migrates here and only here (RUN_MIGRATIONS=false on the services): Cloud
# Build updates this job to the new image and runs it before any service rolls. It also
# adds the first admin key from its record (FIRST_ADMIN_KEY_RECORD), once.
resource "google_cloud_run_v2_job" "migrate" {
  # google-beta: run_execution_token is beta in the 6.x providers.
  provider            = google-beta
  name                = "${var.prefix}migrate"
  location            = var.region
  deletion_protection = var.deletion_protection

  # Created, the job runs once and the apply waits until that execution succeeds; the
  # services depend on this job, so none starts on a ledger without its schema and first key.
  run_execution_token = "first-apply"

  template {
    task_count = 1

    template {
      service_account       = google_service_account.role["migrate"].email
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
      timeout               = "600s"
      max_retries           = 1

      dynamic "vpc_access" {
        for_each = var.vpc_subnetwork == "" ? [] : [var.vpc_subnetwork]
        content {
          egress = "PRIVATE_RANGES_ONLY"
          network_interfaces {
            subnetwork = vpc_access.value
          }
        }
      }

      containers {
        image   = local.light_image
        command = ["htbase", "migrate"] # alembic upgrade head, on the ledger Settings names

        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }

        dynamic "env" {
          for_each = local.migrate_env
          content {
            name  = env.key
            value = env.value
          }
        }

        dynamic "env" {
          for_each = local.secret_env.migrate
          content {
            name = env.key
            value_source {
              secret_key_ref {
                secret  = env.value
                version = "latest"
              }
            }
          }
        }
      }
    }
  }

  lifecycle {
    # Cloud Build runs it after that (`jobs execute`), and the API then drops the token: ignored,
    # Terraform never sends it again (which would run the job or fail on its old execution's name).
    ignore_changes = [template[0].template[0].containers[0].image, client, client_version, run_execution_token]
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.reader,
    google_secret_manager_secret_version.initial, # the owner's URL, read as the job starts
    google_project_iam_member.grant,
  ]
}

locals {
  # `htbase migrate` reads Settings: the owner's DATABASE_URL (a secret), through the connector.
  migrate_env = {
    GOOGLE_CLOUD_PROJECT     = var.project_id
    LOG_FORMAT               = "json"
    LOG_LEVEL                = var.log_level
    INSTANCE_CONNECTION_NAME = google_sql_database_instance.ledger.connection_name
    CLOUD_SQL_IP_TYPE        = local.cloud_sql_ip_type
    CLOUD_SQL_IAM_AUTH       = "false"
    FIRST_ADMIN_KEY_RECORD   = var.first_admin_key_record # a hash: the key itself never reaches the cloud
  }
}
