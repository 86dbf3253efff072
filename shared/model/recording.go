package model

import "time"

// RecordingState is where a recording is in its life.
type RecordingState string

const (
	// RecordingActive: the machine is running and being recorded.
	RecordingActive RecordingState = "recording"
	// RecordingReady: the machine ended and the recording is stored.
	RecordingReady RecordingState = "ready"
	// RecordingFailed: it could not be stored (Reason says why).
	RecordingFailed RecordingState = "failed"
)

// Recording is one recorded execution of a session's machine, from power
// on to its end: the emulator's log of every nondeterministic event, from
// which a replay session re-runs it instruction for instruction.
type Recording struct {
	ID        string         `json:"id"`
	Tenant    string         `json:"tenant,omitempty"`
	SessionID string         `json:"session_id"`
	JobID     string         `json:"job_id,omitempty"`
	Backend   string         `json:"backend"`
	Machine   string         `json:"machine"`
	ProgramID string         `json:"program_id"`
	State     RecordingState `json:"state"`
	Reason    string         `json:"reason,omitempty"`
	// ReverseDebug: the recording holds its initial snapshot, so a replay's
	// debugger can step and continue backwards.
	ReverseDebug bool `json:"reverse_debug"`
	// EmulatorVersion must match the replaying runner's.
	EmulatorVersion string `json:"emulator_version,omitempty"`
	// Files are the stored files (RecordingFileKey); Size their total.
	Files []RecordingFile `json:"files,omitempty"`
	Size  int64           `json:"size"`
	// ConsoleBytes is how much the first UART printed while recording (the
	// text is the file "console.log").
	ConsoleBytes int64 `json:"console_bytes"`
	// Duration is the host time the recording ran.
	Duration  string     `json:"duration,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
}

// RecordingFile is one stored file of a recording.
type RecordingFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// RecordingConsole is the file holding what the console printed while
// recording.
const RecordingConsole = "console.log"

// RecordingFileKey is the blob key of one file of a recording.
func RecordingFileKey(id, name string) string { return "recordings/" + id + "/" + name }
