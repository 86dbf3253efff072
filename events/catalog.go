package events

import (
	"embed"
	"fmt"
	"io/fs"
	"reflect"
	"strings"

	"github.com/machineserver/machineserver/shared/model"
)

// Direction says who sends an event type.
type Direction string

const (
	// Command is a request a function accepts, with the REST call's meaning.
	Command Direction = "command"
	// Notification is a change the platform publishes after it happened.
	Notification Direction = "notification"
)

// Spec describes one event type.
type Spec struct {
	Type      string
	Direction Direction
	// Payload is the zero value of the data's Go type; NewPayload makes one
	// to decode into.
	Payload any
	// Schema is the file name of the data's JSON Schema in Schemas; the
	// sample event has the same name in Samples.
	Schema      string
	Description string
}

// NewPayload returns a pointer to a new zero value of the payload type.
func (s Spec) NewPayload() any {
	return reflect.New(reflect.TypeOf(s.Payload)).Interface()
}

func spec(typ string, dir Direction, payload any, desc string) Spec {
	return Spec{Type: typ, Direction: dir, Payload: payload, Schema: typ + ".json", Description: desc}
}

// Catalog lists every event type, commands first.
var Catalog = []Spec{
	spec(TypeSessionCreate, Command, CreateSession{}, "Create a session: resolve the board config to a machine and pick a runner."),
	spec(TypeSessionDelete, Command, SessionRef{}, "Delete a session, stopping its emulator if it runs."),
	spec(TypeSessionLoadProgram, Command, LoadProgram{}, "Load a stored program into a session; it runs at the next power on."),
	spec(TypeSessionPowerOn, Command, SessionRef{}, "Start the session's emulator with its loaded program."),
	spec(TypeSessionPowerOff, Command, SessionRef{}, "Stop the session's emulator."),
	spec(TypeSessionReset, Command, SessionRef{}, "Reset the running emulator, reloading the program."),
	spec(TypeProgramUpload, Command, UploadProgram{}, "Validate and store a firmware image carried base64 in the event."),
	spec(TypeProgramDelete, Command, ProgramRef{}, "Delete a program that no session uses."),
	spec(TypeSnapshotCreate, Command, CreateSnapshot{}, "Save a running session's machine state as a snapshot."),
	spec(TypeSnapshotRestore, Command, RestoreSnapshot{}, "Replace a session's machine with a snapshot's state and run it."),
	spec(TypeSnapshotFork, Command, ForkSnapshot{}, "Create 1 to 16 new sessions, each running from the snapshot."),
	spec(TypeSnapshotDelete, Command, SnapshotRef{}, "Delete a snapshot that no restore is reading."),
	spec(TypeSystemCreate, Command, model.SystemSpec{}, "Create a system of linked boards: one session per node, all on one runner, and the links between them."),
	spec(TypeSystemDelete, Command, SystemRef{}, "Delete a system: its node sessions (stopping their emulators) and its links."),
	spec(TypeSystemPowerOn, Command, SystemRef{}, "Power a system on: every node starts paused, the links are attached, and the nodes are resumed together."),
	spec(TypeSystemPowerOff, Command, SystemRef{}, "Power every node of a system off."),
	spec(TypeSystemReset, Command, SystemRef{}, "Reset every running node of a system."),
	spec(TypeSystemSetLink, Command, SetLink{}, "Set a system link's faults (down, loss, corrupt, delay); the zero faults make it clean again."),
	spec(TypeSystemSnapshotCreate, Command, CreateSystemSnapshot{}, "Save a running system at one point: every node paused together, each node's state saved as a snapshot (named <name>/<node>), and the system's definition with its links' faults."),
	spec(TypeSystemRestore, Command, RestoreSystem{}, "Bring a system back to a system snapshot of the same nodes and boards: every node's state replaced, the links put back with their faults, and the nodes resumed together."),
	spec(TypeSystemSnapshotFork, Command, ForkSystemSnapshot{}, "Create a new system from a system snapshot's definition and restore it, so it runs on from the saved point."),
	spec(TypeSystemSnapshotDelete, Command, SystemSnapshotRef{}, "Delete a system snapshot and its nodes' states, unless a restore is reading them."),

	spec(TypeSessionCreated, Notification, model.Session{}, "A session was created (state created)."),
	spec(TypeSessionStarted, Notification, model.Session{}, "A session's emulator started (state running)."),
	spec(TypeSessionStopped, Notification, model.Session{}, "A session's emulator stopped on request or by a clean firmware exit (state stopped)."),
	spec(TypeSessionFailed, Notification, model.Session{}, "A session's emulator failed or was lost (state error, with the reason)."),
	spec(TypeSessionDeleted, Notification, model.Session{}, "A session was deleted; data is its last state."),
	spec(TypeSessionRebooted, Notification, model.Session{}, "A session's emulator was reset."),
	spec(TypeSessionProgramLoaded, Notification, model.Session{}, "A program was loaded into a session (program_id set)."),
	spec(TypeProgramStored, Notification, model.Program{}, "A firmware image was validated and stored."),
	spec(TypeProgramDeleted, Notification, model.Program{}, "A program was deleted; data is its last state."),
	spec(TypeProgramRejected, Notification, model.Program{}, "A bucket object failed validation; it is registered as a program with state rejected and the reason, and has no image."),
	spec(TypeSnapshotCreated, Notification, model.Snapshot{}, "A session's machine state was saved and stored as a snapshot."),
	spec(TypeSnapshotRestored, Notification, Restored{}, "A session was restored from a snapshot and runs (subject is the session)."),
	spec(TypeSnapshotForked, Notification, Forked{}, "New sessions were created from a snapshot, each running."),
	spec(TypeSnapshotDeleted, Notification, model.Snapshot{}, "A snapshot was deleted; data is its last state."),
	spec(TypeCoverageReady, Notification, CoverageReport{}, "A coverage report was stored; its artifacts are in the blob store under coverage/<id>/."),
	s3spec(TypeS3ObjectCreatedPut, "A bucket notification (AWS S3 CloudEvents adapter form): an object was written with PUT; the programs function registers it."),
	s3spec(TypeS3ObjectCreatedPost, "A bucket notification: an object was written with a POST form upload; the programs function registers it."),
	s3spec(TypeS3ObjectCreatedCopy, "A bucket notification: an object was written by a copy; the programs function registers it."),
	s3spec(TypeS3ObjectCreatedMultipart, "A bucket notification: a multipart upload completed; the programs function registers the object."),
	spec(TypeCDArtifactPublished, Command, ArtifactPublished{}, "CDEvents: a firmware artifact (subject.id, a purl naming its bucket key) was published; the job rules of that key run it."),
	spec(TypeCDTestSuiteRunQueued, Command, TestSuiteRunQueued{}, "CDEvents: a pipeline queued a test suite run; customData is the job spec, and a test job is queued for it."),
	spec(TypeCDTestSuiteRunStarted, Notification, TestSuiteRunStarted{}, "CDEvents: a test job started running (subject.id is the job id)."),
	spec(TypeCDTestSuiteRunFinished, Notification, TestSuiteRunFinished{}, "CDEvents: a test job ended with outcome pass, fail (also a timeout), error or cancel."),
	spec(TypeJobCreate, Command, model.JobSpec{}, "Queue a test job: run a program on a board and judge it by console patterns, UART script and exit code."),
	spec(TypeJobQueued, Notification, model.Job{}, "A test job was queued (state queued)."),
	spec(TypeJobStarted, Notification, model.Job{}, "A worker started a test job (state running; attempts counts the runs)."),
	spec(TypeJobFinished, Notification, model.Job{}, "A test job ended: passed, failed, timed_out or error, with the reason and its console log in the blob store (and, with coverage, coverage_report_id: its stored coverage report)."),
	spec(TypeJobCancelled, Notification, model.Job{}, "A test job was cancelled before it ended."),
	spec(TypeJobTriggered, Notification, JobsTriggered{}, "The job rules matching a stored program's bucket key queued these jobs."),
	spec(TypeEmulatorStarted, Notification, EmulatorStarted{}, "The runner started a session's emulator process (its log line, as an event)."),
	spec(TypeEmulatorEnded, Notification, EmulatorEnded{}, "A session's emulator process ended: the typed exit, the reason and the session state it left."),
	spec(TypeDebuggerAttached, Notification, Debugger{}, "A debugger attached to a session's gdb endpoint (direct TCP or the WebSocket tunnel)."),
	spec(TypeDebuggerDetached, Notification, Debugger{}, "A debugger's link to a session ended, and what ended it."),
	spec(TypeRecordingReady, Notification, model.Recording{}, "A recording session's machine ended and its recording is stored (state ready): replay it with POST /api/v1/recordings/{id}/sessions."),
	spec(TypeRecordingFailed, Notification, model.Recording{}, "A recording session's machine ended but its recording could not be stored (state failed; reason says why)."),
	spec(TypeSystemCreated, Notification, model.System{}, "A system was created: its node sessions and links (state created)."),
	spec(TypeSystemStarted, Notification, model.System{}, "A system's nodes were started together and its links attached (state running)."),
	spec(TypeSystemStopped, Notification, model.System{}, "A system's nodes were powered off (state stopped)."),
	spec(TypeSystemRebooted, Notification, model.System{}, "A system's running nodes were reset."),
	spec(TypeSystemDeleted, Notification, model.System{}, "A system, its node sessions and its links were deleted; data is its last state."),
	spec(TypeSystemLinkChanged, Notification, LinkChanged{}, "A system link's faults changed (data: the link as it is now)."),
	spec(TypeSystemRestored, Notification, SystemRestored{}, "A system was restored from a system snapshot and runs (subject is the system)."),
	spec(TypeSystemSnapshotCreated, Notification, model.SystemSnapshot{}, "A system was saved as a system snapshot: each node's state and the system's definition."),
	spec(TypeSystemSnapshotForked, Notification, SystemForked{}, "A new system was created from a system snapshot and runs from it."),
	spec(TypeSystemSnapshotDeleted, Notification, model.SystemSnapshot{}, "A system snapshot and its nodes' states were deleted; data is its last state."),
	spec(TypeStreamGap, Notification, StreamGap{}, "Sent by the event stream, never published: events after the resume point may be missing, as the stream keeps a bounded number."),
}

// s3spec describes a bucket notification type. The type has a colon, which
// file names in a Go module may not, so its files use a dot instead.
func s3spec(typ, desc string) Spec {
	return Spec{Type: typ, Direction: Command, Payload: S3Record{}, Schema: strings.ReplaceAll(typ, ":", ".") + ".json", Description: desc}
}

// Lookup returns the spec of an event type.
func Lookup(eventType string) (Spec, bool) {
	for _, s := range Catalog {
		if s.Type == eventType {
			return s, true
		}
	}
	return Spec{}, false
}

//go:embed schemas/*.json samples/*.json
var files embed.FS

// Schemas holds the JSON Schemas (draft 2020-12): one per event type, named
// by Spec.Schema, and defs.json with the definitions they share. Each file's
// $id is SchemaBase plus its name, so relative $refs resolve between them.
var Schemas = sub("schemas")

// Samples holds one structured-mode sample event per type, named by
// Spec.Schema.
var Samples = sub("samples")

// SchemaBase is the prefix of every schema's $id.
const SchemaBase = "https://machineserver.io/schemas/events/"

func sub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(err) // dir is a literal embedded above
	}
	return f
}

// Schema returns the JSON Schema of an event type's data.
func Schema(eventType string) ([]byte, error) {
	return read(Schemas, eventType)
}

// Sample returns a sample event of the type in structured JSON mode, for
// tests and documentation.
func Sample(eventType string) ([]byte, error) {
	return read(Samples, eventType)
}

func read(fsys fs.FS, eventType string) ([]byte, error) {
	s, ok := Lookup(eventType)
	if !ok {
		return nil, fmt.Errorf("events: %w: %q", ErrUnknownType, eventType)
	}
	return fs.ReadFile(fsys, s.Schema)
}
