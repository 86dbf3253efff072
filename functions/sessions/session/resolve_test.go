package session

import (
	"errors"
	"github.com/machineserver/machineserver/shared/testenv"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/model"
)

// Without a backend named, the first backend whose catalog has the board
// wins; a named backend that is not offered, or a board no backend has,
// is a 422 that says what is offered.
func TestResolve(t *testing.T) {
	var names []string
	for _, k := range board.Known {
		names = append(names, k.Name)
	}
	caps := board.Build("7.2.0", "q", names, []string{"cortex-m3", "cortex-m4", "sifive-e31", "avr5", "avr51", "avr6"}, nil)
	be, b, err := Resolve(caps, "", model.BoardConfig{Processor: &model.Processor{Model: "atmega328p"}})
	if err != nil || be.Name != "qemu" || b.Name != "arduino-uno" {
		t.Fatalf("atmega328p: %s %s %v", be.Name, b.Name, err)
	}
	_, _, err = Resolve(caps, "renode", model.BoardConfig{Board: "netduino2"})
	if !errors.Is(err, fail.ErrUnprocessable) || !strings.Contains(err.Error(), "available backends: qemu") {
		t.Fatalf("unknown backend: %v", err)
	}
	_, _, err = Resolve(caps, "", model.BoardConfig{Board: "pdp11"})
	if !errors.Is(err, fail.ErrUnprocessable) || !strings.Contains(err.Error(), "sifive_e") {
		t.Fatalf("unknown board: %v", err)
	}
	_, _, err = Resolve(caps, "", model.BoardConfig{Processor: &model.Processor{Model: "cortex-m3"},
		Memory: &model.Memory{Flash: model.Region{Base: 0x08000000, Size: 64 << 20}, RAM: model.Region{Base: 0x20000000, Size: 1}}})
	var fe *fail.Error
	if !errors.As(err, &fe) || fe.Code != "no_matching_board" {
		t.Fatalf("no fit: %v", err)
	}
}

func TestNoTransportImports(t *testing.T) { testenv.NoTransport(t) }
