// Package terraform owns the Terraform module that provisions Machine Server
// on an existing cluster running Knative: namespace, Secret, ConfigMap, Redis,
// the S3 bucket, and the manifests of ../knative.
//
// There is no Go code to import here: the package exists for its test, which
// checks the module's references to files, variables and manifest keys
// without a terraform binary or providers.
package terraform
