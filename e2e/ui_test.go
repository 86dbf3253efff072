package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/machineserver/machineserver/shared/model"
)

// uiWait bounds each step of a browser test: headless chromium on two
// shared cores is slow, and every step waits for a condition, never a time.
const uiWait = 90 * time.Second

// screenshotDir is where the browser tests leave a picture of each page.
const screenshotDir = "../build/ui-screenshots"

// browser is headless Debian chromium with one tab, driven over CDP.
type browser struct {
	t    testing.TB
	ctx  context.Context
	base string
}

func newBrowser(t testing.TB, base string) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (make test installs Debian's chromium): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.WindowSize(1440, 900),
		chromedp.UserDataDir(t.TempDir()))
	if os.Geteuid() == 0 {
		// Chromium refuses to sandbox its renderers as root.
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first action starts the browser, which lives as long as the
	// context it runs on: this one, not do's shorter ones.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx, base: base}
}

// on is the same tab, failing t (a subtest) on errors.
func (b *browser) on(t testing.TB) *browser { return &browser{t: t, ctx: b.ctx, base: b.base} }

// tab opens another tab of the same browser, closed when the test ends.
func (b *browser) tab() *browser {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		b.t.Fatalf("new tab: %v", err)
	}
	return &browser{t: b.t, ctx: ctx, base: b.base}
}

// do runs actions within uiWait; a failure leaves a screenshot of the page.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(what))
	b.shot("failed-" + name)
	text, _ := evalIn[string](b, `document.body.innerText`)
	b.t.Fatalf("browser: %s: %v\npage text:\n%s", what, err, tail(text, 3000))
}

// evalIn evaluates a JavaScript expression in the page (awaiting a promise).
func evalIn[T any](b *browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, uiWait)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

func eval[T any](b *browser, what, expr string) T {
	b.t.Helper()
	v, err := evalIn[T](b, expr)
	if err != nil {
		b.fail(what, err)
	}
	return v
}

// until waits for a JavaScript expression to be truthy.
func (b *browser) until(what, expr string) {
	b.t.Helper()
	b.do(what, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(uiWait))(ctx, t)
		return err
	}))
}

// shot saves a screenshot of the whole page as build/ui-screenshots/name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiWait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.MkdirAll(screenshotDir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(screenshotDir, name+".png"), png, 0o644)
	}
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
}

// click presses a button or link found by CSS.
func (b *browser) click(what, css string) {
	b.t.Helper()
	b.do(what, chromedp.WaitEnabled(chromedp.CSS(css)), chromedp.Click(chromedp.CSS(css)))
}

// fill sets a field's value as a user typing it would.
func (b *browser) fill(css, value string) {
	b.t.Helper()
	b.do("fill "+css, chromedp.WaitVisible(chromedp.CSS(css)),
		chromedp.Evaluate[chromedp.Void](`document.querySelector(`+jsString(css)+`).value = ''`),
		chromedp.SendKeys(chromedp.CSS(css), value))
}

// choose picks an option of a <select> once the option is there.
func (b *browser) choose(css, value string) {
	b.t.Helper()
	b.do("choose "+value+" in "+css, chromedp.WaitReady(chromedp.CSS(css+` option[value="`+value+`"]`)), chromedp.SetValue(chromedp.CSS(css), value))
}

// terminalText is what the console's terminal shows now (its visible
// rows, as a user sees them).
const terminalText = `(document.querySelector('#terminal .xterm-rows')?.textContent || '').replace(/\u00a0/g, ' ')`

func jsString(s string) string { return fmt.Sprintf("%q", s) }

// waitTerminal waits until the terminal shows s.
func (b *browser) waitTerminal(s string) {
	b.t.Helper()
	b.until("the terminal shows "+s, terminalText+`.includes(`+jsString(s)+`)`)
}

// typeCommand clears the terminal, types keys into it (as keyboard
// events) and waits for the output to match the regular expression want.
func (b *browser) typeCommand(keys, want string) {
	b.t.Helper()
	b.do("type "+keys, chromedp.Click(chromedp.CSS("#console-clear")), chromedp.Click(chromedp.CSS("#terminal")), typeKeys(keys))
	b.until("the terminal shows "+want, want+`.test(`+terminalText+`)`)
}

// typeKeys types into the focused element as a keyboard does: a keyDown
// carrying the text, then keyUp. (chromedp.KeyEvent sends the text in a
// separate char event, which Chrome turns into keypress and input even
// when the page cancelled the keydown, as xterm.js does for every key it
// handles, so each key would reach the terminal twice.)
func typeKeys(keys string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, r := range keys {
			var down, up input.DispatchKeyEventParams
			for _, e := range kb.Encode(r) {
				switch e.Type {
				case input.DispatchKeyEventTypeKeyDown:
					down = *e
				case input.DispatchKeyEventTypeChar:
					down.Text, down.UnmodifiedText = e.Text, e.UnmodifiedText
				case input.DispatchKeyEventTypeKeyUp:
					up = *e
				}
			}
			for _, e := range []input.DispatchKeyEventParams{down, up} {
				if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, e); err != nil {
					return fmt.Errorf("key %q: %w", r, err)
				}
			}
		}
		return nil
	})
}

// dropFiles drops files from the "desktop" onto an element, as a user
// dragging them from a file manager does (CDP Input.dispatchDragEvent).
func dropFiles(css string, files ...string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		box, err := chromedp.Dimensions(chromedp.CSS(css))(ctx, t)
		if err != nil {
			return err
		}
		q := box.Content
		x, y := (q[0]+q[4])/2, (q[1]+q[5])/2
		for _, typ := range []input.DispatchDragEventType{input.DispatchDragEventTypeDragEnter, input.DispatchDragEventTypeDragOver, input.DispatchDragEventTypeDrop} {
			_, err := cdp.Call(ctx, t, input.DispatchDragEvent, input.DispatchDragEventParams{
				Type: typ, X: x, Y: y, Data: &input.DragData{Items: []*input.DragDataItem{}, Files: files, DragOperationsMask: 1},
			})
			if err != nil {
				return fmt.Errorf("%s: %w", typ, err)
			}
		}
		return nil
	})
}

// signIn opens the UI at / (which sends a browser to /ui/), is turned away
// with a wrong key, and signs in with the admin key.
func (b *browser) signIn() {
	b.t.Helper()
	b.do("open the UI", chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.CSS("#api-key")))
	b.shot("00-sign-in")
	b.fill("#api-key", "ms_wrong_0123456789abcdef")
	b.click("submit a wrong key", `.login button[type="submit"]`)
	b.until("a wrong key is refused", `document.querySelector('.login .error:not([hidden])')?.textContent.includes('not accepted')`)
	b.fill("#api-key", apiKey)
	b.click("sign in", `.login button[type="submit"]`)
	b.do("the sessions page", chromedp.WaitVisible(chromedp.CSS("#sessions-table")))
}

// TestUI drives the web UI in headless chromium against the real
// standalone platform, as a user would: sign in, upload firmware by drag
// and drop and by the file picker, create and power on a session, see its
// banner in the terminal and type into it, take, restore and fork a
// snapshot, collect coverage, run a job, and see state changes made
// elsewhere arrive without a reload.
func TestUI(t *testing.T) {
	pl := startStandalone(t)
	b := newBrowser(t, pl.base)
	b.signIn()
	b.shot("01-sessions-empty")
	if u := eval[string](b, "location", `location.href`); !strings.HasPrefix(u, pl.base+"/ui/") {
		t.Fatalf("signed in at %s, want under %s/ui/", u, pl.base)
	}
	// Nothing below reloads the page: this mark would be gone if it did.
	eval[bool](b, "mark the page", `window.noReload = true`)

	t.Run("programs", func(t *testing.T) { uiPrograms(t, pl, b.on(t)) })
	t.Run("session", func(t *testing.T) { uiSession(t, pl, b.on(t)) })
	t.Run("live", func(t *testing.T) { uiLive(t, pl, b.on(t)) })
	t.Run("jobs", func(t *testing.T) { uiJobs(t, pl, b.on(t)) })
	if !eval[bool](b, "the page was not reloaded", `window.noReload === true`) {
		t.Fatal("the page was reloaded during the test")
	}
	// Opening the UI again and again stays fast: each page's event stream
	// (a streaming fetch) ends with the page, else the pages the browser
	// keeps for going back hold its six connections to the host and a
	// load waits a minute for one.
	for i := 0; i < 8; i++ {
		b.do("open again", chromedp.Navigate(fmt.Sprintf("%s/ui/?visit=%d#/sessions", b.base, i)), chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Poll[chromedp.Void](`performance.getEntriesByName('interactive').length > 0`, chromedp.WithPollingTimeout(20*time.Second))(ctx, t)
			return err
		}))
	}
	b.click("sign out", "#signout")
	b.do("the sign-in page", chromedp.WaitVisible(chromedp.CSS("#api-key")))
	if eval[bool](b, "the key is forgotten", `sessionStorage.length > 0`) {
		t.Fatal("the key is still in sessionStorage after signing out")
	}
}

// TestUIDistributed: in a cluster the sessions function serves the UI,
// and the page works through the ingress (the tests' path gateway) like
// any client.
func TestUIDistributed(t *testing.T) {
	pl := startDistributed(t)
	b := newBrowser(t, pl.base)
	b.signIn()
	b.click("programs page", `#nav a[data-nav="programs"]`)
	b.do("drop firmware", chromedp.WaitVisible(chromedp.CSS("#dropzone")), dropFiles("#dropzone", absFirmware(t, "mps2-an385")))
	b.until("the program is listed", `document.querySelectorAll('#programs-table tbody tr[data-id]').length === 1`)

	// A key revoked while the page is open signs the user out, saying why.
	var key struct{ ID, Key string }
	pl.must(t, 201, "POST", "/api/v1/admin/keys", map[string]any{"name": "ui", "scopes": []string{"read", "write", "debug"}}, &key)
	b.click("sign out", "#signout")
	b.fill("#api-key", key.Key)
	b.click("sign in with the new key", `.login button[type="submit"]`)
	b.do("the sessions page", chromedp.WaitVisible(chromedp.CSS("#sessions-table")))
	pl.must(t, 200, "DELETE", "/api/v1/admin/keys/"+key.ID, nil, nil)
	b.click("programs page", `#nav a[data-nav="programs"]`)
	b.until("signed out with the reason", `document.querySelector('.login .error:not([hidden])')?.textContent.includes('revoked')`)
}

func absFirmware(t testing.TB, board string) string {
	p, err := filepath.Abs(firmware(t, board, "fw.elf"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// uiPrograms uploads the test firmware by dropping it on the page and by
// the file input, and deletes one again.
func uiPrograms(t *testing.T, pl *platform, b *browser) {
	b.click("programs page", `#nav a[data-nav="programs"]`)
	b.do("drop firmware", chromedp.WaitVisible(chromedp.CSS("#dropzone")), dropFiles("#dropzone", absFirmware(t, "mps2-an385")))
	b.until("the dropped program is listed", `[...document.querySelectorAll('#programs-table tbody tr[data-id]')].some(r => r.cells[0].textContent === 'fw')`)

	b.fill("#program-name", "picked")
	b.do("pick a file", chromedp.SetUploadFiles(chromedp.CSS("#program-file"), []string{absFirmware(t, "netduino2")}))
	b.until("the picked program is listed", `[...document.querySelectorAll('#programs-table tbody tr[data-id]')].some(r => r.cells[0].textContent === 'picked')`)
	b.shot("02-programs")

	// What the browser sent is the file, byte for byte.
	var list struct{ Programs []model.Program }
	pl.must(t, 200, "GET", "/api/v1/programs", nil, &list)
	if len(list.Programs) != 2 {
		t.Fatalf("programs after two uploads: %+v", list.Programs)
	}
	for _, p := range list.Programs {
		want := map[string]int64{"fw": fileSize(t, firmware(t, "mps2-an385", "fw.elf")), "picked": fileSize(t, firmware(t, "netduino2", "fw.elf"))}[p.Name]
		if p.Size != want || p.Format != model.FormatELF || len(p.SHA256) != 64 {
			t.Fatalf("program %s: size %d (want %d), format %s", p.Name, p.Size, want, p.Format)
		}
	}

	eval[bool](b, "accept confirmations", `(window.confirm = () => true, true)`)
	b.click("delete the picked program", `#programs-table tr[data-id="`+programID(t, pl, "picked")+`"] button[data-action="delete"]`)
	b.until("one program is left", `document.querySelectorAll('#programs-table tbody tr[data-id]').length === 1`)
	pl.must(t, 200, "GET", "/api/v1/programs", nil, &list)
	if len(list.Programs) != 1 || list.Programs[0].Name != "fw" {
		t.Fatalf("programs after delete: %+v", list.Programs)
	}
}

func fileSize(t testing.TB, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// programID is the id of the one program named name.
func programID(t testing.TB, pl *platform, name string) string {
	var list struct{ Programs []model.Program }
	pl.must(t, 200, "GET", "/api/v1/programs", nil, &list)
	for _, p := range list.Programs {
		if p.Name == name {
			return p.ID
		}
	}
	t.Fatalf("no program %q in %+v", name, list.Programs)
	return ""
}

// currentSession is the id in the session page's URL.
func (b *browser) currentSession() string {
	b.t.Helper()
	b.until("a session page", `/^#\/sessions\/[0-9a-f]+$/.test(location.hash)`)
	return strings.TrimPrefix(eval[string](b, "location", `location.hash`), "#/sessions/")
}

// uiSession creates and powers on a session from the form, uses its
// console both ways, and takes, restores and forks a snapshot.
func uiSession(t *testing.T, pl *platform, b *browser) {
	prog := programID(t, pl, "fw")
	b.click("sessions page", `#nav a[data-nav="sessions"]`)
	b.fill("#session-name", "ui-session")
	b.choose("#session-board", "mps2-an385")
	b.choose("#session-program", prog)
	b.click("create the session", "#session-create")
	id := b.currentSession()
	b.until("the session runs", `document.querySelector('#session-state [data-state]')?.dataset.state === 'running'`)
	b.waitTerminal("MS-TEST-FW mps2-an385 ready")

	// Keys typed into the terminal reach the UART; the firmware echoes them
	// and answers a command (whose answer overwrites the echoed line, as
	// the echoed \r returns the cursor).
	b.typeCommand("hello", `/hello/`)
	b.do("end the line", typeKeys("\r"))
	b.typeCommand("count\r", `/count=\d+/`)
	if c, _, _ := pl.console(t, id, 0); !strings.Contains(c, "count=") {
		t.Fatalf("the UART history has no answer to the typed command: %q", c)
	}

	// Every UART of the board is selectable; mps2-an385 echoes on uart1.
	ports := eval[[]string](b, "ports", `[...document.querySelectorAll('#console-port option')].map(o => o.value)`)
	if strings.Join(ports, ",") != "uart0,uart1,uart2" {
		t.Fatalf("console ports %v, want the board's uart0..uart2", ports)
	}
	b.choose("#console-port", "uart1")
	b.do("switch port", chromedp.Evaluate[chromedp.Void](`document.querySelector('#console-port').dispatchEvent(new Event('change'))`))
	b.until("uart1 connected", `document.querySelector('#console-status').dataset.status === 'connected'`)
	b.do("type on uart1", chromedp.Click(chromedp.CSS("#terminal")), typeKeys("second-uart"))
	b.waitTerminal("second-uart")
	if c := pl.consolePort(t, id, "uart1"); !strings.Contains(c, "second-uart") {
		t.Fatalf("uart1 history %q", c)
	}
	b.choose("#console-port", "uart0")
	b.do("switch back", chromedp.Evaluate[chromedp.Void](`document.querySelector('#console-port').dispatchEvent(new Event('change'))`))
	b.until("uart0's history again", `/tick \d+/.test(`+terminalText+`)`)
	b.until("the debugger snippet", `document.querySelector('#gdb-command')?.textContent.includes('target extended-remote')`)
	b.shot("03-session")

	// Snapshot, then restore it and fork it.
	b.fill("#snapshot-name", "booted")
	b.click("take a snapshot", "#snapshot-take")
	b.until("the snapshot is listed", `document.querySelectorAll('#snapshots-table tbody tr[data-id]').length === 1`)
	snap := eval[string](b, "snapshot id", `document.querySelector('#snapshots-table tbody tr[data-id]').dataset.id`)
	b.click("restore it", `#snapshots-table tr[data-id="`+snap+`"] button[data-action="restore"]`)
	b.until("the page says where the session came from", `document.querySelector('.meta').textContent.includes('from snapshot `+snap+`')`)
	var s model.Session
	pl.must(t, 200, "GET", "/api/v1/sessions/"+id, nil, &s)
	if s.SnapshotID != snap || s.State != model.StateRunning {
		t.Fatalf("after restore from the UI: snapshot %q state %s", s.SnapshotID, s.State)
	}
	// The restored guest still talks.
	b.typeCommand("count\r", `/count=\d+/`)

	b.click("fork it", `#snapshots-table tr[data-id="`+snap+`"] button[data-action="fork"]`)
	b.until("a link to the fork", `document.querySelector('.toast a[href^="#/sessions/"]')`)
	fork := strings.TrimPrefix(eval[string](b, "fork link", `document.querySelector('.toast a[href^="#/sessions/"]').getAttribute('href')`), "#/sessions/")
	pl.must(t, 200, "GET", "/api/v1/sessions/"+fork, nil, &s)
	if s.SnapshotID != snap || s.Name != "ui-session-fork-1" {
		t.Fatalf("fork: %+v", s)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+fork, nil, nil)

	// Coverage: open a window, stop it, open the HTML report in the page.
	b.click("start coverage", "#coverage-start")
	b.until("coverage window open", `document.querySelector('#coverage-state').textContent.includes('window is open')`)
	b.typeCommand("count\r", `/count=\d+/`)
	b.click("stop coverage", "#coverage-stop")
	b.until("coverage totals", `document.querySelector('#coverage-totals td.num')`)
	b.click("open the report", "#coverage-open")
	b.until("the report's index", `document.querySelector('dialog[open] iframe')?.contentDocument?.body?.textContent.includes('Functions')`)
	b.do("follow a file link", chromedp.Evaluate[chromedp.Void](`document.querySelector('dialog[open] iframe').contentDocument.querySelector('a[href$=".html"]').click()`))
	b.until("a file's page", `/f\d+\.html/.test(document.querySelector('dialog[open] .dialog-bar .muted').textContent)`)
	b.shot("04-coverage-report")
	b.do("close the report", chromedp.Evaluate[chromedp.Void](`document.querySelector('dialog[open]').close()`))
}

// consolePort reads a UART's whole history over HTTP.
func (pl *platform) consolePort(t testing.TB, id, port string) string {
	t.Helper()
	resp, err := httpGet(pl.base + "/api/v1/sessions/" + id + "/console?port=" + port)
	if err != nil || resp.code != 200 {
		t.Fatalf("console %s: %v %d %s", port, err, resp.code, resp.body)
	}
	return string(resp.body)
}

// uiLive changes state behind the page's back, through the API, and waits
// for the page to show it without a reload; then powers on from the page.
func uiLive(t *testing.T, pl *platform, b *browser) {
	id := b.currentSession()
	// The page follows the event stream (not its polling fallback).
	b.until("the event stream is live", `document.querySelector('#live').dataset.status === 'live'`)
	state := `document.querySelector('#session-state [data-state]')?.dataset.state`
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, nil)
	b.until("the page shows the power off", state+` === 'stopped'`)
	b.click("power on from the page", "#power-on")
	b.until("the page shows it running", state+` === 'running'`)
	b.waitTerminal("MS-TEST-FW mps2-an385 ready")
	// Long after the call, the power buttons follow the state (read once:
	// they must not be enabled again when the call ends).
	if !eval[bool](b, "power buttons", `document.querySelector('#power-on').disabled && !document.querySelector('#power-off').disabled`) {
		t.Fatal("power on is enabled on a running session after powering it on from the page")
	}

	b.click("sessions page", `#nav a[data-nav="sessions"]`)
	b.until("the session is listed", `document.querySelector('#sessions-table tr[data-id="`+id+`"]')`)
	var other model.Session
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "made-elsewhere", "board_config": map[string]string{"board": "netduino2"}}, &other)
	row := `document.querySelector('#sessions-table tr[data-id="` + other.ID + `"]')`
	b.until("a session created elsewhere appears", row)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+other.ID+"/program", map[string]string{"program_id": programID(t, pl, "fw")}, nil)
	b.until("its program appears", row+`?.cells[3].textContent !== 'none'`)
	b.shot("05-sessions")
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+other.ID, nil, nil)
	b.until("a session deleted elsewhere goes", `!`+row)
	b.click("power off from the list", `#sessions-table tr[data-id="`+id+`"] button[data-action="poweroff"]`)
	b.until("the list shows it stopped", `document.querySelector('#sessions-table tr[data-id="`+id+`"] [data-state]').dataset.state === 'stopped'`)
}

// uiJobs runs a job from the form and follows it to its verdict.
func uiJobs(t *testing.T, pl *platform, b *browser) {
	prog := programID(t, pl, "fw")
	b.click("jobs page", `#nav a[data-nav="jobs"]`)
	b.fill("#job-name", "banner check")
	b.choose("#job-program", prog)
	b.choose("#job-board", "mps2-an385")
	b.fill("#job-pass", `count=\d+`)
	b.fill("#job-script", `send count\r`)
	b.fill("#job-timeout", "20s")
	b.click("run the job", "#job-create")
	b.until("a job page", `/^#\/jobs\/[\w-]+$/.test(location.hash)`)
	id := strings.TrimPrefix(eval[string](b, "location", `location.hash`), "#/jobs/")
	b.until("the job passes", `document.querySelector('#job-state [data-state]')?.dataset.state === 'passed'`)
	b.waitTerminal("MS-TEST-FW mps2-an385 ready")
	b.shot("07-job")
	j := pl.waitJob(t, id)
	if j.State != model.JobPassed || j.Name != "banner check" || len(j.UARTScript) != 1 || j.UARTScript[0].Send != "count\r" {
		t.Fatalf("job from the form: %+v", j)
	}
	b.click("jobs page", `#nav a[data-nav="jobs"]`)
	b.until("the job is listed as passed", `document.querySelector('#jobs-table tr[data-id="`+id+`"] [data-state]')?.dataset.state === 'passed'`)
	b.shot("06-jobs")

	// A bad pattern is refused with the API's message.
	b.fill("#job-pass", `(`)
	b.click("run a bad job", "#job-create")
	b.until("the error is shown", `document.querySelector('.toast.error')?.textContent.includes('pass_pattern')`)

	// A recorded job that failed links its recording: one click makes the
	// replay session and opens it.
	var rec model.Job
	pl.must(t, 201, "POST", "/api/v1/jobs", model.JobSpec{Name: "recorded", ProgramID: prog, BoardConfig: model.BoardConfig{Board: "mps2-an385"},
		PassPattern: "never printed", FailPattern: "ready", Timeout: "20s", Record: true}, &rec)
	if rec = pl.waitJob(t, rec.ID); rec.State != model.JobFailed || rec.RecordingID == "" {
		t.Fatalf("recorded job: %+v", rec)
	}
	b.do("open the job", chromedp.Evaluate[chromedp.Void](`location.hash = '#/jobs/`+rec.ID+`'`))
	b.click("replay its recording", "#job-replay")
	b.until("the replay session's page", `document.querySelector('#session-replay-of')?.textContent.includes('`+rec.RecordingID+`')`)
	id = strings.TrimPrefix(eval[string](b, "location", `location.hash`), "#/sessions/")
	var replay model.Session
	pl.must(t, 200, "GET", "/api/v1/sessions/"+id, nil, &replay)
	if replay.ReplayOf != rec.RecordingID {
		t.Fatalf("the replay session: %+v", replay)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	pl.must(t, 200, "DELETE", "/api/v1/recordings/"+rec.RecordingID, nil, nil)
}

// uiLoad is a first load of the sessions page with an empty cache: the
// bytes it transferred and the time from navigation to its data on screen
// (the page's "interactive" performance mark).
func uiLoad(b *browser) (bytes, ms float64) {
	b.t.Helper()
	b.do("empty cache", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: true})
		return err
	}))
	b.do("load", chromedp.Navigate(b.base+"/ui/?load="+randomHex(4)+"#/sessions"))
	b.until("interactive", `performance.getEntriesByName('interactive').length > 0`)
	v := eval[[]float64](b, "timings", `[
		performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).reduce((n, e) => n + e.transferSize, 0),
		performance.getEntriesByName('interactive')[0].startTime]`)
	return v[0], v[1]
}

// BenchmarkUI measures the web UI in headless chromium on the standalone
// platform: a first load of the sessions page with an empty cache (bytes
// transferred, and time from navigation to the page's data on screen), and
// the console's keystroke-to-echo round trip: from the key event in the
// browser to the echoed character drawn in the terminal (and, within that,
// to the echo's WebSocket message arriving in the page), against a raw
// WebSocket client's send-to-echo on the same session, taken in turns.
func BenchmarkUI(b *testing.B) {
	pl := startStandalone(b, "MS_LOG_LEVEL=warn")
	br := newBrowser(b, pl.base)
	br.signIn()
	b.Run("first-load", func(b *testing.B) {
		var kib float64
		var tti []time.Duration
		for i := 0; i < b.N; i++ {
			n, ms := uiLoad(br)
			kib += n / 1024
			tti = append(tti, time.Duration(ms*float64(time.Millisecond)))
		}
		b.ReportMetric(kib/float64(b.N), "KiB")
		b.ReportMetric(ms(percentile(tti, 0.5)), "tti-p50-ms")
		b.ReportMetric(ms(percentile(tti, 0.99)), "tti-p99-ms")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("keystroke-echo", func(b *testing.B) {
		id := runningSession(b, pl, "mps2-an385")
		// A tab of its own: the first loads left pages in the back/forward
		// cache, and chromedp's evaluations can land in one of those.
		br := br.tab()
		br.do("note WebSocket arrivals", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: wsArrivals})
			return err
		}))
		br.signIn()
		br.do("open the session", chromedp.Navigate(pl.base+"/ui/#/sessions/"+id))
		br.until("console connected", `document.querySelector('#console-status')?.dataset.status === 'connected'`)
		raw := pl.dialConsole(b, id, "?offset=end")
		var browser, arrived, direct []time.Duration
		for i := 0; i < b.N; i++ {
			// The terminal is cleared first, so the echo is the one new x
			// on the screen whatever scrolled.
			br.do("clear", chromedp.Click(chromedp.CSS("#console-clear")))
			eval[bool](br, "watch for the echo", echoWatch)
			br.do("type", typeKeys("x"))
			rt := eval[[]float64](br, "echo", `window.echoRT`)
			browser = append(browser, time.Duration(rt[0]*float64(time.Millisecond)))
			arrived = append(arrived, time.Duration(rt[1]*float64(time.Millisecond)))

			n := strings.Count(raw.String(), "z")
			start := time.Now()
			raw.send(b, "z")
			raw.waitFor(b, "z", n+1)
			direct = append(direct, time.Since(start))
		}
		b.ReportMetric(ms(percentile(browser, 0.5)), "browser-p50-ms")
		b.ReportMetric(ms(percentile(browser, 0.99)), "browser-p99-ms")
		b.ReportMetric(ms(percentile(arrived, 0.5)), "browser-ws-p50-ms")
		b.ReportMetric(ms(percentile(direct, 0.5)), "raw-ws-p50-ms")
		b.ReportMetric(ms(percentile(direct, 0.99)), "raw-ws-p99-ms")
		b.ReportMetric(0, "ns/op")
	})
}

// wsArrivals, run in the page before its scripts, notes when each
// WebSocket message arrives (window.wsArrived).
const wsArrivals = `(() => {
	const WS = window.WebSocket;
	window.WebSocket = class extends WS {
		constructor(...args) {
			super(...args);
			this.addEventListener('message', () => { window.wsArrived = performance.now(); });
		}
	};
})()`

// echoWatch arms window.echoRT: the milliseconds from the next keydown in
// the terminal to one more x drawn in its rows, and to the arrival of the
// last WebSocket message before that (the echo's: the firmware's own
// output is a line a second).
const echoWatch = `(() => {
	const ta = document.querySelector('#terminal .xterm-helper-textarea');
	const rows = document.querySelector('#terminal .xterm-rows');
	const count = () => (rows.textContent.match(/x/g) || []).length;
	const before = count();
	let t0 = 0;
	ta.addEventListener('keydown', () => { t0 = performance.now(); }, { once: true, capture: true });
	window.echoRT = new Promise((resolve) => {
		const mo = new MutationObserver(() => {
			if (t0 && count() > before) { mo.disconnect(); resolve([performance.now() - t0, window.wsArrived - t0]); }
		});
		mo.observe(rows, { childList: true, subtree: true, characterData: true });
	});
	return true;
})()`
