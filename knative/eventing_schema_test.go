package knative_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"

	"github.com/machineserver/machineserver/events"
)

// Knative Eventing's types (Broker, Trigger, SinkBinding) are not served by
// a dependency of this module, unlike Serving's, so their SetDefaults and
// Validate cannot run here. Instead each Eventing manifest is validated
// against our own JSON Schema of the resource in schemas/ (written from the
// Eventing v1 API reference for the fields we use), with
// santhosh-tekuri/jsonschema, on top of the strict decoding and reference
// checks in manifests_test.go.

var (
	schemaOnce sync.Once
	schemas    map[string]*jsonschema.Schema
	schemaErr  error
)

func eventingSchemas() (map[string]*jsonschema.Schema, error) {
	schemaOnce.Do(func() {
		c := jsonschema.NewCompiler()
		names, err := filepath.Glob(filepath.Join("schemas", "*.json"))
		if err != nil || len(names) == 0 {
			schemaErr = err
			return
		}
		schemas = map[string]*jsonschema.Schema{}
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				schemaErr = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				schemaErr = err
				return
			}
			url := "https://machineserver.io/schemas/knative/" + filepath.Base(n)
			if schemaErr = c.AddResource(url, doc); schemaErr != nil {
				return
			}
			if schemas[filepath.Base(n)], schemaErr = c.Compile(url); schemaErr != nil {
				return
			}
		}
	})
	return schemas, schemaErr
}

func validateYAML(raw []byte, schema string) error {
	ss, err := eventingSchemas()
	if err != nil {
		return err
	}
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return err
	}
	return ss[schema].Validate(inst)
}

func validateEventing(t *testing.T, d *doc, schema string) {
	t.Helper()
	if err := validateYAML(d.raw, schema); err != nil {
		t.Errorf("%s does not match schemas/%s: %v", d, schema, err)
	}
}

// TestEventingSchemasReject proves the schemas have teeth: each manifest is
// wrong in one way Knative's webhook would refuse.
func TestEventingSchemasReject(t *testing.T) {
	for name, tc := range map[string]struct{ schema, yaml string }{
		"trigger without subscriber": {"trigger.json", `apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: machineserver}
spec: {broker: default, filter: {attributes: {type: x}}}`},
		"trigger filter not a map": {"trigger.json", `apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: machineserver}
spec: {broker: default, filter: {attributes: [type]}, subscriber: {uri: "http://x"}}`},
		"trigger misspelt field": {"trigger.json", `apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: machineserver}
spec: {broker: default, subscribers: {uri: "http://x"}, subscriber: {uri: "http://x"}}`},
		"broker bad backoff policy": {"broker.json", `apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: machineserver}
spec: {delivery: {retry: 3, backoffPolicy: quadratic}}`},
		"broker delay not ISO 8601": {"broker.json", `apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: machineserver}
spec: {delivery: {backoffDelay: 500ms}}`},
		"sinkbinding without sink": {"sinkbinding.json", `apiVersion: sources.knative.dev/v1
kind: SinkBinding
metadata: {name: s, namespace: machineserver}
spec: {subject: {apiVersion: apps/v1, kind: Deployment, name: x}}`},
		"sinkbinding subject name and selector": {"sinkbinding.json", `apiVersion: sources.knative.dev/v1
kind: SinkBinding
metadata: {name: s, namespace: machineserver}
spec: {subject: {apiVersion: apps/v1, kind: Deployment, name: x, selector: {}}, sink: {uri: "http://x"}}`},
		"wrong kind": {"sinkbinding.json", `apiVersion: sources.knative.dev/v1
kind: ApiServerSource
metadata: {name: s, namespace: machineserver}
spec: {subject: {apiVersion: apps/v1, kind: Deployment, name: x}, sink: {uri: "http://x"}}`},
		"no namespace": {"broker.json", `apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
spec: {}`},
	} {
		if err := validateYAML([]byte(tc.yaml), tc.schema); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestTriggerTypesInCatalog checks every Trigger filters on a type the
// events catalog knows, so a renamed type cannot leave a Trigger that never
// fires.
func TestTriggerTypesInCatalog(t *testing.T) {
	n := 0
	for _, d := range loadDocs(t) {
		if d.head.Kind != "Trigger" {
			continue
		}
		var tr trigger
		if !decodeStrict(t, d, &tr) || tr.Spec.Filter == nil {
			t.Errorf("%s: no filter", d)
			continue
		}
		n++
		typ := tr.Spec.Filter.Attributes["type"]
		if _, ok := events.Lookup(typ); !ok {
			t.Errorf("%s: type %q is not in events.Catalog", d, typ)
		}
		if strings.TrimSpace(typ) != typ {
			t.Errorf("%s: type %q has spaces", d, typ)
		}
	}
	if n == 0 {
		t.Fatal("no Trigger found")
	}
}
