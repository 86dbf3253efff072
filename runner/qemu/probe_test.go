package qemu

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/board"
)

func knownBoard(t *testing.T, name string) board.Board {
	k, ok := board.Backend{Boards: board.Known}.Board(name)
	if !ok {
		t.Fatalf("no board %s in the catalog", name)
	}
	return k
}

// TestProbeClocks runs boards on the real binaries' instruction counter:
// mps2-an385 records with its initial snapshot (all three features);
// netduino2 records but does not restore, so it cannot run backwards; QEMU
// 7.2's AVR Timer1 cannot be read on the instruction counter, so
// arduino-uno has none, and says why in QEMU's words.
func TestProbeClocks(t *testing.T) {
	ctx := context.Background()
	arm := ProbeClocks(ctx, "/usr/bin/qemu-system-arm", []board.Board{knownBoard(t, "mps2-an385"), knownBoard(t, "netduino2")},
		map[string]bool{"mps2-an385": true}, t.TempDir())
	if got := arm["mps2-an385"]; !slices.Equal(got.Features, board.ClockFeatures) || len(got.Missing) != 0 {
		t.Errorf("mps2-an385: %+v", got)
	}
	nd := arm["netduino2"]
	if !slices.Equal(nd.Features, []string{board.FeatureDeterministic, board.FeatureRecord}) || !strings.Contains(nd.Missing[board.FeatureReverseDebug], "does not restore") {
		t.Errorf("netduino2: %+v", nd)
	}
	avr := ProbeClocks(ctx, "/usr/bin/qemu-system-avr", []board.Board{knownBoard(t, "arduino-uno")}, nil, t.TempDir())["arduino-uno"]
	if len(avr.Features) != 0 || !strings.Contains(avr.Missing[board.FeatureDeterministic], "Bad icount read") ||
		!strings.Contains(avr.Missing[board.FeatureRecord], "Bad icount read") {
		t.Errorf("arduino-uno: %+v", avr)
	}
}

// The capabilities carry the probe: features, and why a feature is missing.
func TestProbeOffersClockFeatures(t *testing.T) {
	be, err := New(Options{Binaries: []string{"qemu-system-arm", "qemu-system-avr"}, CacheDir: t.TempDir()}).Probe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mps, _ := be.Board("mps2-an385")
	uno, _ := be.Board("arduino-uno")
	lm, _ := be.Board("lm3s6965evb")
	for _, f := range board.ClockFeatures {
		if !mps.Has(f) || uno.Has(f) {
			t.Errorf("%s: mps2-an385 %v, arduino-uno %v", f, mps.Features, uno.Features)
		}
	}
	if err := uno.Require(board.FeatureDeterministic); err == nil || !strings.Contains(err.Error(), "Bad icount read") {
		t.Errorf("arduino-uno deterministic: %v", err)
	}
	if !lm.Has(board.FeatureRecord) || lm.Has(board.FeatureReverseDebug) || !strings.Contains(lm.Unsupported[board.FeatureReverseDebug], "snapshot") {
		t.Errorf("lm3s6965evb: %v %v", lm.Features, lm.Unsupported)
	}
}
