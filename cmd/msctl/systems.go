package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

const systemsUsage = `usage: msctl systems create [FILE|-] [--poweron]
       msctl systems ls
       msctl systems get ID
       msctl systems rm ID...
       msctl systems poweron ID | poweroff ID | reset ID
       msctl systems link ID LINK [--down] [--loss P] [--corrupt P] [--delay DUR] [--clean]
       msctl systems capture ID LINK [--after SEQ] [-o FILE]

A system is boards linked together (UART and Ethernet links), each node an
ordinary session. create reads the system's JSON spec (as POST /api/v1/systems
takes it: {"name", "nodes": [{"name", "board_config", "program_id"}], "links":
[{"type": "uart", "ends": ["a:uart0", "b:uart0"]}]}) from FILE, or from stdin
when FILE is - or absent, powers it on with --poweron, and prints its id. rm
deletes systems with their node sessions and links (delete does the same, list
is ls).

link shows a link's faults and counters; with any fault flag it sets the link's
faults to exactly those given (the others clean): --down drops everything,
--loss and --corrupt are probabilities from 0 to 1, --delay a duration (5ms);
--clean makes the link clean again. capture writes what crossed the link to
FILE, or to stdout: a UART link's records after --after as JSON, an Ethernet
link's frames as a pcap file (tshark -r reads it).
`

func systemCommands() map[string]command {
	action := func(name string) command {
		return func(ctx context.Context, e *env, args []string) error {
			return runSystemAction(ctx, e, args, name)
		}
	}
	return map[string]command{
		"create":   runSystemCreate,
		"ls":       runSystemList,
		"list":     runSystemList,
		"get":      runSystemGet,
		"rm":       runSystemRemove,
		"delete":   runSystemRemove,
		"poweron":  action("poweron"),
		"poweroff": action("poweroff"),
		"reset":    action("reset"),
		"link":     runSystemLink,
		"capture":  runSystemCapture,
	}
}

func runSystemCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags("systems create")
	poweron := fs.Bool("poweron", false, "")
	pos, err := e.parse(fs, args, systemsUsage, 0, 1)
	if err != nil {
		return err
	}
	from, r := "stdin", e.in
	if len(pos) == 1 && pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		from, r = pos[0], f
	}
	// A terminal on stdin would wait for a spec typed by hand: more likely
	// a forgotten FILE.
	if r == nil || (from == "stdin" && isTerminal(r)) {
		return &usageError{"systems create needs a spec FILE, or the spec piped on stdin", systemsUsage}
	}
	spec, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
	if err != nil {
		return fmt.Errorf("read the spec from %s: %w", from, err)
	}
	// Checked here only for being JSON: the server says what a spec may
	// hold (it knows fields this msctl may not), so the spec goes as it is.
	if len(spec) > 1<<20 {
		return fmt.Errorf("the spec in %s is over 1 MiB", from)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(spec, &obj); err != nil {
		return fmt.Errorf("the spec in %s is not a JSON object: %w", from, err)
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var s model.System
	if err := c.Do(ctx, http.MethodPost, client.Path("systems"), json.RawMessage(spec), &s); err != nil {
		return err
	}
	// A system left behind by a failed power on is the user's to see: its
	// id is printed with the error.
	if *poweron {
		if err := c.Do(ctx, http.MethodPost, client.Path("systems", s.ID, "poweron"), nil, &s); err != nil {
			return fmt.Errorf("system %s created, but: %w", s.ID, err)
		}
	}
	return e.emit(s, func(w io.Writer) { fmt.Fprintln(w, s.ID) })
}

func runSystemList(ctx context.Context, e *env, args []string) error {
	_, c, err := e.connect(e.flags("systems ls"), args, systemsUsage, 0, 0)
	if err != nil {
		return err
	}
	ss, err := client.List[model.System](ctx, c, client.Path("systems"), "systems")
	if err != nil {
		return err
	}
	return e.emit(nonNil(ss), func(w io.Writer) {
		rows := make([][]string, len(ss))
		for i, s := range ss {
			names := make([]string, len(s.Nodes))
			for j, n := range s.Nodes {
				names[j] = n.Name
			}
			rows[i] = []string{s.ID, s.Name, string(s.State), strings.Join(names, ","), strconv.Itoa(len(s.Links)), s.CreatedAt.Local().Format("2006-01-02 15:04:05")}
		}
		table(w, []string{"ID", "NAME", "STATE", "NODES", "LINKS", "CREATED"}, rows)
	})
}

func runSystemGet(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags("systems get"), args, systemsUsage, 1, 1)
	if err != nil {
		return err
	}
	var s model.System
	if err := c.Do(ctx, http.MethodGet, client.Path("systems", pos[0]), nil, &s); err != nil {
		return err
	}
	return e.emit(s, func(w io.Writer) { describeSystem(w, s) })
}

func describeSystem(w io.Writer, s model.System) {
	state := string(s.State)
	if s.Reason != "" {
		state += " (" + s.Reason + ")"
	}
	for _, r := range [][]string{
		{"id:", s.ID}, {"name:", s.Name}, {"state:", state}, {"time:", first(s.Time, model.TimeRealtime)},
		{"runner:", first(s.RunnerID, "-")}, {"created:", s.CreatedAt.Local().Format("2006-01-02 15:04:05")},
	} {
		fmt.Fprintf(w, "%-9s %s\n", r[0], r[1])
	}
	fmt.Fprintln(w)
	rows := make([][]string, len(s.Nodes))
	for i, n := range s.Nodes {
		rows[i] = []string{n.Name, n.SessionID, n.Machine, first(n.ProgramID, "-"), first(string(n.State), "-")}
	}
	table(w, []string{"NODE", "SESSION", "MACHINE", "PROGRAM", "STATE"}, rows)
	if len(s.Links) == 0 {
		return
	}
	fmt.Fprintln(w)
	rows = make([][]string, len(s.Links))
	for i, l := range s.Links {
		rows[i] = []string{l.Name, l.Type, linkJoins(l), faultsText(l.Faults)}
	}
	table(w, []string{"LINK", "TYPE", "JOINS", "FAULTS"}, rows)
}

// linkJoins is what a link joins: a UART link's two ports, an Ethernet
// link's nodes.
func linkJoins(l model.SystemLink) string {
	if len(l.Ends) > 0 {
		return strings.Join(l.Ends, " <-> ")
	}
	return strings.Join(l.Nodes, ",")
}

func faultsText(f model.LinkFaults) string {
	var out []string
	if f.Down {
		out = append(out, "down")
	}
	if f.Loss != 0 {
		out = append(out, "loss "+strconv.FormatFloat(f.Loss, 'g', -1, 64))
	}
	if f.Corrupt != 0 {
		out = append(out, "corrupt "+strconv.FormatFloat(f.Corrupt, 'g', -1, 64))
	}
	if f.Delay != "" {
		out = append(out, "delay "+f.Delay)
	}
	if len(out) == 0 {
		return "clean"
	}
	return strings.Join(out, ", ")
}

func runSystemRemove(ctx context.Context, e *env, args []string) error {
	return removeAll(ctx, e, args, "systems rm", systemsUsage, func(id string) string { return client.Path("systems", id) })
}

// runSystemAction is poweron, poweroff or reset: it prints the new state.
func runSystemAction(ctx context.Context, e *env, args []string, action string) error {
	pos, c, err := e.connect(e.flags("systems "+action), args, systemsUsage, 1, 1)
	if err != nil {
		return err
	}
	var s model.System
	if err := c.Do(ctx, http.MethodPost, client.Path("systems", pos[0], action), nil, &s); err != nil {
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

// linkStatus is GET /api/v1/systems/{id}/links/{link}: the link as the
// system defines it and, once its runner carries it, the counters (a
// UART link's per direction, an Ethernet link's per node), in the
// runner's own types.
type linkStatus struct {
	SystemID string             `json:"system_id"`
	Link     model.SystemLink   `json:"link"`
	UART     *runnerapi.Link    `json:"uart,omitempty"`
	Ethernet *runnerapi.Segment `json:"ethernet,omitempty"`
}

func runSystemLink(ctx context.Context, e *env, args []string) error {
	fs := e.flags("systems link")
	var f model.LinkFaults
	fs.BoolVar(&f.Down, "down", false, "")
	fs.Float64Var(&f.Loss, "loss", 0, "")
	fs.Float64Var(&f.Corrupt, "corrupt", 0, "")
	fs.StringVar(&f.Delay, "delay", "", "")
	clean := fs.Bool("clean", false, "")
	pos, err := e.parse(fs, args, systemsUsage, 2, 2)
	if err != nil {
		return err
	}
	set := false
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "down", "loss", "corrupt", "delay":
			set = true
		}
	})
	if *clean && set {
		return &usageError{"systems link: --clean makes the link clean; give it without fault flags", systemsUsage}
	}
	// The server checks the faults too; checking here first says what is
	// wrong before anything is sent.
	if _, err := f.Check(); err != nil {
		return &usageError{"systems link: " + err.Error(), systemsUsage}
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	path := client.Path("systems", pos[0], "links", pos[1])
	var raw json.RawMessage
	if set || *clean {
		err = c.Do(ctx, http.MethodPost, path, f, &raw)
	} else {
		err = c.Do(ctx, http.MethodGet, path, nil, &raw)
	}
	if err != nil {
		return err
	}
	var st linkStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("link %s of system %s: %w", pos[1], pos[0], err)
	}
	return e.emit(raw, func(w io.Writer) { describeLink(w, st) })
}

func describeLink(w io.Writer, st linkStatus) {
	l := st.Link
	for _, r := range [][]string{{"link:", l.Name}, {"type:", l.Type}, {"joins:", linkJoins(l)}, {"faults:", faultsText(l.Faults)}} {
		fmt.Fprintf(w, "%-8s %s\n", r[0], r[1])
	}
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	switch {
	case st.UART != nil:
		fmt.Fprintf(w, "%-8s %v\n\n", "attached:", st.UART.Attached)
		rows := make([][]string, len(st.UART.Directions))
		for i, d := range st.UART.Directions {
			rows[i] = []string{d.From + " -> " + d.To, u(d.Bytes), u(d.Delivered), u(d.Dropped), u(d.Lost), u(d.Corrupted)}
		}
		table(w, []string{"DIRECTION", "BYTES", "DELIVERED", "DROPPED", "LOST", "CORRUPTED"}, rows)
	case st.Ethernet != nil:
		fmt.Fprintln(w)
		rows := make([][]string, len(st.Ethernet.Ports))
		for i, p := range st.Ethernet.Ports {
			rows[i] = []string{p.Session, strconv.FormatBool(p.Attached), u(p.In), u(p.Out), u(p.Dropped), u(p.Lost), u(p.Corrupted), u(p.Overflow)}
		}
		table(w, []string{"SESSION", "ATTACHED", "IN", "OUT", "DROPPED", "LOST", "CORRUPTED", "OVERFLOW"}, rows)
	default:
		fmt.Fprintf(w, "%-8s %s\n", "carried:", "not yet (the system was not powered on)")
	}
}

func runSystemCapture(ctx context.Context, e *env, args []string) error {
	fs := e.flags("systems capture")
	after := fs.Uint64("after", 0, "")
	out := fs.String("o", "", "")
	pos, c, err := e.connect(fs, args, systemsUsage, 2, 2)
	if err != nil {
		return err
	}
	path := client.Path("systems", pos[0], "links", pos[1], "capture")
	if *after > 0 {
		path = client.Query(path, url.Values{"after": {strconv.FormatUint(*after, 10)}})
	}
	data, err := c.Get(ctx, path)
	if err != nil {
		return err
	}
	if *out == "" {
		// A pcap file is binary: a terminal gets a hint instead.
		if isTerminal(e.out) && !json.Valid(data) {
			return &usageError{"the capture of an Ethernet link is a pcap file: give -o FILE", systemsUsage}
		}
		_, err := e.out.Write(data)
		return err
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		return err
	}
	return e.emit(map[string]any{"file": *out, "bytes": len(data)}, nil)
}
