package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

// CDEvents (spec v0.4.1) the platform accepts and emits, so a Tekton or
// Jenkins pipeline that already speaks CDEvents starts test jobs and reads
// their outcome with no glue. In the CloudEvents binding the CloudEvent's
// type, id and source are the CDEvent context's, and the data is the whole
// CDEvent ({"context", "subject"[, "customData"]}).
const (
	// TypeCDArtifactPublished: an artifact (the firmware, named by a purl)
	// was published; the job rules of its bucket key run it.
	TypeCDArtifactPublished = "dev.cdevents.artifact.published.0.2.0"
	// TypeCDTestSuiteRunQueued: a pipeline asks for a test suite run; its
	// customData is the job spec.
	TypeCDTestSuiteRunQueued = "dev.cdevents.testsuiterun.queued.0.2.0"
	// TypeCDTestSuiteRunStarted and TypeCDTestSuiteRunFinished report a
	// job's run back to the pipeline (subject id: the job id).
	TypeCDTestSuiteRunStarted  = "dev.cdevents.testsuiterun.started.0.2.0"
	TypeCDTestSuiteRunFinished = "dev.cdevents.testsuiterun.finished.0.2.0"
)

// CDEventsVersion is the CDEvents spec version of the events we emit.
const CDEventsVersion = "0.4.1"

// ErrInvalidCDEvent is returned (wrapped) for a CDEvent that lacks what the
// spec requires or what the mapping to a job needs.
var ErrInvalidCDEvent = errors.New("invalid CDEvent")

// CDEventContext is a CDEvent's context.
type CDEventContext struct {
	Version   string    `json:"version"`
	ID        string    `json:"id"`
	Source    string    `json:"source"`
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	SchemaURI string    `json:"schemaUri,omitempty"`
	ChainID   string    `json:"chainId,omitempty"`
	// Links (v0.4) connect events of one chain; kept as sent.
	Links json.RawMessage `json:"links,omitempty"`
}

// CDEventSubject is what a CDEvent is about; C is the type's content.
type CDEventSubject[C any] struct {
	ID      string `json:"id"`
	Source  string `json:"source,omitempty"`
	Type    string `json:"type"`
	Content C      `json:"content"`
}

// CDEvent is one CDEvent with content C.
type CDEvent[C any] struct {
	Context CDEventContext    `json:"context"`
	Subject CDEventSubject[C] `json:"subject"`
	// CustomData carries producer-specific data; for testsuiterun.queued it
	// is the job spec (model.JobSpec's JSON).
	CustomData            json.RawMessage `json:"customData,omitempty"`
	CustomDataContentType string          `json:"customDataContentType,omitempty"`
}

// CDReference names another entity (an environment) by id and source.
type CDReference struct {
	ID     string `json:"id"`
	Source string `json:"source,omitempty"`
}

// CDTestSuite identifies a test suite.
type CDTestSuite struct {
	ID      string `json:"id"`
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	URI     string `json:"uri,omitempty"`
}

// CDTrigger says what started a run: manual, pipeline, event, schedule or
// other.
type CDTrigger struct {
	Type string `json:"type,omitempty"`
	URI  string `json:"uri,omitempty"`
}

// CDSBOM points at an artifact's software bill of materials.
type CDSBOM struct {
	URI string `json:"uri"`
}

// ArtifactPublishedContent is artifact.published 0.2.0's content.
type ArtifactPublishedContent struct {
	User string  `json:"user,omitempty"`
	SBOM *CDSBOM `json:"sbom,omitempty"`
}

// TestSuiteRunContent is the content of testsuiterun.queued and .started.
type TestSuiteRunContent struct {
	Environment CDReference  `json:"environment"`
	TestSuite   *CDTestSuite `json:"testSuite,omitempty"`
	Trigger     *CDTrigger   `json:"trigger,omitempty"`
}

// TestSuiteRunFinishedContent is testsuiterun.finished's content. Outcome
// is pass, fail, cancel or error; Severity low, medium, high or critical.
type TestSuiteRunFinishedContent struct {
	Environment CDReference  `json:"environment"`
	TestSuite   *CDTestSuite `json:"testSuite,omitempty"`
	Outcome     string       `json:"outcome"`
	Severity    string       `json:"severity,omitempty"`
	Reason      string       `json:"reason,omitempty"`
}

// The CDEvents the catalog lists.
type (
	ArtifactPublished    = CDEvent[ArtifactPublishedContent]
	TestSuiteRunQueued   = CDEvent[TestSuiteRunContent]
	TestSuiteRunStarted  = CDEvent[TestSuiteRunContent]
	TestSuiteRunFinished = CDEvent[TestSuiteRunFinishedContent]
)

// CDEvents outcomes of testsuiterun.finished.
const (
	OutcomePass   = "pass"
	OutcomeFail   = "fail"
	OutcomeError  = "error"
	OutcomeCancel = "cancel"
)

func invalidCD(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidCDEvent, fmt.Sprintf(format, args...))
}

// checkContext checks what every CDEvent must have.
func checkContext(c CDEventContext, typ, subjectID string) error {
	var missing []string
	for name, v := range map[string]string{"context.version": c.Version, "context.id": c.ID, "context.source": c.Source, "subject.id": subjectID} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return invalidCD("%s needs %s", typ, strings.Join(missing, ", "))
	}
	if c.Type != typ {
		return invalidCD("context.type is %q, want %q", c.Type, typ)
	}
	return nil
}

// ParseArtifactPublished decodes and checks an artifact.published CDEvent.
// Unknown fields are allowed: producers add their own.
func ParseArtifactPublished(data []byte) (ArtifactPublished, error) {
	var e ArtifactPublished
	if err := json.Unmarshal(data, &e); err != nil {
		return e, invalidCD("data is not a CDEvent: %v", err)
	}
	return e, checkContext(e.Context, TypeCDArtifactPublished, e.Subject.ID)
}

// ArtifactProgramKey maps an artifact.published subject (a purl) to the
// programs-bucket key the firmware was uploaded under: the purl's
// namespace and name joined by "/", percent-decoded; the version and
// qualifiers are ignored, since the key's latest registration is the one
// that was published. "pkg:generic/ci/netduino2/fw.elf@1.2" is
// "ci/netduino2/fw.elf".
func ArtifactProgramKey(e ArtifactPublished) (string, error) {
	purl := e.Subject.ID
	rest, ok := strings.CutPrefix(purl, "pkg:")
	if !ok {
		return "", invalidCD("subject.id %q is not a purl (pkg:type/namespace/name@version)", purl)
	}
	rest, _, _ = strings.Cut(rest, "#")
	rest, _, _ = strings.Cut(rest, "?")
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[:i]
	}
	_, path, ok := strings.Cut(strings.Trim(rest, "/"), "/")
	if !ok || path == "" {
		return "", invalidCD("purl %q has no name", purl)
	}
	var segs []string
	for _, s := range strings.Split(path, "/") {
		d, err := url.PathUnescape(s)
		if err != nil || d == "" {
			return "", invalidCD("purl %q has a malformed segment %q", purl, s)
		}
		segs = append(segs, d)
	}
	return strings.Join(segs, "/"), nil
}

// ParseTestSuiteRunQueued decodes and checks a testsuiterun.queued CDEvent.
func ParseTestSuiteRunQueued(data []byte) (TestSuiteRunQueued, error) {
	var e TestSuiteRunQueued
	if err := json.Unmarshal(data, &e); err != nil {
		return e, invalidCD("data is not a CDEvent: %v", err)
	}
	if err := checkContext(e.Context, TypeCDTestSuiteRunQueued, e.Subject.ID); err != nil {
		return e, err
	}
	if e.Subject.Content.Environment.ID == "" {
		return e, invalidCD("%s needs subject.content.environment.id", TypeCDTestSuiteRunQueued)
	}
	return e, nil
}

// JobFromTestSuiteRun maps a testsuiterun.queued CDEvent to a job spec:
// customData is the spec (program_id or program_key, board_config, timeout,
// uart_script, pass_pattern, fail_pattern, expect_exit_code, coverage; the
// same JSON as POST /api/v1/jobs), unknown fields refused; an empty
// board_config takes the board named by subject.content.environment.id
// (e.g. "netduino2"); an empty name takes testSuite.name, else testSuite.id,
// else the run's subject.id. The caller validates the spec as for
// POST /api/v1/jobs and uses subject.id as the idempotency key.
func JobFromTestSuiteRun(e TestSuiteRunQueued) (model.JobSpec, error) {
	var spec model.JobSpec
	if len(e.CustomData) == 0 || string(e.CustomData) == "null" {
		return spec, invalidCD("%s needs customData with the job spec (program_id or program_key, board_config, pass_pattern...)", TypeCDTestSuiteRunQueued)
	}
	if ct := e.CustomDataContentType; ct != "" && !strings.HasPrefix(ct, "application/json") {
		return spec, invalidCD("customDataContentType must be application/json, got %q", ct)
	}
	dec := json.NewDecoder(strings.NewReader(string(e.CustomData)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return spec, invalidCD("customData is not a job spec: %v", err)
	}
	if spec.ProgramID == "" && spec.ProgramKey == "" {
		return spec, invalidCD("customData needs program_id or program_key")
	}
	bc := spec.BoardConfig
	if bc.Board == "" && bc.Processor == nil && bc.Memory == nil {
		spec.BoardConfig.Board = e.Subject.Content.Environment.ID
	}
	if spec.Name == "" {
		spec.Name = e.Subject.ID
		if ts := e.Subject.Content.TestSuite; ts != nil {
			spec.Name = ts.ID
			if ts.Name != "" {
				spec.Name = ts.Name
			}
		}
	}
	return spec, nil
}

// JobOutcome maps a finished job's state to a CDEvents outcome: a timeout
// is a fail (the reason says it timed out), as in Wokwi CI, and so is a
// flaky job (its runs disagreed: the reason says where), since the
// firmware ran and its test cannot be trusted to pass.
func JobOutcome(s model.JobState) string {
	switch s {
	case model.JobPassed:
		return OutcomePass
	case model.JobFailed, model.JobTimedOut, model.JobFlaky:
		return OutcomeFail
	case model.JobCancelled:
		return OutcomeCancel
	}
	return OutcomeError
}

func jobContext(typ, source string) CDEventContext {
	return CDEventContext{Version: CDEventsVersion, ID: newID(), Source: source, Type: typ, Timestamp: time.Now().UTC()}
}

// jobEnvironment is the board a job runs on, as a CDEvents environment.
func jobEnvironment(j model.Job) CDReference {
	env := j.BoardConfig.Board
	if env == "" && j.BoardConfig.Processor != nil {
		env = j.BoardConfig.Processor.Model
	}
	if env == "" {
		env = "machineserver"
	}
	return CDReference{ID: env, Source: Source("jobs")}
}

func jobSuite(j model.Job) *CDTestSuite {
	id := j.Name
	if id == "" {
		id = j.ID
	}
	return &CDTestSuite{ID: id, Name: j.Name}
}

// NewTestSuiteRunStarted is the testsuiterun.started CDEvent of a job that
// began running; source is the emitting component's event source.
func NewTestSuiteRunStarted(source string, j model.Job) TestSuiteRunStarted {
	return TestSuiteRunStarted{
		Context: jobContext(TypeCDTestSuiteRunStarted, source),
		Subject: CDEventSubject[TestSuiteRunContent]{ID: j.ID, Source: source, Type: "testSuiteRun",
			Content: TestSuiteRunContent{Environment: jobEnvironment(j), TestSuite: jobSuite(j), Trigger: &CDTrigger{Type: "event"}}},
	}
}

// NewTestSuiteRunFinished is the testsuiterun.finished CDEvent of a job in
// a final state.
func NewTestSuiteRunFinished(source string, j model.Job) TestSuiteRunFinished {
	c := TestSuiteRunFinishedContent{Environment: jobEnvironment(j), TestSuite: jobSuite(j), Outcome: JobOutcome(j.State), Reason: j.Reason}
	if j.State == model.JobTimedOut && c.Reason == "" {
		c.Reason = "timed out"
	}
	return TestSuiteRunFinished{
		Context: jobContext(TypeCDTestSuiteRunFinished, source),
		Subject: CDEventSubject[TestSuiteRunFinishedContent]{ID: j.ID, Source: source, Type: "testSuiteRun", Content: c},
	}
}
