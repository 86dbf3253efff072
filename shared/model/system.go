package model

import (
	"fmt"
	"math"
	"time"
)

// System is a set of boards that run as one thing: each node is an
// ordinary session (its own console, debugger and coverage), every node is
// placed on one runner, and links join their ports (UART) or their NICs
// (Ethernet) through that runner, so no node reaches anything outside its
// system.
type System struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant,omitempty"`
	Name   string `json:"name"`
	// Time is how the nodes' clocks run: "realtime" (each on the host's
	// clock) or "virtual" (each on its instruction counter, aligned to the
	// host's clock).
	Time string `json:"time"`
	// State is where the last system-wide operation left it: created,
	// running (powered on together), stopped, or error (Reason says why).
	// Each node's own state is in Nodes.
	State    State        `json:"state"`
	Reason   string       `json:"reason,omitempty"`
	RunnerID string       `json:"runner_id,omitempty"`
	Nodes    []SystemNode `json:"nodes"`
	Links    []SystemLink `json:"links"`
	// Seed seeds every link's fault decisions, so a run's drops repeat.
	Seed      uint64    `json:"seed"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Node is the node named, or the zero node.
func (s System) Node(name string) SystemNode {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n
		}
	}
	return SystemNode{}
}

// SystemNode is one board of a system, run by its session.
type SystemNode struct {
	Name      string `json:"name"`
	SessionID string `json:"session_id"`
	Machine   string `json:"machine"`
	ProgramID string `json:"program_id"`
	// MAC is the node's NIC address on its Ethernet link (unique in the
	// system: every board of a kind has the same default).
	MAC string `json:"mac,omitempty"`
	// State is the node's session state when the system was read.
	State State `json:"state,omitempty"`
}

// Link types.
const (
	LinkUART     = "uart"
	LinkEthernet = "ethernet"
)

// System.Time values: realtime is the default.
const (
	TimeRealtime = "realtime"
	TimeVirtual  = "virtual"
)

// SystemLink joins nodes of a system: a UART link the named ports of two
// nodes ("gw:uart1"), an Ethernet link the NICs of two or more nodes
// through a switch that learns MAC addresses.
type SystemLink struct {
	// Name is unique in the system ("link0", "link1", … when not given).
	Name string `json:"name"`
	Type string `json:"type"`
	// Ends are a UART link's two "node:port" ends.
	Ends []string `json:"ends,omitempty"`
	// Nodes are an Ethernet link's member nodes.
	Nodes  []string   `json:"nodes,omitempty"`
	Faults LinkFaults `json:"faults"`
	// RunnerLink is the link's (or Ethernet switch's) id on the runner.
	RunnerLink string `json:"runner_link"`
}

// LinkFaults are what a link does to what it carries: per byte on a UART
// link, per frame on an Ethernet one. The zero value is a clean link.
type LinkFaults struct {
	// Down drops everything.
	Down bool `json:"down,omitempty"`
	// Loss and Corrupt are probabilities (0 to 1).
	Loss    float64 `json:"loss,omitempty"`
	Corrupt float64 `json:"corrupt,omitempty"`
	// Delay is a Go duration ("5ms").
	Delay string `json:"delay,omitempty"`
}

// SystemSpec is a system to create (POST /api/v1/systems).
type SystemSpec struct {
	Name  string     `json:"name"`
	Nodes []NodeSpec `json:"nodes"`
	Links []LinkSpec `json:"links,omitempty"`
	// Time is "realtime" (the default) or "virtual".
	Time string `json:"time,omitempty"`
	// Seed seeds the links' fault decisions; 0 picks one.
	Seed uint64 `json:"seed,omitempty"`
}

// NodeSpec is one board of a system to create.
type NodeSpec struct {
	// Name is unique in the system: links name ports as "name:port".
	Name        string      `json:"name"`
	Backend     string      `json:"backend,omitempty"`
	BoardConfig BoardConfig `json:"board_config"`
	ProgramID   string      `json:"program_id"`
	Limits      *Limits     `json:"limits,omitempty"`
}

// LinkSpec is one link of a system to create: {type: "uart", ends:
// ["gw:uart1", "sensor:uart0"]} or {type: "ethernet", nodes: ["gw", "n2"]}.
type LinkSpec struct {
	Name   string      `json:"name,omitempty"`
	Type   string      `json:"type"`
	Ends   []string    `json:"ends,omitempty"`
	Nodes  []string    `json:"nodes,omitempty"`
	Faults *LinkFaults `json:"faults,omitempty"`
}

// MaxLinkDelay bounds LinkFaults.Delay.
const MaxLinkDelay = 10 * time.Second

// Check validates the faults and returns the delay: probabilities from 0
// to 1, the delay a Go duration from 0 to MaxLinkDelay.
func (f LinkFaults) Check() (time.Duration, error) {
	for _, p := range []struct {
		name string
		v    float64
	}{{"loss", f.Loss}, {"corrupt", f.Corrupt}} {
		if math.IsNaN(p.v) || p.v < 0 || p.v > 1 {
			return 0, fmt.Errorf("faults.%s %v is not a probability from 0 to 1", p.name, p.v)
		}
	}
	if f.Delay == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(f.Delay)
	if err != nil || d < 0 || d > MaxLinkDelay {
		return 0, fmt.Errorf("faults.delay %q is not a duration from 0 to %v (e.g. \"5ms\")", f.Delay, MaxLinkDelay)
	}
	return d, nil
}

// SystemSnapshot is a system saved at one point: every node paused
// together, each node's state saved as an ordinary snapshot, and the
// system's definition (nodes, links and their faults) beside them, so a
// restore or a fork brings the whole system back. Bytes in flight on a
// link when the nodes paused are not part of it.
type SystemSnapshot struct {
	ID          string `json:"id"`
	Tenant      string `json:"tenant,omitempty"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	SystemID    string `json:"system_id"`
	// Spec recreates the system (a fork is a create from it): its nodes'
	// boards, programs and limits, its links with their faults then, its
	// time and seed.
	Spec  SystemSpec           `json:"spec"`
	Nodes []SystemSnapshotNode `json:"nodes"`
	// Size is the nodes' states together.
	Size int64 `json:"size"`
	// PausedMS is how long the nodes stood paused for the capture.
	PausedMS  float64   `json:"paused_ms"`
	CreatedAt time.Time `json:"created_at"`
}

// SystemSnapshotNode is one node's saved state.
type SystemSnapshotNode struct {
	Name       string `json:"name"`
	Machine    string `json:"machine"`
	SnapshotID string `json:"snapshot_id"`
}

// SystemSnapshotManifestKey is the blob key of a system snapshot's
// manifest, from which the index is rebuilt.
func SystemSnapshotManifestKey(id string) string { return "system-snapshots/" + id + "/manifest.json" }
