# The replica of task documents that clients (the mobile app) read; Postgres stays the source of truth.
resource "google_firestore_database" "replica" {
  name                    = "(default)" # the database FIRESTORE_PROJECT_ID reaches
  location_id             = var.firestore_location
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy         = var.deletion_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.apis]
}
