# Secret Manager holds what is secret; Cloud Run reads each one as an env var through
# secret_key_ref (version latest), never as a plain value, and only on the accounts that use it.

locals {
  secrets = merge(
    {
      # The password user's URL: the migrate job's, or everyone's without IAM database authentication.
      "database-url" = {
        env     = "DATABASE_URL"
        readers = var.database_iam_auth ? ["migrate"] : concat(["migrate"], local.runtime_accounts)
      }
      # Standard Webhooks signing key. Whichever process relays a task's outbox may send its webhook.
      "webhook-secret" = {
        env     = "WEBHOOK_SECRET"
        readers = local.runtime_accounts
      }
    },
    {
      for id, secret in {
        "llm-api-key" = {
          env     = "LLM_API_KEY"
          readers = ["summarizer"]
        }
      } : id => secret if nonsensitive(var.llm_api_key != "")
    },
  )

  # The first version of each secret; rotate with `gcloud secrets versions add` (README.md).
  secret_values = {
    "database-url"   = "postgresql+pg8000://${google_sql_user.owner.name}:${random_password.database_owner.result}@/${google_sql_database.htbase.name}"
    "webhook-secret" = "whsec_${base64encode(random_password.webhook.result)}"
    "llm-api-key"    = var.llm_api_key
  }

  secret_readers = merge([
    for id, secret in local.secrets : { for account in secret.readers : "${id}/${account}" => { secret = id, account = account } }
  ]...)

  # Per account: env name => secret id.
  secret_env = {
    for account in concat(local.runtime_accounts, ["migrate"]) : account => {
      for id, secret in local.secrets : secret.env => google_secret_manager_secret.secret[id].secret_id if contains(secret.readers, account)
    }
  }
}

resource "random_password" "webhook" {
  length  = 32
  special = false
}

resource "google_secret_manager_secret" "secret" {
  for_each  = local.secrets
  secret_id = "${var.prefix}${each.key}"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "initial" {
  for_each    = local.secrets
  secret      = google_secret_manager_secret.secret[each.key].id
  secret_data = local.secret_values[each.key]

  lifecycle {
    ignore_changes = [secret_data] # rotation adds versions outside Terraform
  }
}

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each  = local.secret_readers
  secret_id = google_secret_manager_secret.secret[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.role[each.value.account].member
}
