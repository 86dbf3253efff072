// Package knative owns the cluster manifests of Machine Server: the Knative
// Services of the functions, the runner StatefulSet and its headless Service,
// the Eventing Broker, Triggers and SinkBindings, the Gateway API route of the
// public paths, and under dev/ the namespace, configuration, a Secret template
// and the throwaway Redis and S3 for a development cluster.
//
// There is no Go code to import here: the package exists for its test, which
// decodes every manifest strictly and validates it with Knative's and
// Kubernetes' own types, since no cluster is at hand to reject a bad one.
package knative
