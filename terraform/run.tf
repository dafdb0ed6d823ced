# The Cloud Run services: the API, and one worker service per route of the topology
# plus housekeeping and each Cloud Tasks queue's target. Every env name below is one
# that Settings (htbase/config.py) reads; tests/terraform holds the file to that.

data "google_project" "this" {}

locals {
  # Each worker's kind picks its service account, sizing and settings; its
  # invoker is the identity whose OIDC tokens it accepts.
  workers = merge(
    {
      for route in values(var.topology.routes) : route.service => {
        target  = route.target
        env     = route.env
        kind    = route.archiver != "" ? "archiver" : route.role == "summarizer" ? "summarizer" : "operations"
        invoker = "push"
        image   = route.archiver != "" ? var.image : local.light_image
      }
    },
    {
      (var.topology.housekeeping.service) = {
        target  = var.topology.housekeeping.target
        env     = var.topology.housekeeping.env
        kind    = "operations"
        invoker = "scheduler"
        image   = local.light_image
      }
    },
    {
      for queue in values(var.topology.queues) : queue.service.service => {
        target  = queue.service.target
        env     = queue.service.env
        kind    = "operations"
        invoker = "tasks"
        image   = local.light_image
      }
    },
  )

  # Where Cloud Tasks takes webhook attempts: the URL Cloud Run gives the webhooks service
  # (written out, as that service enqueues its own retries and cannot read its own uri).
  webhook_delivery_url = "https://${var.prefix}${var.topology.queues["webhooks"].service.service}-${data.google_project.this.number}.${var.region}.run.app"

  sizing = {
    archiver   = var.archiver_service
    summarizer = var.summarizer_service
    operations = var.operations_service
  }

  # Only the archivers open a browser; every other role runs the smaller image.
  light_image = var.light_image != "" ? var.light_image : var.image

  cloud_sql_ip_type = var.private_network == "" ? "public" : "private"

  shared_env = {
    GOOGLE_CLOUD_PROJECT     = var.project_id
    LOG_FORMAT               = "json"
    LOG_LEVEL                = var.log_level
    BROKER                   = "pubsub"
    TOPIC_PREFIX             = var.prefix
    FILE_STORAGE_PROVIDER    = "gcs"
    GCS_BUCKET               = google_storage_bucket.archives.name
    FIRESTORE_PROJECT_ID     = google_firestore_database.replica.project
    INSTANCE_CONNECTION_NAME = google_sql_database_instance.ledger.connection_name
    CLOUD_SQL_IP_TYPE        = local.cloud_sql_ip_type
    CLOUD_SQL_IAM_AUTH       = tostring(var.database_iam_auth)
    RUN_MIGRATIONS           = "false" # only the migrate job changes the schema
    MAX_ATTEMPTS             = tostring(var.max_attempts)
    MAX_DELIVERY_ATTEMPTS    = tostring(var.max_delivery_attempts)
    RETRY_BACKOFF_SECONDS    = tostring(var.retry_backoff_seconds)
    TASKS_LOCATION           = var.region
    WEBHOOK_DELIVERY_URL     = local.webhook_delivery_url
    TASKS_SERVICE_ACCOUNT    = google_service_account.role["tasks"].email
    TELEMETRY_EXPORTER       = "gcp"   # Cloud Trace and Cloud Monitoring
    PROMETHEUS_METRICS       = "false" # Cloud Monitoring has the metrics; no /metrics to scrape
  }

  kind_env = {
    api = {
      SERVICE_ROLE               = "api"
      WEB_CONCURRENCY            = tostring(var.api_service.web_workers)
      DB_POOL_SIZE               = tostring(var.api_service.db_pool_size)
      SIGNED_URL_SERVICE_ACCOUNT = google_service_account.role["api"].email
      API_KEYS_REQUIRED          = "true"
    }
    archiver = {
      CAPTURE_TIMEOUT     = tostring(var.capture_timeout_seconds)
      MAX_CAPTURE_TIMEOUT = tostring(var.max_capture_timeout_seconds)
      DB_POOL_SIZE        = tostring(var.archiver_service.db_pool_size)
    }
    summarizer = {
      LLM_PROVIDER = var.llm.provider
      LLM_BASE_URL = var.llm.base_url
      LLM_MODEL    = var.llm.model
      LLM_TIMEOUT  = tostring(var.llm.timeout_seconds)
      # One summary's deadline, inside the request timeout.
      SUMMARY_TIMEOUT = tostring(var.llm.summary_timeout_seconds)
      DB_POOL_SIZE    = tostring(var.summarizer_service.db_pool_size)
      # The limit is per process: the provider's quota, split among the instances.
      LLM_REQUESTS_PER_MINUTE = tostring(floor(var.llm.requests_per_minute / var.summarizer_service.max_instances))
    }
    operations = {
      DB_POOL_SIZE = tostring(var.operations_service.db_pool_size)
    }
  }

  # One audience; each worker accepts tokens of its invoker only.
  push_auth_env = {
    for invoker in ["push", "scheduler", "tasks"] : invoker => {
      PUSH_AUDIENCE                 = local.push_audience
      PUSH_ALLOWED_SERVICE_ACCOUNTS = google_service_account.role[invoker].email
    }
  }

  # IAM database authentication: each account logs in as itself, without a password.
  database_env = {
    for account in local.runtime_accounts : account => {
      for name, value in {
        DATABASE_URL = "postgresql+pg8000://${urlencode(local.database_users[account])}@/${google_sql_database.htbase.name}"
      } : name => value if var.database_iam_auth
    }
  }

  api_env = merge(local.shared_env, local.kind_env.api, local.database_env.api)
  worker_env = {
    for name, worker in local.workers : name => merge(
      local.shared_env, local.kind_env[worker.kind], worker.env, local.push_auth_env[worker.invoker], local.database_env[worker.kind],
    )
  }

  # The API answers its health on a path Cloud Run does not reserve (it reserves paths ending in z).
  api_health_path = "/api/v2/health"
}

resource "google_cloud_run_v2_service" "api" {
  name                = "${var.prefix}api"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection

  template {
    service_account                  = google_service_account.role["api"].email
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    timeout                          = "${var.api_service.timeout_seconds}s"
    max_instance_request_concurrency = var.api_service.concurrency

    scaling {
      min_instance_count = var.api_service.min_instances
      max_instance_count = var.api_service.max_instances
    }

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
      # The image's command, `htbase serve`, runs the API under gunicorn with SERVICE_ROLE=api.
      image = local.light_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.api_service.cpu
          memory = var.api_service.memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.api_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.secret_env.api
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

      startup_probe {
        http_get {
          path = local.api_health_path
        }
        period_seconds    = 3
        timeout_seconds   = 3
        failure_threshold = 20
      }

      # Restarts an instance whose ledger stayed unreachable for 5 minutes.
      liveness_probe {
        http_get {
          path = local.api_health_path
        }
        period_seconds    = 60
        timeout_seconds   = 5
        failure_threshold = 5
      }
    }
  }

  lifecycle {
    # Cloud Build rolls out images (cloudbuild.yaml); Terraform owns everything else.
    ignore_changes = [template[0].containers[0].image, client, client_version]
  }

  # The migrate job's first run: the schema and the first key exist before any service starts.
  depends_on = [google_project_service.apis, google_secret_manager_secret_iam_member.reader, google_project_iam_member.grant, google_cloud_run_v2_job.migrate]
}

resource "google_cloud_run_v2_service_iam_member" "api_public" {
  #checkov:skip=CKV2_HTBASE_5:the API alone is public, only when var.api_public asks, and htbase API keys guard it
  count    = var.api_public ? 1 : 0
  name     = google_cloud_run_v2_service.api.name
  location = google_cloud_run_v2_service.api.location
  role     = "roles/run.invoker"
  member   = "allUsers"
}

module "worker" {
  source   = "./modules/push_service"
  for_each = local.workers

  name                = "${var.prefix}${each.key}"
  region              = var.region
  image               = each.value.image
  target              = each.value.target
  service_account     = google_service_account.role[each.value.kind].email
  invokers            = { (each.value.invoker) = google_service_account.role[each.value.invoker].member }
  audience            = local.push_audience
  env                 = local.worker_env[each.key]
  secret_env          = local.secret_env[each.value.kind]
  sizing              = local.sizing[each.value.kind]
  vpc_subnetwork      = var.vpc_subnetwork
  deletion_protection = var.deletion_protection

  # The migrate job's first run: the schema and the first key exist before any service starts.
  depends_on = [google_project_service.apis, google_secret_manager_secret_iam_member.reader, google_project_iam_member.grant, google_cloud_run_v2_job.migrate]
}
