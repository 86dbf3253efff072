package emulator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"time"

	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/model"
)

// Backend is one kind of emulator installed on a runner (the model is
// nomad's driver plugin: fingerprint, start, recover).
type Backend interface {
	// Name is the backend's name in board configs and capabilities
	// ("qemu").
	Name() string
	// Probe asks the installed binaries what they offer: the boards this
	// runner can run, with their ports and features.
	Probe(ctx context.Context) (board.Backend, error)
	// Launch starts a machine paused: no guest instruction runs before
	// Resume (or a restore). ctx bounds only the start-up; the machine
	// outlives it.
	Launch(ctx context.Context, spec Spec) (Machine, error)
	// Reap ends what an earlier incarnation of the runner left in dir
	// (after a crash) and says whether it found anything.
	Reap(dir string) bool
}

// Spec is what a machine is launched with.
type Spec struct {
	Board    board.Board
	Firmware Firmware
	// Dir is the machine's own directory (sockets, pid file); the backend
	// may put anything there and the caller removes it after the exit.
	Dir string
	// Incoming launches a restore target: it waits for a state stream
	// instead of booting the firmware.
	Incoming bool
	// Coverage asks the backend to count executed code from the first
	// instruction (the result is read through Counter).
	Coverage bool
	// Deterministic runs the guest on the emulator's instruction counter
	// instead of the host clock, and idle time passes at once: the same
	// firmware given no input (or input at the same guest instants) makes
	// the same execution, run after run.
	Deterministic bool
	// VirtualTime runs the guest on the emulator's instruction counter
	// with its clock held to the host's: a guest is never let ahead of
	// host time, and idle time passes as on the host. Guest time then
	// follows executed instructions (a busy loop takes the same guest
	// time on any host) while machines started together keep one time
	// base, which is what the nodes of a system need to keep their
	// timeouts meaningful to each other. Deterministic wins when both
	// are set.
	VirtualTime bool
	// Record, when set, is a directory the backend writes a recording of
	// the whole execution into (its own files: the caller stores the
	// directory as it is once the machine has exited).
	Record string
	// Replay, when set, is a directory holding a recording made with
	// Record for the same board and firmware: the machine re-runs that
	// execution, with the recorded input (input sent now is ignored).
	Replay string
	// Started runs with the process id right after exec, before the guest
	// can run: the runner puts the process into its cgroup there.
	Started func(pid int) error
	// NIC, on a board with Ethernet, links its NIC to a network the
	// runner owns instead of isolating it: the machine is then Wired.
	NIC *NIC
}

// NIC is a linked NIC's settings.
type NIC struct {
	// MAC must be unicast and unique on the network (ValidMAC).
	MAC string
}

// macPattern is a unicast MAC (the first octet's low bit clear) in
// lowercase hex, as QEMU takes it.
var macPattern = regexp.MustCompile(`^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$`)

// ValidMAC reports whether s can be a NIC's address: unicast, lowercase
// hex, colon-separated ("02:00:00:00:00:01").
func ValidMAC(s string) bool { return macPattern.MatchString(s) }

// Wired is a machine launched with Spec.NIC.
type Wired interface {
	// NIC carries the NIC's Ethernet frames, each a 4-byte big-endian
	// length and the frame without FCS (QEMU's stream netdev framing,
	// which runner/link.Switch speaks).
	NIC() net.Conn
}

// Firmware is the image a machine loads.
type Firmware struct {
	Path        string
	Format      model.Format
	LoadAddress uint64
}

// Machine is one launched emulator instance. Every method is safe for
// concurrent use.
type Machine interface {
	// Resume lets the guest run; Pause stops it where it is.
	Resume(ctx context.Context) error
	Pause(ctx context.Context) error
	// Reset restarts the guest from its reset vector with the firmware
	// reloaded, as a board's reset button does.
	Reset(ctx context.Context) error
	// Stop asks the emulator to quit, waits up to grace, then signals and
	// finally kills it; it returns when the emulator is gone.
	Stop(grace time.Duration)
	// Kill ends the emulator at once (the whole process group).
	Kill()
	// Done is closed when the emulator has exited; Exit then says how.
	Done() <-chan struct{}
	Exit() Exit
	// Ports are the machine's connections by name ("uart0".."uartN"), in
	// the board's order; the first UART is the console.
	Ports() map[string]net.Conn
	// DebugStub is the address of the machine's GDB remote stub ("unix"
	// socket path), "" if it has none.
	DebugStub() string
	// Usage is CPU time used and resident memory now.
	Usage() (cpu time.Duration, rss int64)
	// Pid is the emulator process's id.
	Pid() int
	// Dir is the machine's directory (Spec.Dir).
	Dir() string
}

// UARTPort names a board's i-th UART among a Machine's Ports ("uart0"
// for the first, in the catalog's order), whatever the board's manual
// calls it, so every backend's console is "uart0".
func UARTPort(i int) string { return fmt.Sprintf("uart%d", i) }

// Snapshotter is a Machine whose full state can be saved and restored.
type Snapshotter interface {
	// SaveTo pauses the guest, streams its state to w, calls commit (with
	// the guest still paused, for at most a grace the backend documents),
	// and resumes it; resumed carries the outcome of the resume.
	SaveTo(ctx context.Context, w io.Writer, paused func(), commit func(error) error) (resumed <-chan error, err error)
	// RestoreFrom feeds a state to a machine launched with Incoming; the
	// guest is left paused.
	RestoreFrom(ctx context.Context, r io.Reader) error
}

// Counter is a Machine launched with Spec.Coverage: it counts executed
// code from its first instruction.
type Counter interface {
	// Counts flushes and returns what the machine has counted so far; after
	// the exit, what it counted in all.
	Counts(ctx context.Context) (coverage.Counts, error)
}

// ExitKind says how a machine ended.
type ExitKind string

const (
	// ExitRunning: the machine has not exited.
	ExitRunning ExitKind = "running"
	// ExitStopped: it ended because it was asked to (Stop, Kill, quit).
	ExitStopped ExitKind = "stopped"
	// ExitStatus: the firmware ended the emulator with a status (a
	// semihosting exit); Code is the status.
	ExitStatus ExitKind = "status"
	// ExitCrash: the emulator died of the guest or itself (a fatal error,
	// an abort); Reason quotes the emulator.
	ExitCrash ExitKind = "crash"
	// ExitSignal: killed by a signal nobody here sent (the OOM killer, an
	// operator).
	ExitSignal ExitKind = "signal"
)

// Exit is how a machine ended, as a value: callers decide on Kind and Code,
// never by matching Reason.
type Exit struct {
	Kind   ExitKind `json:"kind"`
	Code   int      `json:"code"`
	Signal string   `json:"signal,omitempty"`
	// Reason is a sentence for people; Log the emulator's meaningful lines
	// (a fatal error and its register dump).
	Reason string   `json:"reason,omitempty"`
	Log    []string `json:"log,omitempty"`
}

// Passed reports an exit that a test run counts as success: the firmware
// exited with status 0.
func (e Exit) Passed() bool { return e.Kind == ExitStatus && e.Code == 0 }

func (e Exit) String() string {
	switch e.Kind {
	case ExitStatus:
		return fmt.Sprintf("firmware exited with status %d", e.Code)
	case ExitSignal:
		return "emulator killed by signal " + e.Signal
	}
	if e.Reason != "" {
		return e.Reason
	}
	return string(e.Kind)
}

// Errors every backend returns for the same conditions, compared with
// errors.Is.
var (
	// ErrUnsupported: the board or the operation is not offered by this
	// backend (wrapped with what was asked).
	ErrUnsupported = errors.New("emulator: not supported")
	// ErrExited: the machine is gone; the call could not be carried out.
	ErrExited = errors.New("emulator: machine has exited")
)
