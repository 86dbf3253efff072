package board

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/machineserver/machineserver/shared/model"
)

// UART describes one serial port of a board, in the order QEMU's -serial
// options bind them.
type UART struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	Base uint64 `json:"base"`
	// Port is how the API names it (?port=): uart0 for the first, the
	// console, then uart1... in this order, whatever the board calls it.
	Port string `json:"port"`
}

// Board is one machine an emulator backend can run.
type Board struct {
	Name        string `json:"name"`
	Backend     string `json:"backend"`
	Description string `json:"description"`
	// Arch is the instruction set family ("arm", "riscv32", "avr"): it picks
	// the emulator binary, and an ELF must be built for it.
	Arch string `json:"arch"`
	CPU  string `json:"cpu"`
	// Processors are other names the board's processor answers to in a
	// board_config (the ISA or the MCU part: "rv32imac", "atmega328p").
	Processors []string `json:"processors,omitempty"`
	// Debugger is the GDB client that speaks the board's architecture.
	Debugger string       `json:"debugger"`
	Flash    model.Region `json:"flash"`
	RAM      model.Region `json:"ram"`
	// FlashAlias is where flash is mirrored so the vector table is found at 0.
	FlashAlias *uint64 `json:"flash_alias,omitempty"`
	UARTs      []UART  `json:"uarts"`
	// ResetRestarts: the emulator cannot reset the core in place, so a
	// reset starts the machine afresh (QEMU 7.2's system_reset leaves the
	// AVR core running where it was: its timer counts on, no banner).
	ResetRestarts bool `json:"reset_restarts,omitempty"`
	// Ethernet: the board has a NIC (its network is isolated, see qemu.Config).
	Ethernet    bool     `json:"ethernet,omitempty"`
	Peripherals []string `json:"peripherals"`
	Features    []string `json:"features"`
	// Unsupported says, for each probed feature the board lacks on this
	// emulator (FeatureDeterministic, FeatureRecord, FeatureReverseDebug),
	// why: what the probe saw.
	Unsupported map[string]string `json:"unsupported,omitempty"`
	// Snapshots says whether this emulator saves and restores the board's
	// state, from a probe of the installed binary: the restore must work and
	// the console UART must be among the devices whose state is saved.
	Snapshots bool `json:"snapshots"`
	// SnapshotUnsaved are device types of the board whose state the
	// emulator does not save: a restored machine has them at reset state.
	SnapshotUnsaved []string `json:"snapshot_unsaved,omitempty"`
}

// Probe is what a probe of the emulator found for one board.
type Probe struct {
	// Restores and Unsaved: snapshots (see Board.Snapshots).
	Restores bool
	Unsaved  []string
	// Clock lists the features the board ran with on the instruction
	// counter (FeatureDeterministic, FeatureRecord, FeatureReverseDebug);
	// Missing says why each other one failed.
	Clock   []string
	Missing map[string]string
}

// FeatureCoverage: the board's emulator counts executed code.
const FeatureCoverage = "coverage"

// ClockFeatures are the features the instruction-counter probe decides
// (Probe.Clock); a board that lacks one says why in Unsupported.
var ClockFeatures = []string{FeatureDeterministic, FeatureRecord, FeatureReverseDebug}

// Require is nil if the board offers feature, else an error that says why
// not (what the probe saw), for a 422.
func (b Board) Require(feature string) error {
	if b.Has(feature) {
		return nil
	}
	why := b.Unsupported[feature]
	if why == "" {
		why = "its runner does not offer it"
	}
	return fmt.Errorf("board %s does not support %s: %s", b.Name, feature, why)
}

// Regions are the memory ranges firmware may be loaded into.
func (b Board) Regions() []model.Region {
	r := []model.Region{b.Flash, b.RAM}
	if b.FlashAlias != nil {
		r = append(r, model.Region{Base: *b.FlashAlias, Size: b.Flash.Size})
	}
	return r
}

// Fits reports whether every segment lies inside one of the board's regions.
func (b Board) Fits(segs []model.Segment) error {
	for _, s := range segs {
		ok := false
		for _, r := range b.Regions() {
			if r.Contains(s.Addr, s.Size) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("segment 0x%08x+0x%x is outside %s memory (flash 0x%08x+0x%x, ram 0x%08x+0x%x)",
				s.Addr, s.Size, b.Name, b.Flash.Base, b.Flash.Size, b.RAM.Base, b.RAM.Size)
		}
	}
	return nil
}

// Words reads little-endian 32-bit words an image loads at an address;
// false when the image does not load all of them.
type Words func(addr uint64, n int) ([]uint32, bool)

// BootWarnings lists signs that an image was built for another board,
// without refusing it: QEMU runs what fits, and a user may know better. A
// Cortex-M core of every catalog board reads its initial stack pointer and
// reset vector from address 0 at reset (where boards like netduino2 alias
// their flash), so an image built for another board's memory map tends to
// give a stack outside this board's RAM, or no vector table at all; QEMU
// then dies of a CPU lockup at the first fault. entry is the ELF or HEX
// entry point, nil if the image has none.
func (b Board) BootWarnings(words Words, entry *uint64) []string {
	if b.Arch != ArchARM {
		// Only Cortex-M reads a vector table from address 0; the others
		// start at a fixed reset address the image cannot move.
		return nil
	}
	var warn []string
	add := func(format string, args ...any) {
		warn = append(warn, fmt.Sprintf(format, args...)+"; was the image built for another board?")
	}
	boot := "address 0"
	if b.FlashAlias != nil && *b.FlashAlias == 0 {
		boot = fmt.Sprintf("address 0 (flash 0x%08x aliased)", b.Flash.Base)
	}
	if entry != nil && !b.bootRegion(*entry&^1) {
		add("entry point 0x%08x is outside %s's boot flash at %s", *entry, b.Name, boot)
	}
	vec, ok := b.read(words, 0, 2)
	if !ok {
		add("the image loads no vector table at %s, where %s's core reads its initial stack pointer and reset vector", boot, b.Name)
		return warn
	}
	sp, reset := uint64(vec[0]), uint64(vec[1])
	// The stack is full-descending: the first push writes below sp.
	if sp <= b.RAM.Base || sp > b.RAM.End() {
		add("the vector table's initial stack pointer 0x%08x is outside %s's RAM 0x%08x-0x%08x", sp, b.Name, b.RAM.Base, b.RAM.End())
	}
	if _, ok := b.read(words, reset&^1, 1); reset&1 == 0 || !ok {
		add("the vector table's reset vector 0x%08x is not Thumb code the image loads (the core faults at its first instruction)", reset)
	}
	return warn
}

// bootRegion reports whether addr lies in flash or its alias.
func (b Board) bootRegion(addr uint64) bool {
	if b.Flash.Contains(addr, 1) {
		return true
	}
	return b.FlashAlias != nil && addr >= *b.FlashAlias && addr-*b.FlashAlias < b.Flash.Size
}

// read is words at addr, also through the flash alias: an image linked for
// flash is seen at the alias and the other way round.
func (b Board) read(words Words, addr uint64, n int) ([]uint32, bool) {
	if w, ok := words(addr, n); ok || b.FlashAlias == nil {
		return w, ok
	}
	switch alias := *b.FlashAlias; {
	case addr >= alias && addr-alias < b.Flash.Size:
		return words(addr-alias+b.Flash.Base, n)
	case b.Flash.Contains(addr, 1):
		return words(addr-b.Flash.Base+alias, n)
	}
	return nil, false
}

func addr(v uint64) *uint64 { return &v }

// Architectures of the catalog's boards, as ELF images name them.
const (
	ArchARM     = "arm"
	ArchRISCV32 = "riscv32"
	ArchAVR     = "avr"
)

// debuggers is the GDB client per architecture: Debian's gdb-multiarch has
// no AVR target, gdb-avr has.
var debuggers = map[string]string{ArchARM: "gdb-multiarch", ArchRISCV32: "gdb-multiarch", ArchAVR: "avr-gdb"}

// Processes reports whether model names the board's processor (its CPU or
// one of its other names).
func (b Board) Processes(model string) bool {
	return model == b.CPU || slices.Contains(b.Processors, strings.ToLower(model))
}

// Known is what the project knows about QEMU machines beyond their names:
// memory maps and UARTs are not discoverable from -machine help. A board is
// offered only if the installed binary also lists it (see Capabilities).
// Memory maps are checked against the real binary's `info mtree` in tests.
var Known = []Board{
	{Name: "netduino2", Backend: "qemu", Description: "Netduino 2 (STM32F205RF, Cortex-M3)", CPU: "cortex-m3",
		Flash: model.Region{Base: 0x08000000, Size: 1 << 20}, RAM: model.Region{Base: 0x20000000, Size: 128 << 10},
		FlashAlias: addr(0), UARTs: []UART{{Name: "usart1", Kind: "stm32f2xx-usart", Base: 0x40011000}, {Name: "usart2", Kind: "stm32f2xx-usart", Base: 0x40004400}},
		Peripherals: []string{"usart1", "usart2", "usart3", "usart6", "tim2", "tim3", "tim4", "tim5", "adc1", "spi1", "syscfg"}},
	{Name: "netduinoplus2", Backend: "qemu", Description: "Netduino Plus 2 (STM32F405RG, Cortex-M4)", CPU: "cortex-m4",
		Flash: model.Region{Base: 0x08000000, Size: 1 << 20}, RAM: model.Region{Base: 0x20000000, Size: 192 << 10},
		FlashAlias: addr(0), UARTs: []UART{{Name: "usart1", Kind: "stm32f2xx-usart", Base: 0x40011000}, {Name: "usart2", Kind: "stm32f2xx-usart", Base: 0x40004400}},
		Peripherals: []string{"usart1", "usart2", "usart3", "usart6", "tim2", "tim3", "tim4", "tim5", "adc1", "spi1", "syscfg", "exti"}},
	{Name: "stm32vldiscovery", Backend: "qemu", Description: "ST STM32VLDISCOVERY (STM32F100RB, Cortex-M3)", CPU: "cortex-m3",
		Flash: model.Region{Base: 0x08000000, Size: 128 << 10}, RAM: model.Region{Base: 0x20000000, Size: 8 << 10},
		FlashAlias: addr(0), UARTs: []UART{{Name: "usart1", Kind: "stm32f2xx-usart", Base: 0x40013800}, {Name: "usart2", Kind: "stm32f2xx-usart", Base: 0x40004400}},
		Peripherals: []string{"usart1", "usart2", "usart3"}},
	{Name: "lm3s6965evb", Backend: "qemu", Description: "Stellaris LM3S6965EVB (Cortex-M3)", CPU: "cortex-m3",
		Flash: model.Region{Base: 0, Size: 256 << 10}, RAM: model.Region{Base: 0x20000000, Size: 64 << 10},
		UARTs:       []UART{{Name: "uart0", Kind: "pl011", Base: 0x4000C000}, {Name: "uart1", Kind: "pl011", Base: 0x4000D000}, {Name: "uart2", Kind: "pl011", Base: 0x4000E000}},
		Ethernet:    true,
		Peripherals: []string{"uart0", "uart1", "uart2", "gptm0", "gptm1", "gptm2", "gptm3", "i2c0", "ssi0", "adc", "ethernet"}},
	{Name: "lm3s811evb", Backend: "qemu", Description: "Stellaris LM3S811EVB (Cortex-M3)", CPU: "cortex-m3",
		Flash: model.Region{Base: 0, Size: 64 << 10}, RAM: model.Region{Base: 0x20000000, Size: 8 << 10},
		UARTs:       []UART{{Name: "uart0", Kind: "pl011", Base: 0x4000C000}, {Name: "uart1", Kind: "pl011", Base: 0x4000D000}},
		Peripherals: []string{"uart0", "uart1", "gptm0", "gptm1", "gptm2", "i2c0", "ssi0", "adc"}},
	{Name: "mps2-an385", Backend: "qemu", Description: "ARM MPS2 with AN385 FPGA image (Cortex-M3)", CPU: "cortex-m3",
		Flash: model.Region{Base: 0, Size: 4 << 20}, RAM: model.Region{Base: 0x20000000, Size: 4 << 20},
		UARTs:       []UART{{Name: "uart0", Kind: "cmsdk-apb-uart", Base: 0x40004000}, {Name: "uart1", Kind: "cmsdk-apb-uart", Base: 0x40005000}, {Name: "uart2", Kind: "cmsdk-apb-uart", Base: 0x40006000}},
		Ethernet:    true,
		Peripherals: []string{"uart0", "uart1", "uart2", "uart3", "uart4", "timer0", "timer1", "dualtimer", "watchdog", "scc", "fpgaio", "ethernet"}},
	{Name: "mps2-an386", Backend: "qemu", Description: "ARM MPS2 with AN386 FPGA image (Cortex-M4)", CPU: "cortex-m4",
		Flash: model.Region{Base: 0, Size: 4 << 20}, RAM: model.Region{Base: 0x20000000, Size: 4 << 20},
		UARTs:       []UART{{Name: "uart0", Kind: "cmsdk-apb-uart", Base: 0x40004000}, {Name: "uart1", Kind: "cmsdk-apb-uart", Base: 0x40005000}, {Name: "uart2", Kind: "cmsdk-apb-uart", Base: 0x40006000}},
		Ethernet:    true,
		Peripherals: []string{"uart0", "uart1", "uart2", "uart3", "uart4", "timer0", "timer1", "dualtimer", "watchdog", "scc", "fpgaio", "ethernet"}},
	// RISC-V: the mask ROM jumps to 0x20400000 in the memory-mapped SPI
	// flash (the region is QEMU's 512 MiB XIP window); 16 KiB of DTIM RAM.
	{Name: "sifive_e", Backend: "qemu", Arch: ArchRISCV32, Description: "SiFive HiFive1 (FE310, E31 core, RV32IMAC)", CPU: "sifive-e31",
		Processors: []string{"rv32imac", "fe310", "e31"},
		Flash:      model.Region{Base: 0x20000000, Size: 512 << 20}, RAM: model.Region{Base: 0x80000000, Size: 16 << 10},
		UARTs:       []UART{{Name: "uart0", Kind: "riscv.sifive.uart", Base: 0x10013000}, {Name: "uart1", Kind: "riscv.sifive.uart", Base: 0x10023000}},
		Peripherals: []string{"uart0", "uart1", "clint", "plic", "gpio0", "prci", "pwm0", "aon"}},
	// AVR: flash is the code space from 0; ELF images put SRAM at
	// 0x800000 + its data-space address (the first 0x100 or 0x200 bytes of
	// data space are registers and I/O). USART addresses are data space.
	{Name: "arduino-uno", Backend: "qemu", Arch: ArchAVR, ResetRestarts: true, Description: "Arduino Uno (ATmega328P, AVR5)", CPU: "avr5",
		Processors: []string{"atmega328p", "atmega328"},
		Flash:      model.Region{Base: 0, Size: 32 << 10}, RAM: model.Region{Base: 0x800100, Size: 2 << 10},
		UARTs:       []UART{{Name: "usart0", Kind: "avr-usart", Base: 0xC0}},
		Peripherals: []string{"usart0", "timer0", "timer1", "timer2", "gpio"}},
	{Name: "arduino-mega", Backend: "qemu", Arch: ArchAVR, ResetRestarts: true, Description: "Arduino Mega (ATmega1280, AVR51)", CPU: "avr51",
		Processors: []string{"atmega1280"},
		Flash:      model.Region{Base: 0, Size: 128 << 10}, RAM: model.Region{Base: 0x800200, Size: 8 << 10},
		UARTs: []UART{{Name: "usart0", Kind: "avr-usart", Base: 0xC0}, {Name: "usart1", Kind: "avr-usart", Base: 0xC8}, {Name: "usart2", Kind: "avr-usart", Base: 0xD0},
			{Name: "usart3", Kind: "avr-usart", Base: 0x130}},
		Peripherals: []string{"usart0", "usart1", "usart2", "usart3", "timer0", "timer1", "timer2", "timer3", "timer4", "timer5", "gpio"}},
	{Name: "arduino-mega-2560-v3", Backend: "qemu", Arch: ArchAVR, ResetRestarts: true, Description: "Arduino Mega 2560 (ATmega2560, AVR6)", CPU: "avr6",
		Processors: []string{"atmega2560"},
		Flash:      model.Region{Base: 0, Size: 256 << 10}, RAM: model.Region{Base: 0x800200, Size: 8 << 10},
		UARTs: []UART{{Name: "usart0", Kind: "avr-usart", Base: 0xC0}, {Name: "usart1", Kind: "avr-usart", Base: 0xC8}, {Name: "usart2", Kind: "avr-usart", Base: 0xD0},
			{Name: "usart3", Kind: "avr-usart", Base: 0x130}},
		Peripherals: []string{"usart0", "usart1", "usart2", "usart3", "timer0", "timer1", "timer2", "timer3", "timer4", "timer5", "gpio"}},
}

func init() {
	for i := range Known {
		k := &Known[i]
		if k.Arch == "" {
			k.Arch = ArchARM
		}
		k.Debugger = debuggers[k.Arch]
		for j := range k.UARTs {
			k.UARTs[j].Port = fmt.Sprintf("uart%d", j)
		}
	}
}

// Backend is one emulator backend as discovered on a runner.
type Backend struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Binary  string `json:"binary"`
	// Machines are all machine names the binary lists; Boards are those of them
	// the platform can run (memory map and UARTs known).
	Machines   []string `json:"machines"`
	Processors []string `json:"processors"`
	Boards     []Board  `json:"boards"`
}

// Capabilities is the document GET /api/v1/capabilities returns.
type Capabilities struct {
	Backends    []Backend `json:"backends"`
	Formats     []string  `json:"formats"`
	BusTypes    []string  `json:"bus_types"`
	Features    []string  `json:"features"`
	Peripherals []string  `json:"peripherals"`
	// Limits says which per-session resource limits the runner enforces;
	// nil from a runner that predates them.
	Limits *LimitSupport `json:"limits,omitempty"`
}

// LimitSupport is how a runner caps each emulator: CPU and memory through
// cgroups (Cgroup is "v1", "v2" or "none", with Reason saying why a limit
// is not enforced), and the idle timeout; and how many paused spare
// emulators it keeps at most.
type LimitSupport struct {
	CPU               bool   `json:"cpu"`
	Memory            bool   `json:"memory"`
	Cgroup            string `json:"cgroup"`
	Reason            string `json:"reason,omitempty"`
	DefaultCPUPercent int    `json:"default_cpu_percent,omitempty"`
	DefaultMemoryMB   int    `json:"default_memory_mb,omitempty"`
	// IdleTimeout is how long a running session may go unused; "" is never.
	IdleTimeout string `json:"idle_timeout,omitempty"`
	// Spares is the budget of paused QEMUs kept ready for power on and
	// restore (MS_RUNNER_SPARES; 0 with prelaunch off): past it the least
	// recently used sessions' spares go.
	Spares int `json:"spares"`
}

// Features are what every session offers, whatever the board.
var Features = []string{"power", "reset", "halted-poweron", "console-http", "console-websocket", "gdb", "gdb-websocket", "semihosting-exit"}

// Build makes the capabilities document from what a QEMU binary reported.
// Only boards that the binary lists and whose CPU it knows are offered;
// probes say which of them restore saved state and which run on the
// instruction counter.
func Build(qemuVersion, binary string, machines, cpus []string, probes map[string]Probe) Capabilities {
	b := Backend{Name: "qemu", Version: qemuVersion, Binary: binary, Machines: machines, Processors: cpus}
	for _, k := range Known {
		if !slices.Contains(machines, k.Name) || !slices.Contains(cpus, k.CPU) {
			continue
		}
		k.Features = Features
		if k.Arch == ArchAVR {
			// AVR has no semihosting: firmware cannot end its emulator.
			k.Features = slices.DeleteFunc(slices.Clone(Features), func(f string) bool { return f == "semihosting-exit" })
		}
		if p, ok := probes[k.Name]; ok {
			k.SnapshotUnsaved = p.Unsaved
			if p.Restores && len(k.UARTs) > 0 && !slices.Contains(p.Unsaved, k.UARTs[0].Kind) {
				k.Snapshots = true
				k.Features = append(slices.Clone(k.Features), FeatureSnapshot)
			}
			for _, f := range ClockFeatures {
				if slices.Contains(p.Clock, f) {
					k.Features = append(slices.Clone(k.Features), f)
				} else if why := p.Missing[f]; why != "" {
					if k.Unsupported == nil {
						k.Unsupported = map[string]string{}
					}
					k.Unsupported[f] = why
				}
			}
		}
		b.Boards = append(b.Boards, k)
	}
	return Document(b)
}

// Document makes the capabilities document of the backends a runner
// offers.
func Document(backends ...Backend) Capabilities {
	periph := map[string]bool{}
	for _, b := range backends {
		for _, k := range b.Boards {
			for _, p := range k.Peripherals {
				periph[p] = true
			}
		}
	}
	var ps []string
	for p := range periph {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return Capabilities{
		Backends:    backends,
		Formats:     []string{string(model.FormatELF), string(model.FormatBIN), string(model.FormatHEX)},
		BusTypes:    []string{"uart"},
		Features:    Features,
		Peripherals: ps,
	}
}

// Merge is what a platform of several runners offers: every backend and
// board any of them offers (a board once, as the first runner with it
// describes it). Limits and features are the first document's.
func Merge(docs ...Capabilities) Capabilities {
	if len(docs) == 0 {
		return Capabilities{}
	}
	out := docs[0]
	out.Backends = slices.Clone(out.Backends)
	for _, d := range docs[1:] {
		for _, be := range d.Backends {
			i := slices.IndexFunc(out.Backends, func(o Backend) bool { return o.Name == be.Name })
			if i < 0 {
				out.Backends = append(out.Backends, be)
				continue
			}
			o := &out.Backends[i]
			o.Boards = slices.Clone(o.Boards)
			for _, k := range be.Boards {
				if _, ok := o.Board(k.Name); !ok {
					o.Boards = append(o.Boards, k)
				}
			}
			o.Machines = union(o.Machines, be.Machines)
			o.Processors = union(o.Processors, be.Processors)
		}
		out.Peripherals = union(out.Peripherals, d.Peripherals)
	}
	sort.Strings(out.Peripherals)
	return out
}

func union(a, b []string) []string {
	a = slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	return a
}

// Backend returns the named backend, if the capabilities offer it.
func (c Capabilities) Backend(name string) (Backend, bool) {
	for _, b := range c.Backends {
		if b.Name == name {
			return b, true
		}
	}
	return Backend{}, false
}

// Board returns the named board of a backend.
func (b Backend) Board(name string) (Board, bool) {
	for _, k := range b.Boards {
		if k.Name == name {
			return k, true
		}
	}
	return Board{}, false
}

// BoardsOf lists the backend's boards of one architecture.
func (b Backend) BoardsOf(arch string) []string {
	var n []string
	for _, k := range b.Boards {
		if k.Arch == arch {
			n = append(n, k.Name)
		}
	}
	if len(n) == 0 {
		return []string{"none on this platform"}
	}
	return n
}

// BoardNames lists the backend's boards, for error messages.
func (b Backend) BoardNames() []string {
	var n []string
	for _, k := range b.Boards {
		n = append(n, k.Name)
	}
	return n
}

// NoFitError says that no board matches; Candidates are the boards that were
// considered, each with why it was rejected.
type NoFitError struct {
	Candidates []Candidate
}

// Candidate is a board that did not fit and why.
type Candidate struct {
	Board  string `json:"board"`
	CPU    string `json:"cpu"`
	Reason string `json:"reason"`
}

func (e *NoFitError) Error() string {
	var parts []string
	for _, c := range e.Candidates {
		parts = append(parts, c.Board+" ("+c.Reason+")")
	}
	return "no board matches the requested processor and memory map; candidates: " + strings.Join(parts, "; ")
}

// InvalidError is a board_config that is malformed regardless of the catalog.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

// Resolve picks the machine for a board config. A named board must exist. A
// processor plus memory map resolves to the board whose CPU matches and whose
// flash and RAM contain the requested regions; of several, the one with the
// least memory (the closest fit) wins, then by name, so the answer is stable.
func (b Backend) Resolve(cfg model.BoardConfig) (Board, error) {
	if cfg.Board != "" {
		k, ok := b.Board(cfg.Board)
		if !ok {
			return Board{}, &InvalidError{fmt.Sprintf("unknown board %q; boards of backend %s: %s", cfg.Board, b.Name, strings.Join(b.BoardNames(), ", "))}
		}
		if cfg.Processor != nil && cfg.Processor.Model != "" && !k.Processes(cfg.Processor.Model) {
			return Board{}, &InvalidError{fmt.Sprintf("board %s has a %s, not a %s", k.Name, k.CPU, cfg.Processor.Model)}
		}
		if cfg.Memory != nil {
			if err := fitsMemory(k, *cfg.Memory); err != "" {
				return Board{}, &InvalidError{fmt.Sprintf("board %s: %s", k.Name, err)}
			}
		}
		return k, checkPeripherals(k, cfg.Peripherals)
	}
	if cfg.Processor == nil || cfg.Processor.Model == "" {
		return Board{}, &InvalidError{"board_config needs either board or processor.model (with memory)"}
	}
	// Without a memory map the processor alone decides: of the boards
	// with it, the smallest.
	if cfg.Memory != nil && (cfg.Memory.Flash.Size == 0 || cfg.Memory.RAM.Size == 0) {
		return Board{}, &InvalidError{"board_config.memory.flash.size and memory.ram.size must be greater than zero"}
	}
	if !slices.Contains(b.Processors, cfg.Processor.Model) && !slices.ContainsFunc(b.Boards, func(k Board) bool { return k.Processes(cfg.Processor.Model) }) {
		return Board{}, &InvalidError{fmt.Sprintf("unknown processor %q; processors of backend %s include: %s", cfg.Processor.Model, b.Name, strings.Join(boardCPUs(b), ", "))}
	}
	var fits []Board
	var cands []Candidate
	for _, k := range b.Boards {
		reason := ""
		if !k.Processes(cfg.Processor.Model) {
			reason = "cpu is " + k.CPU
		} else if cfg.Memory != nil {
			reason = fitsMemory(k, *cfg.Memory)
		}
		if reason == "" && checkPeripherals(k, cfg.Peripherals) != nil {
			reason = checkPeripherals(k, cfg.Peripherals).Error()
		}
		if reason != "" {
			cands = append(cands, Candidate{Board: k.Name, CPU: k.CPU, Reason: reason})
			continue
		}
		fits = append(fits, k)
	}
	if len(fits) == 0 {
		return Board{}, &NoFitError{Candidates: cands}
	}
	sort.SliceStable(fits, func(i, j int) bool {
		si, sj := fits[i].Flash.Size+fits[i].RAM.Size, fits[j].Flash.Size+fits[j].RAM.Size
		if si != sj {
			return si < sj
		}
		return fits[i].Name < fits[j].Name
	})
	return fits[0], nil
}

func boardCPUs(b Backend) []string {
	var c []string
	for _, k := range b.Boards {
		for _, p := range append([]string{k.CPU}, k.Processors...) {
			if !slices.Contains(c, p) {
				c = append(c, p)
			}
		}
	}
	return c
}

func fitsMemory(k Board, m model.Memory) string {
	if !k.Flash.Contains(m.Flash.Base, m.Flash.Size) {
		return fmt.Sprintf("flash is 0x%08x+0x%x", k.Flash.Base, k.Flash.Size)
	}
	if !k.RAM.Contains(m.RAM.Base, m.RAM.Size) {
		return fmt.Sprintf("ram is 0x%08x+0x%x", k.RAM.Base, k.RAM.Size)
	}
	return ""
}

func checkPeripherals(k Board, want []string) error {
	for _, p := range want {
		if !slices.Contains(k.Peripherals, strings.ToLower(p)) {
			return &InvalidError{fmt.Sprintf("board %s has no peripheral %q; it has: %s", k.Name, p, strings.Join(k.Peripherals, ", "))}
		}
	}
	return nil
}
