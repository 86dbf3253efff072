package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/machineserver/machineserver/runner/qmp"
)

// migration polls query-migrate until the migration completes or fails.
func (p *Process) migration(ctx context.Context) error {
	for {
		raw, err := p.QMP.Execute(ctx, "query-migrate", nil)
		if over, err := migrationOver(raw, err); over {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("qemu: %s during migration: %s", p.ExitReason(), strings.TrimSpace(p.Output()))
		case <-time.After(500 * time.Microsecond):
		}
	}
}

// migrationOver reads a query-migrate answer: over is false while the
// migration still runs; err is its failure (or the query's).
func migrationOver(raw json.RawMessage, err error) (over bool, _ error) {
	if err != nil {
		return true, fmt.Errorf("qemu: query-migrate: %w", err)
	}
	var st struct {
		Status    string `json:"status"`
		ErrorDesc string `json:"error-desc"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return true, fmt.Errorf("qemu: query-migrate: %w", err)
	}
	switch st.Status {
	case "completed":
		return true, nil
	case "failed", "cancelled":
		return true, fmt.Errorf("qemu: migration %s: %s", st.Status, st.ErrorDesc)
	}
	return false, nil
}

// Save writes the machine's full state to path with a QMP migration (QEMU
// 7.2 has no file: target, so exec:cat). The guest is paused for the capture
// and resumed afterwards if it was running; paused, if set, runs after the
// state is written and before the guest resumes (to note where its output
// stood).
func (p *Process) Save(ctx context.Context, path string, paused func()) error {
	if strings.ContainsAny(path, "'\"\\ ,") {
		return fmt.Errorf("qemu: snapshot path %q has characters the exec: URI cannot carry", path)
	}
	st, err := p.QMP.Status(ctx)
	if err != nil {
		return err
	}
	running := st == "running"
	if running {
		if _, err := p.QMP.Execute(ctx, "stop", nil); err != nil {
			return fmt.Errorf("qemu: stop: %w", err)
		}
	}
	tmp := path + ".part"
	_, err = p.QMP.Execute(ctx, "migrate", map[string]any{"uri": "exec:cat > " + tmp})
	if err == nil {
		err = p.migration(ctx)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	if paused != nil {
		paused()
	}
	if running {
		// After a completed migration the source sits in postmigrate; cont
		// resumes it.
		if _, cerr := p.QMP.Execute(ctx, "cont", nil); cerr != nil && err == nil {
			err = fmt.Errorf("qemu: resume after snapshot: %w", cerr)
		}
	}
	return err
}

// CommitGrace bounds how long SaveTo keeps the guest paused for its commit:
// a store that is slower than this finishes with the guest running.
const CommitGrace = 250 * time.Millisecond

// SaveTo streams the machine's full state into w over a unix socket QEMU
// connects to (no cat process, no second pass over a file). The guest is
// paused for the capture and resumed afterwards if it was running.
//
// paused, if set, runs while the guest is paused, alongside the capture (to
// note where its output stood). commit, if set, is told the capture's
// outcome (nil: the whole state reached w) and makes the state durable; its
// error is SaveTo's. The guest stays paused while commit runs, for up to
// CommitGrace: a resumed guest competes with the store for the CPU, and on
// two cores with a guest that prints flat out, storing first made the whole
// save 10 to 25 % faster.
//
// SaveTo returns once the resume is sent. Its outcome arrives on resumed
// (nil if the guest was not running): a guest that prints flat out holds
// QEMU's big lock so much that the reply can take milliseconds, and the
// state is stored whatever it says.
func (p *Process) SaveTo(ctx context.Context, w io.Writer, paused func(), commit func(error) error) (resumed <-chan error, err error) {
	notPaused := make(chan error, 1)
	notPaused <- nil
	sock := filepath.Join(p.dir, MigrationSocket)
	os.Remove(sock)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return notPaused, fmt.Errorf("qemu: listen for migration: %w", err)
	}
	defer os.Remove(sock)
	defer ln.Close()
	// QMP commands here ignore ctx: the guest must not be left paused.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	running, err := p.pauseAndMigrate(qctx, "unix:"+ln.Addr().String())
	cancel()
	if err != nil {
		return notPaused, err
	}
	noted := make(chan struct{})
	go func() {
		defer close(noted)
		if paused != nil {
			paused()
		}
	}()
	err = p.stream(ctx, ln, w)
	if err != nil {
		p.cancelMigration()
	}
	<-noted
	qctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	if err == nil {
		// The stream ended, so the migration is over; its outcome is final.
		var outcome *qmp.Call
		if outcome, err = p.QMP.Send(qctx, "query-migrate", nil); err == nil {
			err = p.migrated(qctx, outcome)
		}
	}
	committed := make(chan error, 1)
	go func() {
		if commit == nil {
			committed <- nil
			return
		}
		committed <- commit(err)
	}()
	grace := time.NewTimer(CommitGrace)
	defer grace.Stop()
	select {
	case cerr := <-committed:
		committed <- cerr
	case <-grace.C:
	}
	resumed = p.resume(qctx, cancel, running)
	if cerr := <-committed; err == nil {
		err = cerr
	}
	return resumed, err
}

// resume sends cont if the guest ran, and reports its reply on the returned
// channel; cancel ends ctx once the reply is in.
func (p *Process) resume(ctx context.Context, cancel context.CancelFunc, running bool) <-chan error {
	out := make(chan error, 1)
	if !running {
		cancel()
		out <- nil
		return out
	}
	call, err := p.QMP.Send(ctx, "cont", nil)
	if err != nil {
		cancel()
		out <- fmt.Errorf("qemu: resume after snapshot: %w", err)
		return out
	}
	go func() {
		defer cancel()
		if _, err := call.Wait(ctx); err != nil {
			out <- fmt.Errorf("qemu: resume after snapshot: %w", err)
			return
		}
		out <- nil
	}()
	return out
}

// pauseAndMigrate sends query-status, stop and migrate at once. Stopping a
// machine that is not running changes nothing; running says whether it ran
// and so must be resumed. On failure nothing is left paused or migrating.
func (p *Process) pauseAndMigrate(ctx context.Context, uri string) (running bool, err error) {
	status, err := p.QMP.Send(ctx, "query-status", nil)
	if err != nil {
		return false, err
	}
	stop, err := p.QMP.Send(ctx, "stop", nil)
	if err != nil {
		return false, err
	}
	migrate, merr := p.QMP.Send(ctx, "migrate", map[string]any{"uri": uri})
	raw, serr := status.Wait(ctx)
	var st struct {
		Status string `json:"status"`
	}
	if serr == nil {
		serr = json.Unmarshal(raw, &st)
	}
	running = st.Status == "running"
	_, perr := stop.Wait(ctx)
	if merr == nil {
		_, merr = migrate.Wait(ctx)
		if merr == nil && (serr != nil || perr != nil) {
			p.cancelMigration()
		}
	}
	if err = errors.Join(serr, perr, merr); err != nil {
		if running && perr == nil {
			p.QMP.Execute(ctx, "cont", nil)
		}
		return false, fmt.Errorf("qemu: start migration: %w", err)
	}
	return running, nil
}

// migrated reads the outcome of a migration whose stream has ended. QEMU
// closes the stream only once the migration is over, so it is final; should
// it not be, wait for it.
func (p *Process) migrated(ctx context.Context, outcome *qmp.Call) error {
	if over, err := migrationOver(outcome.Wait(ctx)); over {
		return err
	}
	return p.migration(ctx)
}

// stream accepts QEMU's migration connection on ln and copies it to w until
// QEMU closes it.
func (p *Process) stream(ctx context.Context, ln *net.UnixListener, w io.Writer) error {
	// A QEMU that dies before it connects must not leave us waiting.
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-actx.Done():
		}
	}()
	c, err := accept(actx, ln)
	if err != nil {
		select {
		case <-p.done:
			return fmt.Errorf("qemu: %s during migration: %s", p.ExitReason(), strings.TrimSpace(p.Output()))
		default:
		}
		return fmt.Errorf("qemu: migration connection: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.Copy(w, c); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("qemu: migration stream: %w", err)
	}
	return nil
}

// cancelMigration ends an outgoing migration that is not wanted any more
// and waits until it is over, so the next one can start.
func (p *Process) cancelMigration() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.QMP.Execute(ctx, "migrate_cancel", nil); err == nil {
		p.migration(ctx)
	}
}

// RestoreFrom feeds a saved state from r into a process started with
// Config.Incoming, over a unix socket QEMU listens on. The guest stays
// paused: the caller sends cont.
func (p *Process) RestoreFrom(ctx context.Context, r io.Reader) error {
	sock := filepath.Join(p.dir, MigrationSocket)
	os.Remove(sock)
	if _, err := p.QMP.Execute(ctx, "migrate-incoming", map[string]any{"uri": "unix:" + sock}); err != nil {
		return fmt.Errorf("qemu: migrate-incoming: %w", err)
	}
	defer os.Remove(sock)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("qemu: migration connection: %w", err)
	}
	_, err = io.Copy(c, r)
	c.Close()
	if err != nil {
		return fmt.Errorf("qemu: send state: %w", err)
	}
	return p.migration(ctx)
}

// Restore loads a state saved by Save into a process started with
// Config.Incoming. The guest stays paused: the caller sends cont.
func (p *Process) Restore(ctx context.Context, path string) error {
	if strings.ContainsAny(path, "'\"\\ ,") {
		return fmt.Errorf("qemu: snapshot path %q has characters the exec: URI cannot carry", path)
	}
	if _, err := p.QMP.Execute(ctx, "migrate-incoming", map[string]any{"uri": "exec:cat " + path}); err != nil {
		return fmt.Errorf("qemu: migrate-incoming: %w", err)
	}
	return p.migration(ctx)
}

// ErrNoSnapshots means a machine cannot restore its own state on this QEMU.
var ErrNoSnapshots = errors.New("qemu: snapshots do not restore on this machine")

// SnapshotProbe is what the binary says about one machine's snapshots.
type SnapshotProbe struct {
	// Restores is true if a saved state loads into a new process.
	Restores bool `json:"restores"`
	// Unsaved are the machine's device types that have no migration state
	// in this binary: a restored machine has them back at their reset state.
	Unsaved []string `json:"unsaved,omitempty"`
}

// stateless device types hold no guest-visible state worth saving.
var stateless = map[string]bool{"ARM-bitband-memory": true, "unimplemented-device": true}

// ProbeSnapshot checks, for real, that machine's state can be saved and
// restored by binary: it saves a paused machine and restores it into a
// second process. On QEMU 7.2, lm3s6965evb aborts here (an SD card
// assertion), which is the point of asking the binary instead of guessing.
// saved are the device types that have migration state (see VMStates).
func ProbeSnapshot(ctx context.Context, binary, machine, dir string, saved map[string]bool) (SnapshotProbe, error) {
	var res SnapshotProbe
	img := filepath.Join(dir, "probe.bin")
	// A vector table whose reset handler is "b ." keeps the CPU harmless.
	vt := []byte{0x00, 0x10, 0x00, 0x20, 0x09, 0x00, 0x00, 0x00, 0xfe, 0xe7, 0, 0}
	if err := os.WriteFile(img, vt, 0o600); err != nil {
		return res, err
	}
	start := func(sub string, incoming bool) (*Process, error) {
		return Start(ctx, Config{Binary: binary, Machine: machine, Dir: filepath.Join(dir, sub), Incoming: incoming,
			Firmware: Firmware{Path: img, Format: "bin", LoadAddress: 0}})
	}
	src, err := start("a", false)
	if err != nil {
		return res, err
	}
	defer src.Kill()
	tree, err := src.QMP.HumanCommand(ctx, "info qtree")
	if err != nil {
		return res, err
	}
	seen := map[string]bool{}
	for _, m := range qtreeDev.FindAllStringSubmatch(tree, -1) {
		t := m[1]
		if !saved[t] && !stateless[t] && !strings.HasSuffix(t, "-soc") && !seen[t] {
			seen[t] = true
			res.Unsaved = append(res.Unsaved, t)
		}
	}
	sort.Strings(res.Unsaved)
	state := filepath.Join(dir, "probe.state")
	if err := src.Save(ctx, state, nil); err != nil {
		return res, err
	}
	dst, err := start("b", true)
	if err != nil {
		return res, err
	}
	defer dst.Kill()
	if err := dst.Restore(ctx, state); err != nil {
		return res, fmt.Errorf("%w: %v", ErrNoSnapshots, err)
	}
	if _, err := dst.QMP.Status(ctx); err != nil {
		return res, fmt.Errorf("%w: %v", ErrNoSnapshots, err)
	}
	res.Restores = true
	return res, nil
}

var qtreeDev = regexp.MustCompile(`dev: ([A-Za-z0-9_.-]+),`)

// VMStates lists the device types of binary that have migration state
// (-dump-vmstate).
func VMStates(ctx context.Context, binary, dir string) (map[string]bool, error) {
	out := filepath.Join(dir, "vmstate.json")
	if b, err := exec.CommandContext(ctx, binary, "-M", "none", "-display", "none", "-dump-vmstate", out).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("qemu: -dump-vmstate: %w: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("qemu: -dump-vmstate: %w", err)
	}
	saved := map[string]bool{}
	for k := range m {
		saved[k] = true
	}
	return saved, nil
}

// ProbeSnapshots probes every machine, two at a time. Results are cached in
// cacheDir per binary (path, size, mtime), as the probe takes about 100 ms
// per machine.
func ProbeSnapshots(ctx context.Context, binary string, machines []string, cacheDir string) map[string]SnapshotProbe {
	out := map[string]SnapshotProbe{}
	fi, err := os.Stat(binary)
	if err != nil {
		return out
	}
	cache := filepath.Join(cacheDir, fmt.Sprintf("snapshot-probe-v2-%x.json", hashString(fmt.Sprintf("%s|%d|%d|%s", binary, fi.Size(), fi.ModTime().UnixNano(), strings.Join(machines, ",")))))
	if b, err := os.ReadFile(cache); err == nil && json.Unmarshal(b, &out) == nil {
		return out
	}
	tmp, err := os.MkdirTemp("", "msp")
	if err != nil {
		return out
	}
	defer os.RemoveAll(tmp)
	saved, err := VMStates(ctx, binary, tmp)
	if err != nil {
		return out
	}
	type result struct {
		m string
		p SnapshotProbe
	}
	res := make(chan result)
	sem := make(chan struct{}, 2)
	for _, m := range machines {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			dir, err := os.MkdirTemp("", "msp")
			if err != nil {
				res <- result{m, SnapshotProbe{}}
				return
			}
			defer os.RemoveAll(dir)
			pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			p, _ := ProbeSnapshot(pctx, binary, m, dir, saved)
			res <- result{m, p}
		}()
	}
	for range machines {
		r := <-res
		out[r.m] = r.p
	}
	if b, err := json.Marshal(out); err == nil {
		tmp := cache + ".tmp"
		if os.WriteFile(tmp, b, 0o600) == nil {
			os.Rename(tmp, cache)
		}
	}
	return out
}

func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
