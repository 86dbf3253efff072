// Package openapitest reads the OpenAPI document for tests: it lists the
// documented operations, lints the document's structure, and checks real
// requests and answers against it with JSON Schema 2020-12
// (github.com/santhosh-tekuri/jsonschema, which the event schemas' tests
// use too; a full OpenAPI validator would be a new dependency for what these
// few rules cover).
package openapitest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/machineserver/machineserver/shared/openapi"
)

// base is the URL the document is compiled under; nothing is fetched.
const base = "https://machineserver.invalid/openapi.json"

// Methods are the HTTP methods an OpenAPI path item may hold.
var Methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// Doc is a loaded document.
type Doc struct {
	root     map[string]any
	compiler *jsonschema.Compiler
	schemas  map[string]*jsonschema.Schema
	ops      []Operation
}

// Operation is one documented method of one path.
type Operation struct {
	Method string // upper case, as net/http and the route tables spell it
	Path   string // the path template, e.g. /api/v1/sessions/{id}
	ID     string // operationId
	ptr    string // JSON pointer of the operation object
	node   map[string]any
	params []map[string]any // path-level and operation-level, resolved
}

// Load parses a document.
func Load(doc []byte) (*Doc, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, err
	}
	root, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("openapitest: the document is not a JSON object")
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat() // date-time is part of the contract, as for the event schemas
	if err := c.AddResource(base, v); err != nil {
		return nil, err
	}
	d := &Doc{root: root, compiler: c, schemas: map[string]*jsonschema.Schema{}}
	paths, _ := root["paths"].(map[string]any)
	for _, p := range sortedKeys(paths) {
		item, _ := paths[p].(map[string]any)
		for _, m := range Methods {
			op, ok := item[m].(map[string]any)
			if !ok {
				continue
			}
			o := Operation{Method: strings.ToUpper(m), Path: p, ptr: "/paths/" + escape(p) + "/" + m, node: op}
			o.ID, _ = op["operationId"].(string)
			for _, list := range []any{item["parameters"], op["parameters"]} {
				ps, _ := list.([]any)
				for _, x := range ps {
					if pm, ok := d.resolve(x).(map[string]any); ok {
						o.params = append(o.params, pm)
					}
				}
			}
			d.ops = append(d.ops, o)
		}
	}
	return d, nil
}

// Served loads the document the server serves (openapi.Document).
func Served(t testing.TB) *Doc {
	t.Helper()
	b, err := openapi.Document()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Load(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Operations lists every documented operation, by path then method.
func (d *Doc) Operations() []Operation { return d.ops }

// Roles are the role names the operation's security requirements list
// (the scope its route declares), and public is true when it has an empty
// requirement list (no credential needed).
func (o Operation) Roles() (roles []string, public bool) {
	sec, ok := o.node["security"].([]any)
	if ok && len(sec) == 0 {
		return nil, true
	}
	for _, req := range sec {
		m, _ := req.(map[string]any)
		for _, rs := range m {
			list, _ := rs.([]any)
			for _, r := range list {
				if s, _ := r.(string); !slices.Contains(roles, s) {
					roles = append(roles, s)
				}
			}
		}
	}
	return roles, false
}

// Find is the operation that serves method and path: the documented path
// template that matches it with the most literal segments, as net/http's
// ServeMux and OpenAPI both prefer the most specific path.
func (d *Doc) Find(method, path string) (Operation, bool) {
	best, bestLit := Operation{}, -1
	segs := strings.Split(path, "/")
	for _, o := range d.ops {
		if o.Method != method {
			continue
		}
		tsegs := strings.Split(o.Path, "/")
		if len(tsegs) != len(segs) {
			continue
		}
		lit, ok := 0, true
		for i, t := range tsegs {
			switch {
			case isParam(t):
				ok = ok && segs[i] != ""
			case t == segs[i]:
				lit++
			default:
				ok = false
			}
		}
		if ok && lit > bestLit {
			best, bestLit = o, lit
		}
	}
	return best, bestLit >= 0
}

// Properties are the property names of the object schema at ptr (a JSON
// pointer into the document), following $refs to it.
func (d *Doc) Properties(ptr string) ([]string, error) {
	v := d.lookup(ptr)
	for range 8 {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("no schema at %s", ptr)
		}
		if props, ok := m["properties"].(map[string]any); ok {
			return sortedKeys(props), nil
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return nil, fmt.Errorf("the schema at %s has no properties", ptr)
		}
		ptr = strings.TrimPrefix(ref, "#")
		v = d.lookup(ptr)
	}
	return nil, fmt.Errorf("the $refs from %s do not end", ptr)
}

// CheckRequest checks a request the server accepted against its operation:
// every query parameter is documented and valid, path parameters and
// required headers are valid, and the body has a documented media type
// whose schema it matches.
func (d *Doc) CheckRequest(o Operation, r *http.Request, body []byte) error {
	var errs []error
	values := pathValues(o.Path, r.URL.Path)
	query := r.URL.Query()
	for _, p := range o.params {
		name, _ := p["name"].(string)
		in, _ := p["in"].(string)
		var raw []string
		switch in {
		case "path":
			raw = []string{values[name]}
		case "query":
			raw = query[name]
			query.Del(name)
		case "header":
			raw = r.Header.Values(name)
		}
		if len(raw) == 0 {
			if req, _ := p["required"].(bool); req {
				errs = append(errs, fmt.Errorf("%s parameter %s is required", in, name))
			}
			continue
		}
		sch, err := d.schemaOf(p, "schema")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, v := range raw {
			// A parameter is text: valid as a string, or as the number or
			// boolean it reads as.
			if err := sch.Validate(v); err != nil {
				if typed := paramValue(v); typed == v || sch.Validate(typed) != nil {
					errs = append(errs, fmt.Errorf("%s parameter %s=%q: %s", in, name, v, detail(err)))
				}
			}
		}
	}
	for name := range query {
		if name != "token" || !d.tokenInQuery(o) {
			errs = append(errs, fmt.Errorf("query parameter %s is not documented", name))
		}
	}
	rb, _ := d.resolve(o.node["requestBody"]).(map[string]any)
	if rb == nil {
		if len(body) > 0 {
			errs = append(errs, fmt.Errorf("a %d-byte body, but the operation documents none", len(body)))
		}
		return errors.Join(errs...)
	}
	if err := d.checkContent(rb, "/requestBody", r.Header.Get("Content-Type"), body); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CheckResponse checks an answer against its operation: the status is
// documented, required headers are there, and the body has a documented
// media type whose schema it matches (or is empty where none is).
func (d *Doc) CheckResponse(o Operation, status int, h http.Header, body []byte) error {
	responses, _ := o.node["responses"].(map[string]any)
	resp, ok := d.resolve(responses[strconv.Itoa(status)]).(map[string]any)
	if !ok {
		if resp, ok = d.resolve(responses["default"]).(map[string]any); !ok {
			return fmt.Errorf("status %d is not documented (documented: %s)", status, strings.Join(sortedKeys(responses), ", "))
		}
	}
	var errs []error
	headers, _ := resp["headers"].(map[string]any)
	for name, x := range headers {
		hd, _ := d.resolve(x).(map[string]any)
		if req, _ := hd["required"].(bool); req && h.Get(name) == "" {
			errs = append(errs, fmt.Errorf("status %d: header %s is required", status, name))
		}
	}
	if _, has := resp["content"]; !has {
		if len(body) > 0 {
			errs = append(errs, fmt.Errorf("status %d: a %d-byte body, but none is documented", status, len(body)))
		}
		return errors.Join(errs...)
	}
	if err := d.checkContent(resp, fmt.Sprintf("/responses/%d", status), h.Get("Content-Type"), body); err != nil {
		errs = append(errs, fmt.Errorf("status %d: %w", status, err))
	}
	return errors.Join(errs...)
}

// checkContent checks body against the media type of holder's content
// (a request body or a response) that ctype names.
func (d *Doc) checkContent(holder map[string]any, where, ctype string, body []byte) error {
	content, _ := holder["content"].(map[string]any)
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return fmt.Errorf("%s: Content-Type %q: %v", where, ctype, err)
	}
	media, ok := content[mt].(map[string]any)
	if !ok {
		// A range: type/* or */*.
		media, ok = content[mt[:strings.Index(mt+"/", "/")]+"/*"].(map[string]any)
	}
	if !ok {
		media, ok = content["*/*"].(map[string]any)
	}
	if !ok {
		return fmt.Errorf("%s: media type %s is not documented (documented: %s)", where, mt, strings.Join(sortedKeys(content), ", "))
	}
	sch, err := d.schemaOf(media, "schema")
	if err != nil {
		return err
	}
	var inst any
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		if inst, err = jsonschema.UnmarshalJSON(bytes.NewReader(body)); err != nil {
			return fmt.Errorf("%s: %s body is not JSON: %v", where, mt, err)
		}
	case mt == "multipart/form-data":
		// Each part is a property; the schema says which exist and which
		// are required (file contents are strings of any bytes).
		form := map[string]any{}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("%s: multipart body: %v", where, err)
			}
			b, _ := io.ReadAll(p)
			form[p.FormName()] = string(b)
		}
		inst = form
	default:
		inst = string(body)
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("%s (%s): %s", where, mt, detail(err))
	}
	return nil
}

// detail is a validation error with every failed keyword and where it
// failed, not just the top line.
func detail(err error) string {
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		return fmt.Sprintf("%#v", ve)
	}
	return err.Error()
}

// tokenInQuery reports whether one of o's security schemes is a token in
// the query (session tokens, the webhook token).
func (d *Doc) tokenInQuery(o Operation) bool {
	sec, _ := o.node["security"].([]any)
	schemes, _ := d.lookup("/components/securitySchemes").(map[string]any)
	for _, req := range sec {
		m, _ := req.(map[string]any)
		for name := range m {
			s, _ := schemes[name].(map[string]any)
			if s["in"] == "query" && s["name"] == "token" {
				return true
			}
		}
	}
	return false
}

// schemaOf compiles the schema under key of obj, which must be a node of
// the document.
func (d *Doc) schemaOf(obj map[string]any, key string) (*jsonschema.Schema, error) {
	ptr, ok := d.pointerOf(obj)
	if !ok {
		return nil, errors.New("openapitest: schema holder not in the document")
	}
	return d.Compile(ptr + "/" + escape(key))
}

// Compile compiles the schema at a JSON pointer into the document.
func (d *Doc) Compile(ptr string) (*jsonschema.Schema, error) {
	if s, ok := d.schemas[ptr]; ok {
		return s, nil
	}
	s, err := d.compiler.Compile(base + "#" + ptr)
	if err != nil {
		return nil, fmt.Errorf("schema at %s: %w", ptr, err)
	}
	d.schemas[ptr] = s
	return s, nil
}

// pointerOf finds the JSON pointer of node (by identity) in the document.
func (d *Doc) pointerOf(node map[string]any) (string, bool) {
	var find func(v any, ptr string) (string, bool)
	find = func(v any, ptr string) (string, bool) {
		switch v := v.(type) {
		case map[string]any:
			if fmt.Sprintf("%p", v) == fmt.Sprintf("%p", node) {
				return ptr, true
			}
			for _, k := range sortedKeys(v) {
				if p, ok := find(v[k], ptr+"/"+escape(k)); ok {
					return p, true
				}
			}
		case []any:
			for i, x := range v {
				if p, ok := find(x, ptr+"/"+strconv.Itoa(i)); ok {
					return p, true
				}
			}
		}
		return "", false
	}
	return find(d.root, "")
}

// resolve follows a local $ref of a non-schema object (parameter, response,
// request body, header).
func (d *Doc) resolve(v any) any {
	for range 8 {
		m, ok := v.(map[string]any)
		ref, isRef := m["$ref"].(string)
		if !ok || !isRef {
			return v
		}
		v = d.lookup(strings.TrimPrefix(ref, "#"))
	}
	return v
}

// lookup returns the node at a JSON pointer, nil if there is none.
func (d *Doc) lookup(ptr string) any {
	var v any = d.root
	if ptr == "" {
		return v
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch x := v.(type) {
		case map[string]any:
			v = x[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
		if v == nil {
			return nil
		}
	}
	return v
}

// paramValue is a query, path or header value as the number or boolean
// it reads as, else the string.
func paramValue(s string) any {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return json.Number(strconv.FormatInt(n, 10))
	}
	if b, err := strconv.ParseBool(s); err == nil && (s == "true" || s == "false") {
		return b
	}
	return s
}

var paramRe = regexp.MustCompile(`^\{([^{}]+)\}$`)

func isParam(seg string) bool { return paramRe.MatchString(seg) }

// PathParams are the parameter names in a path template, in order.
func PathParams(template string) []string {
	var out []string
	for _, s := range strings.Split(template, "/") {
		if m := paramRe.FindStringSubmatch(s); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

func pathValues(template, path string) map[string]string {
	out := map[string]string{}
	segs := strings.Split(path, "/")
	for i, t := range strings.Split(template, "/") {
		if m := paramRe.FindStringSubmatch(t); m != nil && i < len(segs) {
			out[m[1]], _ = url.PathUnescape(segs[i])
		}
	}
	return out
}

func escape(tok string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(tok)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
