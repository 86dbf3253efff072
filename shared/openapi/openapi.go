package openapi

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"sync"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// Path is where the document is served.
const Path = "/api/v1/openapi.json"

//go:embed openapi.json
var source []byte

// EventSchemaPrefix starts the components/schemas name of each bundled event
// schema: events.defs for defs.json, events.<type> for a type's schema.
const EventSchemaPrefix = "events."

var document = sync.OnceValues(func() ([]byte, error) { return bundle(source, events.Schemas) })

// Document is the served document: openapi.json with the event schemas
// bundled in.
func Document() ([]byte, error) { return document() }

// Route is GET /api/v1/openapi.json. It is public: the document is the same
// for everyone and holds no tenant's data, and tools (code generators, API
// explorers, a CLI before login) fetch it without a credential.
func Route() httpapi.Route {
	return httpapi.Route{Method: http.MethodGet, Pattern: Path, Scope: httpapi.ScopePublic, Handler: func(w http.ResponseWriter, r *http.Request) {
		b, err := Document()
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	}}
}

// bundle adds every schema of schemas to doc's components/schemas, keeping
// doc's own text and order.
func bundle(doc []byte, schemas fs.FS) ([]byte, error) {
	names, err := fs.Glob(schemas, "*.json")
	if err != nil {
		return nil, err
	}
	var extra []field
	for _, n := range names {
		b, err := fs.ReadFile(schemas, n)
		if err != nil {
			return nil, err
		}
		s, err := decode(b)
		if err != nil {
			return nil, fmt.Errorf("openapi: event schema %s: %w", n, err)
		}
		root, ok := s.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("openapi: event schema %s is not an object", n)
		}
		// Without its $id the schema is no resource of its own, so the
		// rewritten refs resolve against the document.
		delete(root, "$id")
		delete(root, "$schema")
		if err := rewriteRefs(root, n); err != nil {
			return nil, fmt.Errorf("openapi: event schema %s: %w", n, err)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(root); err != nil {
			return nil, err
		}
		extra = append(extra, field{componentName(n), bytes.TrimSpace(buf.Bytes())})
	}
	out, err := edit(doc, func(components []field) ([]field, error) {
		return editField(components, "schemas", func(schemas []field) ([]field, error) {
			for _, e := range extra {
				for _, s := range schemas {
					if s.key == e.key {
						return nil, fmt.Errorf("openapi: components/schemas/%s is reserved for the bundled event schema", e.key)
					}
				}
			}
			return append(schemas, extra...), nil
		})
	})
	if err != nil {
		return nil, err
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "  "); err != nil {
		return nil, err
	}
	pretty.WriteByte('\n')
	return pretty.Bytes(), nil
}

// componentName is the components/schemas name of an event schema file.
func componentName(file string) string {
	return EventSchemaPrefix + strings.TrimSuffix(file, ".json")
}

// rewriteRefs turns the relative $refs of the event schema file (other
// files of the catalog, or pointers into itself) into pointers into the
// document.
func rewriteRefs(v any, file string) error {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if ref, ok := x.(string); ok && k == "$ref" {
				target, frag, _ := strings.Cut(strings.TrimPrefix(ref, events.SchemaBase), "#")
				if target == "" {
					target = file
				}
				if strings.Contains(target, "/") || !strings.HasSuffix(target, ".json") || frag != "" && !strings.HasPrefix(frag, "/") {
					return fmt.Errorf("$ref %q: only catalog files and JSON pointers can be bundled", ref)
				}
				v[k] = "#/components/schemas/" + componentName(target) + frag
				continue
			}
			if err := rewriteRefs(x, file); err != nil {
				return err
			}
		}
	case []any:
		for _, x := range v {
			if err := rewriteRefs(x, file); err != nil {
				return err
			}
		}
	}
	return nil
}

func decode(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// field is one member of a JSON object, kept in its order.
type field struct {
	key string
	val json.RawMessage
}

// fields splits a JSON object into its members, in order.
func fields(b []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("openapi: not a JSON object")
	}
	var out []field
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var f field
		f.key, _ = t.(string)
		if err := dec.Decode(&f.val); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// edit applies fn to the members of the object under "components" of doc.
func edit(doc []byte, fn func([]field) ([]field, error)) ([]byte, error) {
	top, err := fields(doc)
	if err != nil {
		return nil, err
	}
	top, err = editField(top, "components", fn)
	if err != nil {
		return nil, err
	}
	return object(top)
}

// editField replaces the object member key of fs with fn's edit of its members.
func editField(fs []field, key string, fn func([]field) ([]field, error)) ([]field, error) {
	for i, f := range fs {
		if f.key != key {
			continue
		}
		inner, err := fields(f.val)
		if err != nil {
			return nil, fmt.Errorf("openapi: %s: %w", key, err)
		}
		if inner, err = fn(inner); err != nil {
			return nil, err
		}
		if fs[i].val, err = object(inner); err != nil {
			return nil, err
		}
		return fs, nil
	}
	return nil, fmt.Errorf("openapi: the document has no %s object", key)
}

func object(fs []field) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(f.key)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(f.val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
