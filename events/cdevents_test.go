package events

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/machineserver/machineserver/shared/model"
)

func TestArtifactProgramKey(t *testing.T) {
	for purl, want := range map[string]string{
		"pkg:generic/ci/netduino2/fw.elf@1.4.2?checksum=sha256:abc": "ci/netduino2/fw.elf",
		"pkg:generic/fw.bin":                    "fw.bin",
		"pkg:generic/ci/my%20fw.hex#sub":        "ci/my fw.hex",
		"pkg:oci/firmware/blinky@sha256%3Aabcd": "firmware/blinky",
	} {
		got, err := ArtifactProgramKey(ArtifactPublished{Subject: CDEventSubject[ArtifactPublishedContent]{ID: purl}})
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", purl, got, err, want)
		}
	}
	for _, bad := range []string{"ci/fw.elf", "pkg:generic", "pkg:generic/", "pkg:generic/a/%zz"} {
		if _, err := ArtifactProgramKey(ArtifactPublished{Subject: CDEventSubject[ArtifactPublishedContent]{ID: bad}}); !errors.Is(err, ErrInvalidCDEvent) {
			t.Errorf("%s: %v, want ErrInvalidCDEvent", bad, err)
		}
	}
}

func TestJobFromTestSuiteRun(t *testing.T) {
	b, err := Sample(TypeCDTestSuiteRunQueued)
	if err != nil {
		t.Fatal(err)
	}
	var ce struct{ Data json.RawMessage }
	json.Unmarshal(b, &ce)
	e, err := ParseTestSuiteRunQueued(ce.Data)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := JobFromTestSuiteRun(e)
	if err != nil {
		t.Fatal(err)
	}
	if spec.ProgramKey != "ci/netduino2/fw.elf" || spec.BoardConfig.Board != "netduino2" || spec.Timeout != "20s" ||
		spec.PassPattern != "ready" || spec.FailPattern != "PANIC" || spec.Name != "smoke" {
		t.Fatalf("spec %+v", spec)
	}
	// What a pipeline can get wrong, each a clear error.
	for name, mutate := range map[string]func(*TestSuiteRunQueued){
		"no customData": func(e *TestSuiteRunQueued) { e.CustomData = nil },
		"no program":    func(e *TestSuiteRunQueued) { e.CustomData = json.RawMessage(`{"timeout":"5s"}`) },
		"unknown spec field": func(e *TestSuiteRunQueued) {
			e.CustomData = json.RawMessage(`{"program_id":"0123456789abcdef","timout":"5s"}`)
		},
		"customData not JSON": func(e *TestSuiteRunQueued) { e.CustomDataContentType = "application/xml" },
	} {
		c := e
		mutate(&c)
		if _, err := JobFromTestSuiteRun(c); !errors.Is(err, ErrInvalidCDEvent) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, data := range map[string]string{
		"not JSON":       `{"context":`,
		"no context id":  `{"context":{"version":"0.4.1","source":"/ci","type":"dev.cdevents.testsuiterun.queued.0.2.0"},"subject":{"id":"r","type":"testSuiteRun","content":{"environment":{"id":"netduino2"}}}}`,
		"wrong type":     `{"context":{"version":"0.4.1","id":"1","source":"/ci","type":"dev.cdevents.build.queued.0.2.0"},"subject":{"id":"r","type":"testSuiteRun","content":{"environment":{"id":"netduino2"}}}}`,
		"no environment": `{"context":{"version":"0.4.1","id":"1","source":"/ci","type":"dev.cdevents.testsuiterun.queued.0.2.0"},"subject":{"id":"r","type":"testSuiteRun","content":{}}}`,
	} {
		if _, err := ParseTestSuiteRunQueued([]byte(data)); !errors.Is(err, ErrInvalidCDEvent) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestTestSuiteRunEvents checks the events built for a job match their
// schemas, with the outcome each final state maps to.
func TestTestSuiteRunEvents(t *testing.T) {
	schemas := compile(t)
	j := model.Job{ID: "b2c4e6f8a0b1c3d5", JobSpec: model.JobSpec{Name: "smoke", BoardConfig: model.BoardConfig{Board: "netduino2"}}, State: model.JobRunning}
	check := func(typ string, v any) {
		b, _ := json.Marshal(v)
		if err := validate(schemas[typ], b); err != nil {
			t.Errorf("%s: %s: %v", typ, b, err)
		}
	}
	check(TypeCDTestSuiteRunStarted, NewTestSuiteRunStarted(Source("jobs"), j))
	for state, outcome := range map[model.JobState]string{
		model.JobPassed: OutcomePass, model.JobFailed: OutcomeFail, model.JobTimedOut: OutcomeFail,
		model.JobError: OutcomeError, model.JobCancelled: OutcomeCancel, model.JobFlaky: OutcomeFail,
	} {
		j.State = state
		f := NewTestSuiteRunFinished(Source("jobs"), j)
		if f.Subject.Content.Outcome != outcome || f.Context.Version != CDEventsVersion || f.Subject.ID != j.ID {
			t.Errorf("%s: %+v", state, f)
		}
		check(TypeCDTestSuiteRunFinished, f)
	}
	// A job without a board name reports its processor as the environment.
	j.BoardConfig = model.BoardConfig{Processor: &model.Processor{Model: "cortex-m3"}}
	if env := NewTestSuiteRunStarted(Source("jobs"), j).Subject.Content.Environment.ID; env != "cortex-m3" {
		t.Errorf("environment %q", env)
	}
	if _, err := New(Source("jobs"), TypeCDTestSuiteRunFinished, j.ID, NewTestSuiteRunFinished(Source("jobs"), j)); err != nil {
		t.Errorf("New: %v", err)
	}
}
