package host

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// qemuProgram stores a test firmware image of mps2-an385 as a program.
func (g *rig) qemuProgram(t testing.TB, name string) runnerapi.Program {
	t.Helper()
	dir := os.Getenv("MS_TEST_FIRMWARE_DIR")
	if dir == "" {
		dir = "../../build/firmware"
	}
	b, err := os.ReadFile(filepath.Join(dir, "mps2-an385", name))
	if err != nil {
		t.Fatalf("test firmware missing (run make firmware, or set MS_TEST_FIRMWARE_DIR): %v", err)
	}
	sum := sha256.Sum256(b)
	p := runnerapi.Program{ID: name, BlobKey: "programs/" + name, SHA256: hex.EncodeToString(sum[:]), Format: model.FormatELF}
	if err := g.blobs.Put(t.Context(), p.BlobKey, bytes.NewReader(b), int64(len(b)), "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
	return p
}

// Two real mps2-an385 sessions, started with linked NICs and put on a
// segment: ethping finds ethpong and their round trips cross it; down
// makes the firmware's timeout path print; up resumes; the pcap holds
// their frames.
func TestSegmentRealQEMU(t *testing.T) {
	g := newRigOn(t, qemu.New(qemu.Options{Binaries: []string{"qemu-system-arm"}}), nil)
	ids := map[string]string{"ethpong.elf": "pong", "ethping.elf": "ping"}
	for i, fw := range []string{"ethpong.elf", "ethping.elf"} {
		g.session(t, ids[fw])
		req := runnerapi.StartRequest{Machine: "mps2-an385", Program: g.qemuProgram(t, fw), NIC: &runnerapi.NIC{MAC: "02:00:00:00:00:3" + string(rune('0'+i))}}
		if _, err := g.r.Start(t.Context(), ids[fw], req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.r.PutSegment(segID, runnerapi.SegmentRequest{Members: []string{"ping", "pong"}}); err != nil {
		t.Fatal(err)
	}
	// ethping repeats its hello until a peer answers, so it finds
	// ethpong though both booted before the segment was put.
	g.waitOutput(t, "ping", "", "rtt ")
	s, err := g.r.slot("ping", false)
	if err != nil {
		t.Fatal(err)
	}
	mark := s.ring.End()
	if _, err := g.r.SetSegmentFaults(segID, runnerapi.LinkFaults{Down: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ethping times out once the segment is down", func() bool {
		out, _, _ := s.ring.Read(mark, 0)
		return bytes.Contains(out, []byte("timeout "))
	})
	var pcap bytes.Buffer
	if err := g.r.SegmentPcap(segID, &pcap); err != nil || pcap.Len() < 24+2*(16+60) {
		t.Fatalf("pcap of %d bytes: %v", pcap.Len(), err)
	}
	if err := g.r.DeleteSegment(segID); err != nil {
		t.Fatal(err)
	}
}
