package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/testenv"
)

func clients(t *testing.T) map[string]redis.UniversalClient {
	opt, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	real := redis.NewClient(opt)
	mini := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { real.Close(); mini.Close() })
	return map[string]redis.UniversalClient{"redis-server": real, "miniredis": mini}
}

func TestLogQuery(t *testing.T) {
	for name, rdb := range clients(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			var logged strings.Builder
			l := New(rdb, 1000, slog.New(slog.NewJSONHandler(&logged, nil)))
			base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
			recs := []Record{
				{Actor: "key:a", Tenant: "acme", Action: "POST /api/v1/sessions", Result: 201},
				{Actor: "key:a", Tenant: "acme", Action: "POST /api/v1/sessions/{id}/poweron", Resource: "s1", Result: 200},
				{Actor: "jwt:bob", Tenant: "globex", Action: "DELETE /api/v1/snapshots/{sid}", Resource: "snap9", Result: 404, Error: "not found"},
				{Actor: "key:a", Tenant: "acme", Action: "POST /api/v1/sessions/{id}/snapshots", Resource: "s1", Result: 201},
			}
			for i, r := range recs {
				r.Time = base.Add(time.Duration(i) * time.Minute)
				l.Write(ctx, r)
			}
			if !strings.Contains(logged.String(), `"msg":"audit"`) || !strings.Contains(logged.String(), `"actor":"jwt:bob"`) {
				t.Errorf("not mirrored to the log: %s", logged.String())
			}
			q := func(f Filter) []string {
				got, err := l.Query(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, r := range got {
					out = append(out, r.Action)
				}
				return out
			}
			// Stream ids come from the server clock (now), so time windows are
			// relative to the writes, not to Record.Time.
			all := q(Filter{})
			if len(all) != 4 || all[0] != recs[3].Action || all[3] != recs[0].Action {
				t.Fatalf("newest first: %v", all)
			}
			for _, tc := range []struct {
				f    Filter
				want int
			}{
				{Filter{Tenant: "acme"}, 3}, {Filter{Actor: "jwt:bob"}, 1}, {Filter{Resource: "s1"}, 2},
				{Filter{Tenant: "acme", Resource: "s1", Limit: 1}, 1}, {Filter{Tenant: "nobody"}, 0},
				{Filter{Since: time.Now().Add(time.Minute)}, 0}, {Filter{Until: time.Now().Add(-time.Hour)}, 0},
				{Filter{Since: time.Now().Add(-time.Minute), Until: time.Now().Add(time.Minute)}, 4},
			} {
				if got := q(tc.f); len(got) != tc.want {
					t.Errorf("%+v: %d records %v, want %d", tc.f, len(got), got, tc.want)
				}
			}
		})
	}
}

// The stream stays bounded (approximately, as XADD MAXLEN ~ trims whole
// nodes).
func TestRetention(t *testing.T) {
	rdb := clients(t)["redis-server"]
	ctx := context.Background()
	l := New(rdb, 100, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for i := range 1000 {
		l.Write(ctx, Record{Actor: fmt.Sprint(i), Action: "POST /x", Result: 200})
	}
	n, err := rdb.XLen(ctx, Stream).Result()
	if err != nil || n < 100 || n > 300 {
		t.Fatalf("stream length %d after 1000 writes with max 100: %v", n, err)
	}
	got, _ := l.Query(ctx, Filter{Limit: 1})
	if got[0].Actor != "999" {
		t.Errorf("newest %+v", got[0])
	}
}

func TestHandler(t *testing.T) {
	l := New(clients(t)["miniredis"], 1000, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.Write(context.Background(), Record{Actor: "key:a", Tenant: "acme", Action: "POST /x", Result: 201})
	l.Write(context.Background(), Record{Actor: "key:b", Tenant: "globex", Action: "POST /y", Result: 201})
	mux := http.NewServeMux()
	httpapi.Mount(mux, l.Routes(nil)...)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/audit?tenant=globex&since=" + time.Now().Add(-time.Minute).Format(time.RFC3339))
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Records []Record }
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(out.Records) != 1 || out.Records[0].Actor != "key:b" || out.Records[0].ID == "" {
		t.Fatalf("%d %+v", resp.StatusCode, out)
	}
	for _, q := range []string{"limit=0", "limit=x", "until=tomorrow"} {
		resp, _ := http.Get(srv.URL + "/api/v1/audit?" + q)
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%s: %d", q, resp.StatusCode)
		}
	}
}
