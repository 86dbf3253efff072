package snapshot

import (
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
)

// A board whose memory windows outgrow the session's memory limit when
// QEMU saves them is refused, saying which limit would do; a session that
// sets that limit is let through.
func TestSnapshotNeedsMemory(t *testing.T) {
	var sifive board.Board
	for _, k := range board.Known {
		if k.Name == "sifive_e" {
			sifive = k
		}
	}
	sifive.Snapshots = true
	caps := board.Capabilities{Backends: []board.Backend{{Name: "qemu", Boards: []board.Board{sifive}}},
		Limits: &board.LimitSupport{Memory: true, DefaultMemoryMB: 256}}
	s := model.Session{Backend: "qemu", Machine: "sifive_e"}
	err := boardSnapshots(caps, s)
	if err == nil || !strings.Contains(err.Error(), "memory limit of 256 MB") || !strings.Contains(err.Error(), "limits.memory_mb of at least 577") {
		t.Fatalf("default limit: %v", err)
	}
	s.Limits = &model.Limits{MemoryMB: 577}
	if err := boardSnapshots(caps, s); err != nil {
		t.Fatalf("with memory_mb 577: %v", err)
	}
	caps.Limits.Memory = false // no memory limit is enforced: nothing to outgrow
	s.Limits = nil
	if err := boardSnapshots(caps, s); err != nil {
		t.Fatalf("unlimited: %v", err)
	}
}
