package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
	"github.com/machineserver/machineserver/shared/model"
)

const sessionsUsage = `usage: msctl sessions create --board B [--name N] [--program ID] [--coverage] [--record] [--poweron]
       msctl sessions ls
       msctl sessions get ID
       msctl sessions rm ID...
       msctl sessions poweron ID [--halted]
       msctl sessions poweroff ID
       msctl sessions reset ID

create makes a session on board B (a name from GET /api/v1/capabilities, e.g.
netduino2), loads program ID into it, opens its coverage window from the first
power on with --coverage, records every power on with --record (replay the
recording with msctl replay), powers it on with --poweron, and prints its id.
poweron --halted keeps the CPU at the reset vector until a debugger continues it.
`

func sessionCommands() map[string]command {
	action := func(name string) command {
		return func(ctx context.Context, e *env, args []string) error {
			return runSessionAction(ctx, e, args, name)
		}
	}
	return map[string]command{
		"create":   runSessionCreate,
		"ls":       runSessionList,
		"get":      runSessionGet,
		"rm":       runSessionRemove,
		"poweron":  action("poweron"),
		"poweroff": action("poweroff"),
		"reset":    action("reset"),
	}
}

func runSessionCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags("sessions create")
	board := fs.String("board", "", "")
	name := fs.String("name", "", "")
	program := fs.String("program", "", "")
	coverage := fs.Bool("coverage", false, "")
	record := fs.Bool("record", false, "")
	poweron := fs.Bool("poweron", false, "")
	if _, err := e.parse(fs, args, sessionsUsage, 0, 0); err != nil {
		return err
	}
	if *board == "" {
		return &usageError{"sessions create needs --board", sessionsUsage}
	}
	if *poweron && *program == "" {
		return &usageError{"sessions create --poweron needs --program", sessionsUsage}
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var s model.Session
	req := map[string]any{"name": first(*name, "msctl-"+*board), "board_config": model.BoardConfig{Board: *board}, "coverage": *coverage}
	// Sent only when asked for: the server refuses fields it does not
	// know, and one without recordings should still create sessions.
	if *record {
		req["record"] = true
	}
	if err := c.Do(ctx, http.MethodPost, client.Path("sessions"), req, &s); err != nil {
		return err
	}
	// A session left behind by a failed step is the user's to see: its
	// id is printed with the error.
	if *program != "" {
		if err := c.Do(ctx, http.MethodPost, client.Path("sessions", s.ID, "program"), map[string]string{"program_id": *program}, &s); err != nil {
			return fmt.Errorf("session %s created, but: %w", s.ID, err)
		}
	}
	if *poweron {
		if err := c.Do(ctx, http.MethodPost, client.Path("sessions", s.ID, "poweron"), nil, &s); err != nil {
			return fmt.Errorf("session %s created, but: %w", s.ID, err)
		}
	}
	return e.emit(s, func(w io.Writer) {
		fmt.Fprintln(w, s.ID)
		for _, warn := range s.Warnings {
			fmt.Fprintln(e.err, "msctl: warning:", warn)
		}
	})
}

func runSessionList(ctx context.Context, e *env, args []string) error {
	_, c, err := e.connect(e.flags("sessions ls"), args, sessionsUsage, 0, 0)
	if err != nil {
		return err
	}
	ss, err := client.List[model.Session](ctx, c, client.Path("sessions"), "sessions")
	if err != nil {
		return err
	}
	return e.emit(nonNil(ss), func(w io.Writer) {
		rows := make([][]string, len(ss))
		for i, s := range ss {
			rows[i] = []string{s.ID, s.Name, s.Machine, string(s.State), first(s.ProgramID, "-"), s.CreatedAt.Local().Format("2006-01-02 15:04:05")}
		}
		table(w, []string{"ID", "NAME", "MACHINE", "STATE", "PROGRAM", "CREATED"}, rows)
	})
}

func runSessionGet(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags("sessions get"), args, sessionsUsage, 1, 1)
	if err != nil {
		return err
	}
	var s model.Session
	if err := c.Do(ctx, http.MethodGet, client.Path("sessions", pos[0]), nil, &s); err != nil {
		return err
	}
	return e.emit(s, func(w io.Writer) { describeSession(w, s) })
}

func describeSession(w io.Writer, s model.Session) {
	state := string(s.State)
	if s.Reason != "" {
		state += " (" + s.Reason + ")"
	}
	rows := [][]string{
		{"id:", s.ID}, {"name:", s.Name}, {"machine:", s.Backend + " " + s.Machine}, {"state:", state},
		{"program:", first(s.ProgramID, "-")}, {"runner:", s.RunnerID}, {"created:", s.CreatedAt.Local().Format("2006-01-02 15:04:05")},
	}
	if s.Coverage {
		rows = append(rows, []string{"coverage:", "on"})
	}
	if s.SnapshotID != "" {
		rows = append(rows, []string{"restored from:", s.SnapshotID})
	}
	if s.Record {
		rows = append(rows, []string{"recording:", first(s.RecordingID, "on (from the next power on)")})
	}
	if s.ReplayOf != "" {
		rows = append(rows, []string{"replays:", s.ReplayOf})
	}
	for _, warn := range s.Warnings {
		rows = append(rows, []string{"warning:", warn})
	}
	for _, l := range s.EmulatorLog {
		rows = append(rows, []string{"emulator:", l})
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%-14s %s\n", r[0], r[1])
	}
}

func runSessionRemove(ctx context.Context, e *env, args []string) error {
	return removeAll(ctx, e, args, "sessions rm", sessionsUsage, func(id string) string { return client.Path("sessions", id) })
}

// runSessionAction is poweron, poweroff or reset: it prints the new state.
func runSessionAction(ctx context.Context, e *env, args []string, action string) error {
	fs := e.flags("sessions " + action)
	halted := false
	if action == "poweron" {
		fs.BoolVar(&halted, "halted", false, "")
	}
	pos, c, err := e.connect(fs, args, sessionsUsage, 1, 1)
	if err != nil {
		return err
	}
	path := client.Path("sessions", pos[0], action)
	if halted {
		path += "?halted=true"
	}
	var s model.Session
	if err := c.Do(ctx, http.MethodPost, path, nil, &s); err != nil {
		return err
	}
	return e.emit(s, func(w io.Writer) {
		line := s.ID + " " + string(s.State)
		if s.Reason != "" {
			line += ": " + s.Reason
		}
		fmt.Fprintln(w, strings.TrimSpace(line))
	})
}
