# A Cloud Run service that only Pub/Sub push (or Cloud Scheduler) may call: one
# functions-framework target of the shared image, internal ingress, IAM invokers only.

resource "google_cloud_run_v2_service" "this" {
  name                = var.name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY" # Pub/Sub, Scheduler and Tasks of the project count as internal
  custom_audiences    = [var.audience]
  deletion_protection = var.deletion_protection

  template {
    service_account                  = var.service_account
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    timeout                          = "${var.sizing.timeout_seconds}s"
    max_instance_request_concurrency = var.sizing.concurrency

    scaling {
      min_instance_count = var.sizing.min_instances
      max_instance_count = var.sizing.max_instances
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
      image   = var.image
      command = ["functions-framework"]
      args    = ["--source", "/app/functions/main.py", "--target", var.target]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.sizing.cpu
          memory = var.sizing.memory
        }
        cpu_idle          = true # billed per request: work only ever runs inside a push
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = var.env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.secret_env
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

      # functions-framework routes every path to the target, which refuses an
      # unauthenticated request: the open port is the readiness signal.
      startup_probe {
        tcp_socket {
          port = 8080
        }
        period_seconds    = 2
        timeout_seconds   = 2
        failure_threshold = 30
      }
    }
  }

  lifecycle {
    # Cloud Build rolls out images (cloudbuild.yaml); Terraform owns everything else.
    ignore_changes = [template[0].containers[0].image, client, client_version]
  }
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.invokers
  name     = google_cloud_run_v2_service.this.name
  location = google_cloud_run_v2_service.this.location
  role     = "roles/run.invoker"
  member   = each.value
}
