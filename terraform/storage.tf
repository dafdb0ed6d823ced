# The archive bucket: artifacts under {task_id}/{archiver}.{ext}, written once.

locals {
  # What each account's code calls (infra/storage.py): uploads create, downloads and readiness
  # get, a deletion lists a task's objects and deletes each (infra/deletions.py), in the API's
  # DELETE or in housekeeping's retry. Nobody overwrites: objects are written once.
  bucket_grants = {
    "api/objectViewer"         = { account = "api", role = "roles/storage.objectViewer" } # downloads, signed URLs, readiness
    "api/objectDeleter"        = { account = "api", role = google_project_iam_custom_role.object_deleter.name }
    "archiver/objectCreator"   = { account = "archiver", role = "roles/storage.objectCreator" }  # write-once uploads
    "archiver/objectViewer"    = { account = "archiver", role = "roles/storage.objectViewer" }   # a redelivery reads what an earlier attempt stored
    "summarizer/objectViewer"  = { account = "summarizer", role = "roles/storage.objectViewer" } # the article text
    "operations/objectViewer"  = { account = "operations", role = "roles/storage.objectViewer" } # readiness, the listing before a delete
    "operations/objectDeleter" = { account = "operations", role = google_project_iam_custom_role.object_deleter.name }
  }
}

# Deleting only: the predefined roles that delete (objectUser, objectAdmin) also create and overwrite.
resource "google_project_iam_custom_role" "object_deleter" {
  role_id     = "${replace(var.prefix, "-", "_")}objectDeleter"
  title       = "htbase archive object deleter"
  description = "Deletes archive objects; granted on the archive bucket only"
  permissions = ["storage.objects.delete"]
}

resource "google_storage_bucket" "archives" {
  name                        = var.bucket_name != "" ? var.bucket_name : "${var.project_id}-${var.prefix}archives"
  location                    = var.bucket_location != "" ? var.bucket_location : upper(var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection

  versioning {
    enabled = false # objects are written once (if_generation_match=0); soft delete covers mistakes
  }

  dynamic "lifecycle_rule" {
    for_each = var.archive_lifecycle.nearline_after_days > 0 ? [var.archive_lifecycle.nearline_after_days] : []
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type          = "SetStorageClass"
        storage_class = "NEARLINE"
      }
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.archive_lifecycle.delete_after_days > 0 ? [var.archive_lifecycle.delete_after_days] : []
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "grant" {
  for_each = local.bucket_grants
  bucket   = google_storage_bucket.archives.name
  role     = each.value.role
  member   = google_service_account.role[each.value.account].member
}
