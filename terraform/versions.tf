terraform {
  required_version = ">= 1.9" # variable validations that refer to other variables

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.30"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.30"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State lives in a GCS bucket that exists before the first apply (see README.md):
  #   terraform init -backend-config=bucket=PROJECT-tfstate
  backend "gcs" {
    prefix = "htbase"
  }
}
