package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/httpapi"
)

// Stream is the Redis Stream holding the log.
const Stream = "ms:audit"

// Record is one audited request.
type Record struct {
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Tenant string    `json:"tenant"`
	// Action is the method and route pattern, e.g. "POST /api/v1/sessions/{id}/poweron".
	Action string `json:"action"`
	// Resource is the ids in the path, "/"-joined in path order.
	Resource string `json:"resource,omitempty"`
	// Result is the HTTP status code.
	Result    int    `json:"result"`
	Error     string `json:"error,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// ID is the stream entry id, set when read back.
	ID string `json:"id,omitempty"`
}

// Log appends records to the stream.
type Log struct {
	rdb    redis.UniversalClient
	maxLen int64
	log    *slog.Logger
}

// New returns a log on rdb that keeps about maxLen entries (the stream is
// trimmed approximately, which Redis does cheaply).
func New(rdb redis.UniversalClient, maxLen int64, log *slog.Logger) *Log {
	if maxLen <= 0 {
		maxLen = 100000
	}
	return &Log{rdb: rdb, maxLen: maxLen, log: log}
}

// Write appends rec and mirrors it to the structured log. A Redis failure is
// logged, not returned: the request it describes has already happened.
func (l *Log) Write(ctx context.Context, rec Record) {
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	rec.Time = rec.Time.UTC()
	l.log.InfoContext(ctx, "audit", "actor", rec.Actor, "tenant", rec.Tenant, "action", rec.Action,
		"resource", rec.Resource, "result", rec.Result, "error", rec.Error, "request_id", rec.RequestID)
	b, _ := json.Marshal(rec)
	// The request may be over (or cancelled) by now; the record must still land.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := l.rdb.XAdd(wctx, &redis.XAddArgs{
		Stream: Stream, MaxLen: l.maxLen, Approx: true,
		Values: []any{"r", b},
	}).Err()
	if err != nil {
		l.log.ErrorContext(ctx, "audit: write to redis failed", "err", err)
	}
}

// Filter selects records; zero fields match everything.
type Filter struct {
	Tenant, Actor, Resource string
	Since, Until            time.Time
	Limit                   int
}

func (f Filter) match(r Record) bool {
	if f.Tenant != "" && r.Tenant != f.Tenant || f.Actor != "" && r.Actor != f.Actor {
		return false
	}
	if f.Resource != "" && !containsID(r.Resource, f.Resource) {
		return false
	}
	return true
}

// containsID reports whether id is one of resource's "/"-joined ids, or the
// whole of it.
func containsID(resource, id string) bool {
	if resource == id {
		return true
	}
	for _, p := range strings.Split(resource, "/") {
		if p == id {
			return true
		}
	}
	return false
}

// Query returns the matching records, newest first.
func (l *Log) Query(ctx context.Context, f Filter) ([]Record, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	// Stream ids are milliseconds since the epoch, so the time window is a
	// range of ids.
	end, start := "+", "-"
	if !f.Until.IsZero() {
		end = strconv.FormatInt(f.Until.UnixMilli(), 10)
	}
	if !f.Since.IsZero() {
		start = strconv.FormatInt(f.Since.UnixMilli(), 10)
	}
	out := []Record{}
	const batch = 500
	for {
		msgs, err := l.rdb.XRevRangeN(ctx, Stream, end, start, batch).Result()
		if err != nil {
			return nil, fmt.Errorf("audit: read: %w", err)
		}
		for _, m := range msgs {
			var r Record
			s, _ := m.Values["r"].(string)
			if json.Unmarshal([]byte(s), &r) != nil {
				continue
			}
			r.ID = m.ID
			if f.match(r) {
				out = append(out, r)
				if len(out) == f.Limit {
					return out, nil
				}
			}
		}
		if len(msgs) < batch {
			return out, nil
		}
		end = "(" + msgs[len(msgs)-1].ID
	}
}

// Routes is GET /api/v1/audit, declared with the admin scope.
//
// scope, when set, narrows or refuses a filter for the caller (the auth
// package confines a tenant's admin to its tenant; audit cannot import it).
func (l *Log) Routes(scope func(r *http.Request, f *Filter) error) []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/api/v1/audit", Scope: httpapi.ScopeAdmin, Handler: func(w http.ResponseWriter, r *http.Request) {
			f, err := ParseFilter(r)
			if err == nil && scope != nil {
				err = scope(r, &f)
			}
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			recs, err := l.Query(r.Context(), f)
			httpapi.Reply(w, r, http.StatusOK, map[string]any{"records": recs}, err)
		}},
	}
}

// ParseFilter reads ?tenant=&actor=&resource=&since=&until=&limit= (times
// RFC 3339, limit 1-1000, default 100).
func ParseFilter(r *http.Request) (Filter, error) {
	q := r.URL.Query()
	f := Filter{Tenant: q.Get("tenant"), Actor: q.Get("actor"), Resource: q.Get("resource"), Limit: 100}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(t.name); v != "" {
			tm, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, httpapi.BadRequest("%s must be an RFC 3339 time like 2006-01-02T15:04:05Z; got %q", t.name, v)
			}
			*t.dst = tm
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return f, httpapi.BadRequest("limit must be an integer from 1 to 1000; got %q", v)
		}
		f.Limit = n
	}
	return f, nil
}
