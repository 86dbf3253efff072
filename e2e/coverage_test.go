package e2e

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/events/eventstest"
)

// covReport is the part of the JSON report the tests read.
type covReport struct {
	Level      string
	Final      bool
	Notes      []string
	Totals     struct{ Lines, Functions, Branches struct{ Found, Hit int } }
	Files      []covFile
	OtherFiles []covFile `json:"other_files"`
	Functions  []covFunction
}

type covFile struct {
	Path      string
	Functions []covFunction
	Lines     []struct {
		Line  int
		Count uint64
	}
}

type covFunction struct {
	Name     string
	Count    uint64
	Executed bool
}

func (r covReport) hasNote(s string) bool {
	return slices.ContainsFunc(r.Notes, func(n string) bool { return strings.Contains(n, s) })
}

func (r covReport) paths(files []covFile) []string {
	var out []string
	for _, f := range files {
		out = append(out, f.Path)
	}
	return out
}

func (r covReport) line(t *testing.T, n int) uint64 {
	t.Helper()
	for _, f := range r.Files {
		if !strings.HasSuffix(f.Path, "covtest.c") {
			continue
		}
		for _, l := range f.Lines {
			if l.Line == n {
				return l.Count
			}
		}
	}
	t.Fatalf("line %d not in the report", n)
	return 0
}

func (r covReport) function(t *testing.T, name string) covFunction {
	t.Helper()
	for _, fn := range r.Functions {
		if fn.Name == name {
			return fn
		}
	}
	t.Fatalf("function %s not in the report", name)
	return covFunction{}
}

// markers maps the COV:<name> comments of the coverage firmware to lines.
func markers(t *testing.T) map[string]int {
	f, err := os.Open("../firmware/src/covtest.c")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]int{}
	re := regexp.MustCompile(`COV:([a-z-]+)`)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if g := re.FindStringSubmatch(sc.Text()); g != nil {
			m[g[1]] = n
		}
	}
	return m
}

func (pl *platform) coverage(t *testing.T, path, format string) []byte {
	t.Helper()
	return pl.must(t, 200, "GET", path+"?format="+format, nil, nil)
}

func (pl *platform) coverageJSON(t *testing.T, path string) covReport {
	t.Helper()
	var r covReport
	if err := json.Unmarshal(pl.coverage(t, path, "json"), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCoverage(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			rec := &eventstest.Recorder{}
			sink := httptest.NewServer(rec)
			defer sink.Close()
			pl := form.start(t, "K_SINK="+sink.URL)
			coverageFlow(t, pl, rec)
		})
	}
}

func coverageFlow(t *testing.T, pl *platform, rec *eventstest.Recorder) {
	m := markers(t)
	code, body := pl.upload(t, "cov", "elf", firmware(t, "netduino2", "cov.elf"), nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	prog := decode(t, body)["id"].(string)
	newSession := func(coverage bool) (string, *console) {
		var s map[string]any
		pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "cov", "coverage": coverage, "board_config": map[string]string{"board": "netduino2"}}, &s)
		id := s["id"].(string)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
		cs := pl.dialConsole(t, id, "")
		cs.waitFor(t, "COV ready\r\n", 1)
		return id, cs
	}

	// "coverage": true at creation: counted from the first instruction.
	id, cs := newSession(true)
	path := "/api/v1/sessions/" + id + "/coverage"
	r := pl.coverageJSON(t, path)
	if r.Level != "source" || r.Final {
		t.Fatalf("live report: level %s final %v", r.Level, r.Final)
	}
	for name, want := range map[string]uint64{"never-body": 0, "classify-then": 2, "classify-else": 0, "loop-body": 7, "never-call": 0, "on-b": 0} {
		if got := r.line(t, m[name]); got != want {
			t.Errorf("line %s: %d, want %d", name, got, want)
		}
	}
	if fn := r.function(t, "never_called"); fn.Count != 0 || fn.Executed {
		t.Errorf("never_called ran: %+v", fn)
	}

	// Input-driven: 'b' takes a branch, and the next read shows it.
	cs.send(t, "b")
	cs.waitFor(t, "b", 1)
	if got := pl.coverageJSON(t, path).line(t, m["on-b"]); got != 1 {
		t.Fatalf("after 'b': on-b %d, want 1", got)
	}

	// The real LCOV tools accept the tracefile and agree with our totals.
	r = pl.coverageJSON(t, path)
	tf := filepath.Join(t.TempDir(), "cov.info")
	os.WriteFile(tf, pl.coverage(t, path, "lcov"), 0o600)
	lcovAgrees(t, tf, r)
	// genhtml with default flags, from elsewhere than the sources, as a user
	// runs it on the LCOV: the firmware links a stand-in C library whose
	// debug info names a build machine's directory that does not exist here.
	if out, err := genhtml(t, tf); err != nil {
		t.Fatalf("genhtml: %v\n%s", err, out)
	}
	lib := "/nonexistent/toolchain-build/newlib/src/"
	if got := r.paths(r.OtherFiles); !slices.Equal(got, []string{lib + "covlib.c", lib + "covlib_copy.S"}) {
		t.Errorf("other files %q, want the stand-in library's", got)
	}
	if !slices.ContainsFunc(r.paths(r.Files), func(p string) bool { return strings.HasSuffix(p, "/firmware/src/covasm.S") }) {
		t.Errorf("the firmware's own assembly is not among its files: %q", r.paths(r.Files))
	}
	if !r.hasNote("include=all") {
		t.Errorf("notes do not say how to get the other files: %v", r.Notes)
	}
	// include=all keeps them, and genhtml then stops at one it cannot read.
	var all covReport
	pl.must(t, 200, "GET", path+"?format=json&include=all", nil, &all)
	if len(all.Files) != len(r.Files)+2 || len(all.OtherFiles) != 0 || all.Totals.Lines.Found <= r.Totals.Lines.Found {
		t.Errorf("include=all: files %q, other %q, totals %+v", all.paths(all.Files), all.paths(all.OtherFiles), all.Totals)
	}
	os.WriteFile(tf, pl.must(t, 200, "GET", path+"?format=lcov&include=all", nil, nil), 0o600)
	lcovAgrees(t, tf, all)
	if out, err := genhtml(t, tf); err == nil || !strings.Contains(string(out), "cannot read "+lib) {
		t.Errorf("genhtml of include=all: %v\n%s", err, out)
	}
	checkHTMLZip(t, pl.coverage(t, path, "html"), "covlib.c", "Outside the program's sources")

	// Stop stores the report as artifacts and announces it.
	var rep events.CoverageReport
	pl.must(t, 200, "POST", path+"/stop", nil, &rep)
	for _, f := range []string{"counts", "json", "lcov", "html"} {
		if rep.Artifacts[f] == "" {
			t.Fatalf("stored report lacks %s: %+v", f, rep)
		}
	}
	if rep.Totals.LinesFound != r.Totals.Lines.Found || len(rep.Sessions) != 1 {
		t.Fatalf("stored report %+v", rep)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rec.Wait(ctx, events.TypeCoverageReady, 1); err != nil {
		t.Fatalf("no coverage.ready event: %v", err)
	}
	pl.must(t, 200, "GET", "/api/v1/coverage/reports/"+rep.ID, nil, nil)

	// A second session, coverage started while running; merged with the
	// stored report, the input branch adds up.
	id2, cs2 := newSession(false)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id2+"/coverage/start", nil, nil)
	cs2.send(t, "b")
	cs2.waitFor(t, "b", 1)
	cs2.send(t, "b")
	cs2.waitFor(t, "b", 2)
	var merged events.CoverageReport
	pl.must(t, 201, "POST", "/api/v1/coverage/merge", map[string]any{"session_ids": []string{id2}, "report_ids": []string{rep.ID}}, &merged)
	mr := pl.coverageJSON(t, "/api/v1/coverage/reports/"+merged.ID)
	if got := mr.line(t, m["on-b"]); got != 3 {
		t.Fatalf("merged on-b %d, want 3", got)
	}
	// Started while running: boot-time code is not in the second window,
	// and main, entered before it, has 0 calls but ran.
	r2 := pl.coverageJSON(t, "/api/v1/sessions/"+id2+"/coverage")
	if got := r2.line(t, m["loop-body"]); got != 0 {
		t.Fatalf("window opened after boot counts boot code: %d", got)
	}
	if fn := r2.function(t, "main"); fn.Count != 0 || !fn.Executed {
		t.Errorf("main in a window opened after boot: %+v, want 0 calls and executed", fn)
	}
	if fn := r2.function(t, "classify"); fn.Count != 0 || fn.Executed {
		t.Errorf("classify in a window opened after boot: %+v, want not executed", fn)
	}
	checkHTMLZip(t, pl.coverage(t, "/api/v1/sessions/"+id2+"/coverage", "html"),
		`<td>main</td><td>0x[0-9a-f]+</td><td class=n>\d+</td><td class="n c">0</td><td class=c>yes</td>`)

	coverageBadInput(t, pl, id)
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id2, nil, nil)
}

func coverageBadInput(t *testing.T, pl *platform, covID string) {
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "none", "board_config": map[string]string{"board": "netduino2"}}, &s)
	bare := s["id"].(string)
	defer pl.must(t, 204, "DELETE", "/api/v1/sessions/"+bare, nil, nil)
	for _, c := range []struct {
		name, method, path string
		status             int
		contains           string
	}{
		{"start without a program", "POST", "/api/v1/sessions/" + bare + "/coverage/start", 409, "no program"},
		{"report without a program", "GET", "/api/v1/sessions/" + bare + "/coverage", 409, "no program"},
		{"unknown format", "GET", "/api/v1/sessions/" + covID + "/coverage?format=pdf", 400, "format"},
		{"unknown include", "GET", "/api/v1/sessions/" + covID + "/coverage?format=lcov&include=everything", 400, `include must be \"program\"`},
		{"unknown report", "GET", "/api/v1/coverage/reports/0123456789abcdef", 404, "not found"},
		{"empty merge", "POST", "/api/v1/coverage/merge", 400, "session_ids"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.method == "POST" && strings.HasSuffix(c.path, "merge") {
				body = map[string]any{}
			}
			code, b := pl.call(t, c.method, c.path, body, nil)
			if code != c.status || !strings.Contains(string(b), c.contains) {
				t.Fatalf("%d %s", code, b)
			}
		})
	}

	// A stripped ELF: function level, and no LCOV (no source lines).
	stripped := filepath.Join(t.TempDir(), "stripped.elf")
	if out, err := exec.Command("arm-none-eabi-strip", "--strip-debug", "-o", stripped, firmware(t, "netduino2", "cov.elf")).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v %s", err, out)
	}
	sid := coveredSession(t, pl, stripped, "elf")
	r := pl.coverageJSON(t, "/api/v1/sessions/"+sid+"/coverage")
	if r.Level != "function" || r.function(t, "classify").Count != 2 {
		t.Fatalf("stripped: level %s", r.Level)
	}
	if code, b := pl.call(t, "GET", "/api/v1/sessions/"+sid+"/coverage?format=lcov", nil, nil); code != 422 || !strings.Contains(string(b), "--strip-debug") {
		t.Fatalf("lcov of a stripped ELF: %d %s", code, b)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+sid, nil, nil)

	// Fully stripped: addresses only, and saying why, not calling it a BIN.
	if out, err := exec.Command("arm-none-eabi-strip", "--strip-all", "-o", stripped, firmware(t, "netduino2", "cov.elf")).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v %s", err, out)
	}
	sid = coveredSession(t, pl, stripped, "elf")
	r = pl.coverageJSON(t, "/api/v1/sessions/"+sid+"/coverage")
	if r.Level != "address" || !r.hasNote("fully stripped") || r.hasNote("BIN") {
		t.Fatalf("fully stripped: level %s notes %q", r.Level, r.Notes)
	}
	if code, b := pl.call(t, "GET", "/api/v1/sessions/"+sid+"/coverage?format=lcov", nil, nil); code != 422 || !strings.Contains(string(b), "fully stripped") {
		t.Fatalf("lcov of a fully stripped ELF: %d %s", code, b)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+sid, nil, nil)

	// A BIN: addresses only, and the report says so.
	bid := coveredSession(t, pl, firmware(t, "netduino2", "fw.bin"), "bin")
	r = pl.coverageJSON(t, "/api/v1/sessions/"+bid+"/coverage")
	if r.Level != "address" || !r.hasNote("BIN or HEX") {
		t.Fatalf("bin: level %s notes %v", r.Level, r.Notes)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+bid, nil, nil)
}

// lcovAgrees runs lcov --summary on a tracefile and compares its totals
// with the JSON report's.
func lcovAgrees(t *testing.T, tracefile string, r covReport) {
	t.Helper()
	out, err := exec.Command("lcov", "--summary", tracefile, "--rc", "lcov_branch_coverage=1").CombinedOutput()
	if err != nil {
		t.Fatalf("lcov --summary: %v\n%s", err, out)
	}
	for what, tally := range map[string]struct{ Found, Hit int }{"lines": r.Totals.Lines, "functions": r.Totals.Functions, "branches": r.Totals.Branches} {
		want := strconv.Itoa(tally.Hit) + " of " + strconv.Itoa(tally.Found) + " "
		if !regexp.MustCompile(`(?m)^\s*` + what + `\.*: [0-9.]+% \(` + want).Match(out) {
			t.Errorf("lcov --summary %s disagrees with JSON %+v:\n%s", what, tally, out)
		}
	}
}

// genhtml renders a tracefile with default flags from a directory of its
// own, as a user would; its output with an error, or any warning, fails.
func genhtml(t *testing.T, tracefile string) ([]byte, error) {
	t.Helper()
	gen := exec.Command("genhtml", "-o", t.TempDir(), tracefile)
	gen.Dir = t.TempDir()
	out, err := gen.CombinedOutput()
	if err == nil && bytes.Contains(bytes.ToLower(out), []byte("warning")) {
		err = errors.New("genhtml warned")
	}
	return out, err
}

// checkHTMLZip checks that the HTML report is a zip whose entries are dated
// now, not 1980, and whose index matches each pattern.
func checkHTMLZip(t *testing.T, b []byte, index ...string) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("html is not a zip: %v", err)
	}
	for _, f := range zr.File {
		if d := time.Since(f.Modified); d < -time.Minute || d > 10*time.Minute {
			t.Errorf("zip entry %s dated %s", f.Name, f.Modified)
		}
		if f.Name != "index.html" {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(rc)
		rc.Close()
		for _, re := range index {
			if !regexp.MustCompile(re).Match(page) {
				t.Errorf("index.html does not match %q:\n%s", re, page)
			}
		}
	}
}

// coveredSession runs an image on netduino2 with coverage on.
func coveredSession(t *testing.T, pl *platform, path, format string) string {
	code, body := pl.upload(t, filepath.Base(path), format, path, nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "c", "coverage": true, "board_config": map[string]string{"board": "netduino2"}}, &s)
	id := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": decode(t, body)["id"].(string)}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	pl.dialConsole(t, id, "").waitFor(t, "ready", 1)
	return id
}
