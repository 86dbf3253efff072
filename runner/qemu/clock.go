package qemu

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/qmp"
)

// ICountShift is the instruction counter's scale whenever the guest runs on
// it: each instruction is 2^ICountShift ns of guest time (16 ns, 62.5
// million instructions per guest second). A recording replays only with
// the shift it was made with, so it is one constant, not an option.
const ICountShift = 4

// Files of a recording (Clock.Record, Clock.Replay) in its directory.
const (
	// ReplayLog is QEMU's log of the execution's nondeterministic events.
	ReplayLog = "replay.bin"
	// ReplayImage is the empty qcow2 image QEMU keeps its initial snapshot
	// in (these boards have no drive of their own): reverse execution
	// starts from it.
	ReplayImage = "replay.qcow2"
	// replaySnapshot is the snapshot's name in ReplayImage.
	replaySnapshot = "init"
)

// Clock is how guest time advances. The zero value is the host clock.
type Clock struct {
	// Deterministic runs on the instruction counter with sleep off: time
	// advances only with executed instructions, and a guest waiting for a
	// timer jumps to it at once.
	Deterministic bool
	// VirtualTime runs on the instruction counter with sleep on and align
	// on: guest time advances with executed instructions, a guest that
	// runs ahead of the host is made to sleep until the host catches up
	// (QEMU's align), and an idle guest's clock follows the host's. So
	// machines run side by side keep one time base, a busy one no longer
	// racing ahead of an idle one; what remains is a guest falling behind
	// (the host cannot keep up, or the overhead of waking an idle guest),
	// which the runner reads with VirtualLag. Deterministic wins over it.
	VirtualTime bool
	// Record writes a recording of the execution into this directory.
	Record string
	// Replay re-runs the recording in this directory.
	Replay string
	// Snapshot keeps the recording's initial state in ReplayImage (which
	// must exist when recording starts), so a debugger can run backwards:
	// only on boards whose state QEMU saves.
	Snapshot bool
}

func (c Clock) validate() error {
	if c.Record != "" && c.Replay != "" {
		return errors.New("qemu: a machine records or replays, not both")
	}
	for _, d := range []string{c.Record, c.Replay} {
		if d != "" && (!filepath.IsAbs(d) || strings.Contains(d, ",")) {
			return fmt.Errorf("qemu: recording directory %q must be absolute and contain no commas", d)
		}
	}
	return nil
}

// args is the -icount option, none for the host clock. A recording or
// a replay keeps its own settings whatever else is asked (the replay
// must run as the recording did), and Deterministic wins over
// VirtualTime. Recording keeps
// sleep on: with sleep off, QEMU 7.2 races an idle guest's clock ahead and
// loses console input (see docs/design.md).
func (c Clock) args() []string {
	dir, mode := c.Record, "record"
	if c.Replay != "" {
		dir, mode = c.Replay, "replay"
	}
	opts := "shift=" + strconv.Itoa(ICountShift)
	switch {
	case dir != "":
		opts += ",rr=" + mode + ",rrfile=" + filepath.Join(dir, ReplayLog)
		if c.Snapshot {
			opts += ",rrsnapshot=" + replaySnapshot
			return []string{"-icount", opts, "-drive", "file=" + filepath.Join(dir, ReplayImage) + ",if=none,id=replay"}
		}
	case c.Deterministic:
		opts += ",sleep=off"
	case c.VirtualTime:
		// sleep=on is the default, and align needs it.
		opts += ",align=on"
	default:
		return nil
	}
	return []string{"-icount", opts}
}

// createReplayImage makes the empty image a recording's initial snapshot
// goes into. Its size does not matter: QEMU stores the snapshot's state
// beside the (unused) disk contents.
func createReplayImage(ctx context.Context, dir string) error {
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, ReplayImage), "1M").CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu: creating the recording's image (qemu-img, from Debian's qemu-utils): %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// lagLine is "info jit"'s line for an instruction-counted guest:
// QEMU_CLOCK_VIRTUAL_RT (host time while the machine runs) minus the
// guest's clock, whole milliseconds, e.g. "Host - Guest clock  62 ms".
var lagLine = regexp.MustCompile(`(?m)^Host - Guest clock\s+(-?\d+) ms`)

// VirtualLag is how far the guest's clock is behind the host time the
// machine has spent running (not paused) since its first resume, to the
// millisecond; negative when it is ahead. QEMU 7.2 has no command that
// answers the guest clock itself (QMP query-replay answers the raw
// instruction count, without the time an idle guest skipped), but HMP
// "info jit" prints this difference whenever the instruction counter
// runs. On the host clock the answer is an error wrapping
// emulator.ErrUnsupported.
func (m *machine) VirtualLag(ctx context.Context) (time.Duration, error) {
	out, err := m.p.QMP.HumanCommand(ctx, "info jit")
	if err != nil {
		if errors.Is(err, qmp.ErrClosed) {
			return 0, fmt.Errorf("qemu: info jit: %w", emulator.ErrExited)
		}
		return 0, fmt.Errorf("qemu: info jit: %w", err)
	}
	return parseLag(out)
}

func parseLag(out string) (time.Duration, error) {
	g := lagLine.FindStringSubmatch(out)
	if g == nil {
		return 0, fmt.Errorf("%w: the guest clock (the machine is not on the instruction counter)", emulator.ErrUnsupported)
	}
	ms, err := strconv.ParseInt(g[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("qemu: info jit: %w", err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}
