package host

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/runner/console"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/metrics"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

const maxInputBytes = 64 << 10

// Handler serves the internal API under runnerapi.Prefix, plus /health.
func (r *Runner) Handler() http.Handler {
	mux := http.NewServeMux()
	p := runnerapi.Prefix
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, req *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"status": "ok", "runner": r.cfg.ID, "running": r.running(), "capacity": r.cfg.Capacity})
	})
	// Outside the runner token, like /health; the runner's port is internal.
	mux.Handle("GET /metrics", metrics.Handler())
	mux.HandleFunc("GET "+p+"/capabilities", func(w http.ResponseWriter, req *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, r.caps)
	})
	mux.HandleFunc("POST "+p+"/sessions/{id}/start", func(w http.ResponseWriter, req *http.Request) {
		var in runnerapi.StartRequest
		if err := httpapi.DecodeJSON(req, &in, 1<<16); err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		// The emulator must outlive this request: only start-up is bounded.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), 30*time.Second)
		defer cancel()
		st, err := r.Start(ctx, req.PathValue("id"), in)
		httpapi.Reply(w, req, http.StatusOK, st, err)
	})
	mux.HandleFunc("POST "+p+"/sessions/{id}/prepare", func(w http.ResponseWriter, req *http.Request) {
		var in runnerapi.StartRequest
		if err := httpapi.DecodeJSON(req, &in, 1<<16); err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		httpapi.Reply(w, req, http.StatusOK, map[string]string{"status": "preparing"}, r.Prepare(req.PathValue("id"), in))
	})
	mux.HandleFunc("POST "+p+"/sessions/{id}/snapshot", func(w http.ResponseWriter, req *http.Request) {
		var in runnerapi.SnapshotRequest
		if err := httpapi.DecodeJSON(req, &in, 1<<16); err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		// The guest is paused during the capture: a client that goes away
		// must not leave it paused, so the capture is not tied to the request.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), 60*time.Second)
		defer cancel()
		res, err := r.Snapshot(ctx, req.PathValue("id"), in)
		httpapi.Reply(w, req, http.StatusOK, res, err)
	})
	mux.HandleFunc("POST "+p+"/sessions/{id}/restore", func(w http.ResponseWriter, req *http.Request) {
		var in runnerapi.RestoreRequest
		if err := httpapi.DecodeJSON(req, &in, 1<<16); err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), 60*time.Second)
		defer cancel()
		st, err := r.Restore(ctx, req.PathValue("id"), in)
		httpapi.Reply(w, req, http.StatusOK, st, err)
	})
	mux.HandleFunc("POST "+p+"/sessions/{id}/stop", func(w http.ResponseWriter, req *http.Request) {
		httpapi.Reply(w, req, http.StatusOK, map[string]string{"status": "stopped"}, r.Stop(req.PathValue("id")))
	})
	mux.HandleFunc("POST "+p+"/sessions/{id}/reset", func(w http.ResponseWriter, req *http.Request) {
		httpapi.Reply(w, req, http.StatusOK, map[string]string{"status": "reset"}, r.Reset(req.Context(), req.PathValue("id")))
	})
	mux.HandleFunc("POST "+p+"/sessions/{id}/resume", func(w http.ResponseWriter, req *http.Request) {
		// As a start's resume: a client that goes away must not leave the
		// machine's state to chance.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), 30*time.Second)
		defer cancel()
		httpapi.Reply(w, req, http.StatusOK, map[string]string{"status": "resumed"}, r.Resume(ctx, req.PathValue("id")))
	})
	mux.HandleFunc("POST "+p+"/sessions/{id}/pause", func(w http.ResponseWriter, req *http.Request) {
		httpapi.Reply(w, req, http.StatusOK, map[string]string{"status": "paused"}, r.Pause(req.Context(), req.PathValue("id")))
	})
	mux.HandleFunc("DELETE "+p+"/sessions/{id}", func(w http.ResponseWriter, req *http.Request) {
		httpapi.Reply(w, req, http.StatusOK, map[string]string{"status": "deleted"}, r.Delete(req.PathValue("id")))
	})
	mux.HandleFunc("GET "+p+"/sessions/{id}", func(w http.ResponseWriter, req *http.Request) {
		s, err := r.slot(req.PathValue("id"), false)
		if err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		s.mu.Lock()
		r.live(s)
		st := r.status(s)
		s.mu.Unlock()
		httpapi.WriteJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("PUT "+p+"/links/{id}", func(w http.ResponseWriter, req *http.Request) {
		var in runnerapi.LinkRequest
		if err := httpapi.DecodeJSON(req, &in, 1<<16); err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		l, err := r.PutLink(req.PathValue("id"), in)
		httpapi.Reply(w, req, http.StatusOK, l, err)
	})
	mux.HandleFunc("POST "+p+"/links/{id}/faults", func(w http.ResponseWriter, req *http.Request) {
		var in runnerapi.LinkFaults
		if err := httpapi.DecodeJSON(req, &in, 1<<16); err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		l, err := r.SetLinkFaults(req.PathValue("id"), in)
		httpapi.Reply(w, req, http.StatusOK, l, err)
	})
	mux.HandleFunc("GET "+p+"/links/{id}", func(w http.ResponseWriter, req *http.Request) {
		l, err := r.GetLink(req.PathValue("id"))
		httpapi.Reply(w, req, http.StatusOK, l, err)
	})
	mux.HandleFunc("GET "+p+"/links/{id}/capture", func(w http.ResponseWriter, req *http.Request) {
		after, err := parseAfter(req)
		if err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		c, err := r.LinkCapture(req.PathValue("id"), after)
		httpapi.Reply(w, req, http.StatusOK, c, err)
	})
	mux.HandleFunc("GET "+p+"/links/{id}/stream", r.streamLink)
	mux.HandleFunc("DELETE "+p+"/links/{id}", func(w http.ResponseWriter, req *http.Request) {
		httpapi.Reply(w, req, http.StatusOK, map[string]string{"status": "deleted"}, r.DeleteLink(req.PathValue("id")))
	})
	mux.HandleFunc("PUT "+p+"/clocks/{id}", func(w http.ResponseWriter, req *http.Request) {
		var in runnerapi.ClockRequest
		if err := httpapi.DecodeJSON(req, &in, 1<<16); err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		c, err := r.PutClock(req.PathValue("id"), in)
		httpapi.Reply(w, req, http.StatusOK, c, err)
	})
	mux.HandleFunc("GET "+p+"/clocks/{id}", func(w http.ResponseWriter, req *http.Request) {
		c, err := r.GetClock(req.PathValue("id"))
		httpapi.Reply(w, req, http.StatusOK, c, err)
	})
	mux.HandleFunc("DELETE "+p+"/clocks/{id}", func(w http.ResponseWriter, req *http.Request) {
		c, err := r.DeleteClock(req.PathValue("id"))
		httpapi.Reply(w, req, http.StatusOK, c, err)
	})
	mux.HandleFunc("PUT "+p+"/segments/{id}", func(w http.ResponseWriter, req *http.Request) {
		var in runnerapi.SegmentRequest
		if err := httpapi.DecodeJSON(req, &in, 1<<16); err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		g, err := r.PutSegment(req.PathValue("id"), in)
		httpapi.Reply(w, req, http.StatusOK, g, err)
	})
	mux.HandleFunc("POST "+p+"/segments/{id}/faults", func(w http.ResponseWriter, req *http.Request) {
		var in runnerapi.LinkFaults
		if err := httpapi.DecodeJSON(req, &in, 1<<16); err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		g, err := r.SetSegmentFaults(req.PathValue("id"), in)
		httpapi.Reply(w, req, http.StatusOK, g, err)
	})
	mux.HandleFunc("GET "+p+"/segments/{id}", func(w http.ResponseWriter, req *http.Request) {
		g, err := r.GetSegment(req.PathValue("id"))
		httpapi.Reply(w, req, http.StatusOK, g, err)
	})
	mux.HandleFunc("GET "+p+"/segments/{id}/pcap", func(w http.ResponseWriter, req *http.Request) {
		g, err := r.segment(req.PathValue("id"))
		if err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
		g.sw.WritePcap(w)
	})
	mux.HandleFunc("GET "+p+"/segments/{id}/stream", r.streamSegment)
	mux.HandleFunc("DELETE "+p+"/segments/{id}", func(w http.ResponseWriter, req *http.Request) {
		httpapi.Reply(w, req, http.StatusOK, map[string]string{"status": "deleted"}, r.DeleteSegment(req.PathValue("id")))
	})
	mux.HandleFunc("GET "+p+"/sessions/{id}/console", r.serveConsole)
	mux.HandleFunc("POST "+p+"/sessions/{id}/console", func(w http.ResponseWriter, req *http.Request) {
		data, err := io.ReadAll(io.LimitReader(req.Body, maxInputBytes+1))
		if err == nil && len(data) > maxInputBytes {
			err = httpapi.Errorf(http.StatusRequestEntityTooLarge, "too_large", "console input is limited to %d bytes per request", maxInputBytes)
		}
		if err == nil {
			err = r.Input(req.PathValue("id"), req.URL.Query().Get("port"), data)
		}
		httpapi.Reply(w, req, http.StatusOK, map[string]int{"written": len(data)}, err)
	})
	mux.HandleFunc("GET "+p+"/sessions/{id}/stream/console", r.streamConsole)
	mux.HandleFunc("POST "+p+"/sessions/{id}/coverage/start", func(w http.ResponseWriter, req *http.Request) {
		httpapi.Reply(w, req, http.StatusOK, map[string]bool{"collecting": true}, r.CoverageStart(req.Context(), req.PathValue("id")))
	})
	mux.HandleFunc("POST "+p+"/sessions/{id}/coverage/stop", func(w http.ResponseWriter, req *http.Request) {
		httpapi.Reply(w, req, http.StatusOK, map[string]bool{"collecting": false}, r.CoverageStop(req.Context(), req.PathValue("id")))
	})
	mux.HandleFunc("GET "+p+"/sessions/{id}/coverage", func(w http.ResponseWriter, req *http.Request) {
		c, err := r.Coverage(req.Context(), req.PathValue("id"))
		if err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		c.WriteTo(w)
	})
	mux.HandleFunc("GET "+p+"/sessions/{id}/gdb", func(w http.ResponseWriter, req *http.Request) {
		s, err := r.slot(req.PathValue("id"), true)
		if err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		g := runnerapi.GDB{TCP: s.gdbAddr}
		if c, ok := s.gdb.Attached(); ok {
			g.Attached = &runnerapi.Debugger{Who: c.Who, Since: c.Since}
		}
		httpapi.WriteJSON(w, http.StatusOK, g)
	})
	// The tunnel upgrades even when the machine is off, so gdb is told why
	// in its own protocol instead of seeing a failed handshake.
	mux.HandleFunc("GET "+p+"/sessions/{id}/stream/gdb", func(w http.ResponseWriter, req *http.Request) {
		s, err := r.slot(req.PathValue("id"), true)
		if err != nil {
			httpapi.WriteError(w, req, err)
			return
		}
		who := "websocket " + req.RemoteAddr
		if f := req.Header.Get("X-Forwarded-For"); f != "" {
			who = "websocket " + f
		}
		s.gdb.ServeWebSocket(w, req, who)
	})
	return metrics.Middleware(mux)(r.auth(r.activity(mux)))
}

// activity touches the session of every internal API call about one (see
// session.touch), for the idle timeout.
func (r *Runner) activity(h http.Handler) http.Handler {
	prefix := runnerapi.Prefix + "/sessions/"
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if rest, ok := strings.CutPrefix(req.URL.Path, prefix); ok {
			id, _, _ := strings.Cut(rest, "/")
			r.touch(id)
		}
		h.ServeHTTP(w, req)
	})
}

func (r *Runner) auth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.cfg.Token != "" && strings.HasPrefix(req.URL.Path, runnerapi.Prefix) {
			got := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(got), []byte(r.cfg.Token)) != 1 {
				httpapi.WriteError(w, req, httpapi.Errorf(http.StatusUnauthorized, "unauthenticated", "runner token missing or wrong"))
				return
			}
		}
		h.ServeHTTP(w, req)
	})
}

// parseOffset reads ?offset=N; "-1" or "end" means "from now on".
func parseOffset(req *http.Request, end int64) (int64, error) {
	v := req.URL.Query().Get("offset")
	switch v {
	case "":
		return 0, nil
	case "end", "-1":
		return end, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, httpapi.BadRequest("offset must be a byte offset >= 0, or \"end\"; got %q", v)
	}
	return n, nil
}

// serveConsole reads a port's history (?port=, default uart0).
func (r *Runner) serveConsole(w http.ResponseWriter, req *http.Request) {
	id := req.PathValue("id")
	s, err := r.slot(id, false)
	if err != nil {
		// A session that never ran has an empty history, not an error.
		w.Header().Set(runnerapi.HeaderOffset, "0")
		w.Header().Set(runnerapi.HeaderNextOffset, "0")
		w.Header().Set("Content-Type", "application/octet-stream")
		return
	}
	ring, err := s.ports.lookup(id, req.URL.Query().Get("port"))
	if err != nil {
		httpapi.WriteError(w, req, err)
		return
	}
	off, err := parseOffset(req, ring.End())
	if err != nil {
		httpapi.WriteError(w, req, err)
		return
	}
	limit, _ := strconv.Atoi(req.URL.Query().Get("limit"))
	data, from, next := ring.Read(off, limit)
	w.Header().Set(runnerapi.HeaderOffset, strconv.FormatInt(from, 10))
	w.Header().Set(runnerapi.HeaderNextOffset, strconv.FormatInt(next, 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(data)
}

// streamConsole is the two-way UART (?port=, default uart0): binary frames of output go out as they
// are printed, from ?offset= (default: the oldest byte kept, so nothing
// printed before the client connected is lost; "end" for new output only),
// and text or binary frames coming in go to the UART's RX. A client that
// falls further behind than the ring holds resumes at the oldest byte kept.
func (r *Runner) streamConsole(w http.ResponseWriter, req *http.Request) {
	id := req.PathValue("id")
	s, err := r.slot(id, true)
	if err != nil {
		httpapi.WriteError(w, req, err)
		return
	}
	port := req.URL.Query().Get("port")
	ring, err := s.ports.lookup(id, port)
	if err != nil {
		httpapi.WriteError(w, req, err)
		return
	}
	off, err := parseOffset(req, ring.End())
	if err != nil {
		httpapi.WriteError(w, req, err)
		return
	}
	c, err := websocket.Accept(w, req, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	// An attached console keeps the session from idling out.
	s.watchers.Add(1)
	defer s.watchers.Add(-1)
	defer s.touch()
	c.SetReadLimit(maxInputBytes)
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()

	go func() {
		defer cancel()
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := r.Input(id, port, data); err != nil {
				c.Write(ctx, websocket.MessageText, []byte(`{"error":"session is not running; input dropped"}`))
			}
		}
	}()
	for {
		data, _, next := ring.Read(off, 32<<10)
		if len(data) > 0 {
			if err := c.Write(ctx, websocket.MessageBinary, data); err != nil {
				return
			}
			off = next
			continue
		}
		if err := ring.Wait(ctx, off); err != nil {
			if errors.Is(err, console.ErrClosed) {
				c.Close(websocket.StatusNormalClosure, "session deleted")
			}
			return
		}
	}
}
