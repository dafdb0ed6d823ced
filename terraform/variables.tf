# What an operator sets (terraform.tfvars.example), then the sizing of each kind of
# service, then the topology generated from htbase/topology.py.

variable "project_id" {
  description = "The Google Cloud project to deploy into."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project id (6-30 lowercase letters, digits, hyphens), not a name or number."
  }
}

variable "region" {
  description = "The region of Cloud Run, Cloud SQL, Cloud Tasks, Cloud Scheduler and the image repository."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a region such as us-central1, not a zone."
  }
}

variable "image" {
  description = "The image with the browser (the Dockerfile's default target), for the archivers, of the first apply (e.g. REGION-docker.pkg.dev/PROJECT/htbase/htbase:TAG); Cloud Build rolls out later images and Terraform leaves them alone."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$", var.image))
    error_message = "image must be a full reference with a tag or a digest."
  }
}

variable "light_image" {
  description = "The image without a browser (the Dockerfile's light target) for the API, the summarizer, the dead-letter handler, housekeeping and the migrate job. Empty: image, which serves every role."
  type        = string
  default     = ""

  validation {
    condition     = var.light_image == "" || can(regex("^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$", var.light_image))
    error_message = "light_image must be empty or a full reference with a tag or a digest."
  }
}

variable "prefix" {
  description = "The start of every resource's name: topics and queues (TOPIC_PREFIX), Cloud Run services and jobs, service accounts. Two deployments in one project need two prefixes."
  type        = string
  default     = "htbase-"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,14}-$", var.prefix))
    error_message = "prefix must be 3-16 characters: a lowercase letter, letters or digits, and a final hyphen (service-account ids allow 30 characters)."
  }
}

variable "labels" {
  description = "Labels put on every resource that takes labels (besides app=htbase)."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Refuse to destroy the Cloud SQL instance, the Firestore database, the bucket's objects, the Cloud Run services and the migrate job. Set false (and apply) before `terraform destroy`."
  type        = bool
  default     = true
}

variable "api_public" {
  description = "Let anyone invoke the API (allUsers as run.invoker); clients then authenticate with htbase API keys. Off: only principals granted run.invoker reach it."
  type        = bool
  default     = false
}

variable "log_level" {
  description = "LOG_LEVEL of every service."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL."
  }
}

# A push must be answered within the request timeout (at most the 600 s ack deadline): the
# longest capture or summary plus 120 s to start Chromium and store (PUSH_OVERHEAD_S in htbase/config.py).
variable "capture_timeout_seconds" {
  description = "CAPTURE_TIMEOUT: seconds one capture may take unless the request's options.timeout says otherwise."
  type        = number
  default     = 60

  validation {
    condition     = var.capture_timeout_seconds >= 5 && var.capture_timeout_seconds + 120 <= var.archiver_service.timeout_seconds
    error_message = "capture_timeout_seconds must be at least 5, and with 120 s to start Chromium and store, at most archiver_service.timeout_seconds."
  }
}

variable "max_capture_timeout_seconds" {
  description = "MAX_CAPTURE_TIMEOUT: the longest options.timeout a request may ask for."
  type        = number
  default     = 300

  validation {
    condition     = var.max_capture_timeout_seconds >= 5 && var.max_capture_timeout_seconds + 120 <= var.archiver_service.timeout_seconds
    error_message = "max_capture_timeout_seconds must be at least 5, and with 120 s to start Chromium and store, at most archiver_service.timeout_seconds."
  }
}

variable "max_delivery_attempts" {
  description = "Pushes a subscription makes before it dead-letters a message (MAX_DELIVERY_ATTEMPTS)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be within 5..100 (Pub/Sub's limits)."
  }
}

variable "max_attempts" {
  description = "Captures the ledger tries before it fails an artifact (MAX_ATTEMPTS)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_attempts >= 1 && var.max_attempts <= 100
    error_message = "max_attempts must be within 1..100."
  }
}

variable "retry_backoff_seconds" {
  description = "The first wait before Pub/Sub redelivers a push (RETRY_BACKOFF_SECONDS); it doubles up to the topology's maximum."
  type        = number
  default     = 10

  validation {
    condition     = var.retry_backoff_seconds >= 0 && var.retry_backoff_seconds <= 600
    error_message = "retry_backoff_seconds must be within 0..600 (Pub/Sub's limits)."
  }
}

variable "llm" {
  description = "The summarizer's model: LLM_PROVIDER (a chain such as \"openai,extractive\"), LLM_BASE_URL, LLM_MODEL, LLM_TIMEOUT per model call, SUMMARY_TIMEOUT per summary, and the provider's quota in requests per minute, shared by all summarizer instances."
  type = object({
    provider                = optional(string, "extractive")
    base_url                = optional(string, "")
    model                   = optional(string, "")
    timeout_seconds         = optional(number, 60)
    summary_timeout_seconds = optional(number, 300)
    requests_per_minute     = optional(number, 60)
  })
  default = {}

  validation {
    condition     = alltrue([for p in split(",", var.llm.provider) : contains(["openai", "tgi", "extractive"], trimspace(p))])
    error_message = "llm.provider must be a comma-separated chain of openai, tgi and extractive."
  }
  validation {
    condition     = var.llm.base_url == "" || startswith(var.llm.base_url, "https://")
    error_message = "llm.base_url must be an https:// URL."
  }
  validation {
    condition     = var.llm.timeout_seconds > 0 && var.llm.timeout_seconds <= var.llm.summary_timeout_seconds && var.llm.summary_timeout_seconds + 120 <= var.summarizer_service.timeout_seconds
    error_message = "llm: 0 < timeout_seconds <= summary_timeout_seconds, and summary_timeout_seconds with 120 s to spare at most summarizer_service.timeout_seconds."
  }
  validation {
    condition     = var.llm.requests_per_minute == 0 || var.llm.requests_per_minute >= var.summarizer_service.max_instances
    error_message = "llm.requests_per_minute (0: no limit) is split across the summarizer's instances: it must be at least summarizer_service.max_instances."
  }
}

variable "llm_api_key" {
  description = "The model endpoint's API key; stored in Secret Manager (and in Terraform's state) and read only by the summarizer. Empty: no key."
  type        = string
  default     = ""
  sensitive   = true
}

# Sizing. Connections: every process keeps a pool of db_pool_size connections, and
# the sum over all services at their max instances must fit sql.max_connections
# (enforced by a precondition in sql.tf; README.md: "Scaling limits").

variable "api_service" {
  description = "The API: gunicorn with web_workers processes per instance, each with its own database pool."
  type = object({
    cpu             = optional(string, "1")
    memory          = optional(string, "1Gi")
    concurrency     = optional(number, 32)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 4)
    timeout_seconds = optional(number, 180) # POST /archive/sync waits up to 120 s
    web_workers     = optional(number, 2)
    db_pool_size    = optional(number, 4)
  })
  default = {}

  validation {
    condition     = var.api_service.min_instances >= 0 && var.api_service.max_instances >= max(1, var.api_service.min_instances)
    error_message = "api_service: 0 <= min_instances <= max_instances, max_instances >= 1."
  }
  validation {
    condition     = var.api_service.web_workers >= 1 && var.api_service.db_pool_size >= 1 && var.api_service.concurrency >= 1 && var.api_service.concurrency <= 1000
    error_message = "api_service: web_workers and db_pool_size at least 1, concurrency within 1..1000."
  }
  validation {
    condition     = var.api_service.timeout_seconds >= 1 && var.api_service.timeout_seconds <= 3600
    error_message = "api_service.timeout_seconds must be within 1..3600."
  }
}

variable "archiver_service" {
  description = "Each archiver's service. One Chromium serves `concurrency` captures at once (2-4); memory is sized for it; the request timeout covers the longest capture and stays within the 600 s ack deadline."
  type = object({
    cpu             = optional(string, "2")
    memory          = optional(string, "4Gi")
    concurrency     = optional(number, 3)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 4)
    timeout_seconds = optional(number, 600)
    db_pool_size    = optional(number, 4)
  })
  default = {}

  validation {
    condition     = var.archiver_service.concurrency >= 2 && var.archiver_service.concurrency <= 4
    error_message = "archiver_service.concurrency must be 2..4: the captures one Chromium serves at once."
  }
  validation {
    condition     = var.archiver_service.timeout_seconds <= var.topology.ack_deadline_seconds
    error_message = "archiver_service.timeout_seconds must not exceed the subscriptions' ack deadline (a later answer is redelivered anyway)."
  }
  validation {
    condition     = can(regex("^[0-9]+Gi$", var.archiver_service.memory)) && tonumber(trimsuffix(var.archiver_service.memory, "Gi")) >= 2
    error_message = "archiver_service.memory must be at least 2Gi (Chromium plus the captures in flight), in Gi."
  }
  validation {
    condition     = var.archiver_service.min_instances >= 0 && var.archiver_service.max_instances >= max(1, var.archiver_service.min_instances)
    error_message = "archiver_service: 0 <= min_instances <= max_instances, max_instances >= 1."
  }
  validation {
    condition     = var.archiver_service.db_pool_size > var.archiver_service.concurrency
    error_message = "archiver_service.db_pool_size must exceed concurrency: each capture holds a connection and the lease heartbeat needs one more."
  }
}

variable "summarizer_service" {
  description = "The summarizer. Its instances are capped: the model's rate limit (llm.requests_per_minute) is split evenly among them."
  type = object({
    cpu             = optional(string, "1")
    memory          = optional(string, "1Gi")
    concurrency     = optional(number, 4)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 1)
    timeout_seconds = optional(number, 600)
    db_pool_size    = optional(number, 5)
  })
  default = {}

  validation {
    condition     = var.summarizer_service.max_instances >= 1 && var.summarizer_service.max_instances <= 10 && var.summarizer_service.min_instances <= var.summarizer_service.max_instances
    error_message = "summarizer_service.max_instances must be within 1..10 (a Cloud Tasks queue is the way past that; README.md, Summaries) and at least min_instances."
  }
  validation {
    condition     = var.summarizer_service.timeout_seconds <= var.topology.ack_deadline_seconds
    error_message = "summarizer_service.timeout_seconds must not exceed the subscriptions' ack deadline."
  }
  validation {
    condition     = var.summarizer_service.concurrency >= 1 && var.summarizer_service.db_pool_size >= var.summarizer_service.concurrency
    error_message = "summarizer_service: concurrency at least 1, db_pool_size at least concurrency."
  }
}

variable "operations_service" {
  description = "The dead-letter handler and housekeeping (called by Cloud Scheduler): light, no browser."
  type = object({
    cpu             = optional(string, "1")
    memory          = optional(string, "512Mi")
    concurrency     = optional(number, 4)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 2)
    timeout_seconds = optional(number, 300)
    db_pool_size    = optional(number, 2)
  })
  default = {}

  validation {
    condition     = var.operations_service.max_instances >= max(1, var.operations_service.min_instances) && var.operations_service.db_pool_size >= 1
    error_message = "operations_service: max_instances at least 1 and min_instances, db_pool_size at least 1."
  }
  validation {
    condition     = var.operations_service.timeout_seconds >= 10 && var.operations_service.timeout_seconds <= var.topology.ack_deadline_seconds
    error_message = "operations_service.timeout_seconds must be within 10 s and the subscriptions' ack deadline."
  }
}

variable "housekeeping_schedule" {
  description = "When Cloud Scheduler calls housekeeping (cron, UTC): the lease sweeper, the outbox relay and the replica's retries."
  type        = string
  default     = "* * * * *"

  validation {
    condition     = length(split(" ", var.housekeeping_schedule)) == 5
    error_message = "housekeeping_schedule must be a five-field cron expression."
  }
}

variable "sql" {
  description = "Cloud SQL for PostgreSQL. max_connections is set as a flag so that the pools' arithmetic is explicit."
  type = object({
    tier                  = optional(string, "db-custom-1-3840")
    database_version      = optional(string, "POSTGRES_15")
    availability_type     = optional(string, "ZONAL")
    disk_size_gb          = optional(number, 10)
    max_connections       = optional(number, 200)
    backup_retained_count = optional(number, 14)
    log_retention_days    = optional(number, 7)
  })
  default = {}

  validation {
    condition     = startswith(var.sql.database_version, "POSTGRES_") && can(regex("^db-", var.sql.tier))
    error_message = "sql.database_version must be a POSTGRES_ version and sql.tier a Cloud SQL tier (db-...)."
  }
  validation {
    condition     = contains(["ZONAL", "REGIONAL"], var.sql.availability_type)
    error_message = "sql.availability_type must be ZONAL or REGIONAL."
  }
  validation {
    condition     = var.sql.max_connections >= 25 && var.sql.max_connections <= 262143 && var.sql.disk_size_gb >= 10
    error_message = "sql.max_connections must be within 25..262143 and sql.disk_size_gb at least 10."
  }
  validation {
    condition     = var.sql.backup_retained_count >= 1 && var.sql.log_retention_days >= 1 && var.sql.log_retention_days <= 7
    error_message = "sql: keep at least one backup; point-in-time recovery logs are kept 1..7 days."
  }
}

variable "database_iam_auth" {
  description = "Services log in to Postgres as their own service accounts (IAM database authentication); only the migrate job uses the password user. Off: every service uses the password user from Secret Manager."
  type        = bool
  default     = true
}

variable "private_network" {
  description = "A VPC (projects/P/global/networks/N) with private services access: Cloud SQL gets a private IP only, and vpc_subnetwork must be set. Empty: public IP, reached only through the Cloud SQL connector (no authorized networks)."
  type        = string
  default     = ""

  validation {
    condition     = var.private_network == "" || can(regex("^projects/[^/]+/global/networks/[^/]+$", var.private_network))
    error_message = "private_network must be empty or projects/PROJECT/global/networks/NAME."
  }
}

variable "vpc_subnetwork" {
  description = "The subnetwork (projects/P/regions/R/subnetworks/S) Cloud Run egresses through (direct VPC egress, private ranges only) when Cloud SQL has a private IP."
  type        = string
  default     = ""

  validation {
    condition     = (var.vpc_subnetwork == "") == (var.private_network == "")
    error_message = "Set vpc_subnetwork exactly when private_network is set."
  }
}

variable "bucket_name" {
  description = "The archive bucket's name. Empty: PROJECT-PREFIXarchives."
  type        = string
  default     = ""

  validation {
    condition     = var.bucket_name == "" || can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid bucket name."
  }
}

variable "bucket_location" {
  description = "The archive bucket's location (a region or a multi-region). Empty: the region."
  type        = string
  default     = ""
}

variable "archive_lifecycle" {
  description = "What happens to stored artifacts with age: move to Nearline after nearline_after_days, delete after delete_after_days (0: never)."
  type = object({
    nearline_after_days = optional(number, 0)
    delete_after_days   = optional(number, 0)
  })
  default = {}

  validation {
    condition     = var.archive_lifecycle.nearline_after_days >= 0 && var.archive_lifecycle.delete_after_days >= 0
    error_message = "archive_lifecycle days must not be negative."
  }
  validation {
    condition     = var.archive_lifecycle.delete_after_days == 0 || var.archive_lifecycle.nearline_after_days == 0 || var.archive_lifecycle.delete_after_days > var.archive_lifecycle.nearline_after_days + 30
    error_message = "archive_lifecycle: deleting within 30 days of the move to Nearline pays its minimum storage anyway; delete later or do not move."
  }
}

variable "firestore_location" {
  description = "The Firestore database's location (the replica that mobile clients read)."
  type        = string
  default     = "nam5"
}

variable "tasks_retry" {
  description = "The Cloud Tasks queues' retry: attempts (-1: unlimited), backoff bounds and doublings."
  type = object({
    max_attempts        = optional(number, 10)
    min_backoff_seconds = optional(number, 5)
    max_backoff_seconds = optional(number, 3600)
    max_doublings       = optional(number, 8)
  })
  default = {}

  validation {
    condition     = (var.tasks_retry.max_attempts == -1 || var.tasks_retry.max_attempts >= 1) && var.tasks_retry.min_backoff_seconds >= 0 && var.tasks_retry.max_backoff_seconds >= var.tasks_retry.min_backoff_seconds && var.tasks_retry.max_doublings >= 0
    error_message = "tasks_retry: max_attempts -1 or at least 1, 0 <= min_backoff_seconds <= max_backoff_seconds, max_doublings >= 0."
  }
}

variable "tasks_rate_limits" {
  description = "Per queue of the topology (webhooks): dispatches per second (default: the registry's) and concurrent dispatches."
  type = map(object({
    max_dispatches_per_second = optional(number)
    max_concurrent_dispatches = optional(number, 10)
  }))
  default = {}

  validation {
    condition     = alltrue([for name in keys(var.tasks_rate_limits) : contains(keys(var.topology.queues), name)])
    error_message = "tasks_rate_limits may only name queues of the topology."
  }
  validation {
    condition     = alltrue([for limits in values(var.tasks_rate_limits) : (limits.max_dispatches_per_second == null ? true : limits.max_dispatches_per_second > 0 && limits.max_dispatches_per_second <= 500) && limits.max_concurrent_dispatches >= 1 && limits.max_concurrent_dispatches <= 5000])
    error_message = "tasks_rate_limits: max_dispatches_per_second within (0, 500], max_concurrent_dispatches within 1..5000."
  }
}

variable "github" {
  description = "Create the Cloud Build trigger that rolls out every push to this GitHub branch (the repository must be connected to Cloud Build first). Null: no trigger."
  type = object({
    owner      = string
    repository = string
    branch     = optional(string, "main")
  })
  default = null
}

variable "monolith_sha256" {
  description = "The sha256 of the monolith release binary the Dockerfile downloads (the build refuses any other); the trigger passes it as _MONOLITH_SHA256."
  type        = string
  default     = ""

  validation {
    condition     = var.monolith_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.monolith_sha256))
    error_message = "monolith_sha256 must be 64 lowercase hex digits."
  }
}

variable "first_admin_key_record" {
  description = "The public record (prefix:sha256, not the key) that `htbase keys new` prints beside a new key: the migrate job adds it as an admin key unless its prefix exists. The API refuses to start while no key exists, so set it for the first apply (README.md)."
  type        = string
  default     = ""

  validation {
    condition     = var.first_admin_key_record == "" || can(regex("^[0-9a-f]{8}:[0-9a-f]{64}$", var.first_admin_key_record))
    error_message = "first_admin_key_record must be the record `htbase keys new` prints: 8 hex digits, a colon, 64 hex digits (never the htb_... key itself)."
  }
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channels (projects/PROJECT/notificationChannels/ID) that every alert pages; empty: alerts open incidents that notify no one."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for channel in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", channel))])
    error_message = "notification_channels must be channel names: projects/PROJECT/notificationChannels/ID."
  }
}

variable "alerts" {
  description = "When monitoring.tf's alerts fire: a subscription's oldest unacknowledged message, the capture failure ratio per archiver and the API's 5xx ratio (each over 10 minutes), the API's p95 latency, the outbox's oldest unpublished message, and Cloud SQL connections as a share of max_connections."
  type = object({
    backlog_age_seconds       = optional(number, 900)
    capture_failure_ratio     = optional(number, 0.5)
    api_5xx_ratio             = optional(number, 0.05)
    api_p95_latency_ms        = optional(number, 2000)
    outbox_oldest_age_seconds = optional(number, 300)
    sql_connections_ratio     = optional(number, 0.8)
  })
  default = {}

  validation {
    condition = (var.alerts.backlog_age_seconds >= 60 && var.alerts.outbox_oldest_age_seconds >= 60 && var.alerts.api_p95_latency_ms > 0
    && alltrue([for ratio in [var.alerts.capture_failure_ratio, var.alerts.api_5xx_ratio, var.alerts.sql_connections_ratio] : ratio > 0 && ratio < 1]))
    error_message = "alerts: ages of at least 60 s, a positive latency, ratios strictly between 0 and 1."
  }
}

variable "topology" {
  description = "Generated from htbase/topology.py into topology.auto.tfvars.json by `make terraform-topology`; do not edit."
  type = object({
    ack_deadline_seconds = number
    max_backoff_seconds  = number
    summarize_topic      = string
    dead_letter_topic    = string
    routes = map(object({
      service       = string
      target        = string
      path          = string
      archiver      = string
      role          = string
      env           = map(string)
      dead_lettered = bool
    }))
    housekeeping = object({
      service  = string
      target   = string
      path     = string
      archiver = string
      role     = string
      env      = map(string)
    })
    queues = map(object({
      purpose                   = string
      max_dispatches_per_second = number
      service = object({
        service  = string
        target   = string
        path     = string
        archiver = string
        role     = string
        env      = map(string)
      })
    }))
  })

  validation {
    condition     = var.topology.ack_deadline_seconds >= 10 && var.topology.ack_deadline_seconds <= 600
    error_message = "topology.ack_deadline_seconds must be within 10..600 (Pub/Sub's limits)."
  }
  validation {
    condition     = contains(keys(var.topology.routes), var.topology.dead_letter_topic) && contains(keys(var.topology.routes), var.topology.summarize_topic)
    error_message = "topology.routes must contain the dead-letter and summarize topics."
  }
}
