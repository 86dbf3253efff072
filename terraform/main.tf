provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kubeconfig_context
}

# Only the bucket goes through this provider. The overrides let it talk to
# any S3-compatible store with the components' own keys, without AWS account
# lookups that such stores do not answer.
provider "aws" {
  region                      = var.s3_region
  access_key                  = var.s3_access_key
  secret_key                  = var.s3_secret_key
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true

  endpoints {
    s3 = "${var.s3_secure ? "https" : "http"}://${var.s3_endpoint}"
  }
}

locals {
  # Fixed: the manifests and the in-cluster DNS names they carry use it.
  namespace   = "machineserver"
  knative_dir = "${path.module}/../knative"
  ko          = "ko://github.com/machineserver/machineserver/"

  # Whether a URL was given is not secret, and for_each refuses sensitive
  # values, so this is unmarked.
  in_cluster_redis = nonsensitive(var.redis_url == "")
  redis_url        = local.in_cluster_redis ? "redis://redis.${local.namespace}.svc.cluster.local:6379/0" : var.redis_url

  dev_namespace = yamldecode(file("${local.knative_dir}/dev/namespace.yaml"))
  dev_config    = yamldecode(file("${local.knative_dir}/dev/config.yaml"))

  # Values that differ from the dev ConfigMap. Merged over it, so the keys
  # the manifests reference always exist.
  config_overrides = {
    "s3-endpoint" = var.s3_endpoint
    "s3-bucket"   = var.s3_bucket
    "s3-region"   = var.s3_region
    "s3-secure"   = tostring(var.s3_secure)
    "log-level"   = var.log_level
  }

  # The top-level manifests, plus the dev Redis when no external one is set.
  # The namespace, ConfigMap and Secret of knative/dev are made below instead,
  # from variables.
  manifest_files = concat(
    [for f in sort(fileset(local.knative_dir, "*.yaml")) : "${local.knative_dir}/${f}"],
    local.in_cluster_redis ? ["${local.knative_dir}/dev/redis.yaml"] : [],
  )

  # ko:// references replaced by the pushed images.
  rendered = {
    for f in local.manifest_files : f => replace(replace(replace(replace(replace(file(f),
      "${local.ko}functions/sessions", var.images.sessions),
      "${local.ko}functions/programs", var.images.programs),
      "${local.ko}functions/snapshots", var.images.snapshots),
      "${local.ko}functions/jobs", var.images.jobs),
    "${local.ko}runner", var.images.runner)
  }

  # yamldecode takes one document, so files are split on "---" lines (the
  # manifest test splits the same way). A chunk of only comments decodes to
  # null and is dropped.
  decoded = flatten([
    for f, text in local.rendered : [
      for chunk in split("\n---\n", text) : yamldecode(chunk) if trimspace(chunk) != ""
    ]
  ])
  documents = [for d in local.decoded : d if d != null]

  # The HTTPRoute is applied on its own, with the Gateway from variables.
  manifests = {
    for d in local.documents : "${d.apiVersion}/${d.kind}/${d.metadata.name}" => d
    if d.kind != "HTTPRoute"
  }
  route = one([for d in local.documents : d if d.kind == "HTTPRoute"])
}

resource "kubernetes_namespace_v1" "machineserver" {
  metadata {
    name   = local.namespace
    labels = local.dev_namespace.metadata.labels
  }
}

resource "kubernetes_secret_v1" "machineserver" {
  metadata {
    name      = "machineserver"
    namespace = kubernetes_namespace_v1.machineserver.metadata[0].name
    labels    = { "app.kubernetes.io/part-of" = "machineserver" }
  }

  data = {
    "redis-url"     = local.redis_url
    "s3-access-key" = var.s3_access_key
    "s3-secret-key" = var.s3_secret_key
    "runner-token"  = var.runner_token
    "session-token-secret" = var.session_token_secret
  }
}

resource "kubernetes_config_map_v1" "machineserver" {
  metadata {
    name      = local.dev_config.metadata.name
    namespace = kubernetes_namespace_v1.machineserver.metadata[0].name
    labels    = local.dev_config.metadata.labels
  }

  data = merge(local.dev_config.data, local.config_overrides)
}

resource "aws_s3_bucket" "machineserver" {
  count  = var.create_bucket ? 1 : 0
  bucket = var.s3_bucket
}

resource "kubernetes_manifest" "machineserver" {
  for_each = local.manifests
  manifest = each.value

  lifecycle {
    precondition {
      condition     = !strcontains(jsonencode(each.value), "ko://")
      error_message = "${each.key} still names a ko:// image; add it to var.images and to local.rendered."
    }
  }

  depends_on = [
    kubernetes_secret_v1.machineserver,
    kubernetes_config_map_v1.machineserver,
    aws_s3_bucket.machineserver,
  ]
}

resource "kubernetes_manifest" "route" {
  manifest = merge(local.route, {
    spec = merge(local.route.spec, {
      parentRefs = [{ name = var.gateway_name, namespace = var.gateway_namespace }]
    })
  })

  depends_on = [kubernetes_manifest.machineserver]
}
