package eventstest_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/events/eventstest"
)

func post(t *testing.T, url, contentType string, body []byte, header http.Header) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRecorderAcceptsStructuredSamples(t *testing.T) {
	rec := &eventstest.Recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	for _, s := range events.Catalog {
		b, err := events.Sample(s.Type)
		if err != nil {
			t.Fatal(err)
		}
		if code := post(t, srv.URL, "application/cloudevents+json", b, nil); code != http.StatusAccepted {
			t.Fatalf("%s: status %d", s.Type, code)
		}
	}
	got := rec.Events()
	if len(got) != len(events.Catalog) {
		t.Fatalf("recorded %d events, want %d", len(got), len(events.Catalog))
	}
	for i, e := range got {
		if e.Type() != events.Catalog[i].Type || len(e.Data()) == 0 {
			t.Errorf("event %d: type %s, data %q", i, e.Type(), e.Data())
		}
	}
}

func TestRecorderAcceptsBinaryAndBatch(t *testing.T) {
	rec := &eventstest.Recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()

	// Binary mode, as sdk-go's client sends it.
	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.New(events.SourceSessions, events.TypeSessionDelete, "0123456789abcdef", events.SessionRef{SessionID: "0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	if res := c.Send(cloudevents.WithEncodingBinary(t.Context()), e); !cloudevents.IsACK(res) {
		t.Fatalf("binary send: %v", res)
	}

	batch := `[{"specversion":"1.0","id":"1","source":"/t","type":"t.a"},{"specversion":"1.0","id":"2","source":"/t","type":"t.b"}]`
	if code := post(t, srv.URL, "application/cloudevents-batch+json", []byte(batch), nil); code != http.StatusAccepted {
		t.Fatalf("batch: status %d", code)
	}

	got, err := rec.Wait(t.Context(), "", 3)
	if err != nil {
		t.Fatal(err)
	}
	var ref events.SessionRef
	if got[0].ID() != e.ID() || got[0].DataAs(&ref) != nil || ref.SessionID != "0123456789abcdef" {
		t.Errorf("binary event recorded as %v", got[0])
	}
	if got[1].Type() != "t.a" || got[2].Type() != "t.b" {
		t.Errorf("batch recorded as %v, %v", got[1].Type(), got[2].Type())
	}
}

func TestRecorderRefusesNonEvents(t *testing.T) {
	rec := &eventstest.Recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	if code := post(t, srv.URL, "application/json", []byte(`{"a":1}`), nil); code != http.StatusBadRequest {
		t.Errorf("plain JSON: status %d", code)
	}
	noSource := http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Type": {"t"}}
	if code := post(t, srv.URL, "application/json", []byte(`{}`), noSource); code != http.StatusBadRequest {
		t.Errorf("binary event without source: status %d", code)
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d", resp.StatusCode)
	}
	if n := len(rec.Events()); n != 0 {
		t.Errorf("recorded %d events", n)
	}
}

func TestRecorderWait(t *testing.T) {
	rec := &eventstest.Recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()

	done := make(chan error, 1)
	go func() {
		_, err := rec.Wait(t.Context(), "t.b", 2)
		done <- err
	}()
	for _, typ := range []string{"t.a", "t.b", "t.a", "t.b"} {
		body := `{"specversion":"1.0","id":"x","source":"/t","type":"` + typ + `"}`
		if code := post(t, srv.URL, "application/cloudevents+json", []byte(body), nil); code != http.StatusAccepted {
			t.Fatalf("status %d", code)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	got, err := rec.Wait(ctx, "t.a", 3)
	if !errors.Is(err, context.Canceled) || len(got) != 2 || !strings.Contains(err.Error(), "got 2") {
		t.Errorf("Wait for more than came: %d events, %v", len(got), err)
	}
}
