package host

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/emulator/emulatortest"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// recording opens a recording for the rig's session, as the sessions
// function does at power on.
func (g *rig) recording(t *testing.T, id, session string) *model.Recording {
	t.Helper()
	rec := model.Recording{ID: id, Tenant: "t1", SessionID: session, Machine: "netduino2", State: model.RecordingActive, CreatedAt: time.Now()}
	if err := g.st.PutRecording(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	return &rec
}

// A recorded machine's files and console are stored, counted against the
// tenant's storage, once it ends and before Stop returns; input to it is
// paced; its replay gets the files and refuses input.
func TestRecordAndReplay(t *testing.T) {
	g := newRig(t, func(s *Settings) { s.RecordInputGap = time.Millisecond })
	g.r.cfg.Quota = g.st.Quota(quota.Config{StorageBytes: 1 << 20})
	g.session(t, "s1")
	rec := g.recording(t, "r1", "s1")
	if _, err := g.r.Start(t.Context(), "s1", runnerapi.StartRequest{Machine: "netduino2", Program: g.prog, Record: rec}); err != nil {
		t.Fatal(err)
	}
	if g.last(t).Spec().Record == "" {
		t.Fatal("the machine was not launched recording")
	}
	g.waitOutput(t, "s1", "uart0", "ready\r\n")
	if err := g.r.Input("s1", "", []byte("count\r")); err != nil {
		t.Fatal(err)
	}
	g.waitOutput(t, "s1", "uart0", "count=1\r\n")
	if err := g.r.Stop("s1"); err != nil {
		t.Fatal(err)
	}
	got, err := g.st.GetRecording(t.Context(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	names := func(fs []model.RecordingFile) []string {
		var n []string
		for _, f := range fs {
			n = append(n, f.Name)
		}
		return n
	}
	if got.State != model.RecordingReady || !slices.Equal(names(got.Files), []string{emulatortest.FakeRecording, model.RecordingConsole}) || got.EndedAt == nil {
		t.Fatalf("recording after stop: %+v", got)
	}
	console, err := blob.GetBytes(t.Context(), g.r.blobs, model.RecordingFileKey("r1", model.RecordingConsole))
	if err != nil || !strings.HasSuffix(string(console), "count\rcount=1\r\n") || int64(len(console)) != got.ConsoleBytes {
		t.Fatalf("stored console %q (%v), recording says %d bytes", console, err, got.ConsoleBytes)
	}
	if u, _ := g.r.cfg.Quota.Usage(t.Context(), "t1"); u.StorageBytes.Used != got.Size || got.Size == 0 {
		t.Fatalf("storage used %d, recording size %d", u.StorageBytes.Used, got.Size)
	}
	if n := g.pub.count(events.TypeRecordingReady); n != 1 {
		t.Fatalf("%d recording.ready events, want 1", n)
	}

	// The next start of the session is a plain machine again, unless asked.
	g.start(t, "s1", "netduino2")
	if sp := g.last(t).Spec(); sp.Record != "" || sp.Replay != "" {
		t.Fatalf("a plain start recorded or replayed: %+v", sp)
	}
	g.r.Stop("s1")

	g.session(t, "s2")
	if _, err := g.r.Start(t.Context(), "s2", runnerapi.StartRequest{Machine: "netduino2", Program: g.prog, Replay: &got}); err != nil {
		t.Fatal(err)
	}
	if err := g.r.Input("s2", "", []byte("x")); !isStatus(err, 409) {
		t.Fatalf("input to a replay: %v, want a 409", err)
	}

	// A replay of a file that no longer matches its checksum never starts.
	bad := got
	bad.Files = slices.Clone(got.Files)
	bad.Files[0].SHA256 = strings.Repeat("0", 64)
	g.session(t, "s3")
	if _, err := g.r.Start(t.Context(), "s3", runnerapi.StartRequest{Machine: "netduino2", Program: g.prog, Replay: &bad}); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("replay of a corrupted recording: %v", err)
	}
}

// A recording over the tenant's storage quota is not stored, and says why.
func TestRecordingOverQuota(t *testing.T) {
	g := newRig(t, nil)
	g.r.cfg.Quota = g.st.Quota(quota.Config{StorageBytes: 4})
	g.session(t, "s1")
	rec := g.recording(t, "r1", "s1")
	if _, err := g.r.Start(t.Context(), "s1", runnerapi.StartRequest{Machine: "netduino2", Program: g.prog, Record: rec}); err != nil {
		t.Fatal(err)
	}
	g.waitOutput(t, "s1", "uart0", "ready\r\n")
	g.r.Stop("s1")
	got, err := g.st.GetRecording(t.Context(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != model.RecordingFailed || !strings.Contains(got.Reason, "quota") {
		t.Fatalf("recording over quota: %+v", got)
	}
	if _, err := g.r.blobs.Stat(t.Context(), model.RecordingFileKey("r1", model.RecordingConsole)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a recording over quota was stored: %v", err)
	}
	if n, m := g.pub.count(events.TypeRecordingFailed), g.pub.count(events.TypeRecordingReady); n != 1 || m != 0 {
		t.Fatalf("%d recording.failed and %d recording.ready events, want 1 and 0", n, m)
	}
}

// A replay that has printed all its recording printed and then fails (QEMU
// exits 1 when the guest writes past the recorded end) stopped where the
// recording ended; one that fails short of that diverged: an error.
func TestReplayEnd(t *testing.T) {
	g := newRig(t, nil)
	g.session(t, "s1")
	rec := g.recording(t, "r1", "s1")
	if _, err := g.r.Start(t.Context(), "s1", runnerapi.StartRequest{Machine: "netduino2", Program: g.prog, Record: rec}); err != nil {
		t.Fatal(err)
	}
	g.waitOutput(t, "s1", "", "ready\r\n")
	if err := g.r.Stop("s1"); err != nil {
		t.Fatal(err)
	}
	got, err := g.st.GetRecording(t.Context(), "r1")
	if err != nil || got.ConsoleBytes == 0 {
		t.Fatalf("recording %+v: %v", got, err)
	}
	for i, tc := range []struct {
		printed int64
		want    model.State
		says    string
	}{
		{got.ConsoleBytes, model.StateStopped, "the replay reached the end of recording r1"},
		{got.ConsoleBytes + 1, model.StateError, "firmware exited with status 1"},
	} {
		id := fmt.Sprintf("replay%d", i)
		g.session(t, id)
		r := got
		r.ConsoleBytes = tc.printed
		if _, err := g.r.Start(t.Context(), id, runnerapi.StartRequest{Machine: "netduino2", Program: g.prog, Replay: &r}); err != nil {
			t.Fatal(err)
		}
		g.waitOutput(t, id, "", "ready\r\n")
		g.last(t).End(emulator.Exit{Kind: emulator.ExitStatus, Code: 1, Log: []string{"qemu-system-arm: Missing character write event in the replay log"}})
		if s := g.waitState(t, id, tc.want); s.Reason != tc.says || len(s.EmulatorLog) != 1 {
			t.Errorf("replay printing %d of %d bytes: %+v", got.ConsoleBytes, tc.printed, s)
		}
	}
}
