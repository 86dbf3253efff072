package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

var seqLine = regexp.MustCompile(`seq=(\d+)\r\n`)

// seqs returns the seq=N values of complete lines, in order.
func seqs(s string) []int { return numbered(s, seqLine) }

// lastBefore is the last complete seq value in the first offset bytes.
func lastBefore(t *testing.T, history string, offset int64) int {
	t.Helper()
	v := seqs(history[:min(int(offset), len(history))])
	if len(v) == 0 {
		t.Fatalf("no seq line before offset %d", offset)
	}
	return v[len(v)-1]
}

// resumedAt finds where the sequence jumps back (the restored machine
// starts printing) and returns the first value after the jump.
func resumedAt(t *testing.T, history string) int {
	t.Helper()
	v := seqs(history)
	for i := 1; i < len(v); i++ {
		if v[i] < v[i-1] {
			// The old machine's last, cut line and the restored machine's
			// first, cut line join into one line ("seq=4" + "3\r\n"): when
			// the value after the drop does not lead on, skip it.
			if i+2 < len(v) && v[i+1] != v[i]+1 && v[i+2] == v[i+1]+1 {
				return v[i+1]
			}
			return v[i]
		}
	}
	t.Fatalf("the sequence never went back: %d values, last %v", len(v), v[max(0, len(v)-3):])
	return 0
}

// continues asserts that a restored stream picks up right after the
// snapshot: within a few lines of the last one the console had when the
// state was taken (bytes still in flight then are the slack), and not from
// boot or from where the source had got to since.
func continues(t *testing.T, what string, snapAt, resumed, later int) {
	t.Helper()
	if resumed <= snapAt || resumed > snapAt+5 || resumed >= later {
		t.Fatalf("%s resumed at seq=%d; snapshot was at seq=%d, the source later reached %d", what, resumed, snapAt, later)
	}
}

func TestSnapshots(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			pl := form.start(t)
			snapshots(t, pl)
		})
	}
}

func snapshots(t *testing.T, pl *platform) {
	var caps struct {
		Backends []struct {
			Boards []struct {
				Name      string
				Snapshots bool
			}
		}
	}
	pl.must(t, 200, "GET", "/api/v1/capabilities", nil, &caps)
	probed := map[string]bool{}
	for _, b := range caps.Backends[0].Boards {
		probed[b.Name] = b.Snapshots
	}
	// netduino2 restores, but QEMU 7.2 does not save its USART: refused.
	if !probed["mps2-an385"] || probed["netduino2"] || probed["lm3s6965evb"] {
		t.Fatalf("snapshot capability per board: %v", probed)
	}

	id := runningSession(t, pl, "mps2-an385")
	cs := pl.dialConsole(t, id, "")
	cs.send(t, "stream\r")
	cs.waitFor(t, "seq=200\r\n", 1)

	var snap map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "at-stream", "description": "streaming"}, &snap)
	sid := snap["id"].(string)
	for _, f := range []string{"machine", "emulator_version", "program_id", "program_sha256", "sha256", "created_at"} {
		if snap[f] == nil || snap[f] == "" {
			t.Fatalf("manifest lacks %s: %v", f, snap)
		}
	}
	if snap["size"].(float64) < 1000 {
		t.Fatalf("state size %v", snap["size"])
	}
	// The platform's requests carry the bootstrap key of tenant default.
	if snap["tenant"] != "default" {
		t.Fatalf("tenant %v", snap["tenant"])
	}
	offset := int64(snap["console_offset"].(float64))

	// The session runs on after the capture.
	history, _, _ := pl.console(t, id, 0)
	snapAt := lastBefore(t, history, offset)
	cs.waitFor(t, "seq="+strconv.Itoa(snapAt+3000)+"\r\n", 1)
	history, _, _ = pl.console(t, id, 0)
	later := seqs(history)[len(seqs(history))-1]

	var list struct{ Snapshots []map[string]any }
	pl.must(t, 200, "GET", "/api/v1/sessions/"+id+"/snapshots", nil, &list)
	if len(list.Snapshots) != 1 || list.Snapshots[0]["id"] != sid {
		t.Fatalf("list: %v", list)
	}
	pl.must(t, 200, "GET", "/api/v1/snapshots/"+sid, nil, nil)

	// Restore the running session: the console continues from the snapshot.
	var s map[string]any
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/restore", map[string]string{"snapshot_id": sid}, &s)
	if s["state"] != "running" || s["snapshot_id"] != sid {
		t.Fatalf("after restore: %v", s)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		history, _, _ = pl.console(t, id, 0)
		v := seqs(history)
		// A few lines past the drop back, so resumedAt can tell a line the
		// two machines cut in half from the first whole one.
		drop := 1
		for drop < len(v) && v[drop] >= v[drop-1] {
			drop++
		}
		if drop+3 < len(v) && v[len(v)-1] < later {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no output after restore")
		}
		time.Sleep(20 * time.Millisecond)
	}
	continues(t, "restored session", snapAt, resumedAt(t, history), later)
	cs.send(t, "x")

	// Restore a stopped session too.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/restore", map[string]string{"snapshot_id": sid}, &s)
	if s["state"] != "running" {
		t.Fatalf("restore of a stopped session: %v", s)
	}
	cs.send(t, "x")

	// Fork into three independent sessions.
	var fork struct{ Sessions []map[string]any }
	pl.must(t, 201, "POST", "/api/v1/snapshots/"+sid+"/sessions", map[string]any{"count": 3, "name_prefix": "fork"}, &fork)
	if len(fork.Sessions) != 3 {
		t.Fatalf("fork: %v", fork)
	}
	for i, f := range fork.Sessions {
		fid := f["id"].(string)
		if f["state"] != "running" || f["name"] != "fork-"+strconv.Itoa(i+1) {
			t.Fatalf("fork %d: %v", i, f)
		}
		fc := pl.dialConsole(t, fid, "")
		fc.waitFor(t, "seq=", 3)
		continues(t, "fork", snapAt, seqs(fc.String())[0], later)
		// Independent: stopping this one's stream leaves the others be.
		fc.send(t, "x")
		fc.send(t, "\rcount\r")
		fc.waitFor(t, "count=", 1)
		// Its own machine (and, once it used snapshots, a paused spare for
		// the next restore).
		if n := len(emulators(pl.socketDir + "/" + fid)); n < 1 || n > 2 {
			t.Fatalf("fork %s has %d emulators", fid, n)
		}
	}
	for _, f := range fork.Sessions {
		pl.must(t, 204, "DELETE", "/api/v1/sessions/"+f["id"].(string), nil, nil)
	}

	snapshotBadInput(t, pl, id, sid)

	pl.must(t, 204, "DELETE", "/api/v1/snapshots/"+sid, nil, nil)
	pl.must(t, 404, "GET", "/api/v1/snapshots/"+sid, nil, nil)
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
}

func snapshotBadInput(t *testing.T, pl *platform, id, sid string) {
	lm := runningSession(t, pl, "lm3s6965evb")
	nd := runningSession(t, pl, "netduino2")
	defer pl.must(t, 204, "DELETE", "/api/v1/sessions/"+lm, nil, nil)
	defer pl.must(t, 204, "DELETE", "/api/v1/sessions/"+nd, nil, nil)
	for _, c := range []struct {
		name, method, path string
		body               any
		status             int
		contains           string
	}{
		{"board that cannot restore", "POST", "/api/v1/sessions/" + lm + "/snapshots", map[string]string{"name": "x"}, 422, "cannot restore"},
		{"board whose UART state is not saved", "POST", "/api/v1/sessions/" + nd + "/snapshots", map[string]string{"name": "x"}, 422, "stm32f2xx-usart"},
		{"unknown snapshot", "POST", "/api/v1/sessions/" + id + "/restore", map[string]string{"snapshot_id": "0123456789abcdef"}, 422, "does not exist"},
		{"snapshot of another board", "POST", "/api/v1/sessions/" + nd + "/restore", map[string]string{"snapshot_id": sid}, 422, "mps2-an385"},
		{"missing snapshot id", "POST", "/api/v1/sessions/" + id + "/restore", map[string]string{}, 400, "snapshot_id"},
		{"snapshot of a missing session", "POST", "/api/v1/sessions/0123456789abcdef/snapshots", map[string]string{"name": "x"}, 404, "not found"},
		{"no name", "POST", "/api/v1/sessions/" + id + "/snapshots", map[string]string{}, 400, "name"},
		{"unknown field", "POST", "/api/v1/sessions/" + id + "/snapshots", map[string]string{"name": "x", "when": "now"}, 400, "when"},
		{"fork count 0", "POST", "/api/v1/snapshots/" + sid + "/sessions", map[string]int{"count": 0}, 400, "count"},
		{"fork count 17", "POST", "/api/v1/snapshots/" + sid + "/sessions", map[string]int{"count": 17}, 400, "count"},
		{"fork of unknown", "POST", "/api/v1/snapshots/0123456789abcdef/sessions", map[string]int{"count": 1}, 404, "not found"},
		{"get unknown", "GET", "/api/v1/snapshots/nope", nil, 404, "not found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := pl.call(t, c.method, c.path, c.body, nil)
			if code != c.status || !strings.Contains(string(body), c.contains) {
				t.Fatalf("status %d (want %d): %s", code, c.status, body)
			}
		})
	}
	// Snapshot of a stopped session.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, nil)
	if code, body := pl.call(t, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "x"}, nil); code != 409 {
		t.Fatalf("snapshot of a stopped session: %d %s", code, body)
	}
}

// TestSnapshotArtifacts covers what lives in the blob store: a corrupted
// state is refused before QEMU reads it, a state from another QEMU version is
// refused as incompatible, and both come from manifests after a restart.
func TestSnapshotArtifacts(t *testing.T) {
	pl := startStandalone(t)
	id := runningSession(t, pl, "mps2-an385")
	var snap map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "a"}, &snap)
	sid := snap["id"].(string)
	var other map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "b"}, &other)
	oid := other["id"].(string)

	// Restart with the same data dir: snapshots come back from manifests.
	old := pl.procs[0]
	old.stop()
	// A corrupted state (and no runner cache to hide it).
	state := filepath.Join(pl.dataDir, "blobs", "snapshots", sid, "state")
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	os.WriteFile(state, b, 0o600)
	cached, _ := filepath.Glob(filepath.Join(pl.dataDir, "runner", "cache", "*.state"))
	for _, c := range cached {
		os.Remove(c)
	}
	// A state from another emulator version.
	mf := filepath.Join(pl.dataDir, "blobs", "snapshots", oid, "manifest.json")
	m, _ := os.ReadFile(mf)
	os.WriteFile(mf, []byte(strings.Replace(string(m), other["emulator_version"].(string), "6.2.0", 1)), 0o600)

	again := startProc(t, "machineserver", addedEnv(old))
	pl.procs[0] = again
	waitHealthy(t, pl.base, again)
	var back map[string]any
	pl.must(t, 200, "GET", "/api/v1/snapshots/"+sid, nil, &back)
	// The manifest (the runner writes it beside the state) is complete.
	for _, f := range []string{"tenant", "sha256", "size", "console_offset", "emulator_version", "program_sha256"} {
		if back[f] != snap[f] {
			t.Errorf("rebuilt from the manifest: %s = %v, was %v", f, back[f], snap[f])
		}
	}

	// The session is gone with the restart (live state); restore into a new one.
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "n", "board_config": map[string]string{"board": "mps2-an385"}}, &s)
	nid := s["id"].(string)
	code, body := pl.call(t, "POST", "/api/v1/sessions/"+nid+"/restore", map[string]string{"snapshot_id": sid}, nil)
	if code != 422 || !strings.Contains(string(body), "corrupted") {
		t.Fatalf("corrupted state: %d %s", code, body)
	}
	code, body = pl.call(t, "POST", "/api/v1/sessions/"+nid+"/restore", map[string]string{"snapshot_id": oid}, nil)
	if code != 422 || !strings.Contains(string(body), "incompatible") {
		t.Fatalf("other version: %d %s", code, body)
	}
	if n := len(emulators(pl.socketDir + "/" + nid)); n != 0 {
		t.Fatalf("a refused restore left %d emulators", n)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+nid, nil, nil)
}

// TestSnapshotAcrossRunners: a snapshot taken on one runner restores after
// that runner is gone, on a new runner with an empty cache (the state comes
// from S3), and the snapshots function rebuilds its index from the
// manifests on an empty Redis.
func TestSnapshotAcrossRunners(t *testing.T) {
	pl := startDistributed(t)
	id := runningSession(t, pl, "mps2-an385")
	var snap map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "moving"}, &snap)
	sid := snap["id"].(string)

	old := pl.procs[len(pl.procs)-1]
	old.cmd.Process.Kill()
	old.cmd.Wait()
	env := addedEnv(old)
	for i, kv := range env {
		switch {
		case strings.HasPrefix(kv, "MS_RUNNER_ID="):
			env[i] = "MS_RUNNER_ID=runner-1"
		case strings.HasPrefix(kv, "MS_RUNNER_DIR="):
			env[i] = "MS_RUNNER_DIR=" + shortDir(t, "msr2")
		}
	}
	fresh := startProc(t, "runner", env)
	pl.procs[len(pl.procs)-1] = fresh
	waitHealthy(t, "http://127.0.0.1:"+envValue(env, "PORT"), fresh)

	// Snapshots function restarted on an empty index.
	snaps := pl.procs[2]
	senv := addedEnv(snaps)
	snaps.stop()
	opt, _ := redisOptions(envValue(senv, "MS_REDIS_URL"))
	rdb := redisClient(opt)
	defer rdb.Close()
	keys, _ := rdb.Keys(context.Background(), "ms:snapshot*").Result()
	if len(keys) > 0 {
		rdb.Del(context.Background(), keys...)
	}
	again := startProc(t, "snapshots", senv)
	pl.procs[2] = again
	waitHealthy(t, "http://127.0.0.1:"+envValue(senv, "PORT"), again)
	pl.must(t, 200, "GET", "/api/v1/snapshots/"+sid, nil, nil)

	// The old runner's session is lost; restore puts it on the new runner.
	pl.waitState(t, id, "error")
	var s map[string]any
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/restore", map[string]string{"snapshot_id": sid}, &s)
	if s["state"] != "running" || s["runner_id"] != "runner-1" {
		t.Fatalf("restore on the new runner: %v", s)
	}
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("count\r"), nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _, _ := pl.console(t, id, 0)
		if strings.Contains(out, "count=") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored machine does not answer: %q", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
}

func redisOptions(url string) (*redis.Options, error) { return redis.ParseURL(url) }

func redisClient(opt *redis.Options) *redis.Client { return redis.NewClient(opt) }
