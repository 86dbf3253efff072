package testenv

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// NoTransport fails the test if a non-test Go file of the package in the
// working directory imports net/http (or a package under it) or
// shared/httpapi: use cases speak domain errors, and only their adapters
// know HTTP.
func NoTransport(t testing.TB) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range ast.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p == "net/http" || strings.HasPrefix(p, "net/http/") || strings.HasSuffix(p, "/shared/httpapi") {
				t.Errorf("%s imports %s: use cases must not know the transport", f, p)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no Go source in the working directory")
	}
}
