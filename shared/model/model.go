package model

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"
)

// State is a session's lifecycle state as the API reports it.
type State string

const (
	StateCreated State = "created"
	StateRunning State = "running"
	StateStopped State = "stopped"
	StateError   State = "error"
)

// Region is a contiguous address range.
type Region struct {
	Base uint64 `json:"base"`
	Size uint64 `json:"size"`
}

// End is the first address past the region.
func (r Region) End() uint64 { return r.Base + r.Size }

// Contains reports whether [addr, addr+size) lies inside r.
func (r Region) Contains(addr, size uint64) bool {
	return addr >= r.Base && addr+size >= addr && addr+size <= r.End()
}

// Memory is the seed's memory map: one flash and one RAM region.
type Memory struct {
	Flash Region `json:"flash"`
	RAM   Region `json:"ram"`
}

// Processor names a CPU model and the frequency the user asked for.
type Processor struct {
	Model     string `json:"model"`
	Frequency uint64 `json:"frequency,omitempty"`
}

// BoardConfig is the seed's board request: either a named board or a processor
// plus memory map that the backend resolves to a real machine.
type BoardConfig struct {
	Board       string     `json:"board,omitempty"`
	Processor   *Processor `json:"processor,omitempty"`
	Memory      *Memory    `json:"memory,omitempty"`
	Peripherals []string   `json:"peripherals,omitempty"`
}

// Session is one emulated machine owned by a user.
type Session struct {
	ID string `json:"id"`
	// Tenant owns the session; no other tenant can see it.
	Tenant      string      `json:"tenant,omitempty"`
	Name        string      `json:"name"`
	Backend     string      `json:"backend"`
	BoardConfig BoardConfig `json:"board_config"`
	// Machine is the emulator machine the board config resolved to.
	Machine string `json:"machine"`
	State   State  `json:"state"`
	Reason  string `json:"reason,omitempty"`
	// EmulatorLog is what the emulator itself printed (never the UART)
	// when it last ended on its own, e.g. QEMU's fatal error and register
	// dump after a guest locked the CPU up; the next power on clears it.
	EmulatorLog []string `json:"emulator_log,omitempty"`
	// Exit is how the emulator last ended, as a value (set with the
	// stopped or error state, cleared at power on): callers decide on it,
	// never on Reason's text.
	Exit      *Exit  `json:"exit,omitempty"`
	ProgramID string `json:"program_id,omitempty"`
	// Warnings are signs, found when the program was loaded, that it was
	// built for another board (QEMU still runs it).
	Warnings []string `json:"warnings,omitempty"`
	RunnerID string   `json:"runner_id,omitempty"`
	// Coverage is on while the session's coverage window is open.
	Coverage bool `json:"coverage,omitempty"`
	// Deterministic runs the emulator on its instruction counter: a run
	// without input is the same every time (capabilities: the board's
	// "deterministic" feature).
	Deterministic bool `json:"deterministic,omitempty"`
	// VirtualTime runs the emulator on its instruction counter with guest
	// time aligned to the host's: the node of a system whose time is
	// "virtual".
	VirtualTime bool `json:"virtual_time,omitempty"`
	// SnapshotID is the snapshot the machine was last restored from.
	SnapshotID string `json:"snapshot_id,omitempty"`
	// Record: every power on records the execution (a new recording each
	// time); RecordingID is the latest.
	Record      bool   `json:"record,omitempty"`
	RecordingID string `json:"recording_id,omitempty"`
	// ReplayOf is the recording a replay session re-runs: its console
	// takes no input and it cannot be reset or snapshotted.
	ReplayOf string `json:"replay_of,omitempty"`
	// SystemID is the system the session is a node of: the system's
	// delete removes it, and it stays on the system's runner.
	SystemID string `json:"system_id,omitempty"`
	// MAC is the address of the node's NIC on its system's Ethernet link;
	// every power on joins it to that link.
	MAC       string     `json:"mac,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	// Limits caps the emulator's CPU and memory; nil means the runner's defaults.
	Limits *Limits `json:"limits,omitempty"`
}

// Limits are per-session resource caps, enforced on the emulator process
// through cgroups by the runner.
type Limits struct {
	// CPUPercent is the share of one core the emulator may use (1-100).
	CPUPercent int `json:"cpu_percent,omitempty"`
	// MemoryMB caps the emulator's memory; exceeding it kills the emulator.
	MemoryMB int `json:"memory_mb,omitempty"`
}

// Format is a firmware image format.
type Format string

const (
	FormatELF Format = "elf"
	FormatBIN Format = "bin"
	FormatHEX Format = "hex"
)

// Formats lists the accepted formats, for error messages.
var Formats = []Format{FormatELF, FormatBIN, FormatHEX}

// Segment is a range of the image that is loaded into target memory.
type Segment struct {
	Addr uint64 `json:"addr"`
	Size uint64 `json:"size"`
}

// Exit is how an emulator ended: Kind is "stopped" (asked to), "status"
// (the firmware ended it with Code, a semihosting exit), "crash" (the
// emulator died of the guest or itself) or "signal" (killed by Signal).
type Exit struct {
	Kind   string `json:"kind"`
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
}

// Program is a stored firmware image and what validation learned about it.
type Program struct {
	ID string `json:"id"`
	// Tenant owns the program; no other tenant can see it.
	Tenant      string    `json:"tenant,omitempty"`
	Name        string    `json:"name"`
	Format      Format    `json:"format"`
	LoadAddress *uint64   `json:"load_address,omitempty"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	Entry       *uint64   `json:"entry,omitempty"`
	Segments    []Segment `json:"segments"`
	// Arch is what an ELF was built for ("arm", "riscv32", "avr"): only
	// boards of that architecture load it. Empty for BIN and HEX images,
	// which say nothing about it.
	Arch      string    `json:"arch,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Bucket and SourceKey name the object a program was registered from
	// by a bucket notification; empty for uploads through the API.
	Bucket    string `json:"bucket,omitempty"`
	SourceKey string `json:"source_key,omitempty"`
	// State is "stored" (usable) or "rejected": the object failed
	// validation, Reason says why, and no image is kept. Manifests written
	// before states existed have none and are stored programs.
	State  string `json:"state,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// ErrNotFound is a record that is not stored (state.ErrNotFound): here so
// that packages below the state layer (auth) can recognise it.
var ErrNotFound = errors.New("state: not found")

// DefaultTenant owns what was stored before tenants existed and what is
// made without authentication.
const DefaultTenant = "default"

// TenantOr is the tenant a stored tenant field names: empty (a record from
// before tenants existed) is DefaultTenant.
func TenantOr(t string) string {
	if t == "" {
		return DefaultTenant
	}
	return t
}

// Program states: only a stored program has an image to load.
const (
	ProgramStored   = "stored"
	ProgramRejected = "rejected"
)

// NewID returns a random 16-hex-digit identifier: short enough for unix
// socket paths, long enough not to collide.
func NewID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// ValidID reports whether s looks like an id from NewID, so ids from URLs can
// be refused before they reach storage or file paths.
func ValidID(s string) bool {
	if len(s) != 16 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Blob keys of a program: the image and its manifest (the program's JSON).
// The manifest is written last, so its presence means the program is whole.
func ProgramImageKey(id string) string    { return "programs/" + id + "/image" }
func ProgramManifestKey(id string) string { return "programs/" + id + "/manifest.json" }

// Snapshot is a saved machine state, stored as an artifact (state blob plus
// manifest) that can be restored into any session on the same board and
// emulator version, or forked into new sessions.
type Snapshot struct {
	ID string `json:"id"`
	// Tenant owns the snapshot; no other tenant can see it.
	Tenant      string `json:"tenant,omitempty"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	SessionID   string `json:"session_id"`
	Backend     string `json:"backend"`
	Machine     string `json:"machine"`
	// EmulatorVersion must match the restoring runner's: migration streams
	// are not portable across QEMU versions.
	EmulatorVersion string `json:"emulator_version"`
	ProgramID       string `json:"program_id"`
	ProgramSHA256   string `json:"program_sha256"`
	Size            int64  `json:"size"`
	SHA256          string `json:"sha256"`
	// ConsoleOffset is the session's console end when the state was taken.
	ConsoleOffset int64  `json:"console_offset"`
	Parent        string `json:"parent,omitempty"`
	// Deterministic is the source session's: the sessions a fork creates
	// run on the same clock.
	Deterministic bool `json:"deterministic,omitempty"`
	// SystemSnapshotID is the system snapshot this node's state belongs
	// to: it is deleted with it, not alone.
	SystemSnapshotID string    `json:"system_snapshot_id,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
}

// Blob keys of a snapshot: the migration stream and its manifest, written last.
func SnapshotStateKey(id string) string    { return "snapshots/" + id + "/state" }
func SnapshotManifestKey(id string) string { return "snapshots/" + id + "/manifest.json" }
