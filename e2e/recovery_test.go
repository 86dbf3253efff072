package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRunnerCrashAndRestart kills the runner with SIGKILL while a session
// runs: its QEMU must die with it (no leak), and the restarted runner must
// mark the session lost instead of pretending it still runs; the session can
// then be powered on again.
func TestRunnerCrashAndRestart(t *testing.T) {
	pl := startDistributed(t)
	runner := pl.procs[len(pl.procs)-1]
	id := runningSession(t, pl, "mps2-an385")
	if n := len(emulators(pl.socketDir + "/" + id)); n != 1 {
		t.Fatalf("want 1 emulator, have %d", n)
	}

	runner.cmd.Process.Signal(syscall.SIGKILL)
	runner.cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for len(emulators(pl.socketDir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU outlived its runner: %v", emulators(pl.socketDir))
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Same identity, same directories: what a restarted pod gets.
	env := addedEnv(runner)
	restarted := startProc(t, "runner", env)
	pl.procs[len(pl.procs)-1] = restarted
	waitHealthy(t, "http://127.0.0.1:"+envValue(env, "PORT"), restarted)
	s := pl.waitState(t, id, "error")
	if !strings.Contains(fmt.Sprint(s["reason"]), "lost") {
		t.Fatalf("reason after runner restart: %v", s["reason"])
	}
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	cs := pl.dialConsole(t, id, "")
	// The console history lived in the dead runner: the new one starts empty.
	cs.waitFor(t, "ready", 1)
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
}

// addedEnv is the part of a process's environment the test set.
func addedEnv(p *proc) []string {
	var out []string
	for _, kv := range p.cmd.Env {
		if strings.HasPrefix(kv, "MS_") || strings.HasPrefix(kv, "PORT=") || strings.HasPrefix(kv, "K_SINK=") {
			out = append(out, kv)
		}
	}
	return out
}

// runningSession uploads the firmware, creates a session on board and powers
// it on, waiting for the banner.
func runningSession(t testing.TB, pl *platform, board string) string {
	t.Helper()
	code, body := pl.upload(t, "fw", "elf", firmware(t, board, "fw.elf"), nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "r", "board_config": map[string]string{"board": board}}, &s)
	id := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": decode(t, body)["id"].(string)}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	pl.dialConsole(t, id, "").waitFor(t, "ready", 1)
	return id
}

// TestProgramsSurviveLosingRedis: the program index is rebuilt from the
// manifests in S3 when the programs function starts on an empty Redis.
func TestProgramsSurviveLosingRedis(t *testing.T) {
	pl := startDistributed(t)
	code, body := pl.upload(t, "keep", "hex", firmware(t, "netduino2", "fw.hex"), nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	id := decode(t, body)["id"].(string)

	programs := pl.procs[1]
	env := addedEnv(programs)
	programs.stop()
	opt, _ := redis.ParseURL(envValue(env, "MS_REDIS_URL"))
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}

	restarted := startProc(t, "programs", env)
	pl.procs[1] = restarted
	waitHealthy(t, "http://127.0.0.1:"+envValue(env, "PORT"), restarted)
	var p map[string]any
	pl.must(t, 200, "GET", "/api/v1/programs/"+id, nil, &p)
	if p["name"] != "keep" || p["format"] != "hex" {
		t.Fatalf("rebuilt program: %v", p)
	}
}

// TestStandaloneRestartKeepsPrograms: programs live in the data directory and
// come back after a restart of the standalone server.
func TestStandaloneRestartKeepsPrograms(t *testing.T) {
	pl := startStandalone(t)
	code, body := pl.upload(t, "keep", "elf", firmware(t, "netduino2", "fw.elf"), nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	id := decode(t, body)["id"].(string)
	old := pl.procs[0]
	old.stop()
	again := startProc(t, "machineserver", addedEnv(old))
	pl.procs[0] = again
	waitHealthy(t, pl.base, again)
	var p map[string]any
	pl.must(t, 200, "GET", "/api/v1/programs/"+id, nil, &p)
	if p["name"] != "keep" {
		t.Fatalf("program after restart: %v", p)
	}
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}
