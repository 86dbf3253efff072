package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
	"github.com/machineserver/machineserver/shared/model"
)

const snapshotsUsage = `usage: msctl snapshots ls [SESSION]
       msctl snapshots create SESSION [--name N] [--description D]
       msctl snapshots restore SESSION SNAPSHOT
       msctl snapshots fork SNAPSHOT [--count N] [--name-prefix P]
       msctl snapshots rm SNAPSHOT...

create saves a running session's full machine state and prints the snapshot's
id; restore brings a session (running or not) to exactly that state; fork makes
N (1-16) new sessions restored from it and prints their ids. ls lists the
tenant's snapshots, or one session's.
`

func snapshotCommands() map[string]command {
	return map[string]command{
		"ls":      runSnapshotList,
		"create":  runSnapshotCreate,
		"restore": runSnapshotRestore,
		"fork":    runSnapshotFork,
		"rm":      runSnapshotRemove,
	}
}

func runSnapshotList(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags("snapshots ls"), args, snapshotsUsage, 0, 1)
	if err != nil {
		return err
	}
	path := client.Path("snapshots")
	if len(pos) == 1 {
		path = client.Path("sessions", pos[0], "snapshots")
	}
	ss, err := client.List[model.Snapshot](ctx, c, path, "snapshots")
	if err != nil {
		return err
	}
	return e.emit(nonNil(ss), func(w io.Writer) {
		rows := make([][]string, len(ss))
		for i, s := range ss {
			rows[i] = []string{s.ID, s.Name, s.SessionID, s.Machine, strconv.FormatInt(s.Size, 10), s.CreatedAt.Local().Format("2006-01-02 15:04:05")}
		}
		table(w, []string{"ID", "NAME", "SESSION", "MACHINE", "SIZE", "CREATED"}, rows)
	})
}

func runSnapshotCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags("snapshots create")
	name := fs.String("name", "", "")
	desc := fs.String("description", "", "")
	pos, c, err := e.connect(fs, args, snapshotsUsage, 1, 1)
	if err != nil {
		return err
	}
	var s model.Snapshot
	req := map[string]string{"name": first(*name, "snapshot-"+time.Now().UTC().Format("20060102-150405")), "description": *desc}
	if err := c.Do(ctx, http.MethodPost, client.Path("sessions", pos[0], "snapshots"), req, &s); err != nil {
		return err
	}
	return e.emit(s, func(w io.Writer) { fmt.Fprintln(w, s.ID) })
}

func runSnapshotRestore(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags("snapshots restore"), args, snapshotsUsage, 2, 2)
	if err != nil {
		return err
	}
	var s model.Session
	if err := c.Do(ctx, http.MethodPost, client.Path("sessions", pos[0], "restore"), map[string]string{"snapshot_id": pos[1]}, &s); err != nil {
		return err
	}
	return e.emit(s, func(w io.Writer) { fmt.Fprintln(w, s.ID, s.State) })
}

func runSnapshotFork(ctx context.Context, e *env, args []string) error {
	fs := e.flags("snapshots fork")
	count := fs.Int("count", 1, "")
	prefix := fs.String("name-prefix", "", "")
	pos, c, err := e.connect(fs, args, snapshotsUsage, 1, 1)
	if err != nil {
		return err
	}
	var out struct {
		Sessions []model.Session `json:"sessions"`
	}
	req := map[string]any{"count": *count, "name_prefix": *prefix}
	if err := c.Do(ctx, http.MethodPost, client.Path("snapshots", pos[0], "sessions"), req, &out); err != nil {
		return err
	}
	return e.emit(out, func(w io.Writer) {
		for _, s := range out.Sessions {
			fmt.Fprintln(w, s.ID)
		}
	})
}

func runSnapshotRemove(ctx context.Context, e *env, args []string) error {
	return removeAll(ctx, e, args, "snapshots rm", snapshotsUsage, func(id string) string { return client.Path("snapshots", id) })
}
