// Package client is msctl's thin HTTP and WebSocket client of the Machine
// Server API: JSON calls, multipart uploads, raw downloads, paged lists and
// streams, with the API's error JSON turned into *Error.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/coder/websocket"
)

// Error is an error answer of the API ({"error":{"code","message"}}); its
// text is the message, which says what is wrong and what is allowed.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Client calls one server with one credential.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// New checks server (an http:// or https:// URL, possibly with a path
// prefix) and returns a client that sends token with every request.
func New(server, token string) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", server, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q: want an http:// or https:// URL", server)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = strings.TrimSuffix(u.RawPath, "/")
	return &Client{base: u, token: token, http: http.DefaultClient}, nil
}

// Authorization is the header value for token: API keys have their own
// scheme, everything else (JWTs, session tokens) is a bearer token.
func Authorization(token string) string {
	if strings.HasPrefix(token, "ms_") {
		return "ApiKey " + token
	}
	return "Bearer " + token
}

// Header carries the client's credential.
func (c *Client) Header() http.Header {
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", Authorization(c.token))
	}
	return h
}

// URL is path (escaped, as Path builds it, with an optional ?query) under
// the server's base.
func (c *Client) URL(path string) string {
	u := *c.base
	path, u.RawQuery, _ = strings.Cut(path, "?")
	u.RawPath = u.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		p = u.RawPath
	}
	u.Path = p
	return u.String()
}

// WebSocketURL is URL with the ws or wss scheme.
func (c *Client) WebSocketURL(path string) string {
	u := c.URL(path)
	if rest, ok := strings.CutPrefix(u, "https://"); ok {
		return "wss://" + rest
	}
	return "ws://" + strings.TrimPrefix(u, "http://")
}

// Path joins escaped segments into an API path: Path("sessions", id) is
// /api/v1/sessions/<id>.
func Path(segments ...string) string {
	var b strings.Builder
	b.WriteString("/api/v1")
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// Query appends q's non-empty values to path.
func Query(path string, q url.Values) string {
	set := url.Values{}
	for k, v := range q {
		if len(v) > 0 && v[0] != "" {
			set[k] = v
		}
	}
	if len(set) == 0 {
		return path
	}
	return path + "?" + set.Encode()
}

// Do sends in (JSON, if non-nil) and decodes a 2xx answer into out (if non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ctype := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	resp, err := c.send(ctx, method, path, body, ctype)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Get answers the body of a GET as bytes (reports, console logs).
func (c *Client) Get(ctx context.Context, path string) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Upload posts a multipart form: fields, then data as the file field.
func (c *Client) Upload(ctx context.Context, path string, fields map[string]string, filename string, data []byte, out any) error {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if v != "" {
			mw.WriteField(k, v)
		}
	}
	fw, err := mw.CreateFormFile("file", filename)
	if err != nil {
		return err
	}
	fw.Write(data)
	mw.Close()
	resp, err := c.send(ctx, http.MethodPost, path, &buf, mw.FormDataContentType())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// List reads every page of a paged list ({<key>: [...], total}).
func List[T any](ctx context.Context, c *Client, path, key string) ([]T, error) {
	var all []T
	for page := 1; ; page++ {
		var raw map[string]json.RawMessage
		q := url.Values{"page": {strconv.Itoa(page)}, "page_size": {"100"}}
		if err := c.Do(ctx, http.MethodGet, path+"?"+q.Encode(), nil, &raw); err != nil {
			return nil, err
		}
		var items []T
		var total int
		if err := json.Unmarshal(raw[key], &items); err != nil {
			return nil, fmt.Errorf("GET %s: %q: %w", path, key, err)
		}
		json.Unmarshal(raw["total"], &total)
		all = append(all, items...)
		if len(items) == 0 || len(all) >= total {
			return all, nil
		}
	}
}

// send does the request and turns a non-2xx answer into an error.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader, ctype string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.URL(path), body)
	if err != nil {
		return nil, err
	}
	req.Header = c.Header()
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(method, path, resp)
	}
	return resp, nil
}

// decodeError is the API's error JSON as *Error; an answer without it (a
// proxy's page) becomes one saying the status and the start of the body.
func decodeError(method, path string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	var e struct {
		Error *Error `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != nil && e.Error.Message != "" {
		e.Error.Status = resp.StatusCode
		return e.Error
	}
	msg := fmt.Sprintf("%s %s: server answered %s", method, strings.SplitN(path, "?", 2)[0], resp.Status)
	if s := strings.TrimSpace(string(b)); s != "" {
		msg += ": " + firstLine(s, 200)
	}
	return &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: msg}
}

func firstLine(s string, max int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

// Dial opens a WebSocket stream at path; a refused upgrade is the API's
// *Error like any other call's.
func (c *Client) Dial(ctx context.Context, path string) (*websocket.Conn, error) {
	ws, resp, err := websocket.Dial(ctx, c.URL(path), &websocket.DialOptions{HTTPHeader: c.Header()})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil {
			return nil, decodeError(http.MethodGet, path, resp)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ws.SetReadLimit(4 << 20)
	return ws, nil
}
