package events

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/machineserver/machineserver/shared/model"
)

// compile compiles every catalog schema, with defs.json and the others
// loaded under their $ids so that the relative $refs resolve offline.
func compile(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat() // date-time is part of our contract, not a hint
	names, err := fs.Glob(Schemas, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		b, err := fs.ReadFile(Schemas, n)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if err := c.AddResource(SchemaBase+n, doc); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	out := map[string]*jsonschema.Schema{}
	for _, s := range Catalog {
		sch, err := c.Compile(SchemaBase + s.Schema) // also checks it against the 2020-12 metaschema
		if err != nil {
			t.Fatalf("%s: %v", s.Type, err)
		}
		out[s.Type] = sch
	}
	return out
}

func validate(sch *jsonschema.Schema, data []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

func TestSamplesMatchSchemas(t *testing.T) {
	schemas := compile(t)
	for _, s := range Catalog {
		e := sample(t, s)
		if err := validate(schemas[s.Type], e.Data()); err != nil {
			t.Errorf("%s: sample data does not match the schema: %v", s.Type, err)
		}
		if _, err := decodeStrict(s, e.Data()); err != nil {
			t.Errorf("%s: sample data does not decode into %T: %v", s.Type, s.Payload, err)
		}
	}
}

// TestGoValuesMatchSchemas checks the producer side: payloads built in Go
// the way the functions and the runner build them encode to JSON the
// schemas accept, including the shapes the samples do not show.
func TestGoValuesMatchSchemas(t *testing.T) {
	schemas := compile(t)
	now := time.Now().UTC()
	later := now.Add(time.Second)
	addr := uint64(0x08000000)
	entry := uint64(0x08000131)
	named := model.Session{
		ID: model.NewID(), Name: "named", Backend: "qemu", BoardConfig: model.BoardConfig{Board: "lm3s6965evb"},
		Machine: "lm3s6965evb", State: model.StateCreated, RunnerID: "runner-1", CreatedAt: now, UpdatedAt: now,
	}
	full := named
	full.BoardConfig = model.BoardConfig{
		Processor:   &model.Processor{Model: "cortex-m4", Frequency: 168_000_000},
		Memory:      &model.Memory{Flash: model.Region{Base: 0x08000000, Size: 1 << 20}, RAM: model.Region{Base: 0x20000000, Size: 128 << 10}},
		Peripherals: []string{"usart1", "gpioa"},
	}
	with := func(s model.Session, f func(*model.Session)) model.Session { f(&s); return s }
	started := with(full, func(s *model.Session) {
		s.State, s.ProgramID, s.StartedAt, s.UpdatedAt = model.StateRunning, model.NewID(), &later, later
	})
	stopped := with(started, func(s *model.Session) { s.State, s.Reason = model.StateStopped, "firmware exited with status 0" })
	lost := with(started, func(s *model.Session) {
		s.State, s.Reason = model.StateError, "lost: the runner restarted and the emulator is gone"
	})
	crashed := with(started, func(s *model.Session) {
		s.State, s.Reason = model.StateError, "emulator killed by signal aborted: qemu: fatal: Lockup: can't escalate 3 to HardFault"
		s.EmulatorLog = []string{"qemu: fatal: Lockup: can't escalate 3 to HardFault", "R00=00000000 R01=00000000"}
		s.Warnings = []string{"the vector table's initial stack pointer 0x20400000 is outside netduino2's RAM"}
	})
	relocatable := model.Program{
		ID: model.NewID(), Name: "app.bin", Format: model.FormatBIN, Size: 4096,
		SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Segments: []model.Segment{{Addr: 0, Size: 4096}}, CreatedAt: now,
	}
	elf := model.Program{
		ID: model.NewID(), Name: "app.elf", Format: model.FormatELF, Size: 90000, SHA256: relocatable.SHA256, Entry: &entry,
		Segments: []model.Segment{{Addr: 0x08000000, Size: 8000}, {Addr: 0x20000000, Size: 64}}, CreatedAt: now,
	}
	snap := model.Snapshot{
		ID: model.NewID(), Name: "booted", SessionID: started.ID, Backend: "qemu", Machine: "lm3s6965evb",
		EmulatorVersion: "7.2.22", ProgramID: elf.ID, ProgramSHA256: elf.SHA256, Size: 0, SHA256: elf.SHA256, CreatedAt: later,
	}
	child := snap
	child.ID, child.Description, child.Parent, child.ConsoleOffset, child.Size = model.NewID(), "taken after a restore", snap.ID, 96, 200_000
	restored := with(started, func(s *model.Session) { s.SnapshotID = snap.ID })
	fork := with(restored, func(s *model.Session) {
		s.ID, s.Name, s.BoardConfig = model.NewID(), "booted-1", model.BoardConfig{Board: "lm3s6965evb"}
	})
	// A report of one session that only maps to addresses (a stripped
	// image), and a merge of two reports that lost counts in a crash.
	rawCoverage := CoverageReport{
		ID: model.NewID(), ProgramID: elf.ID, ProgramSHA256: elf.SHA256, Sessions: []string{started.ID},
		Level: "address", Final: true, Artifacts: map[string]string{"counts": "coverage/x/counts.json"}, CreatedAt: later,
	}
	merged := CoverageReport{
		ID: model.NewID(), ProgramID: elf.ID, ProgramSHA256: elf.SHA256, Sessions: []string{started.ID, fork.ID},
		Parents: []string{rawCoverage.ID, model.NewID()}, Level: "source", Notes: []string{"session crashed"},
		Totals:    CoverageTotals{LinesFound: 10, LinesHit: 7, FunctionsFound: 2, FunctionsHit: 2, BranchesFound: 4, BranchesHit: 1},
		Artifacts: map[string]string{"lcov": "a", "json": "b", "html": "c", "counts": "d"}, CreatedAt: later,
	}
	byFunction := merged
	byFunction.Level = "function"
	// A job with coverage ends with its report, or with why it has none.
	covered := model.Job{
		ID: model.NewID(), JobSpec: model.JobSpec{ProgramID: elf.ID, BoardConfig: named.BoardConfig, Timeout: "20s", PassPattern: "ok", Coverage: true},
		State: model.JobPassed, Attempts: 1, CoverageReportID: merged.ID, CreatedAt: now, UpdatedAt: later, FinishedAt: &later,
	}
	uncovered := covered
	// A repeated deterministic job whose runs disagreed.
	offset, five := 21, 5
	flaky := covered
	flaky.Deterministic, flaky.Repeat, flaky.State = true, &five, model.JobFlaky
	flaky.Runs = []model.JobRun{{Verdict: model.JobPassed, ConsoleBytes: 90, ConsoleSHA256: strings.Repeat("a", 64), ConsoleKey: "jobs/x/console.log", Ended: true, DurationMS: 12.5},
		{Verdict: model.JobTimedOut, Reason: "timeout 1s passed", ConsoleSHA256: ""}}
	flaky.FirstDifference = &model.JobDifference{Run: 2, What: "console", Offset: &offset, Expected: `"cvr=1"`, Got: `"cvr=2"`}
	uncovered.State, uncovered.CoverageReportID, uncovered.CoverageError = model.JobError, "", "coverage report not stored: the runner is gone"
	// A recorded job that failed keeps its recording; one whose recording
	// was not stored says why.
	recorded := covered
	recorded.Record, recorded.KeepRecording, recorded.State, recorded.RecordingID = true, model.KeepFailed, model.JobFailed, model.NewID()
	recordedFlaky := flaky
	recordedFlaky.Record, recordedFlaky.KeepRecording, recordedFlaky.RecordingID = true, model.KeepAlways, model.NewID()
	recordedFlaky.Runs[1].RecordingID = recordedFlaky.RecordingID
	unrecorded := recorded
	unrecorded.RecordingID, unrecorded.RecordingError = "", "the run never powered on, so nothing was recorded"
	recording := model.Recording{
		ID: recorded.RecordingID, Tenant: "acme", SessionID: started.ID, JobID: recorded.ID, Backend: "qemu", Machine: "mps2-an385",
		ProgramID: elf.ID, State: model.RecordingReady, ReverseDebug: true, EmulatorVersion: "7.2.22",
		Files: []model.RecordingFile{{Name: "replay.bin", Size: 100, SHA256: elf.SHA256}, {Name: model.RecordingConsole, SHA256: elf.SHA256}},
		Size:  100, ConsoleBytes: 0, Duration: "1.5s", CreatedAt: now, EndedAt: &later,
	}
	failedRecording := recording
	failedRecording.State, failedRecording.Reason, failedRecording.Files, failedRecording.Size = model.RecordingFailed, "the emulator wrote no recording", nil, 0
	// A system of two linked nodes, and one of a single node without links
	// (Go encodes its nil links as null).
	systemID := model.NewID()
	node := with(started, func(s *model.Session) { s.SystemID, s.MAC = systemID, "02:00:00:9d:3b:01" })
	lossy := model.LinkFaults{Loss: 0.01, Corrupt: 0.001, Delay: "2ms"}
	systemSpec := model.SystemSpec{
		Name: "gateway and sensor", Time: model.TimeRealtime, Seed: 42,
		Nodes: []model.NodeSpec{
			{Name: "gw", BoardConfig: model.BoardConfig{Board: "mps2-an385"}, ProgramID: elf.ID},
			{Name: "sensor", Backend: "qemu", BoardConfig: full.BoardConfig, ProgramID: elf.ID, Limits: &model.Limits{CPUPercent: 50}},
		},
		Links: []model.LinkSpec{
			{Type: model.LinkUART, Ends: []string{"gw:uart1", "sensor:uart1"}},
			{Name: "lan0", Type: model.LinkEthernet, Nodes: []string{"gw", "sensor"}, Faults: &lossy},
		},
	}
	uartLink := model.SystemLink{Name: "link0", Type: model.LinkUART, Ends: []string{"gw:uart1", "sensor:uart1"}, RunnerLink: model.NewID()}
	lan := model.SystemLink{Name: "lan0", Type: model.LinkEthernet, Nodes: []string{"gw", "sensor"}, Faults: lossy, RunnerLink: model.NewID()}
	system := model.System{
		ID: systemID, Tenant: "acme", Name: "gateway and sensor", Time: model.TimeRealtime, State: model.StateCreated, RunnerID: "runner-1",
		Nodes: []model.SystemNode{
			{Name: "gw", SessionID: node.ID, Machine: "mps2-an385", ProgramID: elf.ID, MAC: node.MAC, State: model.StateCreated},
			{Name: "sensor", SessionID: model.NewID(), Machine: "mps2-an385", ProgramID: elf.ID, MAC: "02:00:00:9d:3b:02"},
		},
		Links: []model.SystemLink{uartLink, lan}, Seed: 1<<64 - 1, CreatedAt: now, UpdatedAt: now,
	}
	lone := model.System{
		ID: model.NewID(), Name: "one board", Time: model.TimeRealtime, State: model.StateCreated, RunnerID: "runner-1",
		Nodes:     []model.SystemNode{{Name: "gw", SessionID: model.NewID(), Machine: "mps2-an385", ProgramID: elf.ID}},
		CreatedAt: now, UpdatedAt: now,
	}
	runningSystem := system
	runningSystem.State = model.StateRunning
	stoppedSystem := system
	stoppedSystem.State = model.StateStopped
	failedSystem := system
	failedSystem.State, failedSystem.Reason = model.StateError, "node sensor: emulator killed by signal killed"
	downLan := lan
	downLan.Faults = model.LinkFaults{Down: true}
	// A system snapshot as CreateSystem makes it: its spec carries every
	// link's faults, the zero ones too, and each node's state is a snapshot
	// named <name>/<node> that points back to it.
	clean := model.LinkFaults{}
	sysSnap := model.SystemSnapshot{
		ID: model.NewID(), Tenant: "acme", Name: "link up", SystemID: systemID,
		Spec: model.SystemSpec{
			Name: system.Name, Time: model.TimeRealtime, Seed: system.Seed,
			Nodes: []model.NodeSpec{
				{Name: "gw", Backend: "qemu", BoardConfig: model.BoardConfig{Board: "mps2-an385"}, ProgramID: elf.ID},
				{Name: "sensor", Backend: "qemu", BoardConfig: full.BoardConfig, ProgramID: elf.ID, Limits: &model.Limits{CPUPercent: 50}},
			},
			Links: []model.LinkSpec{
				{Name: "link0", Type: model.LinkUART, Ends: uartLink.Ends, Faults: &clean},
				{Name: "lan0", Type: model.LinkEthernet, Nodes: lan.Nodes, Faults: &lossy},
			},
		},
		Nodes: []model.SystemSnapshotNode{
			{Name: "gw", Machine: "mps2-an385", SnapshotID: model.NewID()},
			{Name: "sensor", Machine: "mps2-an385", SnapshotID: model.NewID()},
		},
		Size: 8 << 20, PausedMS: 38.6, CreatedAt: later,
	}
	loneSnap := model.SystemSnapshot{
		ID: model.NewID(), Name: "alone", Description: "one board, no links", SystemID: lone.ID,
		Spec:  model.SystemSpec{Name: lone.Name, Time: model.TimeRealtime, Seed: 7, Nodes: systemSpec.Nodes[:1]},
		Nodes: []model.SystemSnapshotNode{{Name: "gw", Machine: "mps2-an385", SnapshotID: model.NewID()}}, CreatedAt: later,
	}
	nodeSnap := snap
	nodeSnap.ID, nodeSnap.Name, nodeSnap.SessionID, nodeSnap.SystemSnapshotID = sysSnap.Nodes[0].SnapshotID, "link up/gw", node.ID, sysSnap.ID
	forkedSystem := runningSystem
	forkedSystem.ID, forkedSystem.Name = model.NewID(), "gateway and sensor, retry"
	for _, tc := range []struct {
		typ  string
		data any
	}{
		{TypeSessionCreate, CreateSession{Name: "n", BoardConfig: named.BoardConfig}},
		{TypeSessionCreate, CreateSession{Name: "n", Backend: "qemu", BoardConfig: full.BoardConfig}},
		{TypeSessionLoadProgram, LoadProgram{SessionID: named.ID, ProgramID: elf.ID}},
		{TypeSessionPowerOn, SessionRef{SessionID: named.ID}},
		{TypeProgramUpload, UploadProgram{Name: "app.elf", Content: []byte("\x7fELF\x01")}},
		{TypeProgramUpload, UploadProgram{Name: "app.bin", Format: "bin", LoadAddress: &addr, Content: []byte{0}}},
		{TypeProgramDelete, ProgramRef{ProgramID: elf.ID}},
		{TypeSessionCreated, named},
		{TypeSessionCreated, full},
		{TypeSessionProgramLoaded, with(named, func(s *model.Session) { s.ProgramID = elf.ID })},
		{TypeSessionStarted, started},
		{TypeSessionRebooted, started},
		{TypeSessionStopped, stopped},
		{TypeSessionStopped, with(started, func(s *model.Session) { s.State = model.StateStopped })},
		{TypeSessionFailed, lost},
		{TypeSessionFailed, crashed},
		{TypeSessionDeleted, named},
		{TypeSessionDeleted, lost},
		{TypeProgramStored, relocatable},
		{TypeProgramStored, elf},
		{TypeProgramDeleted, elf},
		{TypeSnapshotCreate, CreateSnapshot{SessionID: started.ID, Name: "booted"}},
		{TypeSnapshotCreate, CreateSnapshot{SessionID: started.ID, Name: "booted", Description: strings.Repeat("d", 1024)}},
		{TypeSnapshotRestore, RestoreSnapshot{SessionID: named.ID, SnapshotID: snap.ID}},
		{TypeSnapshotFork, ForkSnapshot{SnapshotID: snap.ID, Count: 1}},
		{TypeSnapshotFork, ForkSnapshot{SnapshotID: snap.ID, Count: 16, NamePrefix: "fuzz"}},
		{TypeSnapshotDelete, SnapshotRef{SnapshotID: snap.ID}},
		{TypeSnapshotCreated, snap},
		{TypeSnapshotCreated, child},
		{TypeSnapshotRestored, Restored{Snapshot: snap, Session: restored}},
		{TypeSnapshotForked, Forked{Snapshot: child, Sessions: []model.Session{fork, restored}}},
		{TypeSnapshotDeleted, child},
		{TypeSessionStarted, restored},
		{TypeSessionDeleted, restored},
		{TypeCoverageReady, rawCoverage},
		{TypeCoverageReady, merged},
		{TypeCoverageReady, byFunction},
		{TypeJobFinished, covered},
		{TypeJobFinished, uncovered},
		{TypeJobFinished, flaky},
		{TypeJobFinished, recorded},
		{TypeJobFinished, recordedFlaky},
		{TypeJobFinished, unrecorded},
		{TypeJobCreate, recorded.JobSpec},
		{TypeRecordingReady, recording},
		{TypeRecordingFailed, failedRecording},
		{TypeEmulatorStarted, EmulatorStarted{SessionID: started.ID, RunnerID: "runner-1", Machine: "lm3s6965evb", Pid: 4242}},
		{TypeEmulatorStarted, EmulatorStarted{SessionID: started.ID, RunnerID: "runner-1", Machine: "lm3s6965evb", Pid: 4242, Halted: true}},
		{TypeEmulatorEnded, EmulatorEnded{SessionID: started.ID, RunnerID: "runner-1", Pid: 4242, Exit: model.Exit{Kind: "stopped"}, Reason: "stopped", State: model.StateStopped}},
		{TypeEmulatorEnded, EmulatorEnded{SessionID: started.ID, RunnerID: "runner-1", Pid: 4242, Exit: model.Exit{Kind: "signal", Signal: "killed"}, Reason: "emulator killed by signal killed", State: model.StateError}},
		{TypeEmulatorEnded, EmulatorEnded{SessionID: started.ID, RunnerID: "runner-1", Pid: 4242, Exit: model.Exit{Kind: "stopped"}, Reason: "replaced by a snapshot restore"}},
		{TypeDebuggerAttached, Debugger{SessionID: started.ID, RunnerID: "runner-1", Who: "websocket 10.0.0.7", Since: now}},
		{TypeDebuggerDetached, Debugger{SessionID: started.ID, RunnerID: "runner-1", Who: "websocket 10.0.0.7", Since: now, EndedBy: "endpoint closed"}},
		{TypeSessionStarted, node},
		{TypeSessionDeleted, node},
		{TypeSystemCreate, systemSpec},
		{TypeSystemCreate, model.SystemSpec{Name: "one board", Nodes: systemSpec.Nodes[:1]}},
		{TypeSystemDelete, SystemRef{SystemID: systemID}},
		{TypeSystemPowerOn, SystemRef{SystemID: systemID}},
		{TypeSystemSetLink, SetLink{SystemID: systemID, Link: "lan0", Faults: lossy}},
		{TypeSystemSetLink, SetLink{SystemID: systemID, Link: "link0"}}, // clean again
		{TypeSystemCreated, system},
		{TypeSystemCreated, lone},
		{TypeSystemStarted, runningSystem},
		{TypeSystemRebooted, runningSystem},
		{TypeSystemStopped, stoppedSystem},
		{TypeSystemDeleted, failedSystem},
		{TypeSystemDeleted, lone},
		{TypeSystemLinkChanged, LinkChanged{SystemID: systemID, Tenant: "acme", Link: downLan}},
		{TypeSystemLinkChanged, LinkChanged{SystemID: systemID, Link: uartLink}},
		{TypeSystemSnapshotCreate, CreateSystemSnapshot{SystemID: systemID, Name: "link up"}},
		{TypeSystemSnapshotCreate, CreateSystemSnapshot{SystemID: systemID, Name: strings.Repeat("n", 128), Description: strings.Repeat("d", 1024)}},
		{TypeSystemRestore, RestoreSystem{SystemID: systemID, SnapshotID: sysSnap.ID}},
		{TypeSystemSnapshotFork, ForkSystemSnapshot{SnapshotID: sysSnap.ID}},
		{TypeSystemSnapshotFork, ForkSystemSnapshot{SnapshotID: sysSnap.ID, Name: "retry"}},
		{TypeSystemSnapshotDelete, SystemSnapshotRef{SnapshotID: sysSnap.ID}},
		{TypeSystemSnapshotCreated, sysSnap},
		{TypeSystemSnapshotCreated, loneSnap},
		{TypeSystemSnapshotDeleted, sysSnap},
		{TypeSystemRestored, SystemRestored{Snapshot: sysSnap, System: runningSystem}},
		{TypeSystemSnapshotForked, SystemForked{Snapshot: sysSnap, System: forkedSystem}},
		{TypeSnapshotCreated, nodeSnap},
		{TypeSnapshotDeleted, nodeSnap},
		{TypeStreamGap, StreamGap{After: "1-0", Message: "gone"}},
	} {
		e, err := New(SourceSessions, tc.typ, "", tc.data)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate(schemas[tc.typ], e.Data()); err != nil {
			t.Errorf("%s: %s does not match the schema: %v", tc.typ, e.Data(), err)
		}
	}
}

// TestSchemasRejectInvalid checks that the schemas are strict: each case
// breaks one rule in an otherwise valid sample.
func TestSchemasRejectInvalid(t *testing.T) {
	schemas := compile(t)
	type obj = map[string]any
	cases := []struct {
		typ, name string
		mutate    func(d obj)
	}{
		{TypeSessionCreate, "no name", func(d obj) { delete(d, "name") }},
		{TypeSessionCreate, "neither board nor processor", func(d obj) { d["board_config"] = obj{"peripherals": []any{"uart0"}} }},
		{TypeSessionCreate, "unknown board_config field", func(d obj) { d["board_config"].(obj)["cpu"] = "m3" }},
		{TypeSessionCreate, "unknown region field", func(d obj) {
			d["board_config"].(obj)["memory"].(obj)["flash"].(obj)["end"] = 1
		}},
		{TypeSessionCreate, "negative base", func(d obj) { d["board_config"].(obj)["memory"].(obj)["ram"].(obj)["base"] = -1 }},
		{TypeSessionCreate, "processor without model", func(d obj) { delete(d["board_config"].(obj)["processor"].(obj), "model") }},
		{TypeSessionDelete, "malformed id", func(d obj) { d["session_id"] = "../../etc" }},
		{TypeSessionLoadProgram, "no program", func(d obj) { delete(d, "program_id") }},
		{TypeProgramUpload, "unknown format", func(d obj) { d["format"] = "exe" }},
		{TypeProgramUpload, "content not base64", func(d obj) { d["content"] = "not base64!" }},
		{TypeProgramUpload, "empty content", func(d obj) { d["content"] = "" }},
		{TypeProgramUpload, "fractional load address", func(d obj) { d["load_address"] = 1.5 }},
		{TypeSessionCreated, "state running", func(d obj) { d["state"] = "running" }},
		{TypeSessionStarted, "no started_at", func(d obj) { delete(d, "started_at") }},
		{TypeSessionStopped, "state error", func(d obj) { d["state"] = "error" }},
		{TypeSessionFailed, "no reason", func(d obj) { delete(d, "reason") }},
		{TypeSessionDeleted, "unknown state", func(d obj) { d["state"] = "paused" }},
		{TypeSessionDeleted, "time not RFC 3339", func(d obj) { d["updated_at"] = "yesterday" }},
		{TypeSessionProgramLoaded, "no program", func(d obj) { delete(d, "program_id") }},
		{TypeProgramStored, "unknown format", func(d obj) { d["format"] = "ihex" }},
		{TypeProgramStored, "bad sha256", func(d obj) { d["sha256"] = "abc" }},
		{TypeProgramStored, "no segments", func(d obj) { d["segments"] = []any{} }},
		{TypeProgramStored, "null segments", func(d obj) { d["segments"] = nil }},
		{TypeProgramDeleted, "unknown segment field", func(d obj) { d["segments"].([]any)[0].(obj)["flags"] = 5 }},
		{TypeSnapshotCreate, "no session", func(d obj) { delete(d, "session_id") }},
		{TypeSnapshotCreate, "empty description", func(d obj) { d["description"] = "" }},
		{TypeSnapshotCreate, "description too long", func(d obj) { d["description"] = strings.Repeat("d", 1025) }},
		{TypeSnapshotRestore, "no snapshot", func(d obj) { delete(d, "snapshot_id") }},
		{TypeSnapshotRestore, "malformed snapshot id", func(d obj) { d["snapshot_id"] = "B7D40E93C5A16F2E" }},
		{TypeSnapshotFork, "count 0", func(d obj) { d["count"] = 0 }},
		{TypeSnapshotFork, "count 17", func(d obj) { d["count"] = 17 }},
		{TypeSnapshotFork, "fractional count", func(d obj) { d["count"] = 1.5 }},
		{TypeSnapshotFork, "no count", func(d obj) { delete(d, "count") }},
		{TypeSnapshotFork, "empty name prefix", func(d obj) { d["name_prefix"] = "" }},
		{TypeSnapshotDelete, "no snapshot", func(d obj) { delete(d, "snapshot_id") }},
		{TypeSnapshotCreated, "bad state sha256", func(d obj) { d["sha256"] = "abc" }},
		{TypeSnapshotCreated, "bad program sha256", func(d obj) { d["program_sha256"] = strings.Repeat("G", 64) }},
		{TypeSnapshotCreated, "negative size", func(d obj) { d["size"] = -1 }},
		{TypeSnapshotCreated, "negative console offset", func(d obj) { d["console_offset"] = -1 }},
		{TypeSnapshotCreated, "no emulator version", func(d obj) { delete(d, "emulator_version") }},
		{TypeSnapshotCreated, "malformed parent", func(d obj) { d["parent"] = "root" }},
		{TypeSnapshotDeleted, "no program", func(d obj) { delete(d, "program_id") }},
		{TypeSnapshotDeleted, "time not RFC 3339", func(d obj) { d["created_at"] = "now" }},
		{TypeSnapshotRestored, "no session", func(d obj) { delete(d, "session") }},
		{TypeSnapshotRestored, "session stopped", func(d obj) { d["session"].(obj)["state"] = "stopped" }},
		{TypeSnapshotRestored, "session without snapshot_id", func(d obj) { delete(d["session"].(obj), "snapshot_id") }},
		{TypeSnapshotRestored, "unknown snapshot field", func(d obj) { d["snapshot"].(obj)["vm_state"] = "x" }},
		{TypeSnapshotForked, "no sessions", func(d obj) { d["sessions"] = []any{} }},
		{TypeSnapshotForked, "17 sessions", func(d obj) {
			s := d["sessions"].([]any)
			for len(s) < 17 {
				s = append(s, s[0])
			}
			d["sessions"] = s
		}},
		{TypeSnapshotForked, "session not running", func(d obj) { d["sessions"].([]any)[1].(obj)["state"] = "created" }},
		{TypeCoverageReady, "malformed id", func(d obj) { d["id"] = "C8E1F04B7A29D365" }},
		{TypeCoverageReady, "bad program sha256", func(d obj) { d["program_sha256"] = "abc" }},
		{TypeCoverageReady, "no sessions", func(d obj) { d["sessions"] = []any{} }},
		{TypeCoverageReady, "null sessions", func(d obj) { d["sessions"] = nil }},
		{TypeCoverageReady, "malformed session id", func(d obj) { d["sessions"].([]any)[0] = "../x" }},
		{TypeCoverageReady, "same session twice", func(d obj) { d["sessions"] = []any{"6c0f2a9d4e813b57", "6c0f2a9d4e813b57"} }},
		{TypeCoverageReady, "empty parents", func(d obj) { d["parents"] = []any{} }},
		{TypeCoverageReady, "malformed parent", func(d obj) { d["parents"].([]any)[0] = "root" }},
		{TypeCoverageReady, "unknown level", func(d obj) { d["level"] = "line" }},
		{TypeCoverageReady, "no final", func(d obj) { delete(d, "final") }},
		{TypeCoverageReady, "final not boolean", func(d obj) { d["final"] = "yes" }},
		{TypeCoverageReady, "empty note", func(d obj) { d["notes"] = []any{""} }},
		{TypeCoverageReady, "no totals", func(d obj) { delete(d, "totals") }},
		{TypeCoverageReady, "negative total", func(d obj) { d["totals"].(obj)["lines_hit"] = -1 }},
		{TypeCoverageReady, "fractional total", func(d obj) { d["totals"].(obj)["branches_found"] = 2.5 }},
		{TypeCoverageReady, "missing total", func(d obj) { delete(d["totals"].(obj), "functions_hit") }},
		{TypeCoverageReady, "unknown totals field", func(d obj) { d["totals"].(obj)["regions_found"] = 1 }},
		{TypeCoverageReady, "no artifacts", func(d obj) { d["artifacts"] = obj{} }},
		{TypeCoverageReady, "null artifacts", func(d obj) { d["artifacts"] = nil }},
		{TypeCoverageReady, "unknown artifact format", func(d obj) { d["artifacts"].(obj)["cobertura"] = "coverage/x/cobertura.xml" }},
		{TypeCoverageReady, "artifact key not a string", func(d obj) { d["artifacts"].(obj)["lcov"] = 7 }},
		{TypeCoverageReady, "empty artifact key", func(d obj) { d["artifacts"].(obj)["html"] = "" }},
		{TypeCoverageReady, "time not RFC 3339", func(d obj) { d["created_at"] = "now" }},
		{TypeJobFinished, "malformed coverage report id", func(d obj) { d["coverage_report_id"] = "coverage/c8e1f04b7a29d365" }},
		{TypeJobFinished, "empty coverage error", func(d obj) { d["coverage_error"] = "" }},
		{TypeJobFinished, "unknown state", func(d obj) { d["state"] = "unstable" }},
		{TypeJobCreate, "repeat 11", func(d obj) { d["repeat"] = 11 }},
		{TypeJobCreate, "unknown keep_recording", func(d obj) { d["keep_recording"] = "sometimes" }},
		{TypeEmulatorStarted, "no pid", func(d obj) { delete(d, "pid") }},
		{TypeEmulatorStarted, "halted false", func(d obj) { d["halted"] = false }},
		{TypeEmulatorEnded, "unknown exit kind", func(d obj) { d["exit"].(obj)["kind"] = "exploded" }},
		{TypeEmulatorEnded, "state running", func(d obj) { d["state"] = "running" }},
		{TypeEmulatorEnded, "no reason", func(d obj) { delete(d, "reason") }},
		{TypeDebuggerAttached, "malformed session id", func(d obj) { d["session_id"] = "../x" }},
		{TypeDebuggerDetached, "no ended_by", func(d obj) { delete(d, "ended_by") }},
		{TypeDebuggerDetached, "unknown ended_by", func(d obj) { d["ended_by"] = "cosmic ray" }},
		{TypeRecordingReady, "unknown state", func(d obj) { d["state"] = "done" }},
		{TypeRecordingReady, "file without sha256", func(d obj) { delete(d["files"].([]any)[0].(obj), "sha256") }},
		{TypeRecordingFailed, "negative size", func(d obj) { d["size"] = -1 }},
		{TypeStreamGap, "after not a stream id", func(d obj) { d["after"] = "yesterday" }},
		{TypeSessionCreated, "malformed system id", func(d obj) { d["system_id"] = "gateway" }},
		{TypeSessionCreated, "multicast mac", func(d obj) { d["mac"] = "01:00:5e:00:00:01" }},
		{TypeSessionCreated, "uppercase mac", func(d obj) { d["mac"] = "02:00:00:9D:3B:01" }},
		{TypeSystemCreate, "no name", func(d obj) { delete(d, "name") }},
		{TypeSystemCreate, "no nodes", func(d obj) { d["nodes"] = []any{} }},
		{TypeSystemCreate, "node without program", func(d obj) { delete(d["nodes"].([]any)[0].(obj), "program_id") }},
		{TypeSystemCreate, "node without board", func(d obj) { delete(d["nodes"].([]any)[0].(obj), "board_config") }},
		{TypeSystemCreate, "node name with a colon", func(d obj) { d["nodes"].([]any)[0].(obj)["name"] = "gw:0" }},
		{TypeSystemCreate, "unknown link type", func(d obj) { d["links"].([]any)[0].(obj)["type"] = "can" }},
		{TypeSystemCreate, "uart link with one end", func(d obj) { d["links"].([]any)[0].(obj)["ends"] = []any{"gw:uart1"} }},
		{TypeSystemCreate, "uart link with three ends", func(d obj) {
			d["links"].([]any)[0].(obj)["ends"] = []any{"gw:uart1", "sensor:uart1", "sensor:uart2"}
		}},
		{TypeSystemCreate, "uart link joining a port to itself", func(d obj) { d["links"].([]any)[0].(obj)["ends"] = []any{"gw:uart1", "gw:uart1"} }},
		{TypeSystemCreate, "end without a port", func(d obj) { d["links"].([]any)[0].(obj)["ends"] = []any{"gw", "sensor:uart1"} }},
		{TypeSystemCreate, "uart link with nodes", func(d obj) {
			l := d["links"].([]any)[0].(obj)
			delete(l, "ends")
			l["nodes"] = []any{"gw", "sensor"}
		}},
		{TypeSystemCreate, "ethernet link with ends too", func(d obj) { d["links"].([]any)[1].(obj)["ends"] = []any{"gw:uart1", "sensor:uart1"} }},
		{TypeSystemCreate, "ethernet link of one node", func(d obj) { d["links"].([]any)[1].(obj)["nodes"] = []any{"gw"} }},
		{TypeSystemCreate, "loss over 1", func(d obj) { d["links"].([]any)[1].(obj)["faults"].(obj)["loss"] = 1.5 }},
		{TypeSystemCreate, "delay not a duration", func(d obj) { d["links"].([]any)[1].(obj)["faults"].(obj)["delay"] = "soon" }},
		{TypeSystemCreate, "unknown fault", func(d obj) { d["links"].([]any)[1].(obj)["faults"].(obj)["jitter"] = "1ms" }},
		{TypeSystemCreate, "unknown time", func(d obj) { d["time"] = "sidereal" }},
		{TypeSystemCreate, "negative seed", func(d obj) { d["seed"] = -1 }},
		{TypeSystemDelete, "malformed id", func(d obj) { d["system_id"] = "../x" }},
		{TypeSystemPowerOn, "no system", func(d obj) { delete(d, "system_id") }},
		{TypeSystemSetLink, "no faults", func(d obj) { delete(d, "faults") }},
		{TypeSystemSetLink, "link name with a slash", func(d obj) { d["link"] = "lan0/x" }},
		{TypeSystemSetLink, "negative corrupt", func(d obj) { d["faults"].(obj)["corrupt"] = -0.1 }},
		{TypeSystemSetLink, "down not boolean", func(d obj) { d["faults"].(obj)["down"] = "yes" }},
		{TypeSystemCreated, "state running", func(d obj) { d["state"] = "running" }},
		{TypeSystemCreated, "no nodes", func(d obj) { d["nodes"] = []any{} }},
		{TypeSystemCreated, "node without session", func(d obj) { delete(d["nodes"].([]any)[0].(obj), "session_id") }},
		{TypeSystemCreated, "node with multicast mac", func(d obj) { d["nodes"].([]any)[0].(obj)["mac"] = "03:00:00:9d:3b:01" }},
		{TypeSystemCreated, "link without runner link", func(d obj) { delete(d["links"].([]any)[0].(obj), "runner_link") }},
		{TypeSystemCreated, "link without faults", func(d obj) { delete(d["links"].([]any)[0].(obj), "faults") }},
		{TypeSystemCreated, "no seed", func(d obj) { delete(d, "seed") }},
		{TypeSystemStarted, "state stopped", func(d obj) { d["state"] = "stopped" }},
		{TypeSystemStarted, "no runner", func(d obj) { delete(d, "runner_id") }},
		{TypeSystemStopped, "state running", func(d obj) { d["state"] = "running" }},
		{TypeSystemDeleted, "unknown node state", func(d obj) { d["nodes"].([]any)[1].(obj)["state"] = "paused" }},
		{TypeSystemLinkChanged, "no link", func(d obj) { delete(d, "link") }},
		{TypeSystemLinkChanged, "ethernet link with ends", func(d obj) { d["link"].(obj)["ends"] = []any{"gw:uart1", "sensor:uart1"} }},
		{TypeSnapshotCreated, "malformed system snapshot id", func(d obj) { d["system_snapshot_id"] = "link up" }},
		{TypeSystemSnapshotCreate, "no system", func(d obj) { delete(d, "system_id") }},
		{TypeSystemSnapshotCreate, "no name", func(d obj) { delete(d, "name") }},
		{TypeSystemSnapshotCreate, "name too long", func(d obj) { d["name"] = strings.Repeat("n", 129) }},
		{TypeSystemSnapshotCreate, "empty description", func(d obj) { d["description"] = "" }},
		{TypeSystemSnapshotCreate, "description too long", func(d obj) { d["description"] = strings.Repeat("d", 1025) }},
		{TypeSystemRestore, "no snapshot", func(d obj) { delete(d, "snapshot_id") }},
		{TypeSystemRestore, "malformed system id", func(d obj) { d["system_id"] = "gateway and sensor" }},
		{TypeSystemSnapshotFork, "no snapshot", func(d obj) { delete(d, "snapshot_id") }},
		{TypeSystemSnapshotFork, "empty name", func(d obj) { d["name"] = "" }},
		{TypeSystemSnapshotDelete, "malformed snapshot id", func(d obj) { d["snapshot_id"] = "../x" }},
		{TypeSystemSnapshotCreated, "no spec", func(d obj) { delete(d, "spec") }},
		{TypeSystemSnapshotCreated, "spec without nodes", func(d obj) { d["spec"].(obj)["nodes"] = []any{} }},
		{TypeSystemSnapshotCreated, "spec link with an unknown fault", func(d obj) {
			d["spec"].(obj)["links"].([]any)[1].(obj)["faults"].(obj)["jitter"] = "1ms"
		}},
		{TypeSystemSnapshotCreated, "no nodes", func(d obj) { d["nodes"] = []any{} }},
		{TypeSystemSnapshotCreated, "node without snapshot", func(d obj) { delete(d["nodes"].([]any)[0].(obj), "snapshot_id") }},
		{TypeSystemSnapshotCreated, "node name with a slash", func(d obj) { d["nodes"].([]any)[0].(obj)["name"] = "gw/0" }},
		{TypeSystemSnapshotCreated, "unknown node field", func(d obj) { d["nodes"].([]any)[0].(obj)["size"] = 1 }},
		{TypeSystemSnapshotCreated, "negative size", func(d obj) { d["size"] = -1 }},
		{TypeSystemSnapshotCreated, "negative pause", func(d obj) { d["paused_ms"] = -0.5 }},
		{TypeSystemSnapshotCreated, "no pause", func(d obj) { delete(d, "paused_ms") }},
		{TypeSystemSnapshotDeleted, "no system", func(d obj) { delete(d, "system_id") }},
		{TypeSystemSnapshotDeleted, "time not RFC 3339", func(d obj) { d["created_at"] = "now" }},
		{TypeSystemRestored, "no snapshot", func(d obj) { delete(d, "snapshot") }},
		{TypeSystemRestored, "system stopped", func(d obj) { d["system"].(obj)["state"] = "stopped" }},
		{TypeSystemRestored, "system without runner", func(d obj) { delete(d["system"].(obj), "runner_id") }},
		{TypeSystemRestored, "unknown snapshot field", func(d obj) { d["snapshot"].(obj)["links"] = []any{} }},
		{TypeSystemSnapshotForked, "no system", func(d obj) { delete(d, "system") }},
		{TypeSystemSnapshotForked, "system created", func(d obj) { d["system"].(obj)["state"] = "created" }},
		{TypeSystemSnapshotForked, "systems instead of system", func(d obj) { d["systems"] = []any{d["system"]}; delete(d, "system") }},
	}
	for _, s := range Catalog {
		cases = append(cases, struct {
			typ, name string
			mutate    func(d obj)
		}{s.Type, "unknown field", func(d obj) { d["extra"] = true }})
	}
	for _, tc := range cases {
		s, _ := Lookup(tc.typ)
		var d obj
		if err := json.Unmarshal(sample(t, s).Data(), &d); err != nil {
			t.Fatal(err)
		}
		tc.mutate(d)
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate(schemas[tc.typ], b); err == nil {
			t.Errorf("%s, %s: the schema accepted %s", tc.typ, tc.name, b)
		}
	}
}
