package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"reflect"
	"regexp"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/machineserver/machineserver/shared/model"
)

// foreignType matches the types other specs name: CDEvents and the AWS S3
// CloudEvents adapter.
var foreignType = regexp.MustCompile(`^(dev\.cdevents\.[a-z]+\.[a-z]+\.[0-9]+\.[0-9]+\.[0-9]+|com\.amazonaws\.s3\.ObjectCreated:[A-Za-z]+)$`)

var typeName = regexp.MustCompile(`^io\.machineserver\.(session|program|snapshot|coverage|job|emulator|debugger|stream|recording|system|systemsnapshot)\.[a-z]+\.v[0-9]+$`)

func TestCatalogIsComplete(t *testing.T) {
	seen, files := map[string]bool{}, map[string]bool{}
	for _, s := range Catalog {
		if seen[s.Type] {
			t.Errorf("%s is listed twice", s.Type)
		}
		seen[s.Type] = true
		files[s.Schema] = true
		if !typeName.MatchString(s.Type) && !foreignType.MatchString(s.Type) {
			t.Errorf("%s is not io.machineserver.<resource>.<verb>.v<N>", s.Type)
		}
		if s.Direction != Command && s.Direction != Notification {
			t.Errorf("%s: direction %q", s.Type, s.Direction)
		}
		if s.Payload == nil || reflect.ValueOf(s.Payload).Kind() != reflect.Struct {
			t.Errorf("%s: payload %T is not a struct value", s.Type, s.Payload)
		}
		if s.Description == "" {
			t.Errorf("%s: no description", s.Type)
		}
		if got, ok := Lookup(s.Type); !ok || got.Type != s.Type {
			t.Errorf("Lookup(%s) = %v, %v", s.Type, got.Type, ok)
		}
		schema, err := Schema(s.Type)
		if err != nil {
			t.Errorf("%s: schema: %v", s.Type, err)
			continue
		}
		var doc struct {
			Schema string `json:"$schema"`
			ID     string `json:"$id"`
		}
		if err := json.Unmarshal(schema, &doc); err != nil {
			t.Errorf("%s: schema is not JSON: %v", s.Type, err)
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" || doc.ID != SchemaBase+s.Schema {
			t.Errorf("%s: schema has $schema %q and $id %q", s.Type, doc.Schema, doc.ID)
		}
		if _, err := Sample(s.Type); err != nil {
			t.Errorf("%s: sample: %v", s.Type, err)
		}
	}
	// Every file belongs to a catalog entry, so nothing is documented that
	// the code does not know.
	for dir, fsys := range map[string]fs.FS{"schemas": Schemas, "samples": Samples} {
		names, err := fs.Glob(fsys, "*")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if dir == "schemas" && n == "defs.json" {
				continue
			}
			if !seen[strings.TrimSuffix(n, ".json")] && !files[n] {
				t.Errorf("%s/%s has no catalog entry", dir, n)
			}
		}
	}
}

func TestUnknownType(t *testing.T) {
	if _, ok := Lookup("io.machineserver.session.explode.v1"); ok {
		t.Error("Lookup found an unknown type")
	}
	for _, f := range []func(string) ([]byte, error){Schema, Sample} {
		if _, err := f("io.machineserver.session.explode.v1"); !errors.Is(err, ErrUnknownType) {
			t.Errorf("err = %v, want ErrUnknownType", err)
		}
	}
}

// sample parses the sample event of s with sdk-go.
func sample(t *testing.T, s Spec) cloudevents.Event {
	t.Helper()
	b, err := Sample(s.Type)
	if err != nil {
		t.Fatal(err)
	}
	var e cloudevents.Event
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("sample is not a CloudEvent: %v", err)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("sample is not a valid CloudEvent: %v", err)
	}
	return e
}

// decodeStrict decodes data into a new payload of s, refusing unknown fields.
func decodeStrict(s Spec, data []byte) (any, error) {
	v := s.NewPayload()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data has more than one JSON value")
	}
	return v, nil
}

func TestSamples(t *testing.T) {
	for _, s := range Catalog {
		t.Run(s.Type, func(t *testing.T) {
			e := sample(t, s)
			if e.SpecVersion() != "1.0" || e.Type() != s.Type || e.DataContentType() != "application/json" || e.Time().IsZero() {
				t.Errorf("specversion %q, type %q, datacontenttype %q, time %v", e.SpecVersion(), e.Type(), e.DataContentType(), e.Time())
			}
			v, err := decodeStrict(s, e.Data())
			if err != nil {
				t.Fatalf("data does not decode strictly into %T: %v", s.Payload, err)
			}
			// Encoding the Go value again must give the sample's data back:
			// the sample has no field the struct drops or adds.
			again, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			var want, got any
			_ = json.Unmarshal(e.Data(), &want)
			_ = json.Unmarshal(again, &got)
			if !reflect.DeepEqual(want, got) {
				t.Errorf("data does not survive a Go round trip:\nsample %s\nGo     %s", e.Data(), again)
			}
			if sub := subjectOf(v); e.Subject() != sub {
				t.Errorf("subject %q, want %q (the id the event is about)", e.Subject(), sub)
			}
			if s.Direction == Notification && !strings.HasPrefix(e.Source(), "/machineserver/") {
				t.Errorf("notification source %q is not a platform component", e.Source())
			}
		})
	}
}

// subjectOf is the id an event's data is about; creation commands have none
// yet, except a snapshot's, which is about the session (or system) it is
// taken from. A restore is about the session (or system) it changes.
func subjectOf(v any) string {
	switch v := v.(type) {
	case *model.Job:
		return v.ID
	case *JobsTriggered:
		return v.ProgramID
	case *model.Session:
		return v.ID
	case *model.Program:
		return v.ID
	case *SessionRef:
		return v.SessionID
	case *LoadProgram:
		return v.SessionID
	case *ProgramRef:
		return v.ProgramID
	case *model.Snapshot:
		return v.ID
	case *model.Recording:
		return v.ID
	case *CreateSnapshot:
		return v.SessionID
	case *RestoreSnapshot:
		return v.SessionID
	case *ForkSnapshot:
		return v.SnapshotID
	case *SnapshotRef:
		return v.SnapshotID
	case *Restored:
		return v.Session.ID
	case *Forked:
		return v.Snapshot.ID
	case *CoverageReport:
		return v.ID
	case *EmulatorStarted:
		return v.SessionID
	case *EmulatorEnded:
		return v.SessionID
	case *Debugger:
		return v.SessionID
	case *model.System:
		return v.ID
	case *SystemRef:
		return v.SystemID
	case *SetLink:
		return v.SystemID
	case *LinkChanged:
		return v.SystemID
	case *model.SystemSnapshot:
		return v.ID
	case *CreateSystemSnapshot:
		return v.SystemID
	case *RestoreSystem:
		return v.SystemID
	case *ForkSystemSnapshot:
		return v.SnapshotID
	case *SystemSnapshotRef:
		return v.SnapshotID
	case *SystemRestored:
		return v.System.ID
	case *SystemForked:
		return v.Snapshot.ID
	case *StreamGap:
		return "" // about the stream, not a resource
	case *S3Record:
		// The AWS S3 adapter spec's subject: the object key.
		return v.S3.Object.Key
	}
	return ""
}

func TestNew(t *testing.T) {
	s := model.Session{ID: "0123456789abcdef", State: model.StateRunning}
	e, err := New(SourceSessions, TypeSessionStarted, s.ID, s)
	if err != nil {
		t.Fatal(err)
	}
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	if !uuid.MatchString(e.ID()) {
		t.Errorf("id %q is not a v4 UUID", e.ID())
	}
	if e.Source() != "/machineserver/sessions" || e.Type() != TypeSessionStarted || e.Subject() != s.ID || e.Time().IsZero() || e.DataContentType() != "application/json" {
		t.Errorf("event %v", e)
	}
	var got model.Session
	if err := e.DataAs(&got); err != nil || got.ID != s.ID || got.State != s.State {
		t.Errorf("data %s: %v", e.Data(), err)
	}
	e2, err := New(SourceSessions, TypeSessionStarted, s.ID, &s)
	if err != nil {
		t.Fatalf("pointer payload: %v", err)
	}
	if e2.ID() == e.ID() {
		t.Error("two events share an id")
	}
	if _, err := New(SourceSessions, TypeSessionStarted, s.ID, model.Program{}); err == nil {
		t.Error("a Program was accepted as session.started data")
	}
	if _, err := New(Source("ci"), "dev.cdevents.pipelinerun.finished.0.2.0", "", map[string]string{"a": "b"}); err != nil {
		t.Errorf("a type outside the catalog: %v", err)
	}
	if _, err := New("", TypeSessionStarted, s.ID, s); err == nil {
		t.Error("an event without source was built")
	}
}

func TestSource(t *testing.T) {
	for in, want := range map[string]string{
		"sessions":        SourceSessions,
		"programs":        SourcePrograms,
		"snapshots":       SourceSnapshots,
		"coverage":        SourceCoverage,
		"runner/runner-0": "/machineserver/runner/runner-0",
		"/sessions/":      SourceSessions,
	} {
		if got := Source(in); got != want {
			t.Errorf("Source(%q) = %q, want %q", in, got, want)
		}
	}
	if got := RunnerSource("runner-0"); got != "/machineserver/runner/runner-0" {
		t.Errorf("RunnerSource = %q", got)
	}
}
