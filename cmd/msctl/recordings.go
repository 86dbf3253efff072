package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
	"github.com/machineserver/machineserver/shared/model"
)

const recordingsUsage = `usage: msctl recordings ls
       msctl recordings get RID
       msctl recordings rm RID...
       msctl recordings console RID

A recording is one recorded execution of a session's machine, from power on to
its end: a session created with --record (sessions create --record) makes one
at every power on, a job created with "record": true keeps the one of a run
that did not pass. ls lists them, get shows one, rm deletes them (and frees
their storage), console prints what the console printed while recording, raw.
msctl replay re-runs one.
`

const replayUsage = `usage: msctl replay RID|JOB_ID [--name N] [--halted] [--gdb ADDR]

Creates a replay session of recording RID (or of the recording job JOB_ID
kept), powers it on and prints its id: the session re-runs the recorded
execution, printing the same console bytes, without taking input. --halted
keeps the CPU at the reset vector until a debugger continues it; on boards with
the reverse-debug feature gdb also runs it backwards (reverse-continue).

  --name N      the replay session's name (default replay-RID)
  --halted      power on halted, to attach a debugger first
  --gdb ADDR    then tunnel gdb to the session from local address ADDR, as
                msctl gdb SESSION --listen ADDR does, until interrupted

A job keeps a recording only when it was created with "record": true, and a
passed job keeps none unless its keep_recording is "always".
`

func recordingCommands() map[string]command {
	return map[string]command{
		"ls":      runRecordingList,
		"get":     runRecordingGet,
		"rm":      runRecordingRemove,
		"console": runRecordingConsole,
	}
}

func runRecordingList(ctx context.Context, e *env, args []string) error {
	_, c, err := e.connect(e.flags("recordings ls"), args, recordingsUsage, 0, 0)
	if err != nil {
		return err
	}
	rs, err := client.List[model.Recording](ctx, c, client.Path("recordings"), "recordings")
	if err != nil {
		return err
	}
	return e.emit(nonNil(rs), func(w io.Writer) {
		rows := make([][]string, len(rs))
		for i, r := range rs {
			rows[i] = []string{r.ID, r.SessionID, first(r.JobID, "-"), r.Machine, string(r.State), strconv.FormatInt(r.Size, 10),
				first(r.Duration, "-"), r.CreatedAt.Local().Format("2006-01-02 15:04:05")}
		}
		table(w, []string{"ID", "SESSION", "JOB", "MACHINE", "STATE", "SIZE", "DURATION", "CREATED"}, rows)
	})
}

func runRecordingGet(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags("recordings get"), args, recordingsUsage, 1, 1)
	if err != nil {
		return err
	}
	var r model.Recording
	if err := c.Do(ctx, http.MethodGet, client.Path("recordings", pos[0]), nil, &r); err != nil {
		return err
	}
	return e.emit(r, func(w io.Writer) { describeRecording(w, r) })
}

func describeRecording(w io.Writer, r model.Recording) {
	state := string(r.State)
	if r.Reason != "" {
		state += " (" + r.Reason + ")"
	}
	reverse := "no"
	if r.ReverseDebug {
		reverse = "yes"
	}
	rows := [][]string{
		{"id:", r.ID}, {"session:", r.SessionID}, {"job:", first(r.JobID, "-")}, {"machine:", r.Backend + " " + r.Machine},
		{"program:", first(r.ProgramID, "-")}, {"state:", state}, {"reverse debug:", reverse},
		{"size:", strconv.FormatInt(r.Size, 10)}, {"console bytes:", strconv.FormatInt(r.ConsoleBytes, 10)},
		{"duration:", first(r.Duration, "-")}, {"created:", r.CreatedAt.Local().Format("2006-01-02 15:04:05")},
	}
	for _, f := range r.Files {
		rows = append(rows, []string{"file:", fmt.Sprintf("%s %d sha256:%s", f.Name, f.Size, f.SHA256)})
	}
	for _, row := range rows {
		fmt.Fprintf(w, "%-14s %s\n", row[0], row[1])
	}
}

func runRecordingRemove(ctx context.Context, e *env, args []string) error {
	return removeAll(ctx, e, args, "recordings rm", recordingsUsage, func(id string) string { return client.Path("recordings", id) })
}

// runRecordingConsole prints the stored bytes as they are, like coverage
// to stdout: a pipe gets exactly what the board printed.
func runRecordingConsole(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags("recordings console"), args, recordingsUsage, 1, 1)
	if err != nil {
		return err
	}
	data, err := c.Get(ctx, client.Path("recordings", pos[0], "console"))
	if err != nil {
		return err
	}
	_, err = e.out.Write(data)
	return err
}

func runReplay(ctx context.Context, e *env, args []string) error {
	fs := e.flags("replay")
	name := fs.String("name", "", "")
	halted := fs.Bool("halted", false, "")
	listen := fs.String("gdb", "", "")
	pos, c, err := e.connect(fs, args, replayUsage, 1, 1)
	if err != nil {
		return err
	}
	if pos[0] == "" {
		return &usageError{"replay needs a RID or JOB_ID", replayUsage}
	}
	s, err := createReplay(ctx, c, pos[0], *name)
	if err != nil {
		return err
	}
	path := client.Path("sessions", s.ID, "poweron")
	if *halted {
		path += "?halted=true"
	}
	// As sessions create does, a replay session left behind by a failed
	// power on is the user's to see: its id is in the error.
	if err := c.Do(ctx, http.MethodPost, path, nil, &s); err != nil {
		return fmt.Errorf("replay session %s created, but: %w", s.ID, err)
	}
	err = e.emit(s, func(w io.Writer) {
		fmt.Fprintln(w, s.ID)
		if *listen != "" {
			return
		}
		// The id alone on stdout, for $(...); how to go on on stderr.
		state := string(s.State)
		switch {
		case s.Reason != "":
			state += ": " + s.Reason
		case *halted:
			state += ", halted at the reset vector"
		}
		fmt.Fprintf(e.err, "msctl: session %s replays recording %s (%s)\n", s.ID, s.ReplayOf, state)
		fmt.Fprintf(e.err, "msctl: tunnel gdb with: msctl gdb %s --listen %s\n", s.ID, defaultGDBListen)
		fmt.Fprintf(e.err, "msctl: then connect with: gdb-multiarch fw.elf -ex 'target extended-remote %s'\n", defaultGDBListen)
	})
	if err != nil || *listen == "" {
		return err
	}
	// JSON on stdout stays one document: the tunnel's hint goes to stderr.
	hint := e.out
	if e.json() {
		hint = e.err
	}
	if err := tunnelGDB(ctx, c, s.ID, *listen, hint, e.err); err != nil {
		return fmt.Errorf("replay session %s is on, but: %w", s.ID, err)
	}
	return nil
}

// createReplay makes a replay session of recording id, or, when no
// recording has that id, of the recording job id kept. Both are 16 hex
// digits, so only the server tells them apart.
func createReplay(ctx context.Context, c *client.Client, id, name string) (model.Session, error) {
	var s model.Session
	req := map[string]string{}
	if name != "" {
		req["name"] = name
	}
	err := c.Do(ctx, http.MethodPost, client.Path("recordings", id, "sessions"), req, &s)
	if !notFound(err) {
		return s, err
	}
	var j model.Job
	if jerr := c.Do(ctx, http.MethodGet, client.Path("jobs", id), nil, &j); jerr != nil {
		if notFound(jerr) {
			// Neither: the server's own word on the recording.
			return s, err
		}
		return s, fmt.Errorf("%w; looking %s up as a job: %w", err, id, jerr)
	}
	if j.RecordingID == "" {
		return s, noRecording(j)
	}
	if err := c.Do(ctx, http.MethodPost, client.Path("recordings", j.RecordingID, "sessions"), req, &s); err != nil {
		return s, fmt.Errorf("job %s's recording %s: %w", j.ID, j.RecordingID, err)
	}
	return s, nil
}

func notFound(err error) bool {
	var ae *client.Error
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// noRecording says why job j has no recording to replay.
func noRecording(j model.Job) error {
	why := "it kept none"
	switch {
	case !j.Record:
		why = `it was not recorded: create the job with "record": true`
	case !j.State.Final():
		why = fmt.Sprintf("it is %s, and its recording is kept when it ends", j.State)
	case j.RecordingError != "":
		why = j.RecordingError
	case j.State == model.JobPassed && j.KeepRecording != model.KeepAlways:
		why = `it passed, and a passed job keeps none unless its keep_recording is "always"`
	}
	return fmt.Errorf("job %s kept no recording to replay: %s", j.ID, why)
}
