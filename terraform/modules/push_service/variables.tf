variable "name" {
  description = "The Cloud Run service's name."
  type        = string
}

variable "region" {
  description = "The Cloud Run region."
  type        = string
}

variable "image" {
  description = "The image of the first deployment; Cloud Build rolls out the later ones."
  type        = string
}

variable "target" {
  description = "The functions-framework target in functions/main.py that serves every request."
  type        = string
}

variable "service_account" {
  description = "The email of the identity the service runs as."
  type        = string
}

variable "invokers" {
  description = "The only members allowed to invoke the service (the push or the scheduler account), by a name known at plan time."
  type        = map(string)

  validation {
    condition     = length(var.invokers) > 0 && alltrue([for m in values(var.invokers) : startswith(m, "serviceAccount:")])
    error_message = "invokers must be service accounts: a worker service is never public."
  }
}

variable "audience" {
  description = "The OIDC audience of the push tokens (a custom audience of the service)."
  type        = string
}

variable "env" {
  description = "Plain environment variables (names that Settings reads)."
  type        = map(string)
}

variable "secret_env" {
  description = "Environment variables read from Secret Manager: name => secret id (latest version)."
  type        = map(string)
  default     = {}
}

variable "sizing" {
  description = "cpu, memory, concurrency, min/max instances and the request timeout."
  type = object({
    cpu             = string
    memory          = string
    concurrency     = number
    min_instances   = number
    max_instances   = number
    timeout_seconds = number
  })
}

variable "vpc_subnetwork" {
  description = "Direct VPC egress through this subnetwork (private ranges only); empty: none."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Refuse to destroy the service."
  type        = bool
}
