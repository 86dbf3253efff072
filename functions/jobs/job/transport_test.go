package job

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The use cases must stay transport-free: HTTP status codes belong to the
// adapters, which map the domain errors.
func TestNoTransportImports(t *testing.T) {
	files, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range files {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), e.Name(), nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		n++
		for _, im := range f.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			if path == "net/http" || strings.HasSuffix(path, "/shared/httpapi") {
				t.Errorf("%s imports %s; return shared/fail errors instead", e.Name(), path)
			}
		}
	}
	if n == 0 {
		t.Fatal("no source files read")
	}
}
