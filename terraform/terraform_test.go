package terraform_test

import (
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// These checks read the .tf files as text with regular expressions: they are
// not Terraform's parser, its type checking or `terraform validate` (which
// needs the providers). They catch the mistakes a text edit makes: a renamed
// or missing file, an undeclared or unused variable, an undefined local, and
// keys or images that drifted from the manifests in ../knative.

const knativeDir = "../knative"

// hcl returns the .tf files of the module with comments removed.
func hcl(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("*.tf")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no .tf files: %v", err)
	}
	comment := regexp.MustCompile(`(?m)^\s*#.*$`)
	files := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = comment.ReplaceAllString(string(b), "")
	}
	for _, want := range []string{"main.tf", "variables.tf", "outputs.tf", "versions.tf"} {
		if _, ok := files[want]; !ok {
			t.Errorf("missing %s", want)
		}
	}
	return files
}

func all(files map[string]string) string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(files)) {
		b.WriteString(files[p])
	}
	return b.String()
}

// block returns the text of the first `<head> {` block, braces balanced.
func block(t *testing.T, src, head string) string {
	t.Helper()
	i := strings.Index(src, head)
	if i < 0 {
		t.Fatalf("no %q block", head)
	}
	depth := 0
	for j := i; j < len(src); j++ {
		switch src[j] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return src[i : j+1]
			}
		}
	}
	t.Fatalf("%q block is not closed", head)
	return ""
}

func matches(re, src string) []string {
	var out []string
	for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(src, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestReferencedFilesExist(t *testing.T) {
	src := all(hcl(t))
	if !strings.Contains(src, `knative_dir = "${path.module}/../knative"`) {
		t.Fatal(`local.knative_dir must be "${path.module}/../knative"; this test resolves paths against it`)
	}
	paths := matches(`"\$\{local\.knative_dir\}/([^"$]+)"`, src)
	if len(paths) == 0 {
		t.Fatal("no file of knative/ is referenced")
	}
	for _, p := range paths {
		if _, err := os.Stat(filepath.Join(knativeDir, p)); err != nil {
			t.Errorf("referenced file: %v", err)
		}
	}
	for _, glob := range matches(`fileset\(local\.knative_dir,\s*"([^"]+)"\)`, src) {
		if got, _ := filepath.Glob(filepath.Join(knativeDir, glob)); len(got) == 0 {
			t.Errorf("fileset %q matches no file in %s", glob, knativeDir)
		}
	}
}

func TestVariablesDeclaredAndUsed(t *testing.T) {
	files := hcl(t)
	declared := map[string]bool{}
	for _, v := range matches(`(?m)^variable "([a-z0-9_]+)"`, files["variables.tf"]) {
		declared[v] = true
	}
	used := map[string]bool{}
	for p, src := range files {
		if p == "variables.tf" {
			// A variable's own validation refers to it; that is not a use.
			continue
		}
		for _, v := range matches(`\bvar\.([a-z0-9_]+)`, src) {
			used[v] = true
			if !declared[v] {
				t.Errorf("%s uses var.%s, which variables.tf does not declare", p, v)
			}
		}
	}
	for v := range declared {
		if !used[v] {
			t.Errorf("variable %q is declared but never used", v)
		}
	}
	// A validation may only refer to its own variable.
	for _, name := range slices.Sorted(maps.Keys(declared)) {
		for _, v := range matches(`\bvar\.([a-z0-9_]+)`, block(t, files["variables.tf"], `variable "`+name+`"`)) {
			if v != name {
				t.Errorf("variable %q's validation refers to var.%s", name, v)
			}
		}
	}
}

func TestLocalsDefined(t *testing.T) {
	files := hcl(t)
	locals := block(t, files["main.tf"], "locals {")
	defined := map[string]bool{}
	for _, l := range matches(`(?m)^  ([a-z0-9_]+)\s+=`, locals) {
		defined[l] = true
	}
	for p, src := range files {
		for _, l := range matches(`\blocal\.([a-z0-9_]+)`, src) {
			if !defined[l] {
				t.Errorf("%s uses local.%s, which no locals block defines", p, l)
			}
		}
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(knativeDir, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func quotedKeys(body string) []string {
	return matches(`(?m)^\s*"([a-z0-9-]+)"\s*=`, body)
}

// TestKeysMatchManifests keeps the Secret and the ConfigMap made from
// variables in step with the ones the manifests reference by key.
func TestKeysMatchManifests(t *testing.T) {
	src := hcl(t)["main.tf"]

	var secret struct {
		StringData map[string]string `json:"stringData"`
	}
	readYAML(t, "dev/secret.yaml", &secret)
	got := quotedKeys(block(t, block(t, src, `resource "kubernetes_secret_v1"`), "data = {"))
	slices.Sort(got)
	want := slices.Sorted(maps.Keys(secret.StringData))
	if !slices.Equal(got, want) {
		t.Errorf("Secret keys: Terraform sets %v, knative/dev/secret.yaml has %v", got, want)
	}

	var config struct {
		Data map[string]string `json:"data"`
	}
	readYAML(t, "dev/config.yaml", &config)
	overrides := quotedKeys(block(t, src, "config_overrides = {"))
	if len(overrides) == 0 {
		t.Error("config_overrides sets no key")
	}
	for _, k := range overrides {
		if _, ok := config.Data[k]; !ok {
			t.Errorf("config_overrides sets %q, which knative/dev/config.yaml does not have (no manifest reads it)", k)
		}
	}
}

// TestImagesMatchVariable checks each ko:// path in local.rendered is replaced
// by the image named after it, and that var.images declares exactly the
// images used: a function added to one and not the other fails here rather
// than at plan time.
func TestImagesMatchVariable(t *testing.T) {
	files := hcl(t)
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`"\$\{local\.ko\}([^"]+)",\s*var\.images\.([a-z0-9_]+)\)`).FindAllStringSubmatch(files["main.tf"], -1) {
		if path.Base(m[1]) != m[2] {
			t.Errorf("ko://…/%s is replaced by var.images.%s", m[1], m[2])
		}
		used[m[2]] = true
	}
	if len(used) == 0 {
		t.Fatal("local.rendered replaces no ko:// path with var.images")
	}
	declared := map[string]bool{}
	for _, k := range matches(`(?m)^\s*([a-z0-9_]+)\s*=\s*string`, block(t, block(t, files["variables.tf"], `variable "images"`), "object({")) {
		declared[k] = true
	}
	if got, want := slices.Sorted(maps.Keys(declared)), slices.Sorted(maps.Keys(used)); !slices.Equal(got, want) {
		t.Errorf("var.images declares %v, local.rendered uses %v", got, want)
	}
}

// TestManifestsAsTerraformReadsThem splits each applied file the way main.tf
// does (on "\n---\n") and checks that every ko:// image in it is replaced by
// one of var.images.
func TestManifestsAsTerraformReadsThem(t *testing.T) {
	src := hcl(t)["main.tf"]
	replaced := map[string]bool{}
	for _, p := range matches(`"\$\{local\.ko\}([^"]+)"`, src) {
		replaced[p] = true
	}
	files, _ := filepath.Glob(filepath.Join(knativeDir, "*.yaml"))
	files = append(files, filepath.Join(knativeDir, "dev", "redis.yaml"))
	ko := regexp.MustCompile(`ko://github\.com/machineserver/machineserver/(\S+)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, chunk := range strings.Split(string(b), "\n---\n") {
			if strings.TrimSpace(chunk) == "" {
				continue
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(chunk), &head); err != nil || head.Kind == "" || head.APIVersion == "" {
				t.Errorf("%s chunk %d: not one Kubernetes object as Terraform splits it (%v)", f, i, err)
			}
		}
		for _, m := range ko.FindAllStringSubmatch(string(b), -1) {
			if !replaced[m[1]] {
				t.Errorf("%s: image ko://…/%s is not replaced in local.rendered", f, m[1])
			}
		}
	}
}
