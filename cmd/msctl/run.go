package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"sigs.k8s.io/yaml"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
	"github.com/machineserver/machineserver/shared/model"
)

const runUsage = `usage: msctl run FIRMWARE --board B [--expect TEXT] [--fail TEXT] [--timeout DUR]
           [--uart-script FILE] [--expect-exit-code N] [--coverage FILE] [--serial-log FILE]

Runs FIRMWARE once on board B as a test job (POST /api/v1/jobs), streams the
board's console to stdout while it runs, and exits with the verdict: 0 passed,
1 failed (or the job ended in error), 42 timed out (as wokwi-cli does).

  --expect TEXT         pass once the console prints TEXT (plain text, not a pattern)
  --fail TEXT           fail as soon as the console prints TEXT
  --expect-exit-code N  pass when the firmware exits (semihosting) with status N
  --uart-script FILE    steps in YAML or JSON, run in order: a list of
                        {send: "count\r"} (bytes to the UART) and
                        {wait_for: "count=\\d+", timeout: 2s} (a Go regular expression)
  --timeout DUR         bounds the run from power on (100ms to 30m; default the
                        server's, 30s)
  --coverage FILE       count coverage from power on and write the LCOV report to FILE
  --serial-log FILE     write the console log to FILE

The job needs --expect, --expect-exit-code or a wait_for step. On a terminal,
stderr shows a progress line. With --output json, stdout is the finished job
instead of the console. An image the tenant already has (same sha256 and
name) is not uploaded again. Ctrl-C cancels the job.
`

// pollEvery is how often a running job is read: its state, and when its
// session appears, so the console stream starts at once.
const pollEvery = 100 * time.Millisecond

func runRun(ctx context.Context, e *env, args []string) error {
	fs := e.flags("run")
	board := fs.String("board", "", "")
	expect := fs.String("expect", "", "")
	failText := fs.String("fail", "", "")
	timeout := fs.String("timeout", "", "")
	script := fs.String("uart-script", "", "")
	exitCode := fs.String("expect-exit-code", "", "")
	coverage := fs.String("coverage", "", "")
	serialLog := fs.String("serial-log", "", "")
	name := fs.String("name", "", "")
	pos, err := e.parse(fs, args, runUsage, 1, 1)
	if err != nil {
		return err
	}
	if *board == "" {
		return &usageError{"run needs --board", runUsage}
	}
	spec := model.JobSpec{
		Name: first(*name, "msctl run "+filepath.Base(pos[0])), BoardConfig: model.BoardConfig{Board: *board},
		Timeout: *timeout, Coverage: *coverage != "",
	}
	if *timeout != "" {
		if _, err := time.ParseDuration(*timeout); err != nil {
			return &usageError{fmt.Sprintf("--timeout %q: want a duration such as 10s", *timeout), runUsage}
		}
	}
	// The API's patterns are regular expressions; --expect and --fail
	// are text, as in wokwi-cli.
	if *expect != "" {
		spec.PassPattern = regexp.QuoteMeta(*expect)
	}
	if *failText != "" {
		spec.FailPattern = regexp.QuoteMeta(*failText)
	}
	if *exitCode != "" {
		n, err := strconv.Atoi(*exitCode)
		if err != nil {
			return &usageError{fmt.Sprintf("--expect-exit-code %q: want an integer", *exitCode), runUsage}
		}
		spec.ExpectExitCode = &n
	}
	if *script != "" {
		b, err := os.ReadFile(*script)
		if err != nil {
			return &usageError{err.Error(), runUsage}
		}
		if err := yaml.UnmarshalStrict(b, &spec.UARTScript); err != nil {
			return &usageError{fmt.Sprintf("--uart-script %s: want a list of {send} and {wait_for, timeout} steps: %v", *script, err), runUsage}
		}
	}
	image, err := os.ReadFile(pos[0])
	if err != nil {
		return &usageError{err.Error(), runUsage}
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	prog, err := program(ctx, c, pos[0], image)
	if err != nil {
		return err
	}
	spec.ProgramID = prog.ID
	var j model.Job
	if err := c.Do(ctx, http.MethodPost, client.Path("jobs"), spec, &j); err != nil {
		return err
	}
	j, cw, err := follow(ctx, e, c, j)
	if err != nil {
		if ctx.Err() != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if c.Do(cctx, http.MethodDelete, client.Path("jobs", j.ID), nil, nil) == nil {
				fmt.Fprintf(e.err, "msctl: job %s cancelled\n", j.ID)
			}
		}
		return err
	}
	if err := finishRun(ctx, e, c, j, cw, *serialLog, *coverage); err != nil {
		return err
	}
	code := 1
	switch j.State {
	case model.JobPassed:
		code = 0
	case model.JobTimedOut:
		code = exitTimeout
	}
	if err := e.emit(j, nil); err != nil {
		return err
	}
	return &exitError{code, fmt.Sprintf("job %s %s in %.2fs: %s", j.ID, j.State, j.DurationMS/1000, j.Reason)}
}

// program is the tenant's program with this image and name, uploaded now
// if there is none, so runs of one build do not pile up copies.
func program(ctx context.Context, c *client.Client, path string, image []byte) (model.Program, error) {
	sum := sha256.Sum256(image)
	want := hex.EncodeToString(sum[:])
	ps, err := client.List[model.Program](ctx, c, client.Path("programs"), "programs")
	if err != nil {
		return model.Program{}, err
	}
	for _, p := range ps {
		if p.SHA256 == want && p.Name == filepath.Base(path) && p.State != "rejected" && p.LoadAddress == nil {
			return p, nil
		}
	}
	return upload(ctx, c, path, "", "", "")
}

// finishRun prints what the console stream missed and writes the serial
// log and the coverage report.
func finishRun(ctx context.Context, e *env, c *client.Client, j model.Job, cw *consoleWriter, serialLog, coverage string) error {
	var log []byte
	if j.ConsoleKey != "" && (serialLog != "" || !e.json()) {
		var err error
		if log, err = c.Get(ctx, client.Path("jobs", j.ID, "console")); err != nil {
			return fmt.Errorf("console log of job %s: %w", j.ID, err)
		}
	}
	if n := cw.written(); !e.json() && int64(len(log)) > n {
		// The job ended before the stream caught up (or started).
		cw.Write(log[n:])
	}
	if !e.json() && !cw.endsLine() && isTerminal(e.out) {
		// The verdict goes on a line of its own.
		fmt.Fprintln(e.out)
	}
	if serialLog != "" {
		if err := os.WriteFile(serialLog, log, 0o644); err != nil {
			return err
		}
	}
	if coverage == "" {
		return nil
	}
	if j.CoverageReportID == "" {
		return fmt.Errorf("job %s %s, but has no coverage report: %s", j.ID, j.State, first(j.CoverageError, "none was stored"))
	}
	lcov, err := c.Get(ctx, client.Query(client.Path("coverage", "reports", j.CoverageReportID), url.Values{"format": {"lcov"}}))
	if err != nil {
		return fmt.Errorf("coverage report %s: %w", j.CoverageReportID, err)
	}
	return os.WriteFile(coverage, lcov, 0o644)
}

// follow polls the job until it ends, streaming its session's console to
// stdout from the moment the session exists; it answers the final job and
// the console's writer, which knows what was printed.
func follow(ctx context.Context, e *env, c *client.Client, j model.Job) (model.Job, *consoleWriter, error) {
	var prog *progress
	if isTerminal(e.err) && !e.json() {
		prog = &progress{w: e.err, sameTerminal: isTerminal(e.out)}
	}
	cw := &consoleWriter{w: e.out, prog: prog}
	sctx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	var streamed chan struct{}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if j.SessionID != "" && streamed == nil && !e.json() {
			streamed = make(chan struct{})
			go func(id string) {
				defer close(streamed)
				streamConsole(sctx, c, id, cw)
			}(j.SessionID)
		}
		if j.State.Final() {
			break
		}
		prog.show(j)
		select {
		case <-ctx.Done():
			prog.clear()
			return j, cw, ctx.Err()
		case <-tick.C:
		}
		var cur model.Job
		if err := c.Do(ctx, http.MethodGet, client.Path("jobs", j.ID), nil, &cur); err != nil {
			prog.clear()
			return j, cw, err
		}
		j = cur
	}
	if streamed != nil {
		// The job's session is deleted right after the verdict, which
		// ends the stream with everything it printed.
		select {
		case <-streamed:
		case <-time.After(2 * time.Second):
		}
		stopStream()
		<-streamed
	}
	prog.clear()
	return j, cw, nil
}

// streamConsole copies a session's console (uart0, from its first byte)
// to w until the session is gone or ctx ends. Failing to attach is not an
// error: the job's stored console log fills in what was not streamed.
func streamConsole(ctx context.Context, c *client.Client, session string, w io.Writer) {
	ws, err := c.Dial(ctx, client.Path("sessions", session, "stream", "console"))
	if err != nil {
		return
	}
	defer ws.CloseNow()
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			w.Write(data)
		}
	}
}

// consoleWriter writes the console to stdout around the progress line.
type consoleWriter struct {
	mu   sync.Mutex
	w    io.Writer
	n    int64
	last byte
	prog *progress
}

func (cw *consoleWriter) Write(b []byte) (int, error) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	cw.prog.beforeOutput()
	n, err := cw.w.Write(b)
	cw.n += int64(n)
	if n > 0 {
		cw.last = b[n-1]
	}
	cw.prog.afterOutput(b)
	return n, err
}

func (cw *consoleWriter) written() int64 {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	return cw.n
}

// endsLine says whether the console printed so far ends a line (or is empty).
func (cw *consoleWriter) endsLine() bool {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	return cw.n == 0 || cw.last == '\n'
}

// progress is the job's state on one line of the terminal, redrawn in
// place, out of the console's way. A nil progress draws nothing.
type progress struct {
	mu sync.Mutex
	w  io.Writer
	// sameTerminal: stdout is the terminal too, so the line is erased
	// while the console prints and not drawn after half a console line.
	sameTerminal  bool
	text          string
	drawn, inLine bool
}

func (p *progress) show(j model.Job) {
	if p == nil {
		return
	}
	text := fmt.Sprintf("msctl: job %s %s", j.ID, j.State)
	if j.State == model.JobRunning && j.StartedAt != nil {
		text += fmt.Sprintf(" %.1fs", time.Since(*j.StartedAt).Seconds())
		if j.Timeout != "" {
			text += " of " + j.Timeout
		}
	}
	if j.Reason != "" && j.State == model.JobQueued {
		text += ": " + j.Reason
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.text = text
	p.draw()
}

func (p *progress) draw() {
	if p.inLine {
		return
	}
	fmt.Fprintf(p.w, "\r\033[K%s", p.text)
	p.drawn = true
}

func (p *progress) erase() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

func (p *progress) clear() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.erase()
}

func (p *progress) beforeOutput() {
	if p == nil || !p.sameTerminal {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.erase()
}

func (p *progress) afterOutput(b []byte) {
	if p == nil || !p.sameTerminal || len(b) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inLine = !bytes.HasSuffix(b, []byte("\n"))
	p.draw()
}
