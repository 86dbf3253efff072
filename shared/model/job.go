package model

import (
	"strconv"
	"time"
)

// JobState is a test job's lifecycle state.
type JobState string

const (
	JobQueued    JobState = "queued"
	JobRunning   JobState = "running"
	JobPassed    JobState = "passed"
	JobFailed    JobState = "failed"
	JobTimedOut  JobState = "timed_out"
	JobError     JobState = "error"
	JobCancelled JobState = "cancelled"
	// JobFlaky: the runs of a repeated job disagreed (Job.FirstDifference).
	JobFlaky JobState = "flaky"
)

// JobStates lists every state, for validation messages.
var JobStates = []JobState{JobQueued, JobRunning, JobPassed, JobFailed, JobTimedOut, JobError, JobCancelled, JobFlaky}

// Final reports whether a job in state s is done for good.
func (s JobState) Final() bool {
	return s != JobQueued && s != JobRunning && s != ""
}

// Step is one UART script step: Send writes bytes to the UART's RX, WaitFor
// waits until the console output after the step began matches a regular
// expression. Exactly one of them is set.
type Step struct {
	Send    string `json:"send,omitempty"`
	WaitFor string `json:"wait_for,omitempty"`
	// Timeout bounds a wait_for step (a duration such as "2s"); the job's
	// timeout bounds it anyway.
	Timeout string `json:"timeout,omitempty"`
}

// JobSpec is what a job request says: which program, on which board, and
// how to judge the run. It has Wokwi CI's semantics: PassPattern is the
// expected text, FailPattern the failure text, and a timeout is its own state.
type JobSpec struct {
	Name string `json:"name,omitempty"`
	// ProgramID is the program run; ProgramKey is a programs-bucket object
	// key resolved to the program registered from it.
	ProgramID   string      `json:"program_id,omitempty"`
	ProgramKey  string      `json:"program_key,omitempty"`
	BoardConfig BoardConfig `json:"board_config"`
	// Timeout bounds the run from power on, as a Go duration ("20s").
	Timeout        string `json:"timeout,omitempty"`
	UARTScript     []Step `json:"uart_script,omitempty"`
	PassPattern    string `json:"pass_pattern,omitempty"`
	FailPattern    string `json:"fail_pattern,omitempty"`
	ExpectExitCode *int   `json:"expect_exit_code,omitempty"`
	Coverage       bool   `json:"coverage,omitempty"`
	// Deterministic runs the job's sessions on the instruction counter
	// (Session.Deterministic).
	Deterministic bool `json:"deterministic,omitempty"`
	// Repeat runs the job this many times (1 to 10; nil is 1), each in a
	// fresh session, and compares the runs (Job.Runs).
	Repeat *int `json:"repeat,omitempty"`
	// Record records every run (Session.Record), so a failure can be
	// replayed and debugged backwards; KeepRecording says which
	// recordings the finished job keeps.
	Record        bool          `json:"record,omitempty"`
	KeepRecording KeepRecording `json:"keep_recording,omitempty"`
}

// KeepRecording is which recordings a recorded job keeps when it ends.
type KeepRecording string

const (
	// KeepFailed (the default): the recordings of a job that did not
	// pass; a passed job's are deleted.
	KeepFailed KeepRecording = "failed"
	// KeepAlways: every recording, whatever the verdict.
	KeepAlways KeepRecording = "always"
)

// Keeps reports whether a recorded job that ended in state st keeps its
// recordings.
func (k KeepRecording) Keeps(st JobState) bool {
	return k == KeepAlways || st != JobPassed
}

// Repeats is how many times the job runs.
func (s JobSpec) Repeats() int {
	if s.Repeat == nil {
		return 1
	}
	return *s.Repeat
}

// Job is one test run of a program on a board and its outcome.
type Job struct {
	ID string `json:"id"`
	// Tenant owns the job; no other tenant can see it.
	Tenant string `json:"tenant,omitempty"`
	JobSpec
	// RuleID is the job rule that created the job from a stored program.
	RuleID string   `json:"rule_id,omitempty"`
	State  JobState `json:"state"`
	Reason string   `json:"reason,omitempty"`
	// ExitCode is the firmware's semihosting exit status, if it exited.
	ExitCode *int `json:"exit_code,omitempty"`
	// Attempts counts the runs started; more than one means a worker died
	// mid-job and the job was reclaimed.
	Attempts int `json:"attempts"`
	// Worker is the queue consumer (host-pid-n) running or last running
	// the job.
	Worker string `json:"worker,omitempty"`
	// DurationMS is the run's wall time from power on to the verdict.
	DurationMS float64 `json:"duration_ms,omitempty"`
	// CancelRequested asks the worker running the job to stop it.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// ConsoleKey is the blob key of the stored console log.
	ConsoleKey string `json:"console_key,omitempty"`
	// Artifacts maps an artifact name ("console", "manifest") to its blob key.
	Artifacts map[string]string `json:"artifacts,omitempty"`
	// CoverageReportID is the stored coverage report of a job with
	// coverage (GET /api/v1/coverage/reports/{id}); CoverageError says
	// why such a job has none.
	CoverageReportID string `json:"coverage_report_id,omitempty"`
	CoverageError    string `json:"coverage_error,omitempty"`
	// RecordingID is the kept recording of a recorded job (the first run
	// that did not pass, else run 1): replay it with
	// POST /api/v1/recordings/{id}/sessions. RecordingError says why a
	// recorded job has none.
	RecordingID    string `json:"recording_id,omitempty"`
	RecordingError string `json:"recording_error,omitempty"`
	// Runs are the runs of a repeated job (repeat above 1), in order; the
	// job's console, exit code and coverage report are run 1's.
	Runs []JobRun `json:"runs,omitempty"`
	// FirstDifference is where the first run that disagreed with run 1
	// differs from it (state flaky).
	FirstDifference *JobDifference `json:"first_difference,omitempty"`
	// SessionID is the session the job runs (or ran) in; it is deleted
	// once the result is stored.
	SessionID  string     `json:"session_id,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// JobRun is one run of a repeated job.
type JobRun struct {
	Verdict  JobState `json:"verdict"`
	Reason   string   `json:"reason,omitempty"`
	ExitCode *int     `json:"exit_code,omitempty"`
	// ConsoleBytes and ConsoleSHA256 are the size and hash of the run's
	// whole console log, stored under ConsoleKey.
	ConsoleBytes  int    `json:"console_bytes"`
	ConsoleSHA256 string `json:"console_sha256"`
	ConsoleKey    string `json:"console_key,omitempty"`
	// Ended: the emulator ended by itself before the verdict, so the run's
	// console and coverage counts are complete; a run judged while its
	// guest still ran is compared only as far as its console goes.
	Ended            bool   `json:"ended,omitempty"`
	CoverageReportID string `json:"coverage_report_id,omitempty"`
	// RecordingID is the run's kept recording (a recorded job).
	RecordingID string  `json:"recording_id,omitempty"`
	DurationMS  float64 `json:"duration_ms"`
}

// JobDifference is where a run of a repeated job first differs from run 1:
// What is "console" (Offset is the first differing byte, Expected and Got
// the bytes around it, Go-quoted), "coverage" (the first block whose
// count differs) or "verdict".
type JobDifference struct {
	Run      int    `json:"run"`
	What     string `json:"what"`
	Offset   *int   `json:"offset,omitempty"`
	Expected string `json:"expected"`
	Got      string `json:"got"`
}

// Blob keys of a job's artifacts.
func JobConsoleKey(id string) string  { return "jobs/" + id + "/console.log" }
func JobManifestKey(id string) string { return "jobs/" + id + "/manifest.json" }

// JobRunConsoleKey is the console log of run n (from 2) of a repeated job;
// run 1's is JobConsoleKey.
func JobRunConsoleKey(id string, n int) string {
	return "jobs/" + id + "/run-" + strconv.Itoa(n) + "/console.log"
}

// JobRule runs a job template for every program stored from a bucket key
// under Prefix.
type JobRule struct {
	ID string `json:"id"`
	// Tenant owns the rule: it runs for that tenant's programs only.
	Tenant    string    `json:"tenant,omitempty"`
	Prefix    string    `json:"prefix"`
	Template  JobSpec   `json:"template"`
	CreatedAt time.Time `json:"created_at"`
}

// DeterministicRecordConflict says why a session or job cannot be both
// deterministic and recorded.
const DeterministicRecordConflict = "deterministic and record do not combine: a recording runs on QEMU's instruction counter with sleep on (with sleep off QEMU 7.2 loses console input while it records), so the recorded run is not a deterministic one; its replay re-runs it exactly. Ask for one of them"
