package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/shared/testenv"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ms-e2e-bin")
	if err != nil {
		panic(err)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/machineserver", "./runner", "./functions/sessions", "./functions/programs", "./functions/snapshots", "./functions/jobs", "./cmd/msctl")
	cmd.Dir = ".."
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	// Raw requests that do not set credentials themselves (health checks,
	// benchmarks, CloudEvents posts) carry the admin key too.
	http.DefaultClient.Transport = keyTransport{http.DefaultTransport}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// apiKey is the admin key of tenant default that every started process
// installs (MS_BOOTSTRAP_API_KEY) and every test request carries, so the
// platform runs with authentication on, as it does by default.
var apiKey = "ms_e2e_" + randomHex(32)

// authEnv goes into every started process: the bootstrap key, the shared
// session token secret of the distributed form, and msctl's credentials.
var authEnv = []string{"MS_BOOTSTRAP_API_KEY=" + apiKey, "MS_SESSION_TOKEN_SECRET=" + randomHex(32), "MS_TOKEN=" + apiKey}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// keyTransport adds the admin key to requests without credentials.
type keyTransport struct{ base http.RoundTripper }

func (k keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "ApiKey "+apiKey)
	}
	return k.base.RoundTrip(r)
}

// firmware returns the path of a built test firmware file.
func firmware(t testing.TB, board, file string) string {
	dir := os.Getenv("MS_TEST_FIRMWARE_DIR")
	if dir == "" {
		dir = "../build/firmware"
	}
	p := filepath.Join(dir, board, file)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test firmware %s missing (run make firmware): %v", p, err)
	}
	return p
}

// proc is a started binary whose output is kept for failure reports.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startProc(t testing.TB, name string, env []string, args ...string) *proc {
	p := &proc{name: name, out: &syncBuffer{}}
	p.cmd = exec.Command(filepath.Join(binDir, name), args...)
	p.cmd.Env = append(append(os.Environ(), authEnv...), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, tail(p.out.String(), 6000))
		}
	})
	return p
}

// stop sends SIGTERM and waits for a graceful exit (the process stops its
// emulators), killing the group only as a last resort.
func (p *proc) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// platform is one running Machine Server, in either form.
type platform struct {
	name      string
	base      string // API base URL
	events    map[string]string
	socketDir string // where the runner's emulators keep their sockets
	dataDir   string // standalone only: MS_DATA_DIR
	procs     []*proc
	// fnURLs and env are the distributed form's function URLs and common
	// environment, for tests that start more function processes.
	fnURLs map[string]string
	env    []string
	// runnerURL is the distributed form's runner (its token is
	// runnerToken), for the runner API the public one does not cover yet.
	runnerURL string
}

const runnerToken = "test-runner-token"

func waitHealthy(t testing.TB, url string, p *proc) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if p.cmd.ProcessState != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s at %s never became healthy:\n%s", p.name, url, tail(p.out.String(), 4000))
}

func shortDir(t testing.TB, prefix string) string {
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// forms are the platform's two forms, for the tests that run on both.
var forms = []struct {
	name  string
	start func(testing.TB, ...string) *platform
}{{"standalone", startStandalone}, {"distributed", startDistributed}}

// startStandalone runs `machineserver` on a free port with a fresh data dir.
func startStandalone(t testing.TB, env ...string) *platform {
	port := testenv.FreePort(t)
	sock := shortDir(t, "mss")
	pl := &platform{name: "standalone", base: fmt.Sprintf("http://127.0.0.1:%d", port), socketDir: sock, dataDir: shortDir(t, "msd")}
	pl.events = map[string]string{"sessions": pl.base + "/events/sessions", "programs": pl.base + "/events/programs", "snapshots": pl.base + "/events/snapshots", "jobs": pl.base + "/events/jobs"}
	p := startProc(t, "machineserver", append([]string{
		fmt.Sprintf("PORT=%d", port), "MS_DATA_DIR=" + pl.dataDir, "MS_RUNNER_SOCKET_DIR=" + sock, "MS_LOG_LEVEL=debug",
	}, env...))
	pl.procs = append(pl.procs, p)
	waitHealthy(t, pl.base, p)
	t.Cleanup(func() { pl.assertNoEmulators(t) })
	return pl
}

// startDistributed runs the functions and the runner as separate processes
// on real Redis and real S3, with a path-routing gateway in front (the role
// the cluster's ingress plays).
func startDistributed(t testing.TB, env ...string) *platform {
	redisURL := testenv.Redis(t)
	s3 := testenv.S3(t)
	common := append([]string{
		"MS_REDIS_URL=" + redisURL, "MS_S3_ENDPOINT=" + s3.Endpoint, "MS_S3_ACCESS_KEY=" + s3.AccessKey,
		"MS_S3_SECRET_KEY=" + s3.SecretKey, "MS_S3_BUCKET=" + s3.Bucket, "MS_RUNNER_TOKEN=" + runnerToken, "MS_LOG_LEVEL=debug",
		"MS_RUNNER_HEARTBEAT=1s",
	}, env...)
	sock := shortDir(t, "msr")
	pl := &platform{name: "distributed", socketDir: sock}

	rport := testenv.FreePort(t)
	runner := startProc(t, "runner", append([]string{fmt.Sprintf("PORT=%d", rport), "MS_RUNNER_ID=runner-0",
		"MS_RUNNER_DIR=" + shortDir(t, "msrd"), "MS_RUNNER_SOCKET_DIR=" + sock}, common...))
	pl.runnerURL = fmt.Sprintf("http://127.0.0.1:%d", rport)
	waitHealthy(t, pl.runnerURL, runner)

	urls := map[string]string{}
	var procs []*proc
	for _, fn := range []string{"sessions", "programs", "snapshots", "jobs"} {
		port := testenv.FreePort(t)
		p := startProc(t, fn, append([]string{fmt.Sprintf("PORT=%d", port)}, common...))
		urls[fn] = fmt.Sprintf("http://127.0.0.1:%d", port)
		waitHealthy(t, urls[fn], p)
		procs = append(procs, p)
	}
	// Stop functions before the runner, and the runner before Redis/S3.
	pl.procs = append(procs, runner)
	gw := httptest.NewServer(gateway(urls))
	t.Cleanup(gw.Close)
	pl.base = gw.URL
	pl.events = map[string]string{"sessions": urls["sessions"] + "/", "programs": urls["programs"] + "/", "snapshots": urls["snapshots"] + "/", "jobs": urls["jobs"] + "/"}
	pl.fnURLs, pl.env = urls, common
	t.Cleanup(func() { pl.assertNoEmulators(t) })
	return pl
}

// snapshotPath is what the HTTPRoute in knative/routing.yaml sends to the
// snapshots function under /api/v1/sessions and /api/v1/systems.
var snapshotPath = regexp.MustCompile(`^/api/v1/(sessions|systems)/[^/]+/(snapshots|restore)$`)

func gateway(urls map[string]string) http.Handler {
	proxies := map[string]*httputil.ReverseProxy{}
	for fn, u := range urls {
		target, _ := url.Parse(u)
		proxies[fn] = httputil.NewSingleHostReverseProxy(target)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, "/api/v1/programs"):
			proxies["programs"].ServeHTTP(w, r)
		case strings.HasPrefix(p, "/api/v1/jobs"):
			proxies["jobs"].ServeHTTP(w, r)
		case strings.HasPrefix(p, "/api/v1/snapshots"), strings.HasPrefix(p, "/api/v1/system-snapshots"), snapshotPath.MatchString(p):
			proxies["snapshots"].ServeHTTP(w, r)
		default:
			proxies["sessions"].ServeHTTP(w, r)
		}
	})
}

// emulators lists QEMU processes whose command line uses dir.
func emulators(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte("qemu-system")) && bytes.Contains(b, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// assertNoEmulators runs after the platform stopped: nothing may be left.
func (pl *platform) assertNoEmulators(t testing.TB) {
	for _, p := range pl.procs {
		p.stop()
	}
	if pids := emulators(pl.socketDir); len(pids) > 0 {
		t.Errorf("%s: QEMU processes left after shutdown: %v", pl.name, pids)
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// apiError is the error JSON.
type apiError struct {
	Error struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Details json.RawMessage `json:"details"`
	} `json:"error"`
}

// call does a JSON request and decodes the response into out (if non-nil).
func (pl *platform) call(t testing.TB, method, path string, body any, out any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ctype = strings.NewReader(b), "application/json"
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/octet-stream"
	default:
		j, _ := json.Marshal(b)
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req, _ := http.NewRequest(method, pl.base+path, rd)
	req.Header.Set("Authorization", "ApiKey "+apiKey)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode, data
}

// must is call that requires the given status.
func (pl *platform) must(t testing.TB, want int, method, path string, body, out any) []byte {
	t.Helper()
	code, data := pl.call(t, method, path, body, out)
	if code != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, code, want, data)
	}
	return data
}

// upload posts a firmware file as multipart.
func (pl *platform) upload(t testing.TB, name, format, path string, fields map[string]string) (int, []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return pl.uploadBytes(t, name, format, filepath.Base(path), data, fields)
}

func (pl *platform) uploadBytes(t testing.TB, name, format, filename string, data []byte, fields map[string]string) (int, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("name", name)
	if format != "" {
		mw.WriteField("format", format)
	}
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	fw, _ := mw.CreateFormFile("file", filename)
	fw.Write(data)
	mw.Close()
	req, _ := http.NewRequest("POST", pl.base+"/api/v1/programs", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "ApiKey "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// console is a WebSocket console client that accumulates output.
type console struct {
	c   *websocket.Conn
	mu  sync.Mutex
	buf bytes.Buffer
	got chan struct{}
}

func (pl *platform) dialConsole(t testing.TB, id, query string) *console {
	t.Helper()
	u := strings.Replace(pl.base, "http", "ws", 1) + "/api/v1/sessions/" + id + "/stream/console" + query
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"ApiKey " + apiKey}}})
	if err != nil {
		t.Fatalf("dial console: %v", err)
	}
	c.SetReadLimit(1 << 20)
	cs := &console{c: c, got: make(chan struct{}, 1)}
	go func() {
		for {
			_, data, err := c.Read(context.Background())
			if err != nil {
				return
			}
			cs.mu.Lock()
			cs.buf.Write(data)
			cs.mu.Unlock()
			select {
			case cs.got <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { c.CloseNow() })
	return cs
}

func (cs *console) String() string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.buf.String()
}

// waitFor waits until the output contains s (count times in total).
func (cs *console) waitFor(t testing.TB, s string, count int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for strings.Count(cs.String(), s) < count {
		select {
		case <-cs.got:
		case <-deadline:
			t.Fatalf("console never showed %q x%d; got:\n%s", s, count, tail(cs.String(), 2000))
		}
	}
}

func (cs *console) send(t testing.TB, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cs.c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("console send: %v", err)
	}
}

// waitState polls a session until it reaches want.
func (pl *platform) waitState(t testing.TB, id, want string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var s map[string]any
	for time.Now().Before(deadline) {
		pl.must(t, 200, "GET", "/api/v1/sessions/"+id, nil, &s)
		if s["state"] == want {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("session %s never reached %s: %v", id, want, s)
	return nil
}
