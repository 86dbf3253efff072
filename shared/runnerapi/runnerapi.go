package runnerapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	report "github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

// Prefix is where the runner serves the internal API.
const Prefix = "/internal/v1"

// Program says which image to run; the runner fetches it from the blob store
// by key and checks its sha256.
type Program struct {
	ID          string       `json:"id"`
	Format      model.Format `json:"format"`
	SHA256      string       `json:"sha256"`
	BlobKey     string       `json:"blob_key"`
	LoadAddress uint64       `json:"load_address"`
}

// StartRequest powers a session's machine on.
type StartRequest struct {
	// Backend names the emulator backend ("qemu"); "" is the runner's.
	Backend string  `json:"backend,omitempty"`
	Machine string  `json:"machine"`
	Program Program `json:"program"`
	// Halted leaves the CPU stopped at the reset vector (for debuggers).
	Halted bool `json:"halted,omitempty"`
	// Restart stops a running emulator first instead of refusing.
	Restart bool `json:"restart,omitempty"`
	// Coverage opens the session's coverage window from the first
	// instruction, if it is not open yet.
	Coverage bool `json:"coverage,omitempty"`
	// Deterministic runs the machine on its instruction counter
	// (emulator.Spec.Deterministic).
	Deterministic bool `json:"deterministic,omitempty"`
	// VirtualTime runs the machine on its instruction counter with guest
	// time kept aligned to the host's (emulator.Spec.VirtualTime), so the
	// nodes of a system share one time base.
	VirtualTime bool `json:"virtual_time,omitempty"`
	// Limits are the session's CPU and memory caps; nil or zero fields take
	// the runner's defaults.
	Limits *model.Limits `json:"limits,omitempty"`
	// Record records the execution from the first instruction to the
	// machine's end into this recording (state "recording"), which the
	// runner stores and marks ready when the machine has ended.
	Record *model.Recording `json:"record,omitempty"`
	// Replay re-runs this stored recording instead of a fresh execution.
	Replay *model.Recording `json:"replay,omitempty"`
	// NIC links the board's NIC, with this address, to the runner's
	// segments (PutSegment) instead of isolating it.
	NIC *NIC `json:"nic,omitempty"`
}

// SnapshotRequest asks for the session's machine state to be saved and
// stored under BlobKey.
type SnapshotRequest struct {
	SnapshotID string `json:"snapshot_id"`
	BlobKey    string `json:"blob_key"`
	// Machine is the session's board; boards that cannot restore are refused.
	Machine string `json:"machine"`
	// Manifest, if set, is stored under ManifestKey with the state's size,
	// sha256, emulator version and console offset filled in, written
	// alongside the state instead of after it: one round of durable writes.
	Manifest    *model.Snapshot `json:"manifest,omitempty"`
	ManifestKey string          `json:"manifest_key,omitempty"`
}

// SnapshotResult describes the stored state.
type SnapshotResult struct {
	Size            int64  `json:"size"`
	SHA256          string `json:"sha256"`
	EmulatorVersion string `json:"emulator_version"`
	ConsoleOffset   int64  `json:"console_offset"`
	// ManifestStored says the runner stored the requested manifest.
	ManifestStored bool `json:"manifest_stored,omitempty"`
}

// RestoreRequest replaces the session's machine with a saved state.
type RestoreRequest struct {
	Machine         string  `json:"machine"`
	Program         Program `json:"program"`
	SnapshotID      string  `json:"snapshot_id"`
	BlobKey         string  `json:"blob_key"`
	SHA256          string  `json:"sha256"`
	EmulatorVersion string  `json:"emulator_version"`
	// Deterministic is the session's (StartRequest.Deterministic): the
	// machine that takes the state runs on the same clock as the one that
	// gave it, or a deterministic session would stop being one.
	Deterministic bool `json:"deterministic,omitempty"`
	// VirtualTime is the session's (StartRequest.VirtualTime), for the
	// same reason.
	VirtualTime bool `json:"virtual_time,omitempty"`
	// Halted leaves the restored guest paused until a Resume, so the nodes
	// of a system are linked before any of them runs on.
	Halted bool `json:"halted,omitempty"`
}

// GDB is how a debugger reaches a session on its runner.
type GDB struct {
	// TCP is the runner's debugger port for the session, "host:port".
	TCP string `json:"tcp"`
	// Attached is who is debugging now, if anyone.
	Attached *Debugger `json:"attached,omitempty"`
}

// Debugger is an attached debugger.
type Debugger struct {
	Who   string    `json:"who"`
	Since time.Time `json:"since"`
}

// Status is a runner's view of one session.
type Status struct {
	SessionID string `json:"session_id"`
	Running   bool   `json:"running"`
	Pid       int    `json:"pid,omitempty"`
	// SparePid is the paused QEMU kept ready for the next power on.
	SparePid int `json:"spare_pid,omitempty"`
	// GDB is the session's debugger port, "host:port".
	GDB string `json:"gdb,omitempty"`
	// ConsoleEnd is the offset one past the newest console byte.
	ConsoleEnd int64 `json:"console_end"`
}

// Client calls one runner.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// NewClient returns a client for the runner at baseURL.
func NewClient(baseURL, token string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("runnerapi: bad runner url %q", baseURL)
	}
	return &Client{base: u, token: token, hc: &http.Client{Timeout: 60 * time.Second}}, nil
}

// send makes one call to the runner and returns the response of a success
// with its body open; a failure is an error and its body is closed.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader, ctype string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+Prefix+path, body)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, httpapi.Unavailable("runner %s unreachable: %v", c.base.Host, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(c.base.Host, resp)
	}
	return resp, nil
}

// do is send for JSON replies, decoded into out when it is set.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, ctype string, out any) error {
	resp, err := c.send(ctx, method, path, body, ctype)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("runner %s: decode: %w", c.base.Host, err)
		}
	}
	return nil
}

func (c *Client) post(ctx context.Context, path string, in, out any) error {
	return c.call(ctx, http.MethodPost, path, in, out)
}

// call sends in (if any) as JSON with method and decodes the reply into out.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.do(ctx, method, path, body, "application/json", out)
}

// IsNotFound reports whether err is a runner's 404: it does not know the
// id (a link or segment not put, a session without a slot).
func IsNotFound(err error) bool {
	var e *httpapi.Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// About puts what a runner's error is about before its message, keeping
// its status; another error is wrapped.
func About(what string, err error) error {
	var e *httpapi.Error
	if errors.As(err, &e) {
		c := *e
		c.Message = what + ": " + c.Message
		return &c
	}
	return fmt.Errorf("%s: %w", what, err)
}

// decodeError turns a runner's error reply into an error: its 4xx as
// *httpapi.Error with the same status, its 5xx as an internal error.
func decodeError(host string, resp *http.Response) error {
	var e struct {
		Error *httpapi.Error `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if json.Unmarshal(b, &e) == nil && e.Error != nil {
		e.Error.Status = resp.StatusCode
		if resp.StatusCode >= 500 {
			// The runner's internals are not the client's business.
			return fmt.Errorf("runner %s: %s", host, e.Error.Message)
		}
		return e.Error
	}
	return fmt.Errorf("runner %s: %s %s: status %d", host, resp.Request.Method, resp.Request.URL.Path, resp.StatusCode)
}

func sessionPath(id string) string { return "/sessions/" + url.PathEscape(id) }

// Start powers a session on.
func (c *Client) Start(ctx context.Context, id string, req StartRequest) (Status, error) {
	var st Status
	err := c.post(ctx, sessionPath(id)+"/start", req, &st)
	return st, err
}

// Stop powers a session off; stopping a stopped session is not an error.
func (c *Client) Stop(ctx context.Context, id string) error {
	return c.post(ctx, sessionPath(id)+"/stop", nil, nil)
}

// Reset resets a running session's machine.
func (c *Client) Reset(ctx context.Context, id string) error {
	return c.post(ctx, sessionPath(id)+"/reset", nil, nil)
}

// Resume lets a session's machine that was started halted
// (StartRequest.Halted) run; resuming one that runs is harmless. A session
// with no running machine is a 409.
func (c *Client) Resume(ctx context.Context, id string) error {
	return c.post(ctx, sessionPath(id)+"/resume", nil, nil)
}

// Pause stops a running session's guest where it is, until a Resume; a
// snapshot of a paused guest leaves it paused. Pausing twice is harmless.
func (c *Client) Pause(ctx context.Context, id string) error {
	return c.post(ctx, sessionPath(id)+"/pause", nil, nil)
}

// Prepare tells the runner what the session will run, so it can prelaunch a
// paused emulator for the next power on.
func (c *Client) Prepare(ctx context.Context, id string, req StartRequest) error {
	return c.post(ctx, sessionPath(id)+"/prepare", req, nil)
}

// Snapshot saves the running machine's state into the blob store.
func (c *Client) Snapshot(ctx context.Context, id string, req SnapshotRequest) (SnapshotResult, error) {
	var res SnapshotResult
	err := c.post(ctx, sessionPath(id)+"/snapshot", req, &res)
	return res, err
}

// Restore starts the session from a saved state.
func (c *Client) Restore(ctx context.Context, id string, req RestoreRequest) (Status, error) {
	var st Status
	err := c.post(ctx, sessionPath(id)+"/restore", req, &st)
	return st, err
}

// CoverageStart opens the session's coverage window.
func (c *Client) CoverageStart(ctx context.Context, id string) error {
	return c.post(ctx, sessionPath(id)+"/coverage/start", nil, nil)
}

// CoverageStop closes the session's coverage window.
func (c *Client) CoverageStop(ctx context.Context, id string) error {
	return c.post(ctx, sessionPath(id)+"/coverage/stop", nil, nil)
}

// Coverage returns the counts of the session's coverage window so far.
func (c *Client) Coverage(ctx context.Context, id string) (report.Counts, error) {
	resp, err := c.send(ctx, http.MethodGet, sessionPath(id)+"/coverage", nil, "")
	if err != nil {
		return report.Counts{}, err
	}
	defer resp.Body.Close()
	return report.Parse(resp.Body)
}

// GDB returns the session's debugger endpoint (opened on first use).
func (c *Client) GDB(ctx context.Context, id string) (GDB, error) {
	var g GDB
	err := c.do(ctx, http.MethodGet, sessionPath(id)+"/gdb", nil, "", &g)
	return g, err
}

// Delete stops the machine and forgets the console history.
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, sessionPath(id), nil, "", nil)
}

// Status reports the runner's view of a session.
func (c *Client) Status(ctx context.Context, id string) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, sessionPath(id), nil, "", &st)
	return st, err
}

// Console reads console history from offset; from is where data starts (past
// offset if the ring overwrote bytes) and next is where to continue.
func (c *Client) Console(ctx context.Context, id, port string, offset int64, limit int) (data []byte, from, next int64, err error) {
	resp, err := c.send(ctx, http.MethodGet, fmt.Sprintf("%s/console?offset=%d&limit=%d%s", sessionPath(id), offset, limit, portQuery("&", port)), nil, "")
	if err != nil {
		return nil, 0, 0, err
	}
	defer resp.Body.Close()
	data, err = io.ReadAll(resp.Body)
	from, _ = strconv.ParseInt(resp.Header.Get(HeaderOffset), 10, 64)
	next, _ = strconv.ParseInt(resp.Header.Get(HeaderNextOffset), 10, 64)
	return data, from, next, err
}

// Input writes bytes to the RX of one of the session's UARTs ("" is the
// first, uart0).
func (c *Client) Input(ctx context.Context, id, port string, data []byte) error {
	return c.do(ctx, http.MethodPost, sessionPath(id)+"/console"+portQuery("?", port), bytes.NewReader(data), "application/octet-stream", nil)
}

// portQuery is the port parameter for a UART other than the first.
func portQuery(sep, port string) string {
	if port == "" {
		return ""
	}
	return sep + "port=" + url.QueryEscape(port)
}

// Console headers: where the returned bytes start and where to read next.
const (
	HeaderOffset     = "X-Console-Offset"
	HeaderNextOffset = "X-Console-Next-Offset"
)

// Proxy returns a handler that forwards a request (including WebSocket
// upgrades) to path on the runner, adding the runner token.
func (c *Client) Proxy(path string) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(c.base)
			r.Out.URL.Path = Prefix + path
			r.Out.URL.RawPath = ""
			r.Out.Header.Set("Authorization", "Bearer "+c.token)
			// The runner audits who attaches a debugger: keep the client's address.
			r.SetXForwarded()
		},
		FlushInterval: -1,
		// The runner is the operation behind a proxied request: its error
		// is the request's (for the audit log), and the body still goes
		// to the client unchanged.
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode < 400 {
				return nil
			}
			var e struct {
				Error *httpapi.Error `json:"error"`
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
			if json.Unmarshal(b, &e) == nil && e.Error != nil {
				e.Error.Status = resp.StatusCode
				httpapi.ReportError(resp.Request.Context(), e.Error)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			httpapi.WriteError(w, r, httpapi.Unavailable("runner %s unreachable: %v", c.base.Host, err))
		},
	}
}

// SessionPath is exported for the proxy's callers.
func SessionPath(id string) string { return sessionPath(id) }

// Ranges of the limits a session may ask for.
const (
	MinCPUPercent = 1
	MaxCPUPercent = 100
	MinMemoryMB   = 16
	MaxMemoryMB   = 4096
)

// CheckLimits refuses limits outside the ranges; a zero field means the
// runner's default and is accepted.
func CheckLimits(l *model.Limits) error {
	if l == nil {
		return nil
	}
	if l.CPUPercent != 0 && (l.CPUPercent < MinCPUPercent || l.CPUPercent > MaxCPUPercent) {
		return httpapi.BadRequest("limits.cpu_percent must be %d to %d (percent of one core); got %d", MinCPUPercent, MaxCPUPercent, l.CPUPercent)
	}
	if l.MemoryMB != 0 && (l.MemoryMB < MinMemoryMB || l.MemoryMB > MaxMemoryMB) {
		return httpapi.BadRequest("limits.memory_mb must be %d to %d; got %d", MinMemoryMB, MaxMemoryMB, l.MemoryMB)
	}
	return nil
}
