package host

import (
	"strings"
	"testing"

	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// A real QEMU started halted prints nothing until it is resumed (QMP
// cont), then boots; a second cont changes nothing.
func TestResumeRealQEMU(t *testing.T) {
	g := newRigOn(t, qemu.New(qemu.Options{Binaries: []string{"qemu-system-arm"}}), nil)
	g.session(t, "h")
	req := runnerapi.StartRequest{Machine: "mps2-an385", Program: g.qemuProgram(t, "fw.elf"), Halted: true}
	if st, err := g.r.Start(t.Context(), "h", req); err != nil || !st.Running {
		t.Fatalf("halted start: %+v %v", st, err)
	}
	s, _ := g.r.slot("h", false)
	if n := s.ring.End(); n != 0 {
		t.Fatalf("a halted guest printed %d bytes", n)
	}
	for range 2 {
		if err := g.r.Resume(t.Context(), "h"); err != nil {
			t.Fatal(err)
		}
	}
	g.waitOutput(t, "h", "", "MS-TEST-FW mps2-an385 ready")
	if err := g.r.Input("h", "", []byte("count\r")); err != nil {
		t.Fatal(err)
	}
	g.waitOutput(t, "h", "", "count=")
	data, _, _ := s.ring.Read(0, 0)
	if n := strings.Count(string(data), "MS-TEST-FW"); n != 1 {
		t.Fatalf("%d banners after two resumes: %q", n, data)
	}
}
