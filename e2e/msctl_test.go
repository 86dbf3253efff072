package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

// msctlRun is one msctl process's outcome.
type msctlRun struct {
	code           int
	stdout, stderr string
}

// msctlCLI runs the built msctl as a user would: its own HOME and config
// directory, no MS_* credentials in the environment, stdin not a terminal.
type msctlCLI struct {
	env       []string
	configDir string
}

func newMsctl(t *testing.T) *msctlCLI {
	home := t.TempDir()
	m := &msctlCLI{configDir: filepath.Join(home, ".config")}
	m.env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + m.configDir, "PATH=" + os.Getenv("PATH")}
	return m
}

func (m *msctlCLI) command(ctx context.Context, stdin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "msctl"), args...)
	cmd.Env = m.env
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}

func (m *msctlCLI) run(t *testing.T, stdin string, args ...string) msctlRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := m.command(ctx, stdin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := msctlRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("msctl %q: %v", args, err)
	}
	return r
}

// want runs msctl and requires the exit status.
func (m *msctlCLI) want(t *testing.T, code int, stdin string, args ...string) msctlRun {
	t.Helper()
	r := m.run(t, stdin, args...)
	if r.code != code {
		t.Fatalf("msctl %q: exit %d, want %d\nstdout: %s\nstderr: %s", args, r.code, code, tail(r.stdout, 2000), tail(r.stderr, 2000))
	}
	return r
}

// TestMsctl drives the msctl binary against the real standalone platform:
// login, programs, sessions, the console in a pipe, errors, events, and
// run's verdicts with the exit statuses CI relies on.
func TestMsctl(t *testing.T) {
	pl := startStandalone(t)
	m := newMsctl(t)
	fw := firmware(t, "netduino2", "fw.elf")
	banner := "MS-TEST-FW netduino2 ready"

	// The key from stdin; stored for every later command.
	r := m.want(t, 0, apiKey+"\n", "login", "--server", pl.base)
	if !strings.Contains(r.stdout, "as tenant default") {
		t.Fatalf("login: %+v", r)
	}
	st, err := os.Stat(filepath.Join(m.configDir, "machineserver", "config.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config: %v %v", st, err)
	}

	prog := strings.TrimSpace(m.want(t, 0, "", "programs", "upload", fw).stdout)
	var progs []model.Program
	if err := json.Unmarshal([]byte(m.want(t, 0, "", "programs", "ls", "--output", "json").stdout), &progs); err != nil || len(progs) != 1 || progs[0].ID != prog || progs[0].Name != "fw.elf" {
		t.Fatalf("programs ls: %v %+v", err, progs)
	}

	sid := strings.TrimSpace(m.want(t, 0, "", "sessions", "create", "--board", "netduino2", "--program", prog).stdout)
	if r := m.want(t, 0, "", "sessions", "poweron", sid); r.stdout != sid+" running\n" {
		t.Fatalf("poweron: %+v", r)
	}
	var s model.Session
	if err := json.Unmarshal([]byte(m.want(t, 0, "", "sessions", "get", sid, "--output", "json").stdout), &s); err != nil || s.State != model.StateRunning || s.ProgramID != prog {
		t.Fatalf("sessions get: %v %+v", err, s)
	}

	t.Run("console-pipe", func(t *testing.T) {
		// The history from the first byte (the banner), then the echo of
		// what stdin sent and the firmware's answer.
		r := m.want(t, 0, "count\r", "console", sid, "--linger", "5s")
		if !strings.HasPrefix(r.stdout, banner) || !strings.Contains(r.stdout, "count\rcount=") {
			t.Fatalf("console: %q", r.stdout)
		}
	})

	t.Run("errors", func(t *testing.T) {
		// The API's own message, exit status 1.
		if r := m.want(t, 1, "", "snapshots", "create", sid); !strings.HasPrefix(r.stderr, "msctl: board netduino2 cannot restore saved state") {
			t.Fatalf("snapshot of a netduino2: %q", r.stderr)
		}
		if r := m.want(t, 1, "", "sessions", "get", "0123456789abcdef"); !strings.HasPrefix(r.stderr, "msctl: ") || !strings.Contains(r.stderr, "0123456789abcdef") {
			t.Fatalf("missing session: %q", r.stderr)
		}
		if r := m.want(t, 1, "", "programs", "ls", "--key", "ms_wrong_0123"); !strings.HasPrefix(r.stderr, "msctl: ") {
			t.Fatalf("wrong key: %q", r.stderr)
		}
		m.want(t, 2, "", "sessions", "create")
	})

	t.Run("events", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cmd := m.command(ctx, "", "events", "--session", sid, "--types", "io.machineserver.session.", "--output", "json")
		out, _ := cmd.StdoutPipe()
		var errb strings.Builder
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cancel() // kills msctl
			cmd.Wait()
		}()
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				select {
				case lines <- sc.Text():
				case <-ctx.Done():
					return
				}
			}
		}()
		// Nothing says when the stream is up: the session is reset until
		// its rebooted event arrives.
		m.want(t, 0, "", "sessions", "reset", sid)
		again := time.NewTicker(2 * time.Second)
		defer again.Stop()
		deadline := time.After(30 * time.Second)
		var types []string
		for {
			select {
			case <-again.C:
				m.want(t, 0, "", "sessions", "reset", sid)
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("events ended: %s", errb.String())
				}
				var ev struct {
					Type, Subject string
				}
				if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Subject != sid || !strings.HasPrefix(ev.Type, "io.machineserver.session.") {
					t.Fatalf("event line %q: %v", l, err)
				}
				types = append(types, ev.Type)
				if ev.Type == "io.machineserver.session.rebooted.v1" {
					return
				}
			case <-deadline:
				t.Fatalf("no session.rebooted event; got %q; stderr %s", types, errb.String())
			}
		}
	})

	m.want(t, 0, "", "sessions", "rm", sid)

	dir := t.TempDir()
	t.Run("run-passes", func(t *testing.T) {
		serial := filepath.Join(dir, "serial.log")
		r := m.want(t, 0, "", "run", fw, "--board", "netduino2", "--expect", banner, "--timeout", "20s", "--serial-log", serial)
		if !strings.Contains(r.stdout, banner) || !strings.Contains(r.stderr, "passed") {
			t.Fatalf("run: %+v", r)
		}
		if b, err := os.ReadFile(serial); err != nil || !strings.Contains(string(b), banner) {
			t.Fatalf("serial log %q: %v", b, err)
		}
	})
	t.Run("run-uart-script", func(t *testing.T) {
		script := filepath.Join(dir, "script.yaml")
		os.WriteFile(script, []byte("- wait_for: ready\n- send: \"count\\r\"\n- wait_for: 'count=\\d+'\n"), 0o644)
		r := m.want(t, 0, "", "run", fw, "--board", "netduino2", "--uart-script", script, "--timeout", "20s")
		if !strings.Contains(r.stdout, "count=") {
			t.Fatalf("run with a script: %+v", r)
		}
	})
	t.Run("run-fails", func(t *testing.T) {
		r := m.want(t, 1, "", "run", fw, "--board", "netduino2", "--expect", "ALL TESTS PASSED", "--fail", "MS-TEST-FW", "--timeout", "20s")
		if !strings.Contains(r.stderr, "failed") || !strings.Contains(r.stderr, "fail_pattern") {
			t.Fatalf("run: %+v", r)
		}
	})
	t.Run("run-times-out", func(t *testing.T) {
		r := m.want(t, 42, "", "run", fw, "--board", "netduino2", "--expect", "never printed", "--timeout", "1s")
		if !strings.Contains(r.stderr, "timed_out") {
			t.Fatalf("run: %+v", r)
		}
	})
	t.Run("run-coverage-json", func(t *testing.T) {
		lcov := filepath.Join(dir, "lcov.info")
		r := m.want(t, 0, "", "run", fw, "--board", "netduino2", "--expect", banner, "--timeout", "20s", "--coverage", lcov, "--output", "json")
		var j model.Job
		if err := json.Unmarshal([]byte(r.stdout), &j); err != nil || j.State != model.JobPassed || j.CoverageReportID == "" {
			t.Fatalf("run --output json: %v %+v", err, r)
		}
		// The file is the job's stored report, and lcov reads it.
		lcovAgrees(t, lcov, pl.coverageJSON(t, "/api/v1/coverage/reports/"+j.CoverageReportID))
	})

	// Every run reused the uploaded image.
	if err := json.Unmarshal([]byte(m.want(t, 0, "", "programs", "ls", "--output", "json").stdout), &progs); err != nil || len(progs) != 1 {
		t.Fatalf("programs after the runs: %v %+v", err, progs)
	}

	// A recorded mps2-an385 session (netduino2 cannot record), replayed
	// halted through msctl.
	t.Run("record-replay", func(t *testing.T) {
		prog := strings.TrimSpace(m.want(t, 0, "", "programs", "upload", firmware(t, "mps2-an385", "fw.elf")).stdout)
		sid := strings.TrimSpace(m.want(t, 0, "", "sessions", "create", "--board", "mps2-an385", "--program", prog, "--record", "--poweron").stdout)
		waitConsole(t, pl, sid, "ready\r\n")
		// Power off returns once the recording is stored.
		var s model.Session
		if err := json.Unmarshal([]byte(m.want(t, 0, "", "sessions", "poweroff", sid, "--output", "json").stdout), &s); err != nil || !s.Record || s.RecordingID == "" {
			t.Fatalf("recorded session after power off: %v %+v", err, s)
		}
		rid := s.RecordingID

		var replay model.Session
		if err := json.Unmarshal([]byte(m.want(t, 0, "", "replay", rid, "--halted", "--output", "json").stdout), &replay); err != nil || replay.ReplayOf != rid || replay.State != model.StateRunning {
			t.Fatalf("replay --halted: %v %+v", err, replay)
		}
		if err := json.Unmarshal([]byte(m.want(t, 0, "", "sessions", "get", replay.ID, "--output", "json").stdout), &s); err != nil || s.ReplayOf != rid || s.ProgramID != prog {
			t.Fatalf("the replay session: %v %+v", err, s)
		}
		var recs []model.Recording
		if err := json.Unmarshal([]byte(m.want(t, 0, "", "recordings", "ls", "--output", "json").stdout), &recs); err != nil || len(recs) != 1 || recs[0].ID != rid || recs[0].State != model.RecordingReady {
			t.Fatalf("recordings ls: %v %+v", err, recs)
		}
		if printed, _, _ := pl.console(t, sid, 0); m.want(t, 0, "", "recordings", "console", rid).stdout != printed {
			t.Fatalf("recordings console differs from what session %s printed: %q", sid, printed)
		}
		if r := m.want(t, 1, "", "replay", "0123456789abcdef"); r.stderr != "msctl: recording 0123456789abcdef not found\n" {
			t.Fatalf("replay of an unknown id: %q", r.stderr)
		}

		m.want(t, 0, "", "sessions", "rm", replay.ID, sid)
		m.want(t, 0, "", "recordings", "rm", rid)
		m.want(t, 0, "", "programs", "rm", prog)
	})
}
