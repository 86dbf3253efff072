package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/events/eventstest"
	"github.com/machineserver/machineserver/shared/model"
)

// TestCloudEvents drives the functions with real CloudEvents, in binary and
// structured mode, and checks the replies and the events published to K_SINK.
func TestCloudEvents(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			rec := &eventstest.Recorder{}
			sink := httptest.NewServer(rec)
			defer sink.Close()
			pl := form.start(t, "K_SINK="+sink.URL)
			cloudEvents(t, pl, rec)
		})
	}
}

func cloudEvents(t *testing.T, pl *platform, rec *eventstest.Recorder) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fw, err := os.ReadFile(firmware(t, "mps2-an385", "fw.elf"))
	if err != nil {
		t.Fatal(err)
	}

	// Upload as a structured-mode event.
	var prog model.Program
	send(t, pl.events["programs"], "structured", events.TypeProgramUpload, events.UploadProgram{Name: "ce", Format: "elf", Content: fw}, 200, events.TypeProgramStored, &prog)
	if prog.ID == "" || prog.Format != model.FormatELF {
		t.Fatalf("program from event: %+v", prog)
	}

	// The rest in binary mode.
	var s model.Session
	send(t, pl.events["sessions"], "binary", events.TypeSessionCreate, events.CreateSession{Name: "ce", Backend: "qemu", BoardConfig: model.BoardConfig{Board: "mps2-an385"}}, 200, events.TypeSessionCreated, &s)
	send(t, pl.events["sessions"], "binary", events.TypeSessionLoadProgram, events.LoadProgram{SessionID: s.ID, ProgramID: prog.ID}, 200, events.TypeSessionProgramLoaded, &s)
	send(t, pl.events["sessions"], "structured", events.TypeSessionPowerOn, events.SessionRef{SessionID: s.ID}, 200, events.TypeSessionStarted, &s)
	if s.State != model.StateRunning {
		t.Fatalf("after poweron event: %+v", s)
	}
	send(t, pl.events["sessions"], "binary", events.TypeSessionReset, events.SessionRef{SessionID: s.ID}, 200, events.TypeSessionRebooted, &s)
	send(t, pl.events["sessions"], "binary", events.TypeSessionPowerOff, events.SessionRef{SessionID: s.ID}, 200, events.TypeSessionStopped, &s)
	send(t, pl.events["sessions"], "binary", events.TypeSessionDelete, events.SessionRef{SessionID: s.ID}, 200, events.TypeSessionDeleted, &s)

	// Bad events are refused with a 4xx (not retried by Knative).
	send(t, pl.events["sessions"], "binary", "io.machineserver.session.explode.v1", events.SessionRef{SessionID: s.ID}, 400, "", nil)
	send(t, pl.events["sessions"], "binary", events.TypeSessionPowerOn, map[string]any{"session_id": s.ID, "extra": 1}, 400, "", nil)
	send(t, pl.events["sessions"], "binary", events.TypeSessionPowerOn, events.SessionRef{SessionID: s.ID}, 404, "", nil)
	send(t, pl.events["programs"], "binary", events.TypeProgramUpload, events.UploadProgram{Name: "junk", Format: "elf", Content: []byte("junk")}, 422, "", nil)

	// What the platform published, in order per session.
	for _, typ := range []string{events.TypeProgramStored, events.TypeSessionCreated, events.TypeSessionProgramLoaded,
		events.TypeSessionStarted, events.TypeSessionRebooted, events.TypeSessionStopped, events.TypeSessionDeleted} {
		evs, err := rec.Wait(ctx, typ, 1)
		if err != nil {
			t.Fatalf("sink never got %s: %v (got %d events)", typ, err, len(rec.Events()))
		}
		if evs[0].Subject() == "" || !strings.HasPrefix(evs[0].Source(), "/machineserver/") {
			t.Errorf("%s: subject %q source %q", typ, evs[0].Subject(), evs[0].Source())
		}
	}
	for _, e := range rec.Events() {
		if e.Type() == events.TypeSessionStopped {
			var got model.Session
			if err := e.DataAs(&got); err != nil || got.State != model.StateStopped {
				t.Errorf("stopped event data: %+v %v", got, err)
			}
		}
	}
}

// send posts one event and checks the status and, for success, the reply.
func send(t *testing.T, url, mode, typ string, data any, wantStatus int, wantReply string, out any) {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID("test-" + typ + "-" + time.Now().Format("150405.000000"))
	e.SetSource("/e2e/test")
	e.SetType(typ)
	if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
		t.Fatal(err)
	}
	var req *http.Request
	if mode == "structured" {
		b, _ := json.Marshal(e)
		req, _ = http.NewRequest("POST", url, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/cloudevents+json")
	} else {
		req, _ = http.NewRequest("POST", url, bytes.NewReader(e.Data()))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", e.ID())
		req.Header.Set("Ce-Source", e.Source())
		req.Header.Set("Ce-Type", e.Type())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s (%s): status %d, want %d: %s", typ, mode, resp.StatusCode, wantStatus, body.String())
	}
	if wantReply == "" {
		return
	}
	if got := resp.Header.Get("Ce-Type"); got != wantReply {
		t.Fatalf("%s: reply type %q, want %q", typ, got, wantReply)
	}
	if out != nil {
		if err := json.Unmarshal(body.Bytes(), out); err != nil {
			t.Fatalf("%s: reply data %s: %v", typ, body.String(), err)
		}
	}
}
