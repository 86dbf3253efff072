variable "kubeconfig_path" {
  description = "Kubeconfig of the cluster, which must already run Knative Serving and Eventing and a Gateway API implementation."
  type        = string
  default     = "~/.kube/config"
}

variable "kubeconfig_context" {
  description = "Context in the kubeconfig; null uses its current context."
  type        = string
  default     = null
}

variable "images" {
  description = "Pushed images for the ko:// references in knative/, e.g. from `ko build --bare` or `ko resolve`."
  type = object({
    sessions  = string
    programs  = string
    snapshots = string
    jobs      = string
    runner    = string
  })

  validation {
    condition     = alltrue([for i in values(var.images) : i != "" && !startswith(i, "ko://")])
    error_message = "Each image must be a pushed image reference, not a ko:// import path."
  }
}

variable "redis_url" {
  description = "URL of an external Redis, e.g. rediss://:password@host:6380/0. Empty deploys the dev Redis from knative/dev/redis.yaml in the cluster (no persistence)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "s3_endpoint" {
  description = "S3 endpoint as host[:port], without a scheme (the scheme follows s3_secure), e.g. s3.eu-west-1.amazonaws.com or minio.storage.svc:9000."
  type        = string

  validation {
    condition     = !can(regex("^[a-z]+://", var.s3_endpoint))
    error_message = "s3_endpoint is host[:port]; set the scheme with s3_secure."
  }
}

variable "s3_secure" {
  description = "Whether the S3 endpoint speaks HTTPS."
  type        = bool
  default     = true
}

variable "s3_region" {
  description = "S3 region."
  type        = string
  default     = "us-east-1"
}

variable "s3_bucket" {
  description = "Bucket holding programs and snapshots."
  type        = string
  default     = "machineserver"
}

variable "s3_access_key" {
  description = "S3 access key the components use (and this module, to create the bucket)."
  type        = string
  sensitive   = true
}

variable "s3_secret_key" {
  description = "S3 secret key matching s3_access_key."
  type        = string
  sensitive   = true
}

variable "create_bucket" {
  description = "Create the bucket with the aws provider. Set false when it is managed elsewhere or the endpoint is not reachable from where Terraform runs; the components also create it on start if it is missing."
  type        = bool
  default     = true
}

variable "runner_token" {
  description = "Shared secret between the functions and the runners."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.runner_token) >= 32
    error_message = "runner_token must be at least 32 characters."
  }
}

variable "session_token_secret" {
  description = "Signs the short-lived console and gdb tokens; shared by every function."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.session_token_secret) >= 32
    error_message = "session_token_secret must be at least 32 characters."
  }
}

variable "log_level" {
  description = "slog level of every component: debug, info, warn or error."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warn", "error"], var.log_level)
    error_message = "log_level must be debug, info, warn or error."
  }
}

variable "gateway_name" {
  description = "Gateway API Gateway the public route attaches to."
  type        = string
  default     = "external"
}

variable "gateway_namespace" {
  description = "Namespace of that Gateway."
  type        = string
  default     = "gateway-system"
}
