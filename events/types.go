package events

import (
	"strings"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

// Commands a function accepts.
const (
	TypeSessionCreate      = "io.machineserver.session.create.v1"
	TypeSessionDelete      = "io.machineserver.session.delete.v1"
	TypeSessionLoadProgram = "io.machineserver.session.loadprogram.v1"
	TypeSessionPowerOn     = "io.machineserver.session.poweron.v1"
	TypeSessionPowerOff    = "io.machineserver.session.poweroff.v1"
	TypeSessionReset       = "io.machineserver.session.reset.v1"
	TypeProgramUpload      = "io.machineserver.program.upload.v1"
	TypeProgramDelete      = "io.machineserver.program.delete.v1"
	TypeSnapshotCreate     = "io.machineserver.snapshot.create.v1"
	TypeSnapshotRestore    = "io.machineserver.snapshot.restore.v1"
	TypeSnapshotFork       = "io.machineserver.snapshot.fork.v1"
	TypeSnapshotDelete     = "io.machineserver.snapshot.delete.v1"
	// TypeJobCreate queues a test job (POST /api/v1/jobs); the event id
	// makes it idempotent.
	TypeJobCreate = "io.machineserver.job.create.v1"
	// Systems of linked boards (POST /api/v1/systems and its operations).
	TypeSystemCreate   = "io.machineserver.system.create.v1"
	TypeSystemDelete   = "io.machineserver.system.delete.v1"
	TypeSystemPowerOn  = "io.machineserver.system.poweron.v1"
	TypeSystemPowerOff = "io.machineserver.system.poweroff.v1"
	TypeSystemReset    = "io.machineserver.system.reset.v1"
	// TypeSystemSetLink changes a link's faults (POST
	// /api/v1/systems/{id}/links/{link}).
	TypeSystemSetLink = "io.machineserver.system.setlink.v1"
	// System snapshots (POST /api/v1/systems/{id}/snapshots,
	// /api/v1/systems/{id}/restore, POST and DELETE on
	// /api/v1/system-snapshots/{sid}): the snapshots function's.
	TypeSystemSnapshotCreate = "io.machineserver.systemsnapshot.create.v1"
	TypeSystemRestore        = "io.machineserver.system.restore.v1"
	TypeSystemSnapshotFork   = "io.machineserver.systemsnapshot.fork.v1"
	TypeSystemSnapshotDelete = "io.machineserver.systemsnapshot.delete.v1"
)

// Notifications the platform publishes.
const (
	TypeSessionCreated       = "io.machineserver.session.created.v1"
	TypeSessionStarted       = "io.machineserver.session.started.v1"
	TypeSessionStopped       = "io.machineserver.session.stopped.v1"
	TypeSessionFailed        = "io.machineserver.session.failed.v1"
	TypeSessionDeleted       = "io.machineserver.session.deleted.v1"
	TypeSessionProgramLoaded = "io.machineserver.session.programloaded.v1"
	// TypeSessionRebooted reports a reset. It cannot be "session.reset.v1":
	// that name is the command, and a consumer subscribed to notifications
	// must never receive a request to reset.
	TypeSessionRebooted = "io.machineserver.session.rebooted.v1"
	TypeProgramStored   = "io.machineserver.program.stored.v1"
	TypeProgramDeleted  = "io.machineserver.program.deleted.v1"
	// TypeProgramRejected reports a bucket object that failed validation:
	// registered with state rejected and the reason, without an image.
	TypeProgramRejected = "io.machineserver.program.rejected.v1"
	TypeSnapshotCreated = "io.machineserver.snapshot.created.v1"
	// TypeSnapshotRestored is published with the session as subject: the
	// session is what changed.
	TypeSnapshotRestored = "io.machineserver.snapshot.restored.v1"
	TypeSnapshotForked   = "io.machineserver.snapshot.forked.v1"
	TypeSnapshotDeleted  = "io.machineserver.snapshot.deleted.v1"
	TypeCoverageReady    = "io.machineserver.coverage.ready.v1"
	TypeJobQueued        = "io.machineserver.job.queued.v1"
	TypeJobStarted       = "io.machineserver.job.started.v1"
	TypeJobFinished      = "io.machineserver.job.finished.v1"
	TypeJobCancelled     = "io.machineserver.job.cancelled.v1"
	// TypeJobTriggered answers a program.stored notification with the jobs
	// its bucket key's rules queued.
	TypeJobTriggered = "io.machineserver.job.triggered.v1"
	// The runner's log lines of a session, as events (subject: the
	// session): its emulator process started or ended, a debugger attached
	// or detached.
	TypeEmulatorStarted  = "io.machineserver.emulator.started.v1"
	TypeEmulatorEnded    = "io.machineserver.emulator.ended.v1"
	TypeDebuggerAttached = "io.machineserver.debugger.attached.v1"
	TypeDebuggerDetached = "io.machineserver.debugger.detached.v1"
	// A recording session's machine ended and the runner stored its
	// recording, or could not (subject: the recording).
	TypeRecordingReady  = "io.machineserver.recording.ready.v1"
	TypeRecordingFailed = "io.machineserver.recording.failed.v1"
	// A system was created, powered on (every node resumed together),
	// powered off, reset or deleted (subject: the system).
	TypeSystemCreated = "io.machineserver.system.created.v1"
	TypeSystemStarted = "io.machineserver.system.started.v1"
	TypeSystemStopped = "io.machineserver.system.stopped.v1"
	// TypeSystemRebooted reports a system reset, as session.rebooted does a
	// session's.
	TypeSystemRebooted = "io.machineserver.system.rebooted.v1"
	TypeSystemDeleted  = "io.machineserver.system.deleted.v1"
	// TypeSystemLinkChanged reports a link's faults changed (subject: the
	// system).
	TypeSystemLinkChanged = "io.machineserver.system.linkchanged.v1"
	// TypeSystemRestored reports a system brought back to a system
	// snapshot (subject: the system).
	TypeSystemRestored = "io.machineserver.system.restored.v1"
	// System snapshots (subject: the system snapshot).
	TypeSystemSnapshotCreated = "io.machineserver.systemsnapshot.created.v1"
	TypeSystemSnapshotForked  = "io.machineserver.systemsnapshot.forked.v1"
	TypeSystemSnapshotDeleted = "io.machineserver.systemsnapshot.deleted.v1"
	// TypeStreamGap is never published: the event stream
	// (GET /api/v1/stream/events) sends it first when a resume point is
	// older than what the stream still keeps.
	TypeStreamGap = "io.machineserver.stream.gap.v1"
)

// StreamIDExtension is the extension attribute the event stream adds to
// each event it delivers: the event's id in the tenant's stream, from
// which a client resumes (?after=, or Last-Event-ID).
const StreamIDExtension = "streamid"

// Event sources of the components that publish.
const (
	SourceSessions  = "/machineserver/sessions"
	SourcePrograms  = "/machineserver/programs"
	SourceSnapshots = "/machineserver/snapshots"
	// SourceCoverage is the source of coverage notifications; the sessions
	// function publishes them, but a consumer filters on what they are about.
	SourceCoverage = "/machineserver/coverage"
	// SourceStream is the source of the notices the event stream itself
	// sends (TypeStreamGap).
	SourceStream = "/machineserver/stream"
)

// Source returns the event source of a component: "sessions", "programs",
// "snapshots", "coverage" or "runner/<id>".
func Source(component string) string {
	return "/machineserver/" + strings.Trim(component, "/")
}

// RunnerSource is the source of the runner with the given id.
func RunnerSource(id string) string { return Source("runner/" + id) }

// CreateSession is the data of TypeSessionCreate (POST /api/v1/sessions).
type CreateSession struct {
	Name string `json:"name"`
	// Backend defaults to "qemu" when empty.
	Backend     string            `json:"backend,omitempty"`
	BoardConfig model.BoardConfig `json:"board_config"`
}

// SystemRef is the data of the commands that only name a system.
type SystemRef struct {
	SystemID string `json:"system_id"`
}

// SetLink is the data of TypeSystemSetLink.
type SetLink struct {
	SystemID string           `json:"system_id"`
	Link     string           `json:"link"`
	Faults   model.LinkFaults `json:"faults"`
}

// LinkChanged is the data of TypeSystemLinkChanged: the link as it is now
// (its faults) and the system it belongs to.
type LinkChanged struct {
	SystemID string           `json:"system_id"`
	Tenant   string           `json:"tenant,omitempty"`
	Link     model.SystemLink `json:"link"`
}

// SessionRef is the data of the commands that only name a session.
type SessionRef struct {
	SessionID string `json:"session_id"`
}

// LoadProgram is the data of TypeSessionLoadProgram
// (POST /api/v1/sessions/{id}/program).
type LoadProgram struct {
	SessionID string `json:"session_id"`
	ProgramID string `json:"program_id"`
}

// UploadProgram is the data of TypeProgramUpload (POST /api/v1/programs).
type UploadProgram struct {
	Name string `json:"name"`
	// Format is elf, bin or hex; empty means detect it from the content.
	Format string `json:"format,omitempty"`
	// LoadAddress applies to bin only.
	LoadAddress *uint64 `json:"load_address,omitempty"`
	// Content is the image; encoding/json carries []byte as base64.
	Content []byte `json:"content"`
}

// ProgramRef is the data of TypeProgramDelete.
type ProgramRef struct {
	ProgramID string `json:"program_id"`
}

// CreateSnapshot is the data of TypeSnapshotCreate
// (POST /api/v1/sessions/{id}/snapshots).
type CreateSnapshot struct {
	SessionID   string `json:"session_id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// RestoreSnapshot is the data of TypeSnapshotRestore
// (POST /api/v1/sessions/{id}/restore).
type RestoreSnapshot struct {
	SessionID  string `json:"session_id"`
	SnapshotID string `json:"snapshot_id"`
}

// ForkSnapshot is the data of TypeSnapshotFork: start Count new sessions
// from one snapshot.
type ForkSnapshot struct {
	SnapshotID string `json:"snapshot_id"`
	// Count is 1 to 16.
	Count int `json:"count"`
	// NamePrefix names the sessions <prefix>-1, <prefix>-2...; the
	// snapshot's name when empty.
	NamePrefix string `json:"name_prefix,omitempty"`
}

// SnapshotRef is the data of TypeSnapshotDelete.
type SnapshotRef struct {
	SnapshotID string `json:"snapshot_id"`
}

// Restored is the data of TypeSnapshotRestored: the snapshot and the session
// running from it.
type Restored struct {
	Snapshot model.Snapshot `json:"snapshot"`
	Session  model.Session  `json:"session"`
}

// Forked is the data of TypeSnapshotForked: the snapshot and the new
// sessions, each running from it.
type Forked struct {
	Snapshot model.Snapshot  `json:"snapshot"`
	Sessions []model.Session `json:"sessions"`
}

// CreateSystemSnapshot is the data of TypeSystemSnapshotCreate
// (POST /api/v1/systems/{id}/snapshots).
type CreateSystemSnapshot struct {
	SystemID    string `json:"system_id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// RestoreSystem is the data of TypeSystemRestore
// (POST /api/v1/systems/{id}/restore).
type RestoreSystem struct {
	SystemID   string `json:"system_id"`
	SnapshotID string `json:"snapshot_id"`
}

// ForkSystemSnapshot is the data of TypeSystemSnapshotFork
// (POST /api/v1/system-snapshots/{sid}/systems): a new system running from
// the system snapshot.
type ForkSystemSnapshot struct {
	SnapshotID string `json:"snapshot_id"`
	// Name is the new system's; the snapshot's system's when empty.
	Name string `json:"name,omitempty"`
}

// SystemSnapshotRef is the data of TypeSystemSnapshotDelete.
type SystemSnapshotRef struct {
	SnapshotID string `json:"snapshot_id"`
}

// SystemRestored is the data of TypeSystemRestored: the system snapshot
// and the system running from it.
type SystemRestored struct {
	Snapshot model.SystemSnapshot `json:"snapshot"`
	System   model.System         `json:"system"`
}

// SystemForked is the data of TypeSystemSnapshotForked: the system
// snapshot and the new system running from it. Its own type, as its
// subject is the snapshot where SystemRestored's is the system.
type SystemForked struct {
	Snapshot model.SystemSnapshot `json:"snapshot"`
	System   model.System         `json:"system"`
}

// CoverageReport is the data of TypeCoverageReady: a stored coverage report.
// Its artifacts are in the blob store under coverage/<id>/.
type CoverageReport struct {
	ID            string `json:"id"`
	ProgramID     string `json:"program_id"`
	ProgramSHA256 string `json:"program_sha256"`
	// Sessions are the sessions whose counts the report holds, at least one.
	Sessions []string `json:"sessions"`
	// Parents are the reports merged into this one.
	Parents []string `json:"parents,omitempty"`
	// Level is "source", "function" or "address": how far the counts could
	// be mapped back, which depends on the debug info the program has.
	Level string `json:"level"`
	// Final is false when some counts may be missing: a session crashed, or
	// the report was read while a session still ran.
	Final  bool           `json:"final"`
	Notes  []string       `json:"notes,omitempty"`
	Totals CoverageTotals `json:"totals"`
	// Artifacts maps a format ("lcov", "json", "html" or "counts") to its
	// blob key.
	Artifacts map[string]string `json:"artifacts"`
	CreatedAt time.Time         `json:"created_at"`
}

// CoverageTotals are the found/hit counts of a report.
type CoverageTotals struct {
	LinesFound     int `json:"lines_found"`
	LinesHit       int `json:"lines_hit"`
	FunctionsFound int `json:"functions_found"`
	FunctionsHit   int `json:"functions_hit"`
	BranchesFound  int `json:"branches_found"`
	BranchesHit    int `json:"branches_hit"`
}

// JobsTriggered is the data of TypeJobTriggered: the jobs that the job rules
// matching a stored program's bucket key queued (none if no rule matched).
type JobsTriggered struct {
	ProgramID string   `json:"program_id"`
	SourceKey string   `json:"source_key,omitempty"`
	Jobs      []string `json:"jobs"`
}

// EmulatorStarted is the data of TypeEmulatorStarted: an emulator process
// became the session's machine (power on, a restart, a restore).
type EmulatorStarted struct {
	SessionID string `json:"session_id"`
	RunnerID  string `json:"runner_id"`
	Machine   string `json:"machine"`
	Pid       int    `json:"pid"`
	// Halted: the CPU waits at the reset vector (poweron?halted=true).
	Halted bool `json:"halted,omitempty"`
}

// EmulatorEnded is the data of TypeEmulatorEnded: the session's emulator
// process ended.
type EmulatorEnded struct {
	SessionID string `json:"session_id"`
	RunnerID  string `json:"runner_id"`
	Pid       int    `json:"pid"`
	// Exit is how it ended, as a value: decide on it, never on Reason.
	Exit   model.Exit `json:"exit"`
	Reason string     `json:"reason"`
	// State is the session state the end left (stopped or error); empty
	// when the end did not change the session (a restore replaced the
	// machine, or the session had moved on).
	State model.State `json:"state,omitempty"`
}

// Debugger is the data of TypeDebuggerAttached and TypeDebuggerDetached.
type Debugger struct {
	SessionID string `json:"session_id"`
	RunnerID  string `json:"runner_id"`
	// Who is the debugger's connection ("tcp <address>" or
	// "websocket <address>"), as the audit log names it.
	Who   string    `json:"who"`
	Since time.Time `json:"since"`
	// EndedBy (detached only) says what ended the link: "debugger",
	// "emulator" (it ended, or the session was powered off), "caller" or
	// "endpoint closed" (the session was deleted).
	EndedBy string `json:"ended_by,omitempty"`
}

// StreamGap is the data of TypeStreamGap: events after After may be
// missing, because the stream keeps a bounded number of them; the events
// that follow start at the oldest it still has.
type StreamGap struct {
	After string `json:"after"`
	// Oldest is the oldest stream id still kept; empty when the stream
	// holds none (Redis lost it, e.g. a standalone server restarted).
	Oldest  string `json:"oldest,omitempty"`
	Message string `json:"message"`
}
