package session

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
	"github.com/machineserver/machineserver/shared/state"
)

// Systems: boards that run as one thing. Each node is an ordinary session
// (its console, debugger, coverage and snapshots work as any session's),
// created together, all on one runner, and joined by links the runner owns
// (runnerapi PutLink and PutSegment): a UART link between two nodes' ports,
// an Ethernet link through a switch between two or more nodes' NICs. A
// system powers on as one: every node starts paused, the links are put,
// and the nodes are resumed together.

// MaxSystemNodes bounds a system's nodes.
const MaxSystemNodes = 16

// Systems is GET /api/v1/systems.
type Systems struct {
	Systems  []model.System `json:"systems"`
	Total    int            `json:"total"`
	Page     int            `json:"page"`
	PageSize int            `json:"page_size"`
}

var nodeName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// plan is a validated system: its nodes' sessions-to-be and their boards.
type plan struct {
	sys    model.System
	boards []board.Board
	progs  []runnerapi.Program
}

// CreateSystem validates the system, places every node on one runner and
// creates the nodes' sessions (all or none) with their programs loaded.
// The system is created stopped: power it on as one.
func (svc *Service) CreateSystem(ctx context.Context, in model.SystemSpec) (model.System, error) {
	p, err := svc.planSystem(ctx, in)
	if err != nil {
		return model.System{}, err
	}
	r, err := svc.pickSystemRunner(ctx, p.sys.Nodes)
	if err != nil {
		return model.System{}, err
	}
	sys := p.sys
	sys.RunnerID = r.ID
	var made []model.Session
	undo := func() {
		for _, s := range made {
			svc.remove(context.WithoutCancel(ctx), s)
		}
	}
	for i, n := range sys.Nodes {
		s, err := svc.makeNode(ctx, sys, in.Nodes[i], p.boards[i], p.progs[i])
		if err != nil {
			undo()
			return model.System{}, About("node "+n.Name, err)
		}
		made = append(made, s)
		sys.Nodes[i].SessionID = s.ID
	}
	if err := svc.d.State.PutSystem(ctx, sys); err != nil {
		undo()
		return model.System{}, err
	}
	if rc, err := svc.Client(r); err == nil {
		// Best effort, as LoadProgram does: prelaunched paused machines
		// make the power on fast.
		for i, s := range made {
			if err := rc.Prepare(ctx, s.ID, nodeStart(s, p.progs[i], false)); err != nil {
				svc.d.Log.Warn("prepare", "session", s.ID, "err", err)
			}
		}
	}
	svc.publishSystem(events.TypeSystemCreated, sys)
	return sys, nil
}

// planSystem validates a system against the boards the runners offer.
func (svc *Service) planSystem(ctx context.Context, in model.SystemSpec) (plan, error) {
	if err := validName(in.Name); err != nil {
		return plan{}, err
	}
	switch in.Time {
	case "":
		in.Time = model.TimeRealtime
	case model.TimeRealtime, model.TimeVirtual:
	default:
		return plan{}, fail.Invalid(`time %q is not a clock; allowed: "realtime", "virtual"`, in.Time)
	}
	if len(in.Nodes) == 0 || len(in.Nodes) > MaxSystemNodes {
		return plan{}, fail.Invalid("a system has 1 to %d nodes; got %d", MaxSystemNodes, len(in.Nodes))
	}
	caps, err := svc.Capabilities(ctx)
	if err != nil {
		return plan{}, err
	}
	now := time.Now().UTC()
	id := model.NewID()
	seed := in.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	p := plan{sys: model.System{
		ID: id, Tenant: auth.Tenant(ctx), Name: in.Name, Time: in.Time, State: model.StateCreated,
		Seed: seed, Nodes: []model.SystemNode{}, Links: []model.SystemLink{}, CreatedAt: now, UpdatedAt: now,
	}}
	index := map[string]int{}
	for i, n := range in.Nodes {
		if !nodeName.MatchString(n.Name) {
			return plan{}, fail.Invalid("nodes[%d].name %q must be 1 to 32 lowercase letters, digits, '-' or '_' (links name ports as node:port)", i, n.Name)
		}
		if _, dup := index[n.Name]; dup {
			return plan{}, fail.Invalid("node name %q is used twice; node names are unique in a system", n.Name)
		}
		index[n.Name] = i
		if n.ProgramID == "" {
			return plan{}, fail.Invalid("node %s: program_id is required (upload one with POST /api/v1/programs)", n.Name)
		}
		if err := runnerapi.CheckLimits(n.Limits); err != nil {
			return plan{}, About("node "+n.Name, err)
		}
		if err := checkLimits(n.Limits, caps); err != nil {
			return plan{}, About("node "+n.Name, err)
		}
		be, b, err := Resolve(caps, n.Backend, n.BoardConfig)
		if err != nil {
			return plan{}, About("node "+n.Name, err)
		}
		// Virtual time is the instruction counter's, which the probe found
		// working or not per board (the deterministic feature).
		if err := b.Require(board.FeatureDeterministic); in.Time == model.TimeVirtual && err != nil {
			return plan{}, fail.Unprocessable("node %s: time \"virtual\" needs the instruction counter: %v", n.Name, err)
		}
		// The program is checked against the board as a load would.
		rp, _, err := svc.place(ctx, model.Session{ID: n.Name, Backend: be.Name, Machine: b.Name}, n.ProgramID)
		if err != nil {
			return plan{}, About("node "+n.Name, err)
		}
		in.Nodes[i].Backend = be.Name
		p.boards, p.progs = append(p.boards, b), append(p.progs, rp)
		p.sys.Nodes = append(p.sys.Nodes, model.SystemNode{Name: n.Name, Machine: b.Name, ProgramID: n.ProgramID})
	}
	if err := p.addLinks(in.Links, index); err != nil {
		return plan{}, err
	}
	return p, nil
}

// addLinks validates the links and names them; an Ethernet member's NIC
// gets its address in the system.
func (p *plan) addLinks(links []model.LinkSpec, index map[string]int) error {
	taken := map[string]string{} // "node:port" or "node:nic" -> link name
	names := map[string]bool{}
	for i, l := range links {
		if l.Name == "" {
			l.Name = fmt.Sprintf("link%d", i)
		}
		if !nodeName.MatchString(l.Name) {
			return fail.Invalid("links[%d].name %q must be 1 to 32 lowercase letters, digits, '-' or '_'", i, l.Name)
		}
		if names[l.Name] {
			return fail.Invalid("link name %q is used twice; link names are unique in a system", l.Name)
		}
		names[l.Name] = true
		sl := model.SystemLink{Name: l.Name, Type: l.Type, RunnerLink: model.NewID()}
		if l.Faults != nil {
			if _, err := l.Faults.Check(); err != nil {
				return fail.Invalid("link %s: %v", l.Name, err)
			}
			sl.Faults = *l.Faults
		}
		take := func(what string) error {
			if o, ok := taken[what]; ok {
				return fail.Invalid("link %s: %s is in link %s already; a port or NIC takes one link", l.Name, what, o)
			}
			taken[what] = l.Name
			return nil
		}
		switch l.Type {
		case model.LinkUART:
			if len(l.Ends) != 2 || len(l.Nodes) != 0 {
				return fail.Invalid(`link %s: a uart link has two ends, ["node:port", "node:port"]; got %d ends`, l.Name, len(l.Ends))
			}
			for _, e := range l.Ends {
				end, err := p.uartEnd(l.Name, e, index)
				if err != nil {
					return err
				}
				if err := take(end); err != nil {
					return err
				}
				sl.Ends = append(sl.Ends, end)
			}
		case model.LinkEthernet:
			if len(l.Nodes) < 2 || len(l.Ends) != 0 {
				return fail.Invalid(`link %s: an ethernet link joins two or more nodes, ["gw", "n2"]; got %d nodes`, l.Name, len(l.Nodes))
			}
			for _, n := range l.Nodes {
				j, ok := index[n]
				if !ok {
					return fail.Invalid("link %s: node %q is not a node of the system (nodes: %s)", l.Name, n, strings.Join(p.nodeNames(), ", "))
				}
				if b := p.boards[j]; !b.Ethernet {
					return fail.Unprocessable("link %s: node %s's board %s has no Ethernet NIC; boards with one: %s", l.Name, n, b.Name, strings.Join(p.ethernetBoards(), ", "))
				}
				if err := take(n + ":nic"); err != nil {
					return err
				}
				p.sys.Nodes[j].MAC = nodeMAC(p.sys.ID, j)
				sl.Nodes = append(sl.Nodes, n)
			}
		default:
			return fail.Invalid("link %s: type %q is not a link type; allowed: %q, %q", l.Name, l.Type, model.LinkUART, model.LinkEthernet)
		}
		p.sys.Links = append(p.sys.Links, sl)
	}
	return nil
}

// uartEnd resolves "node:port" to the node and the seam's port name; the
// port may be named as the seam does (uart1) or as the board does (usart2).
func (p *plan) uartEnd(link, end string, index map[string]int) (string, error) {
	node, port, ok := strings.Cut(end, ":")
	j, known := index[node]
	if !ok || !known {
		return "", fail.Invalid("link %s: end %q is not node:port of a node of the system (nodes: %s)", link, end, strings.Join(p.nodeNames(), ", "))
	}
	b := p.boards[j]
	var ports []string
	for _, u := range b.UARTs {
		if port == u.Port || port == u.Name {
			return node + ":" + u.Port, nil
		}
		ports = append(ports, u.Port)
	}
	return "", fail.Invalid("link %s: board %s of node %s has no port %q; its ports: %s", link, b.Name, node, port, strings.Join(ports, ", "))
}

func (p *plan) nodeNames() []string {
	var out []string
	for _, n := range p.sys.Nodes {
		out = append(out, n.Name)
	}
	return out
}

func (p *plan) ethernetBoards() []string {
	// Every node's boards came from one catalog; the names offered are
	// what the user can pick from.
	seen := []string{}
	for _, b := range p.boards {
		if b.Ethernet && !slices.Contains(seen, b.Name) {
			seen = append(seen, b.Name)
		}
	}
	if len(seen) == 0 {
		return []string{"mps2-an385 and the other mps2 boards (see GET /api/v1/capabilities, \"ethernet\": true)"}
	}
	return seen
}

// nodeMAC is node j's NIC address: locally administered, unique in the
// system (its switch is the system's own).
func nodeMAC(systemID string, j int) string {
	return fmt.Sprintf("02:%s:%s:%s:%s:%02x", systemID[0:2], systemID[2:4], systemID[4:6], systemID[6:8], j+1)
}

// pickSystemRunner is the first live runner that offers every node's board
// and has room for all of them at once.
func (svc *Service) pickSystemRunner(ctx context.Context, nodes []model.SystemNode) (state.Runner, error) {
	rs, err := svc.d.State.Runners(ctx)
	if err != nil {
		return state.Runner{}, err
	}
	largest := 0
	for _, r := range rs {
		if !slices.ContainsFunc(nodes, func(n model.SystemNode) bool { return !offers(r, n.Machine) }) {
			largest = max(largest, r.Capacity)
			if r.Free() >= len(nodes) {
				return r, nil
			}
		}
	}
	if largest < len(nodes) {
		e := fail.Unprocessable("the system has %d nodes, but no runner that offers their boards holds more than %d machines; a system runs on one runner", len(nodes), largest)
		e.Code = "system_too_large"
		return state.Runner{}, e
	}
	e := fail.Unavailable("no runner has room for the system's %d nodes now; try again later", len(nodes))
	e.Code = "no_capacity"
	return state.Runner{}, e
}

func offers(r state.Runner, machine string) bool {
	return slices.ContainsFunc(r.Capabilities.Backends, func(be board.Backend) bool {
		_, has := be.Board(machine)
		return has
	})
}

// makeNode creates a node's session on the system's runner with its
// program loaded.
func (svc *Service) makeNode(ctx context.Context, sys model.System, n model.NodeSpec, b board.Board, rp runnerapi.Program) (model.Session, error) {
	now := time.Now().UTC()
	s := model.Session{
		ID: model.NewID(), Tenant: sys.Tenant, Name: sys.Name + "/" + n.Name, Backend: n.Backend, BoardConfig: n.BoardConfig,
		Machine: b.Name, State: model.StateCreated, RunnerID: sys.RunnerID, CreatedAt: now, UpdatedAt: now,
		Limits: n.Limits, ProgramID: n.ProgramID, SystemID: sys.ID, VirtualTime: sys.Time == model.TimeVirtual,
	}
	for _, sn := range sys.Nodes {
		if sn.Name == n.Name {
			s.MAC = sn.MAC
		}
	}
	s.Warnings = svc.bootWarnings(ctx, rp, b)
	if err := svc.store(ctx, s); err != nil {
		return s, err
	}
	return s, nil
}

// nodeStart is what the runner starts a node's machine with.
func nodeStart(s model.Session, rp runnerapi.Program, halted bool) runnerapi.StartRequest {
	req := runnerapi.StartRequest{Backend: s.Backend, Machine: s.Machine, Program: rp, Halted: halted, Coverage: s.Coverage, Limits: s.Limits,
		Deterministic: s.Deterministic, VirtualTime: s.VirtualTime}
	if s.MAC != "" {
		req.NIC = &runnerapi.NIC{MAC: s.MAC}
	}
	return req
}

// remove deletes a session: its machine, its record and its quota slot.
func (svc *Service) remove(ctx context.Context, s model.Session) error {
	rc, err := svc.runner(ctx, &s, false)
	if err != nil {
		return err
	}
	if rc != nil {
		if err := rc.Delete(ctx, s.ID); err != nil {
			return err
		}
	}
	if err := svc.d.State.DeleteSession(ctx, s.ID); err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	svc.release(ctx, s)
	svc.publish(events.TypeSessionDeleted, s)
	return nil
}

// System returns one of the caller's systems, each node with its session's
// state now.
func (svc *Service) System(ctx context.Context, id string) (model.System, error) {
	sys, err := svc.ownSystem(ctx, id)
	if err != nil {
		return sys, err
	}
	return svc.withNodeStates(ctx, sys), nil
}

// withNodeStates is sys with each node's session state now.
func (svc *Service) withNodeStates(ctx context.Context, sys model.System) model.System {
	for i, n := range sys.Nodes {
		if s, err := svc.Get(ctx, n.SessionID); err == nil {
			sys.Nodes[i].State = s.State
		}
	}
	return sys
}

func (svc *Service) ownSystem(ctx context.Context, id string) (model.System, error) {
	return auth.Lookup(ctx, "system", id, svc.d.State.GetSystem, func(s model.System) string { return s.Tenant })
}

// ListSystems returns a page of the caller's systems, oldest first.
func (svc *Service) ListSystems(ctx context.Context, page, size int) (Systems, error) {
	all, _, err := svc.d.State.ListSystems(ctx, 0, math.MaxInt32)
	if err != nil {
		return Systems{}, err
	}
	own, total := auth.OwnPage(ctx, all, func(s model.System) string { return s.Tenant }, page, size)
	if own == nil {
		own = []model.System{}
	}
	return Systems{Systems: own, Total: total, Page: page, PageSize: size}, nil
}

// nodes are the system's node sessions, in node order.
func (svc *Service) nodes(ctx context.Context, sys model.System) ([]model.Session, error) {
	out := make([]model.Session, len(sys.Nodes))
	for i, n := range sys.Nodes {
		s, err := svc.Get(ctx, n.SessionID)
		if err != nil {
			return nil, About("node "+n.Name+" (session "+n.SessionID+")", err)
		}
		out[i] = s
	}
	return out, nil
}

// systemRunner is a client of the system's runner. A system whose runner
// is gone (none of its machines survived it) is placed again, all nodes
// on one live runner, when place is set; otherwise the client is nil.
func (svc *Service) systemRunner(ctx context.Context, sys *model.System, place bool) (*runnerapi.Client, error) {
	r, err := svc.d.State.Runner(ctx, sys.RunnerID)
	if errors.Is(err, state.ErrNotFound) {
		if !place {
			return nil, nil
		}
		if r, err = svc.pickSystemRunner(ctx, sys.Nodes); err != nil {
			return nil, err
		}
		for _, n := range sys.Nodes {
			if _, err := svc.d.State.UpdateSession(ctx, n.SessionID, func(x *model.Session) error {
				x.RunnerID = r.ID
				return nil
			}); err != nil {
				return nil, err
			}
		}
		if *sys, err = svc.d.State.UpdateSystem(ctx, sys.ID, func(x *model.System) error {
			x.RunnerID = r.ID
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	return svc.Client(r)
}

// PowerOnSystem starts every node paused, puts the links on the runner
// and then resumes all nodes at once, so none runs before its peers can
// hear it. A node that fails to start stops the ones started.
func (svc *Service) PowerOnSystem(ctx context.Context, id string) (model.System, error) {
	sys, err := svc.ownSystem(ctx, id)
	if err != nil {
		return sys, err
	}
	return svc.StartSystem(ctx, sys, false, func(ctx context.Context, rc *runnerapi.Client, _ int, s model.Session) error {
		rp, err := svc.program(ctx, s, s.ProgramID)
		if err == nil {
			_, err = rc.Start(ctx, s.ID, nodeStart(s, rp, true))
		}
		return err
	})
}

// NodeStart brings the i-th node's machine up halted on the system's
// runner rc: a power on, or a restore of a saved state.
type NodeStart func(ctx context.Context, rc *runnerapi.Client, i int, s model.Session) error

// StartSystem brings every node up halted with start, in parallel, puts
// the links on the runner, then resumes every node at once. With replace
// unset, a system with a node running is refused; with it set (a restore)
// the running nodes are paused and the links taken off the runner first,
// so no byte of the old run reaches a new machine, and a failure partway
// leaves the system in error with every node stopped.
func (svc *Service) StartSystem(ctx context.Context, sys model.System, replace bool, start NodeStart) (model.System, error) {
	ss, err := svc.nodes(ctx, sys)
	if err != nil {
		return sys, err
	}
	var running []string
	for i, s := range ss {
		if s.State == model.StateRunning {
			running = append(running, sys.Nodes[i].Name)
		}
	}
	if len(running) > 0 && !replace {
		return sys, fail.Conflict("system %s has nodes running (%s); power it off first, or reset it", sys.ID, strings.Join(running, ", "))
	}
	rc, err := svc.systemRunner(ctx, &sys, true)
	if err != nil {
		return sys, err
	}
	t0 := time.Now()
	// A restore puts the links anew even on a stopped system: a link the
	// runner still defines would keep the faults it had.
	if replace {
		if err := svc.quiesce(ctx, rc, sys, ss); err != nil {
			return sys, err
		}
	}
	// The nodes start in parallel: each is a start of its own emulator.
	started := make([]bool, len(ss))
	errs := each(ss, func(i int, s model.Session) error {
		err := About("node "+sys.Nodes[i].Name, start(ctx, rc, i, s))
		started[i] = err == nil
		return err
	})
	undo := func(err error) (model.System, error) {
		for i, s := range ss {
			if !started[i] && (!replace || s.State != model.StateRunning) {
				continue
			}
			if err := rc.Stop(context.WithoutCancel(ctx), s.ID); err != nil && !runnerapi.IsNotFound(err) {
				svc.d.Log.Warn("stop a node after a failed system start", "session", s.ID, "err", err)
			}
		}
		if replace {
			svc.d.State.UpdateSystem(context.WithoutCancel(ctx), sys.ID, func(x *model.System) error {
				x.State, x.Reason = model.StateError, err.Error()
				return nil
			})
		}
		return sys, err
	}
	if err := errors.Join(errs...); err != nil {
		return undo(err)
	}
	t1 := time.Now()
	if err := svc.putLinks(ctx, rc, sys); err != nil {
		return undo(err)
	}
	t2 := time.Now()
	// Resumed together: each resume is a monitor command on its own
	// emulator, so in parallel they land within a millisecond or so.
	errs = each(ss, func(_ int, s model.Session) error { return rc.Resume(ctx, s.ID) })
	if err := errors.Join(errs...); err != nil {
		return undo(About("resume the nodes", err))
	}
	if err := svc.keepTime(ctx, rc, sys); err != nil {
		return undo(err)
	}
	svc.d.Log.Info("system started", "system", sys.ID, "nodes", len(ss), "replace", replace, "start_ms", ms(t1.Sub(t0)), "links_ms", ms(t2.Sub(t1)), "resume_ms", ms(time.Since(t2)))
	return svc.setSystemState(ctx, sys, model.StateRunning, events.TypeSystemStarted)
}

// quiesce pauses the system's running nodes and takes its links off the
// runner, so nothing a node sent before it paused reaches another.
func (svc *Service) quiesce(ctx context.Context, rc *runnerapi.Client, sys model.System, ss []model.Session) error {
	if err := svc.releaseTime(ctx, rc, sys); err != nil {
		return err
	}
	if err := pauseNodes(ctx, rc, sys, ss); err != nil {
		return err
	}
	return svc.deleteLinks(ctx, rc, sys)
}

// pauseNodes pauses the system's running nodes (ss, in node order) at
// once.
func pauseNodes(ctx context.Context, rc *runnerapi.Client, sys model.System, ss []model.Session) error {
	return errors.Join(each(ss, func(i int, s model.Session) error {
		if s.State != model.StateRunning {
			return nil
		}
		return About("pause node "+sys.Nodes[i].Name, rc.Pause(ctx, s.ID))
	})...)
}

// PauseSystem pauses every running node of the system at once (for a
// system snapshot) and returns the system, its node sessions and its
// runner's client; resume resumes them all again.
func (svc *Service) PauseSystem(ctx context.Context, id string) (sys model.System, ss []model.Session, resume func() error, err error) {
	sys, ss, err = svc.runningNodes(ctx, id, "power it on first")
	if err != nil {
		return sys, nil, nil, err
	}
	if len(ss) != len(sys.Nodes) {
		return sys, nil, nil, fail.Conflict("system %s has %d of its %d nodes running; power it off and on again so all run together", id, len(ss), len(sys.Nodes))
	}
	rc, err := svc.systemRunner(ctx, &sys, false)
	if err == nil && rc == nil {
		err = fail.Unavailable("runner %s of system %s is gone", sys.RunnerID, id)
	}
	if err != nil {
		return sys, nil, nil, err
	}
	resume = func() error {
		bg := context.WithoutCancel(ctx)
		if err := errors.Join(each(ss, func(_ int, s model.Session) error { return rc.Resume(bg, s.ID) })...); err != nil {
			return err
		}
		return svc.keepTime(bg, rc, sys)
	}
	// The barrier would resume a node it holds under the capture.
	if err := svc.releaseTime(ctx, rc, sys); err != nil {
		return sys, nil, nil, err
	}
	if err := pauseNodes(ctx, rc, sys, ss); err != nil {
		if rerr := resume(); rerr != nil {
			svc.d.Log.Warn("resume after a failed pause", "system", id, "err", rerr)
		}
		return sys, nil, nil, err
	}
	return sys, ss, resume, nil
}

// putLinks puts the system's links on its runner. Putting one the runner
// has already is harmless; a restarted runner gets them back.
func (svc *Service) putLinks(ctx context.Context, rc *runnerapi.Client, sys model.System) error {
	for _, l := range sys.Links {
		var err error
		switch l.Type {
		case model.LinkUART:
			var req runnerapi.LinkRequest
			for k, e := range l.Ends {
				node, port, _ := strings.Cut(e, ":")
				req.Ends[k] = runnerapi.LinkEnd{Session: sys.Node(node).SessionID, Port: port}
			}
			req.Faults, req.Seed = l.Faults, sys.Seed
			_, err = rc.PutLink(ctx, l.RunnerLink, req)
		case model.LinkEthernet:
			req := runnerapi.SegmentRequest{Faults: l.Faults, Seed: sys.Seed}
			for _, n := range l.Nodes {
				req.Members = append(req.Members, sys.Node(n).SessionID)
			}
			_, err = rc.PutSegment(ctx, l.RunnerLink, req)
		}
		if err != nil {
			return About("link "+l.Name, err)
		}
	}
	return nil
}

func (svc *Service) setSystemState(ctx context.Context, sys model.System, st model.State, typ string) (model.System, error) {
	sys, err := svc.d.State.UpdateSystem(ctx, sys.ID, func(x *model.System) error {
		x.State, x.Reason = st, ""
		return nil
	})
	if err != nil {
		return sys, err
	}
	// The event carries what the answer does: a client following events
	// sees the nodes' states too.
	sys = svc.withNodeStates(ctx, sys)
	svc.publishSystem(typ, sys)
	return sys, nil
}

// PowerOffSystem stops every running node.
func (svc *Service) PowerOffSystem(ctx context.Context, id string) (model.System, error) {
	sys, ss, err := svc.runningNodes(ctx, id, "power it on first")
	if err != nil {
		return sys, err
	}
	if rc, err := svc.systemRunner(ctx, &sys, false); err != nil {
		return sys, err
	} else if rc != nil {
		if err := svc.releaseTime(ctx, rc, sys); err != nil {
			return sys, err
		}
	}
	for _, s := range ss {
		if _, err := svc.PowerOff(ctx, s.ID); err != nil && !errors.Is(err, fail.ErrConflict) {
			return sys, err
		}
	}
	return svc.setSystemState(ctx, sys, model.StateStopped, events.TypeSystemStopped)
}

// ResetSystem resets every running node.
func (svc *Service) ResetSystem(ctx context.Context, id string) (model.System, error) {
	sys, ss, err := svc.runningNodes(ctx, id, "power it on first")
	if err != nil {
		return sys, err
	}
	for _, s := range ss {
		if _, err := svc.Reset(ctx, s.ID); err != nil && !errors.Is(err, fail.ErrConflict) {
			return sys, err
		}
	}
	return svc.setSystemState(ctx, sys, model.StateRunning, events.TypeSystemRebooted)
}

// runningNodes are the system's running nodes, or a conflict when none
// runs (hint says what to do).
func (svc *Service) runningNodes(ctx context.Context, id, hint string) (model.System, []model.Session, error) {
	sys, err := svc.ownSystem(ctx, id)
	if err != nil {
		return sys, nil, err
	}
	ss, err := svc.nodes(ctx, sys)
	if err != nil {
		return sys, nil, err
	}
	ss = slices.DeleteFunc(ss, func(s model.Session) bool { return s.State != model.StateRunning })
	if len(ss) == 0 {
		return sys, nil, fail.Conflict("no node of system %s is running; %s", id, hint)
	}
	return sys, ss, nil
}

// DeleteSystem removes the system's links from its runner, then its nodes'
// sessions (stopping their machines), then the system.
func (svc *Service) DeleteSystem(ctx context.Context, id string) (model.System, error) {
	sys, err := svc.ownSystem(ctx, id)
	if err != nil {
		return sys, err
	}
	rc, err := svc.systemRunner(ctx, &sys, false)
	if err != nil {
		return sys, err
	}
	if rc != nil {
		if err := svc.deleteLinks(ctx, rc, sys); err != nil {
			return sys, err
		}
	}
	for _, n := range sys.Nodes {
		s, err := svc.d.State.GetSession(ctx, n.SessionID)
		if errors.Is(err, state.ErrNotFound) {
			continue
		}
		if err == nil {
			err = svc.remove(ctx, s)
		}
		if err != nil {
			return sys, About("node "+n.Name, err)
		}
	}
	if err := svc.d.State.DeleteSystem(ctx, id); err != nil && !errors.Is(err, state.ErrNotFound) {
		return sys, err
	}
	svc.publishSystem(events.TypeSystemDeleted, sys)
	return sys, nil
}

// keepTime has the runner keep a virtual-time system's nodes' clocks
// together (a barrier that pauses a node running ahead), from a start
// that resumed them together. One node needs no barrier.
func (svc *Service) keepTime(ctx context.Context, rc *runnerapi.Client, sys model.System) error {
	if sys.Time != model.TimeVirtual || len(sys.Nodes) < 2 {
		return nil
	}
	req := runnerapi.ClockRequest{}
	for _, n := range sys.Nodes {
		req.Sessions = append(req.Sessions, n.SessionID)
	}
	_, err := rc.PutClock(ctx, sys.ID, req)
	return About("keep the nodes' virtual clocks together", err)
}

// releaseTime stops the system's barrier, which resumes any node it held.
func (svc *Service) releaseTime(ctx context.Context, rc *runnerapi.Client, sys model.System) error {
	if sys.Time != model.TimeVirtual {
		return nil
	}
	if c, err := rc.DeleteClock(ctx, sys.ID); err != nil && !runnerapi.IsNotFound(err) {
		return About("stop the virtual clock barrier", err)
	} else if err == nil {
		svc.d.Log.Info("virtual clock stopped", "system", sys.ID, "polls", c.Polls, "max_spread_ms", c.MaxSpreadMS, "holds", c.Holds, "held_ms", c.HeldMS)
	}
	return nil
}

// SystemClock is how the runner keeps a virtual-time system's clocks
// together: the bound, the spread it measured, what holding nodes cost.
func (svc *Service) SystemClock(ctx context.Context, id string) (runnerapi.Clock, error) {
	sys, err := svc.ownSystem(ctx, id)
	if err != nil {
		return runnerapi.Clock{}, err
	}
	if sys.Time != model.TimeVirtual {
		return runnerapi.Clock{}, fail.Conflict("system %s runs on time %q: each node on the host's clock, with nothing to keep together (create it with time \"virtual\")", id, sys.Time)
	}
	if len(sys.Nodes) < 2 {
		return runnerapi.Clock{}, fail.Conflict("system %s has one node: there is no other clock to keep it with", id)
	}
	rc, err := svc.systemRunner(ctx, &sys, false)
	if err == nil && rc == nil {
		err = fail.Conflict("system %s is not running: power it on", id)
	}
	if err != nil {
		return runnerapi.Clock{}, err
	}
	c, err := rc.GetClock(ctx, sys.ID)
	if runnerapi.IsNotFound(err) {
		return c, fail.Conflict("system %s is not running: power it on", id)
	}
	return c, err
}

// deleteLinks takes the system's links and segments off its runner, and
// its barrier.
func (svc *Service) deleteLinks(ctx context.Context, rc *runnerapi.Client, sys model.System) error {
	if err := svc.releaseTime(ctx, rc, sys); err != nil {
		return err
	}
	for _, l := range sys.Links {
		del := rc.DeleteLink
		if l.Type == model.LinkEthernet {
			del = rc.DeleteSegment
		}
		if err := del(ctx, l.RunnerLink); err != nil && !runnerapi.IsNotFound(err) {
			return About("link "+l.Name, err)
		}
	}
	return nil
}

func (svc *Service) publishSystem(typ string, sys model.System) {
	if err := svc.d.Publisher.Publish(events.WithTenant(context.Background(), model.TenantOr(sys.Tenant)), typ, sys.ID, sys); err != nil {
		svc.d.Log.Warn("publish", "type", typ, "err", err)
	}
}

// About puts the node or link an error is about before its message,
// keeping its status; nil stays nil.
func About(what string, err error) error {
	if err == nil {
		return nil
	}
	var e *fail.Error
	if errors.As(err, &e) {
		c := *e
		c.Message = what + ": " + c.Message
		return &c
	}
	return runnerapi.About(what, err)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// each runs fn for every session at once and returns their errors in
// order.
func each(ss []model.Session, fn func(int, model.Session) error) []error {
	errs := make([]error, len(ss))
	var wg sync.WaitGroup
	for i, s := range ss {
		wg.Go(func() { errs[i] = fn(i, s) })
	}
	wg.Wait()
	return errs
}
