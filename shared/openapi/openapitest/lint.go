package openapitest

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var (
	versionRe = regexp.MustCompile(`^3\.1\.[0-9]+$`)
	statusRe  = regexp.MustCompile(`^([1-5][0-9][0-9]|[1-5]XX|default)$`)
)

// ErrorSchema is what every 4xx and 5xx answer's JSON must refer to: the
// {"error":{"code","message"}} shape.
const ErrorSchema = "#/components/schemas/Error"

// Lint checks what OpenAPI 3.1 requires of the document's structure and
// what this API promises on top: the version is 3.1, every $ref resolves,
// each path's template parameters and its declared path parameters are the
// same set, operationIds are present and unique, every security requirement
// names a defined scheme, every operation answers something, every error
// answer is the error shape, every schema compiles against JSON Schema
// 2020-12, and every tag used is declared.
func (d *Doc) Lint() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if v, _ := d.root["openapi"].(string); !versionRe.MatchString(v) {
		add("openapi is %q, want 3.1.x", v)
	}
	if info, _ := d.root["info"].(map[string]any); info["title"] == nil || info["version"] == nil {
		add("info needs title and version")
	}
	d.walk(d.root, "", func(ptr string, m map[string]any) {
		ref, ok := m["$ref"].(string)
		if !ok {
			return
		}
		if !strings.HasPrefix(ref, "#/") || d.lookup(strings.TrimPrefix(ref, "#")) == nil {
			add("%s: $ref %q does not resolve within the document", ptr, ref)
		}
	})
	schemes, _ := d.lookup("/components/securitySchemes").(map[string]any)
	checkSecurity := func(where string, v any) {
		reqs, ok := v.([]any)
		if !ok {
			return
		}
		for _, r := range reqs {
			m, _ := r.(map[string]any)
			for name := range m {
				if schemes[name] == nil {
					add("%s: security scheme %q is not defined", where, name)
				}
			}
		}
	}
	checkSecurity("security", d.root["security"])
	var tags []string
	for _, t := range asSlice(d.root["tags"]) {
		if m, ok := t.(map[string]any); ok {
			tags = append(tags, fmt.Sprint(m["name"]))
		}
	}
	ids := map[string]string{}
	for _, o := range d.ops {
		where := o.Method + " " + o.Path
		switch prev, dup := ids[o.ID]; {
		case o.ID == "":
			add("%s: no operationId", where)
		case dup:
			add("%s: operationId %q is also %s's", where, o.ID, prev)
		default:
			ids[o.ID] = where
		}
		declared := map[string]int{}
		for _, p := range o.params {
			if p["in"] != "path" {
				continue
			}
			name, _ := p["name"].(string)
			declared[name]++
			if req, _ := p["required"].(bool); !req {
				add("%s: path parameter %s must be required", where, name)
			}
		}
		inPath := PathParams(o.Path)
		for _, n := range inPath {
			if declared[n] == 0 {
				add("%s: path parameter {%s} is not declared", where, n)
			}
		}
		for n, c := range declared {
			if !slices.Contains(inPath, n) {
				add("%s: path parameter %s is declared but not in the path", where, n)
			}
			if c > 1 {
				add("%s: path parameter %s is declared %d times", where, n, c)
			}
		}
		checkSecurity(where, o.node["security"])
		for _, t := range asSlice(o.node["tags"]) {
			if !slices.Contains(tags, fmt.Sprint(t)) {
				add("%s: tag %v is not declared", where, t)
			}
		}
		responses, _ := o.node["responses"].(map[string]any)
		if len(responses) == 0 {
			add("%s: no responses", where)
		}
		for code, x := range responses {
			if !statusRe.MatchString(code) {
				add("%s: response key %q is not a status code", where, code)
				continue
			}
			n, _ := strconv.Atoi(code)
			if n < 400 {
				continue
			}
			resp, _ := d.resolve(x).(map[string]any)
			content, _ := resp["content"].(map[string]any)
			js, _ := content["application/json"].(map[string]any)
			sch, _ := js["schema"].(map[string]any)
			if len(content) != 1 || sch["$ref"] != ErrorSchema {
				add("%s: the %s answer must be application/json with schema %s", where, code, ErrorSchema)
			}
		}
	}
	// Every schema: the components' and each one an operation uses.
	d.walk(d.root, "", func(ptr string, m map[string]any) {
		if _, ok := m["schema"].(map[string]any); ok && !strings.Contains(ptr, "/components/schemas/") {
			if _, err := d.Compile(ptr + "/schema"); err != nil {
				add("%v", err)
			}
		}
	})
	comps, _ := d.lookup("/components/schemas").(map[string]any)
	for _, name := range sortedKeys(comps) {
		if _, err := d.Compile("/components/schemas/" + escape(name)); err != nil {
			add("%v", err)
		}
	}
	return errs
}

// walk calls fn with every object of the document and its JSON pointer.
func (d *Doc) walk(v any, ptr string, fn func(string, map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(ptr, v)
		for _, k := range sortedKeys(v) {
			d.walk(v[k], ptr+"/"+escape(k), fn)
		}
	case []any:
		for i, x := range v {
			d.walk(x, ptr+"/"+strconv.Itoa(i), fn)
		}
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}
