package board

import (
	"errors"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/model"
)

func testBackend() Backend {
	var machines []string
	for _, k := range Known {
		machines = append(machines, k.Name)
	}
	return Build("7.2.0", "qemu-system-arm", machines, []string{"cortex-m3", "cortex-m4", "cortex-a9"}, nil).Backends[0]
}

func TestSeedResolvesToNetduino2(t *testing.T) {
	b, err := testBackend().Resolve(model.BoardConfig{
		Processor: &model.Processor{Model: "cortex-m3", Frequency: 72000000},
		Memory:    &model.Memory{Flash: model.Region{Base: 0x08000000, Size: 128 << 10}, RAM: model.Region{Base: 0x20000000, Size: 20 << 10}},
	})
	if err != nil || b.Name != "netduino2" {
		t.Fatalf("got %q, %v", b.Name, err)
	}
}

func TestClosestFitWins(t *testing.T) {
	// 8 KiB RAM at 0x20000000 with flash at 0x08000000 fits both netduino2
	// and the smaller stm32vldiscovery; the smaller one is the closer fit.
	b, err := testBackend().Resolve(model.BoardConfig{
		Processor: &model.Processor{Model: "cortex-m3"},
		Memory:    &model.Memory{Flash: model.Region{Base: 0x08000000, Size: 64 << 10}, RAM: model.Region{Base: 0x20000000, Size: 8 << 10}},
	})
	if err != nil || b.Name != "stm32vldiscovery" {
		t.Fatalf("got %q, %v", b.Name, err)
	}
}

func TestNoFitListsCandidates(t *testing.T) {
	_, err := testBackend().Resolve(model.BoardConfig{
		Processor: &model.Processor{Model: "cortex-m3"},
		Memory:    &model.Memory{Flash: model.Region{Base: 0x08000000, Size: 32 << 20}, RAM: model.Region{Base: 0x20000000, Size: 1024}},
	})
	var nf *NoFitError
	if !errors.As(err, &nf) || len(nf.Candidates) != len(Known) {
		t.Fatalf("want NoFitError with all boards, got %v", err)
	}
	if !strings.Contains(err.Error(), "netduino2 (flash is 0x08000000+0x100000)") {
		t.Fatalf("candidate reason missing: %v", err)
	}
}

func TestResolveErrors(t *testing.T) {
	be := testBackend()
	for _, c := range []struct {
		name string
		cfg  model.BoardConfig
		want string
	}{
		{"unknown board", model.BoardConfig{Board: "pdp11"}, "unknown board"},
		{"cpu mismatch", model.BoardConfig{Board: "netduino2", Processor: &model.Processor{Model: "cortex-m4"}}, "has a cortex-m3"},
		{"nothing", model.BoardConfig{}, "either board or processor"},
		{"no memory", model.BoardConfig{Processor: &model.Processor{Model: "cortex-m3"}}, "memory"},
		{"zero sizes", model.BoardConfig{Processor: &model.Processor{Model: "cortex-m3"}, Memory: &model.Memory{}}, "greater than zero"},
		{"unknown cpu", model.BoardConfig{Processor: &model.Processor{Model: "z80"}, Memory: &model.Memory{Flash: model.Region{Size: 1}, RAM: model.Region{Size: 1}}}, "unknown processor"},
		{"unknown peripheral", model.BoardConfig{Board: "netduino2", Peripherals: []string{"can9"}}, "no peripheral"},
		{"memory outside named board", model.BoardConfig{Board: "lm3s811evb", Memory: &model.Memory{Flash: model.Region{Size: 1 << 20}, RAM: model.Region{Base: 0x20000000, Size: 1}}}, "flash is"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := be.Resolve(c.cfg)
			var ie *InvalidError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want InvalidError containing %q", err, c.want)
			}
		})
	}
}

func TestBuildOffersOnlyWhatTheBinaryHas(t *testing.T) {
	c := Build("7.2.0", "q", []string{"netduino2", "virt"}, []string{"cortex-m3"}, nil)
	be, _ := c.Backend("qemu")
	if len(be.Boards) != 1 || be.Boards[0].Name != "netduino2" {
		t.Fatalf("boards: %v", be.BoardNames())
	}
	// A machine whose CPU the binary lacks is not offered.
	c = Build("7.2.0", "q", []string{"netduinoplus2"}, []string{"cortex-m3"}, nil)
	if be, _ := c.Backend("qemu"); len(be.Boards) != 0 {
		t.Fatalf("boards: %v", be.BoardNames())
	}
}

func TestFits(t *testing.T) {
	b, _ := testBackend().Board("netduino2")
	if err := b.Fits([]model.Segment{{Addr: 0x08000000, Size: 4096}, {Addr: 0, Size: 16}, {Addr: 0x20000000, Size: 128 << 10}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Fits([]model.Segment{{Addr: 0x20000000, Size: 128<<10 + 1}}); err == nil {
		t.Fatal("RAM overflow accepted")
	}
	if err := b.Fits([]model.Segment{{Addr: 0xffffffff, Size: 2}}); err == nil {
		t.Fatal("wrapping segment accepted")
	}
}
