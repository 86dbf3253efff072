package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/gdb/gdbtest"
	"github.com/machineserver/machineserver/shared/model"
)

// TestRecordReplay records an mps2-an385 session whose firmware overwrites a
// global after console input, replays the recording byte for byte, and
// finds the line that wrote the global by running the replay backwards in
// the real gdb-multiarch, on both forms of the platform.
func TestRecordReplay(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) { recordReplay(t, form.start(t)) })
	}
}

// sourceLine is the line of src/main.c (the test firmware's) that holds
// marker.
func sourceLine(t testing.TB, marker string) int {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "firmware", "src", "main.c"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if strings.Contains(sc.Text(), marker) {
			return n
		}
	}
	t.Fatalf("no %q in main.c", marker)
	return 0
}

func recordReplay(t *testing.T, pl *platform) {
	elf := firmware(t, "mps2-an385", "fw.elf")
	code, body := pl.upload(t, "fw", "elf", elf, nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	prog := decode(t, body)["id"].(string)
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "rec", "record": true, "board_config": map[string]string{"board": "mps2-an385"}}, &s)
	id := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	waitConsole(t, pl, id, "ready\r\n")
	// The runner paces input to a recorded machine, so this returns once
	// every byte is in.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("poke\r"), nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("peek\r"), nil)
	waitConsole(t, pl, id, "victim=7\r\n")

	// What a recording session cannot do while it runs.
	pl.must(t, 409, "POST", "/api/v1/sessions/"+id+"/reset", nil, nil)
	pl.must(t, 409, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "x"}, nil)

	// Power off returns with the recording stored.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, &s)
	rid, _ := s["recording_id"].(string)
	if rid == "" {
		t.Fatalf("session names no recording: %v", s)
	}
	var rec struct {
		State        string `json:"state"`
		Reason       string `json:"reason"`
		ReverseDebug bool   `json:"reverse_debug"`
		Size         int64  `json:"size"`
		ConsoleBytes int64  `json:"console_bytes"`
		Files        []struct {
			Name string `json:"name"`
		} `json:"files"`
	}
	pl.must(t, 200, "GET", "/api/v1/recordings/"+rid, nil, &rec)
	if rec.State != "ready" || !rec.ReverseDebug || rec.Size == 0 || len(rec.Files) != 3 {
		t.Fatalf("recording: %+v", rec)
	}
	original, _, _ := pl.console(t, id, 0)
	stored := string(pl.must(t, 200, "GET", "/api/v1/recordings/"+rid+"/console", nil, nil))
	if stored != original || int64(len(stored)) != rec.ConsoleBytes {
		t.Fatalf("stored console %q, session printed %q", stored, original)
	}
	var list struct {
		Total int `json:"total"`
	}
	pl.must(t, 200, "GET", "/api/v1/recordings", nil, &list)
	if list.Total != 1 {
		t.Fatalf("%d recordings listed, want 1", list.Total)
	}

	// A replay prints exactly what the recorded run printed, without input,
	// and ends where the recording ended.
	var rs map[string]any
	pl.must(t, 201, "POST", "/api/v1/recordings/"+rid+"/sessions", map[string]string{"name": "replay"}, &rs)
	replay := rs["id"].(string)
	if rs["replay_of"] != rid || rs["program_id"] != prog {
		t.Fatalf("replay session: %v", rs)
	}
	pl.must(t, 200, "POST", "/api/v1/sessions/"+replay+"/poweron", nil, nil)
	pl.must(t, 409, "POST", "/api/v1/sessions/"+replay+"/console", []byte("x"), nil)
	pl.must(t, 409, "POST", "/api/v1/sessions/"+replay+"/reset", nil, nil)
	pl.must(t, 409, "POST", "/api/v1/sessions/"+replay+"/program", map[string]string{"program_id": prog}, nil)
	pl.waitState(t, replay, "stopped")
	if got, _, _ := pl.console(t, replay, 0); got != original {
		t.Fatalf("replay printed\n%q\nthe recorded run printed\n%q", got, original)
	}

	// Backwards in gdb: stop where the firmware prints the global, watch
	// it, and run back to the store that wrote it.
	pl.must(t, 201, "POST", "/api/v1/recordings/"+rid+"/sessions", map[string]string{"name": "debug"}, &rs)
	dbg := rs["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+dbg+"/poweron?halted=true", nil, nil)
	var info gdbInfo
	pl.must(t, 200, "GET", "/api/v1/sessions/"+dbg+"/gdb", nil, &info)
	peek, poke := sourceLine(t, `puts_raw("victim=")`), sourceLine(t, "POKE-LINE")
	out, err := gdbtest.GDBFor(context.Background(), t, elf, info.TCP,
		fmt.Sprintf("break main.c:%d", peek), "continue", "print victim",
		"watch victim", "reverse-continue", "bt 1", "reverse-stepi", "info line *$pc", "print victim", "detach")
	for _, want := range []string{"$1 = 7", " in poke (", fmt.Sprintf("Line %d of \"src/main.c\"", poke), "$2 = 42"} {
		if !strings.Contains(out, want) {
			t.Fatalf("gdb (err %v) lacks %q:\n%s", err, want, out)
		}
	}

	// A guest printing flat out when the power goes off: QEMU lets its
	// replay run a little past the recorded end and exits 1 there; the
	// replay still stopped where the recording did, having printed all of
	// it.
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "loud", "record": true, "board_config": map[string]string{"board": "mps2-an385"}}, &s)
	loud := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+loud+"/program", map[string]string{"program_id": prog}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+loud+"/poweron", nil, nil)
	waitConsole(t, pl, loud, "ready\r\n")
	pl.must(t, 200, "POST", "/api/v1/sessions/"+loud+"/console", []byte("stream\r"), nil)
	waitConsole(t, pl, loud, "seq=2000\r\n")
	pl.must(t, 200, "POST", "/api/v1/sessions/"+loud+"/poweroff", nil, &s)
	loudRec := s["recording_id"].(string)
	printed := string(pl.must(t, 200, "GET", "/api/v1/recordings/"+loudRec+"/console", nil, nil))
	pl.must(t, 201, "POST", "/api/v1/recordings/"+loudRec+"/sessions", nil, &rs)
	loudReplay := rs["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+loudReplay+"/poweron", nil, nil)
	// Not waitState: an error must show as one, not as a timeout.
	var end map[string]any
	for deadline := time.Now().Add(20 * time.Second); end == nil || end["state"] == "running" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		pl.must(t, 200, "GET", "/api/v1/sessions/"+loudReplay, nil, &end)
	}
	// (Or QEMU replays the power off before the guest writes again.)
	if end["state"] != "stopped" || end["reason"] != "the replay reached the end of recording "+loudRec && end["reason"] != "firmware exited with status 0" {
		t.Errorf("replay of a printing guest ended: %v", end)
	}
	if got, _, _ := pl.console(t, loudReplay, 0); got != printed {
		t.Errorf("replay of a printing guest printed %d bytes, ending %q; the recording %d, ending %q", len(got), got[max(0, len(got)-40):], len(printed), printed[max(0, len(printed)-40):])
	}
	for _, id := range []string{loudReplay, loud} {
		pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	}
	pl.must(t, 200, "DELETE", "/api/v1/recordings/"+loudRec, nil, nil)

	// A replay session is an ordinary session to delete; deleting the
	// recording frees it and its files.
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+dbg, nil, nil)
	pl.must(t, 200, "DELETE", "/api/v1/recordings/"+rid, nil, nil)
	pl.must(t, 404, "GET", "/api/v1/recordings/"+rid, nil, nil)
	pl.must(t, 404, "POST", "/api/v1/recordings/"+rid+"/sessions", nil, nil)
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+replay, nil, nil)
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	pl.assertNoEmulators(t)
}

// waitConsole waits until the session's console shows want.
func waitConsole(t *testing.T, pl *platform, id, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, _ := pl.console(t, id, 0)
		if strings.Contains(out, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("console never showed %q: %q", want, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRecordedJobs runs recorded jobs on both forms: a failed one keeps its
// recording and links it, and its replay prints what the job printed and
// runs backwards to the line that broke it; a passed one keeps nothing
// unless asked to keep it always.
func TestRecordedJobs(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) { recordedJobs(t, form.start(t)) })
	}
}

func recordedJobs(t *testing.T, pl *platform) {
	elf := firmware(t, "mps2-an385", "fw.elf")
	prog := uploadELF(t, pl, "mps2-an385", "fw.elf")
	spec := func(name string, script ...string) model.JobSpec {
		s := model.JobSpec{Name: name, ProgramID: prog, BoardConfig: model.BoardConfig{Board: "mps2-an385"}, Timeout: "20s",
			PassPattern: `victim=42\r\n`, FailPattern: `victim=7\r\n`, Record: true, UARTScript: []model.Step{{WaitFor: "ready"}}}
		for _, c := range script {
			s.UARTScript = append(s.UARTScript, model.Step{Send: c + "\r"})
		}
		return s
	}
	failing, passing, kept := spec("broken", "poke", "peek"), spec("fine", "peek"), spec("kept", "peek")
	kept.KeepRecording = model.KeepAlways
	var ids []string
	for _, s := range []model.JobSpec{failing, passing, kept} {
		var j model.Job
		pl.must(t, 201, "POST", "/api/v1/jobs", s, &j)
		ids = append(ids, j.ID)
	}
	jf, jp, jk := pl.waitJob(t, ids[0]), pl.waitJob(t, ids[1]), pl.waitJob(t, ids[2])
	if jf.State != model.JobFailed || jf.RecordingID == "" || jf.RecordingError != "" {
		t.Fatalf("failed recorded job: %+v", jf)
	}
	if jp.State != model.JobPassed || jp.RecordingID != "" || jp.RecordingError != "" {
		t.Fatalf("passed recorded job: %+v", jp)
	}
	if jk.State != model.JobPassed || jk.RecordingID == "" {
		t.Fatalf("passed job that keeps its recording: %+v", jk)
	}
	var list struct {
		Recordings []model.Recording `json:"recordings"`
		Total      int               `json:"total"`
	}
	pl.must(t, 200, "GET", "/api/v1/recordings", nil, &list)
	if list.Total != 2 {
		t.Fatalf("%d recordings kept, want the failed job's and the kept one's: %+v", list.Total, list.Recordings)
	}
	var rec model.Recording
	pl.must(t, 200, "GET", "/api/v1/recordings/"+jf.RecordingID, nil, &rec)
	if rec.State != model.RecordingReady || rec.JobID != jf.ID || !rec.ReverseDebug {
		t.Fatalf("the failed job's recording: %+v", rec)
	}

	// Replay the failure: the same console, then backwards to the store.
	jobConsole := string(pl.must(t, 200, "GET", "/api/v1/jobs/"+jf.ID+"/console", nil, nil))
	var rs map[string]any
	pl.must(t, 201, "POST", "/api/v1/recordings/"+jf.RecordingID+"/sessions", nil, &rs)
	replay := rs["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+replay+"/poweron", nil, nil)
	pl.waitState(t, replay, "stopped")
	if got, _, _ := pl.console(t, replay, 0); got != jobConsole {
		t.Fatalf("replay printed\n%q\nthe job printed\n%q", got, jobConsole)
	}
	pl.must(t, 201, "POST", "/api/v1/recordings/"+jf.RecordingID+"/sessions", nil, &rs)
	dbg := rs["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+dbg+"/poweron?halted=true", nil, nil)
	var info gdbInfo
	pl.must(t, 200, "GET", "/api/v1/sessions/"+dbg+"/gdb", nil, &info)
	out, err := gdbtest.GDBFor(context.Background(), t, elf, info.TCP,
		fmt.Sprintf("break main.c:%d", sourceLine(t, `puts_raw("victim=")`)), "continue",
		"watch victim", "reverse-continue", "bt 1", "detach")
	if !strings.Contains(out, " in poke (") {
		t.Fatalf("gdb (err %v) did not run back to poke:\n%s", err, out)
	}
	for _, id := range []string{replay, dbg} {
		pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	}
	for _, id := range []string{jf.RecordingID, jk.RecordingID} {
		pl.must(t, 200, "DELETE", "/api/v1/recordings/"+id, nil, nil)
	}
	pl.assertNoEmulators(t)
}
