package fwimage

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/machineserver/machineserver/shared/model"
)

// toolchainSource has what matters for ELF vs HEX: a vector table, code and
// read-only data in flash, initialised .data linked for RAM but stored in
// flash (VMA != LMA), and .bss.
const toolchainSource = `
extern unsigned long _sidata, _sdata, _edata, _sbss, _ebss, _estack;
volatile unsigned int counter = 42;
static unsigned int zeroed[16];
const char msg[] = "hello from fwimage\n";
int main(void);
void Reset_Handler(void) {
	unsigned long *src = &_sidata, *dst = &_sdata;
	while (dst < &_edata) *dst++ = *src++;
	for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
	main();
	for (;;) {}
}
__attribute__((section(".isr_vector"), used))
const void *vectors[] = { &_estack, Reset_Handler };
int main(void) {
	volatile unsigned int *dr = (unsigned int *)0x40011004;
	for (const char *p = msg; *p; p++) { *dr = *p; zeroed[counter & 15] += *p; }
	return 0;
}
`

const toolchainLinkerScript = `
MEMORY {
  FLASH (rx) : ORIGIN = 0x%08X, LENGTH = 1024K
  RAM (rwx)  : ORIGIN = 0x20000000, LENGTH = 128K
}
ENTRY(Reset_Handler)
_estack = ORIGIN(RAM) + LENGTH(RAM);
SECTIONS {
  .isr_vector : { KEEP(*(.isr_vector)) } > FLASH
  .text : { *(.text*) *(.rodata*) . = ALIGN(4); } > FLASH
  _sidata = LOADADDR(.data);
  .data : { _sdata = .; *(.data*) . = ALIGN(4); _edata = .; } > RAM AT > FLASH
  .bss : { _sbss = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; } > RAM
}
`

// run runs a toolchain command, failing the test with a hint when the tool is
// not installed.
func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not found (apt-get install gcc-arm-none-eabi): %v", name, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The ELF, the HEX and the BIN that arm-none-eabi-objcopy makes from it must
// describe the same bytes at the same addresses.
func TestToolchainImagesAgree(t *testing.T) {
	for _, flash := range []uint64{0x08000000, 0} {
		t.Run(fmt.Sprintf("flash at 0x%08X", flash), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "fw.c"), []byte(toolchainSource), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "fw.ld"), fmt.Appendf(nil, toolchainLinkerScript, flash), 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, dir, "arm-none-eabi-gcc", "-mcpu=cortex-m3", "-mthumb", "-g", "-O1", "-nostdlib", "-ffreestanding",
				"-T", "fw.ld", "-o", "fw.elf", "fw.c")
			run(t, dir, "arm-none-eabi-objcopy", "-O", "ihex", "fw.elf", "fw.hex")
			run(t, dir, "arm-none-eabi-objcopy", "-O", "binary", "fw.elf", "fw.bin")
			run(t, dir, "arm-none-eabi-strip", "-o", "stripped.elf", "fw.elf")

			info := checkImagesAgree(t, readFile(t, filepath.Join(dir, "fw.elf")),
				readFile(t, filepath.Join(dir, "fw.hex")), readFile(t, filepath.Join(dir, "fw.bin")))
			// One range: vectors, .text, .rodata and .data's initial values
			// back to back in flash; nothing in RAM (.bss is not loaded).
			if len(info.Segments) != 1 || info.Segments[0].Addr != flash {
				t.Errorf("segments = %s, want one range at 0x%08X", fmtSegments(info.Segments), flash)
			}
			if *info.Entry&1 != 1 {
				t.Errorf("entry 0x%X has no Thumb bit", *info.Entry)
			}
			if !info.HasDebugInfo || info.Symbols < 2 {
				t.Errorf("built with -g and two functions: HasDebugInfo=%v Symbols=%d", info.HasDebugInfo, info.Symbols)
			}

			stripped, err := Parse(model.FormatELF, readFile(t, filepath.Join(dir, "stripped.elf")), nil)
			if err != nil {
				t.Fatal(err)
			}
			if stripped.HasDebugInfo || stripped.Symbols != 0 {
				t.Errorf("stripped: HasDebugInfo=%v Symbols=%d", stripped.HasDebugInfo, stripped.Symbols)
			}
			wantSegments(t, stripped.Segments, info.Segments)
		})
	}
}

// The project's own test firmware (make firmware) must validate, and its ELF,
// HEX and BIN must agree.
func TestRealFirmware(t *testing.T) {
	dir := os.Getenv("MS_TEST_FIRMWARE_DIR")
	if dir == "" {
		dir = filepath.Join(moduleRoot(t), "build", "firmware")
	}
	for _, board := range []string{"netduino2", "mps2-an385"} {
		t.Run(board, func(t *testing.T) {
			var images [3][]byte
			for i, name := range []string{"fw.elf", "fw.hex", "fw.bin"} {
				path := filepath.Join(dir, board, name)
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("test firmware %s is missing: run make firmware (or set MS_TEST_FIRMWARE_DIR): %v", path, err)
				}
				images[i] = b
			}
			info := checkImagesAgree(t, images[0], images[1], images[2])
			if info.Symbols == 0 {
				t.Errorf("%s/fw.elf has no function symbols", board)
			}
		})
	}
}

// checkImagesAgree parses the three forms of one program and compares what
// they load: ELF and HEX the same ranges, bytes and entry; the BIN, placed at
// the lowest ELF address, the same bytes with gaps zero-filled (objcopy -O
// binary fills them so).
func checkImagesAgree(t *testing.T, elfData, hexData, binData []byte) Info {
	t.Helper()
	info, err := Parse(model.FormatELF, elfData, nil)
	if err != nil {
		t.Fatalf("ELF: %v", err)
	}
	hexInfo, err := Parse(model.FormatHEX, hexData, nil)
	if err != nil {
		t.Fatalf("HEX: %v", err)
	}
	wantSegments(t, hexInfo.Segments, info.Segments)
	if info.Entry == nil || hexInfo.Entry == nil || *info.Entry != *hexInfo.Entry {
		t.Errorf("entry: ELF %v, HEX %v", info.Entry, hexInfo.Entry)
	}
	_, elfBlocks, _ := parseELF(elfData)
	_, hexBlocks, _ := parseHEX(hexData)
	if !slices.EqualFunc(elfBlocks, hexBlocks, func(a, b block) bool { return a.addr == b.addr && bytes.Equal(a.data, b.data) }) {
		t.Error("ELF and HEX load different bytes")
	}

	base := info.Segments[0].Addr
	binInfo, err := Parse(model.FormatBIN, binData, &base)
	if err != nil {
		t.Fatalf("BIN: %v", err)
	}
	if !bytes.Equal(binData, flatten(elfBlocks)) {
		t.Errorf("BIN (%d bytes) is not the ELF's bytes from 0x%08X", len(binData), base)
	}
	if binInfo.Relocatable {
		t.Error("BIN with a load address is relocatable")
	}
	return info
}

// flatten lays blocks out from the first one's address, gaps zero-filled.
func flatten(blocks []block) []byte {
	last := blocks[len(blocks)-1]
	out := make([]byte, last.end()-blocks[0].addr)
	for _, b := range blocks {
		copy(out[b.addr-blocks[0].addr:], b.data)
	}
	return out
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
