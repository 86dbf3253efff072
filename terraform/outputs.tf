output "namespace" {
  description = "Namespace everything runs in."
  value       = kubernetes_namespace_v1.machineserver.metadata[0].name
}

output "bucket" {
  description = "Bucket the components use."
  value       = var.s3_bucket
}

output "redis_in_cluster" {
  description = "Whether the dev Redis (no persistence) was deployed in the cluster."
  value       = local.in_cluster_redis
}

output "runner_dns" {
  description = "DNS name pattern of the runner pods (headless Service)."
  value       = "<pod>.runner.${local.namespace}.svc.cluster.local:8081"
}

output "manifests" {
  description = "The Kubernetes objects applied from knative/, as apiVersion/kind/name."
  value       = concat(sort(keys(local.manifests)), ["${local.route.apiVersion}/${local.route.kind}/${local.route.metadata.name}"])
}
