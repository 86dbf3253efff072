package board

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/fwimage"
	"github.com/machineserver/machineserver/shared/model"
)

func testBackend() Backend {
	var machines []string
	for _, k := range Known {
		machines = append(machines, k.Name)
	}
	return Build("7.2.0", "qemu-system-arm", machines, []string{"cortex-m3", "cortex-m4", "cortex-a9", "sifive-e31", "avr5", "avr51", "avr6"}, nil).Backends[0]
}

// A processor alone, by its CPU, ISA or MCU name, resolves to the
// smallest board that has it.
func TestProcessorAloneResolves(t *testing.T) {
	for model_, want := range map[string]string{
		"rv32imac": "sifive_e", "sifive-e31": "sifive_e", "atmega328p": "arduino-uno", "ATmega328P": "arduino-uno",
		"atmega1280": "arduino-mega", "atmega2560": "arduino-mega-2560-v3", "avr6": "arduino-mega-2560-v3",
		"cortex-m3": "lm3s811evb",
	} {
		b, err := testBackend().Resolve(model.BoardConfig{Processor: &model.Processor{Model: model_}})
		if err != nil || b.Name != want {
			t.Errorf("processor %s: got %q, %v; want %s", model_, b.Name, err, want)
		}
	}
	b, err := testBackend().Resolve(model.BoardConfig{Board: "arduino-uno", Processor: &model.Processor{Model: "atmega328p"}})
	if err != nil || b.Arch != ArchAVR || b.Debugger != "avr-gdb" || slices.Contains(b.Features, "semihosting-exit") {
		t.Errorf("arduino-uno by name and MCU: %+v, %v", b, err)
	}
	if _, err := testBackend().Resolve(model.BoardConfig{Board: "arduino-uno", Processor: &model.Processor{Model: "atmega2560"}}); err == nil {
		t.Error("arduino-uno accepted an atmega2560")
	}
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

// Each test firmware boots its own board without a warning, and the
// mps2-an385 image, which fits netduino2's memory map through the flash
// alias, is named as built for another board by its stack pointer.
func TestBootWarningsOfRealImages(t *testing.T) {
	dir := os.Getenv("MS_TEST_FIRMWARE_DIR")
	if dir == "" {
		dir = "../../build/firmware"
	}
	open := func(board, file string) fwimage.Image {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, board, file))
		if err != nil {
			t.Fatalf("test firmware missing (run make firmware): %v", err)
		}
		format := model.Format(strings.TrimPrefix(filepath.Ext(file), "."))
		var at *uint64
		if format == model.FormatBIN {
			k, _ := testBackend().Board(board)
			at = &k.Flash.Base
		}
		im, err := fwimage.Open(format, data, at)
		if err != nil {
			t.Fatal(err)
		}
		return im
	}
	be := testBackend()
	for _, name := range []string{"netduino2", "mps2-an385", "lm3s6965evb"} {
		b, _ := be.Board(name)
		for _, file := range []string{"fw.elf", "fw.bin", "fw.hex"} {
			im := open(name, file)
			if w := b.BootWarnings(im.Words, im.Entry); w != nil {
				t.Errorf("%s/%s on its own board: %q", name, file, w)
			}
		}
	}
	netduino2, _ := be.Board("netduino2")
	im := open("mps2-an385", "fw.elf")
	if err := netduino2.Fits(im.Segments); err != nil {
		t.Fatalf("the wrong-board case needs an image that fits: %v", err)
	}
	w := netduino2.BootWarnings(im.Words, im.Entry)
	if len(w) != 1 || !strings.Contains(w[0], "initial stack pointer 0x20400000 is outside netduino2's RAM 0x20000000-0x20020000") {
		t.Fatalf("mps2-an385 image on netduino2: %q", w)
	}
}

// The vector table is read through the flash alias both ways, and each
// sign of another board's image is named.
func TestBootWarnings(t *testing.T) {
	netduino2, _ := testBackend().Board("netduino2")
	image := func(at uint64, words ...uint32) Words {
		return func(addr uint64, n int) ([]uint32, bool) {
			i := int(addr-at) / 4
			if addr < at || i+n > len(words) {
				return nil, false
			}
			return words[i : i+n], true
		}
	}
	entry := func(v uint64) *uint64 { return &v }
	for _, tc := range []struct {
		name  string
		words Words
		entry *uint64
		want  []string
	}{
		{"linked for flash", image(0x08000000, 0x20020000, 0x08000009, 0), entry(0x08000009), nil},
		{"linked for the alias", image(0, 0x20001000, 0x00000009, 0), entry(0x9), nil},
		{"nothing at the boot address", image(0x20000000, 0x20001000, 0x20000009), entry(0x20000009),
			[]string{"entry point 0x20000009 is outside", "loads no vector table at address 0 (flash 0x08000000 aliased)"}},
		{"stack below RAM", image(0x08000000, 0x20000000, 0x08000009, 0), nil, []string{"initial stack pointer 0x20000000"}},
		{"ARM-state reset vector", image(0x08000000, 0x20020000, 0x08000008, 0), nil, []string{"reset vector 0x08000008"}},
		{"reset vector outside the image", image(0x08000000, 0x20020000, 0x08040001, 0), nil, []string{"reset vector 0x08040001"}},
	} {
		got := netduino2.BootWarnings(tc.words, tc.entry)
		if len(got) != len(tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i], w) || !strings.HasSuffix(got[i], "another board?") {
				t.Errorf("%s: %q, want %q", tc.name, got[i], w)
			}
		}
	}
}

// Two runners, one with only the ARM binary and one with only AVR: the
// platform offers the boards of both, each once.
func TestMerge(t *testing.T) {
	arm := Build("7.2.0", "qemu-system-arm", []string{"netduino2", "mps2-an385"}, []string{"cortex-m3"}, nil)
	avr := Build("7.2.0", "qemu-system-avr", []string{"arduino-uno", "netduino2"}, []string{"avr5", "cortex-m3"}, nil)
	m := Merge(arm, avr)
	be, _ := m.Backend("qemu")
	if got := be.BoardNames(); !slices.Equal(got, []string{"netduino2", "mps2-an385", "arduino-uno"}) {
		t.Fatalf("boards %v", got)
	}
	if !slices.Contains(be.Processors, "avr5") || !slices.Contains(m.Peripherals, "usart0") || !slices.Contains(m.Peripherals, "usart1") {
		t.Fatalf("processors %v peripherals %v", be.Processors, m.Peripherals)
	}
	if a, _ := arm.Backend("qemu"); len(a.Boards) != 2 {
		t.Fatalf("Merge changed its first argument: %v", a.BoardNames())
	}
}
