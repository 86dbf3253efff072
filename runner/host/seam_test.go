package host

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The runner drives emulators only through the emulator seam: no QEMU
// monitor commands, flags or socket names in its sources.
func TestNoQEMUInHost(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("sources: %v %v", files, err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, word := range []string{"QMP", "qmp.", "runner/qmp", "runner/qemu", "system_reset", "-kernel", ".sock"} {
			if strings.Contains(string(b), word) {
				t.Errorf("%s names %q: the emulator seam (runner/emulator) is the only way to an emulator", f, word)
			}
		}
	}
}
