output "api_url" {
  description = "The API's URL."
  value       = google_cloud_run_v2_service.api.uri
}

output "service_urls" {
  description = "Every worker service's URL, by service."
  value       = { for name, worker in module.worker : name => worker.uri }
}

output "topic_ids" {
  description = "The Pub/Sub topics, by logical topic."
  value       = { for topic, resource in google_pubsub_topic.topic : topic => resource.id }
}

output "subscription_ids" {
  description = "The push subscriptions, by logical topic."
  value       = { for topic, resource in google_pubsub_subscription.push : topic => resource.id }
}

output "queue_ids" {
  description = "The Cloud Tasks queues, by name in the topology."
  value       = { for name, resource in google_cloud_tasks_queue.queue : name => resource.id }
}

output "bucket" {
  description = "The archive bucket."
  value       = google_storage_bucket.archives.name
}

output "instance_connection_name" {
  description = "The Cloud SQL instance (INSTANCE_CONNECTION_NAME)."
  value       = google_sql_database_instance.ledger.connection_name
}

output "repository" {
  description = "Where Cloud Build pushes images: REPOSITORY/htbase:TAG."
  value       = local.image_repository
}

output "migrate_job" {
  description = "The Cloud Run job that runs the migrations."
  value       = google_cloud_run_v2_job.migrate.name
}

output "service_accounts" {
  description = "The email of each role's service account."
  value       = { for role, account in google_service_account.role : role => account.email }
}

output "push_audience" {
  description = "The audience of the push and scheduler OIDC tokens (PUSH_AUDIENCE)."
  value       = local.push_audience
}

output "database_connections" {
  description = "Database connections at full scale-out, per kind of service (their sum plus a reserve must fit sql.max_connections)."
  value       = local.database_connections
}
