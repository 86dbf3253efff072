package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
)

// TestDeterminism runs repeated jobs on real QEMU in both forms: a
// timing-dependent firmware (jitter.elf prints SysTick values and counts
// polls) agrees with itself five times on the instruction counter, console
// and coverage counts, and is flaky on the host clock; a scripted-input
// firmware that waits for its input asleep agrees too; a deterministic
// session prints what the jobs' runs printed.
func TestDeterminism(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			pl := form.start(t, "MS_JOB_WORKERS=1")
			determinism(t, pl)
		})
	}
}

func determinism(t *testing.T, pl *platform) {
	var caps board.Capabilities
	pl.must(t, 200, "GET", "/api/v1/capabilities", nil, &caps)
	be, _ := caps.Backend("qemu")
	mps, _ := be.Board("mps2-an385")
	uno, _ := be.Board("arduino-uno")
	for _, f := range board.ClockFeatures {
		if !mps.Has(f) {
			t.Errorf("mps2-an385 lacks %s: %v %v", f, mps.Features, mps.Unsupported)
		}
	}
	if uno.Has(board.FeatureDeterministic) || !strings.Contains(uno.Unsupported[board.FeatureDeterministic], "Bad icount read") {
		t.Errorf("arduino-uno: %v %v", uno.Features, uno.Unsupported)
	}

	jitter := uploadELF(t, pl, "mps2-an385", "jitter.elf")
	mpsBoard := model.BoardConfig{Board: "mps2-an385"}
	spec := model.JobSpec{ProgramID: jitter, BoardConfig: mpsBoard, Timeout: "30s", PassPattern: "jitter done", ExpectExitCode: intp(0),
		Coverage: true, Repeat: intp(5)}

	// On the instruction counter: five identical runs.
	det := spec
	det.Name, det.Deterministic = "jitter-deterministic", true
	var j model.Job
	pl.must(t, 201, "POST", "/api/v1/jobs", det, &j)
	j = pl.waitJob(t, j.ID)
	if j.State != model.JobPassed || len(j.Runs) != 5 || j.FirstDifference != nil || j.ExitCode == nil || *j.ExitCode != 0 ||
		!strings.Contains(j.Reason, "all 5 runs agreed (verdict, exit code, console output and coverage counts)") {
		t.Fatalf("deterministic job: %+v", j)
	}
	first := string(pl.must(t, 200, "GET", "/api/v1/jobs/"+j.ID+"/console", nil, nil))
	if !strings.HasPrefix(first, "jitter ready\r\ncvr=") || !strings.HasSuffix(first, "jitter done\r\n") {
		t.Fatalf("console of run 1: %q", first)
	}
	var lines [][]int
	for i, r := range j.Runs {
		if r.Verdict != model.JobPassed || !r.Ended || r.ConsoleSHA256 != j.Runs[0].ConsoleSHA256 || r.ConsoleBytes != len(first) || r.CoverageReportID == "" {
			t.Errorf("run %d: %+v", i+1, r)
		}
		// The stored consoles and reports themselves, not the job's word.
		if c := string(pl.must(t, 200, "GET", fmt.Sprintf("/api/v1/jobs/%s/console?run=%d", j.ID, i+1), nil, nil)); c != first {
			t.Errorf("console of run %d:\n%q\nrun 1:\n%q", i+1, c, first)
		}
		lines = append(lines, lineCounts(pl.coverageJSON(t, "/api/v1/coverage/reports/"+r.CoverageReportID)))
		if !slices.Equal(lines[i], lines[0]) {
			t.Errorf("line counts of run %d: %v\nrun 1: %v", i+1, lines[i], lines[0])
		}
	}
	if j.CoverageReportID != j.Runs[0].CoverageReportID {
		t.Errorf("the job's report %s is not run 1's %s", j.CoverageReportID, j.Runs[0].CoverageReportID)
	}
	pl.must(t, 404, "GET", "/api/v1/jobs/"+j.ID+"/console?run=6", nil, nil)
	pl.must(t, 400, "GET", "/api/v1/jobs/"+j.ID+"/console?run=x", nil, nil)

	// On the host clock the same firmware differs from run to run: the
	// comparison can fail, and says where.
	host := spec
	host.Name = "jitter-host-clock"
	var h model.Job
	pl.must(t, 201, "POST", "/api/v1/jobs", host, &h)
	h = pl.waitJob(t, h.ID)
	d := h.FirstDifference
	if h.State != model.JobFlaky || len(h.Runs) != 5 || d == nil || d.What != "console" || d.Offset == nil ||
		*d.Offset < len("jitter ready\r\ncvr=") || d.Expected == d.Got || !strings.Contains(h.Reason, "the 5 runs disagree") {
		t.Fatalf("host-clock job: %+v (difference %+v)", h, d)
	}
	for i, r := range h.Runs {
		if r.Verdict != model.JobPassed {
			t.Errorf("host-clock run %d: %+v", i+1, r)
		}
	}
	other := string(pl.must(t, 200, "GET", fmt.Sprintf("/api/v1/jobs/%s/console?run=%d", h.ID, d.Run), nil, nil))
	base := string(pl.must(t, 200, "GET", "/api/v1/jobs/"+h.ID+"/console", nil, nil))
	if other[:*d.Offset] != base[:*d.Offset] || other[*d.Offset] == base[*d.Offset] {
		t.Errorf("first difference at %d of run %d:\n%q\n%q", *d.Offset, d.Run, other, base)
	}

	// Scripted input to a guest that waits for it asleep with no timer
	// armed: its clock stands still, and the runner hands it each byte
	// only once it sleeps, so the input lands at the same guest instant
	// every run (sent as it came, a byte overtook the guest on its way
	// back to sleep in about one run in eight).
	cov := uploadELF(t, pl, "mps2-an385", "cov.elf")
	var c model.Job
	pl.must(t, 201, "POST", "/api/v1/jobs", model.JobSpec{Name: "cov-script", ProgramID: cov, BoardConfig: mpsBoard, Timeout: "30s",
		Coverage: true, Deterministic: true, Repeat: intp(5), ExpectExitCode: intp(0),
		UARTScript: []model.Step{{WaitFor: "COV ready"}, {Send: "b"}, {WaitFor: "b"}, {Send: "bb"}, {WaitFor: "bb"}, {Send: "q"}}}, &c)
	c = pl.waitJob(t, c.ID)
	if c.State != model.JobPassed || len(c.Runs) != 5 || !strings.Contains(c.Reason, "all 5 runs agreed") {
		t.Fatalf("scripted deterministic job: %+v", c)
	}
	m := markers(t)
	for i, r := range c.Runs {
		rep := pl.coverageJSON(t, "/api/v1/coverage/reports/"+r.CoverageReportID)
		if got := rep.line(t, m["on-b"]); got != 3 || r.ConsoleSHA256 != c.Runs[0].ConsoleSHA256 {
			t.Errorf("scripted run %d: on-b ran %d times, want 3; %+v", i+1, got, r)
		}
	}

	// A deterministic session runs as the deterministic job's runs did.
	var s model.Session
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "det", "board_config": mpsBoard, "deterministic": true}, &s)
	if !s.Deterministic {
		t.Fatalf("session: %+v", s)
	}
	pl.must(t, 200, "POST", "/api/v1/sessions/"+s.ID+"/program", map[string]string{"program_id": jitter}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+s.ID+"/poweron", nil, nil)
	pl.waitState(t, s.ID, "stopped")
	if out, _, _ := pl.console(t, s.ID, 0); out != first {
		t.Errorf("deterministic session printed:\n%q\nthe jobs' runs:\n%q", out, first)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+s.ID, nil, nil)

	// Its snapshots carry the clock: the sessions a fork creates are
	// deterministic too (the runner tests check the restored machine's
	// options), and run on from the saved state.
	fw := uploadELF(t, pl, "mps2-an385", "fw.elf")
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "det-snap", "board_config": mpsBoard, "deterministic": true}, &s)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+s.ID+"/program", map[string]string{"program_id": fw}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+s.ID+"/poweron", nil, nil)
	pl.dialConsole(t, s.ID, "").waitFor(t, "ready", 1)
	var snap model.Snapshot
	pl.must(t, 201, "POST", "/api/v1/sessions/"+s.ID+"/snapshots", map[string]string{"name": "det"}, &snap)
	var fork struct{ Sessions []model.Session }
	pl.must(t, 201, "POST", "/api/v1/snapshots/"+snap.ID+"/sessions", map[string]any{"count": 1}, &fork)
	if !snap.Deterministic || len(fork.Sessions) != 1 || !fork.Sessions[0].Deterministic || fork.Sessions[0].State != model.StateRunning {
		t.Fatalf("snapshot %+v forked into %+v", snap, fork.Sessions)
	}
	fc := pl.dialConsole(t, fork.Sessions[0].ID, "")
	fc.send(t, "count\r")
	fc.waitFor(t, "count=", 1)
	for _, id := range []string{s.ID, fork.Sessions[0].ID} {
		pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	}
	pl.must(t, 204, "DELETE", "/api/v1/snapshots/"+snap.ID, nil, nil)

	// Boards without it and bad repeats are refused, saying why.
	uk := model.BoardConfig{Board: "arduino-uno"}
	for _, tc := range []struct {
		path string
		body any
		code int
		says string
	}{
		{"/api/v1/sessions", map[string]any{"name": "det", "board_config": uk, "deterministic": true}, 422, "board arduino-uno does not support deterministic: emulator exited with status 1: qemu-system-avr: Bad icount read"},
		{"/api/v1/jobs", model.JobSpec{ProgramID: jitter, BoardConfig: uk, PassPattern: "x", Deterministic: true}, 422, "does not support deterministic"},
		{"/api/v1/jobs", model.JobSpec{ProgramID: jitter, BoardConfig: mpsBoard, PassPattern: "x", Repeat: intp(0)}, 400, "repeat must be from 1 to 10"},
		{"/api/v1/jobs", model.JobSpec{ProgramID: jitter, BoardConfig: mpsBoard, PassPattern: "x", Repeat: intp(11)}, 400, "repeat must be from 1 to 10"},
	} {
		var e apiError
		code, body := pl.call(t, "POST", tc.path, tc.body, nil)
		if err := jsonUnmarshal(body, &e); code != tc.code || err != nil || !strings.Contains(e.Error.Message, tc.says) {
			t.Errorf("POST %s %+v: %d %s; want %d saying %q", tc.path, tc.body, code, body, tc.code, tc.says)
		}
	}
}

// lineCounts flattens a report's line counts of the program's own files.
func lineCounts(r covReport) []int {
	var out []int
	for _, f := range r.Files {
		for _, l := range f.Lines {
			out = append(out, l.Line, int(l.Count))
		}
	}
	return out
}
