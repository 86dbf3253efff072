package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/shared/model"
)

// TestTenantIsolation gives tenant default one of every resource (program,
// session, snapshot, coverage report, job, job rule) and checks that a key
// of tenant acme can neither see, read, change, stream, debug nor delete
// any of them: every attempt is the same 404 an unknown id gets, lists are
// empty, and the owner still has everything afterwards.
func TestTenantIsolation(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) { tenantIsolation(t, form.start(t)) })
	}
}

func tenantIsolation(t *testing.T, pl *platform) {
	const board = "mps2-an385"
	bc := map[string]string{"board": board}
	// The owner (the harness's admin key, tenant default).
	prog := uploadFW(t, pl, board)
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "owned", "board_config": bc}, &s)
	sid := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+sid+"/program", map[string]string{"program_id": prog}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+sid+"/poweron", nil, nil)
	cs := pl.dialConsole(t, sid, "")
	cs.waitFor(t, "ready", 1)
	var snap, rep, job, rule map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions/"+sid+"/snapshots", map[string]string{"name": "owned"}, &snap)
	snapID := snap["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+sid+"/coverage/start", nil, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+sid+"/coverage/stop", nil, &rep)
	repID := rep["id"].(string)
	pl.must(t, 201, "POST", "/api/v1/jobs", map[string]any{"program_id": prog, "board_config": bc, "pass_pattern": "ready", "timeout": "20s"}, &job)
	jobID := job["id"].(string)
	pl.must(t, 201, "POST", "/api/v1/jobs/rules", map[string]any{"prefix": "owned/", "template": map[string]any{"board_config": bc, "pass_pattern": "ready", "timeout": "20s"}}, &rule)
	ruleID := rule["id"].(string)
	pl.waitJobState(t, jobID, model.JobPassed)

	// Tenant acme, with every scope a user has.
	var key struct {
		Key string `json:"key"`
	}
	pl.must(t, 201, "POST", "/api/v1/admin/keys", map[string]any{"name": "acme", "tenant": "acme", "scopes": []string{"read", "write", "debug"}}, &key)
	acme := "ApiKey " + key.Key

	// Each request names one of default's resources; the same request with
	// an id nobody has must be answered identically (ids do not leak).
	const unknown = "0123456789abcdef"
	for _, c := range []struct {
		method, path string
		body         any
		id           string
	}{
		{"GET", "/api/v1/programs/%s", nil, prog},
		{"DELETE", "/api/v1/programs/%s", nil, prog},
		{"GET", "/api/v1/sessions/%s", nil, sid},
		{"DELETE", "/api/v1/sessions/%s", nil, sid},
		{"POST", "/api/v1/sessions/%s/poweroff", nil, sid},
		{"POST", "/api/v1/sessions/%s/reset", nil, sid},
		{"POST", "/api/v1/sessions/%s/program", map[string]string{"program_id": prog}, sid},
		{"GET", "/api/v1/sessions/%s/console", nil, sid},
		{"POST", "/api/v1/sessions/%s/console", "x", sid},
		{"GET", "/api/v1/sessions/%s/gdb", nil, sid},
		{"POST", "/api/v1/sessions/%s/tokens", map[string]string{"purpose": "console"}, sid},
		{"POST", "/api/v1/sessions/%s/coverage/start", nil, sid},
		{"GET", "/api/v1/sessions/%s/coverage", nil, sid},
		{"GET", "/api/v1/sessions/%s/snapshots", nil, sid},
		{"POST", "/api/v1/sessions/%s/snapshots", map[string]string{"name": "x"}, sid},
		{"GET", "/api/v1/snapshots/%s", nil, snapID},
		{"DELETE", "/api/v1/snapshots/%s", nil, snapID},
		{"POST", "/api/v1/snapshots/%s/sessions", map[string]any{"count": 1}, snapID},
		{"GET", "/api/v1/coverage/reports/%s", nil, repID},
		{"GET", "/api/v1/jobs/%s", nil, jobID},
		{"GET", "/api/v1/jobs/%s/console", nil, jobID},
		{"DELETE", "/api/v1/jobs/%s", nil, jobID},
		{"DELETE", "/api/v1/jobs/rules/%s", nil, ruleID},
	} {
		path := strings.Replace(c.path, "%s", c.id, 1)
		code, body := pl.as(t, acme, c.method, path, c.body)
		ucode, ubody := pl.as(t, acme, c.method, strings.Replace(c.path, "%s", unknown, 1), c.body)
		if code != 404 {
			t.Errorf("acme %s %s: %d %s, want 404", c.method, path, code, body)
			continue
		}
		if ucode != code || strings.ReplaceAll(string(body), c.id, unknown) != string(ubody) {
			t.Errorf("acme %s %s: answer differs from an unknown id's:\n%s\n%s", c.method, path, body, ubody)
		}
	}
	// Ids of default's resources used inside acme's own requests.
	var mine map[string]any
	code, body := pl.as(t, acme, "POST", "/api/v1/sessions", map[string]any{"name": "acme", "board_config": bc})
	if code != 201 {
		t.Fatalf("acme create: %d %s", code, body)
	}
	mine = decode(t, body)
	own := mine["id"].(string)
	for _, c := range []struct {
		path string
		body func(id string) any
		id   string
	}{
		{"/api/v1/sessions/" + own + "/program", func(id string) any { return map[string]string{"program_id": id} }, prog},
		{"/api/v1/sessions/" + own + "/restore", func(id string) any { return map[string]string{"snapshot_id": id} }, snapID},
		{"/api/v1/coverage/merge", func(id string) any { return map[string]any{"report_ids": []string{id}} }, repID},
		{"/api/v1/jobs", func(id string) any {
			return map[string]any{"program_id": id, "board_config": bc, "pass_pattern": "ready", "timeout": "20s"}
		}, prog},
	} {
		code, body := pl.as(t, acme, "POST", c.path, c.body(c.id))
		ucode, ubody := pl.as(t, acme, "POST", c.path, c.body(unknown))
		if code < 400 || code >= 500 || code != ucode || strings.ReplaceAll(string(body), c.id, unknown) != string(ubody) {
			t.Errorf("acme POST %s naming default's %s: %d %s; an unknown id gets %d %s", c.path, c.id, code, body, ucode, ubody)
		}
	}
	// Lists hold only acme's own.
	for path, field := range map[string]string{
		"/api/v1/programs": "programs", "/api/v1/sessions": "sessions", "/api/v1/snapshots": "snapshots",
		"/api/v1/jobs": "jobs", "/api/v1/jobs/rules": "rules",
	} {
		code, body := pl.as(t, acme, "GET", path, nil)
		if code != 200 {
			t.Fatalf("acme GET %s: %d %s", path, code, body)
		}
		items, _ := decode(t, body)[field].([]any)
		for _, it := range items {
			if m, _ := it.(map[string]any); m["id"] != mine["id"] {
				t.Errorf("acme GET %s lists %v", path, m["id"])
			}
		}
	}
	// Both streams refuse acme's key on default's session.
	ws := strings.Replace(pl.base, "http", "ws", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, stream := range []string{"console", "gdb"} {
		h := http.Header{"Authorization": {acme}}
		c, resp, err := websocket.Dial(ctx, ws+"/api/v1/sessions/"+sid+"/stream/"+stream, &websocket.DialOptions{HTTPClient: plain, HTTPHeader: h})
		if err == nil {
			c.CloseNow()
			t.Errorf("acme opened default's %s stream", stream)
		} else if resp == nil || resp.StatusCode != 404 {
			t.Errorf("acme on default's %s stream: %v %v, want 404", stream, resp, err)
		}
	}

	// Nothing of default's was touched.
	pl.waitState(t, sid, "running")
	cs.send(t, "echo still here\r")
	cs.waitFor(t, "still here", 1)
	for _, p := range []string{"/api/v1/programs/" + prog, "/api/v1/snapshots/" + snapID, "/api/v1/coverage/reports/" + repID, "/api/v1/jobs/" + jobID} {
		pl.must(t, 200, "GET", p, nil, nil)
	}
	if code, body := pl.as(t, acme, "DELETE", "/api/v1/sessions/"+own, nil); code != 204 {
		t.Errorf("acme deletes its own session: %d %s", code, body)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+sid, nil, nil)
}

// TestQuotas runs the platform with small per-tenant limits: the session
// past the limit is refused with a 429 naming it and is allowed again after
// a delete; an upload past the storage limit is refused with a 403; and
// with one running job allowed, two jobs run one after the other.
func TestQuotas(t *testing.T) {
	const board = "mps2-an385"
	bc := map[string]string{"board": board}
	pl := startStandalone(t, "MS_QUOTA_SESSIONS=2", "MS_QUOTA_JOBS=1", "MS_QUOTA_STORAGE_BYTES=50000", "MS_JOB_WORKERS=2")

	var ids []string
	for i := range 2 {
		var s map[string]any
		pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "q" + string(rune('a'+i)), "board_config": bc}, &s)
		ids = append(ids, s["id"].(string))
	}
	code, body := pl.call(t, "POST", "/api/v1/sessions", map[string]any{"name": "over", "board_config": bc}, nil)
	if code != 429 || !strings.Contains(string(body), "sessions 2/2") {
		t.Fatalf("third session: %d %s, want 429 naming sessions 2/2", code, body)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+ids[1], nil, nil)
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "again", "board_config": bc}, nil)

	// Storage: the test ELF is stored as often as it fits, then refused.
	var stored int
	for {
		code, body := pl.upload(t, "fw", "elf", firmware(t, board, "fw.elf"), nil)
		if code == 201 {
			stored++
			if stored > 50 {
				t.Fatal("storage quota never refused an upload")
			}
			continue
		}
		if code != 403 || !strings.Contains(string(body), "storage quota exceeded") {
			t.Fatalf("upload past the storage quota: %d %s", code, body)
		}
		break
	}
	if stored == 0 {
		t.Fatal("no upload fitted the storage quota")
	}
	var progs map[string]any
	pl.must(t, 200, "GET", "/api/v1/programs", nil, &progs)
	prog := progs["programs"].([]any)[0].(map[string]any)["id"].(string)

	// A snapshot's state counts too: refused while storage is full, and
	// nothing of it is kept; allowed once an admin raises the limit.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+ids[0]+"/program", map[string]string{"program_id": prog}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+ids[0]+"/poweron", nil, nil)
	code, body = pl.call(t, "POST", "/api/v1/sessions/"+ids[0]+"/snapshots", map[string]string{"name": "full"}, nil)
	if code != 403 || !strings.Contains(string(body), "storage quota exceeded") {
		t.Fatalf("snapshot past the storage quota: %d %s", code, body)
	}
	var snaps map[string]any
	pl.must(t, 200, "GET", "/api/v1/snapshots", nil, &snaps)
	if n := snaps["total"].(float64); n != 0 {
		t.Fatalf("a refused snapshot was kept: %v", snaps)
	}
	pl.must(t, 200, "PUT", "/api/v1/admin/tenants/default/quota", map[string]any{"storage_bytes": 10 << 20}, nil)
	var snap map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions/"+ids[0]+"/snapshots", map[string]string{"name": "fits"}, &snap)
	storage := func() float64 {
		var u struct {
			StorageBytes struct {
				Used float64 `json:"used"`
			} `json:"storage_bytes"`
		}
		pl.must(t, 200, "GET", "/api/v1/quota", nil, &u)
		return u.StorageBytes.Used
	}
	with := storage()
	pl.must(t, 204, "DELETE", "/api/v1/snapshots/"+snap["id"].(string), nil, nil)
	if freed := with - storage(); freed != snap["size"].(float64) {
		t.Fatalf("deleting a snapshot of %v bytes freed %v of the storage quota", snap["size"], freed)
	}

	// Free both session slots: jobs run in sessions, which count too.
	var list map[string]any
	pl.must(t, 200, "GET", "/api/v1/sessions", nil, &list)
	for _, s := range list["sessions"].([]any) {
		pl.must(t, 204, "DELETE", "/api/v1/sessions/"+s.(map[string]any)["id"].(string), nil, nil)
	}
	var jobs []string
	for range 2 {
		var j map[string]any
		// Two workers would run both at once if the quota allowed it.
		pl.must(t, 201, "POST", "/api/v1/jobs", map[string]any{"program_id": prog, "board_config": bc, "timeout": "20s",
			"uart_script": []map[string]string{{"wait_for": "ready"}}, "pass_pattern": "ready"}, &j)
		jobs = append(jobs, j["id"].(string))
	}
	a, b := pl.waitJobState(t, jobs[0], model.JobPassed), pl.waitJobState(t, jobs[1], model.JobPassed)
	if a.StartedAt.Before(*b.FinishedAt) && b.StartedAt.Before(*a.FinishedAt) {
		t.Fatalf("with MS_QUOTA_JOBS=1 two jobs ran at once: %v-%v and %v-%v", a.StartedAt, a.FinishedAt, b.StartedAt, b.FinishedAt)
	}
}
