package snapshot

import (
	"context"
	"errors"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/fail"
)

// The use cases know no transport: HTTP belongs to the handler package,
// which maps the domain errors to statuses.
func TestNoTransportImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		n++
		pf, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range pf.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			if p == "net/http" || strings.HasPrefix(p, "net/http/") || strings.HasSuffix(p, "/shared/httpapi") {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
	if n == 0 {
		t.Fatal("no source files found")
	}
}

// Refusals are domain errors, whose kind the adapters map.
func TestForkRefusalIsDomainError(t *testing.T) {
	for _, n := range []int{0, MaxFork + 1} {
		_, err := New(Deps{}).Fork(context.Background(), "0123456789abcdef", ForkRequest{Count: n})
		var fe *fail.Error
		if !errors.As(err, &fe) || !errors.Is(err, fail.ErrInvalid) {
			t.Errorf("count %d: %T %v", n, err, err)
		}
	}
}
