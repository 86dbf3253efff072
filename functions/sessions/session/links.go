package session

import (
	"context"
	"encoding/json"
	"io"
	"strings"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// A system's links, as users observe and fault them: the definition is
// the system's (stored with it), what crosses is the runner's.

// LinkStatus is a system link as defined and as the runner carries it
// (GET and POST /api/v1/systems/{id}/links/{link}): UART is a UART link's
// counters per direction, Ethernet a switch's per node; both are absent
// until the system was powered on on its runner.
type LinkStatus struct {
	SystemID string             `json:"system_id"`
	Link     model.SystemLink   `json:"link"`
	UART     *runnerapi.Link    `json:"uart,omitempty"`
	Ethernet *runnerapi.Segment `json:"ethernet,omitempty"`
}

// link is the system's link named, or not found with the names it has.
func link(sys model.System, name string) (model.SystemLink, error) {
	var names []string
	for _, l := range sys.Links {
		if l.Name == name {
			return l, nil
		}
		names = append(names, l.Name)
	}
	return model.SystemLink{}, fail.NotFound("system %s has no link %q; its links: %s", sys.ID, name, strings.Join(names, ", "))
}

// Link is a system link and its state on the runner.
func (svc *Service) Link(ctx context.Context, id, name string) (LinkStatus, error) {
	sys, err := svc.ownSystem(ctx, id)
	if err != nil {
		return LinkStatus{}, err
	}
	l, err := link(sys, name)
	if err != nil {
		return LinkStatus{}, err
	}
	st := LinkStatus{SystemID: id, Link: l}
	rc, err := svc.systemRunner(ctx, &sys, false)
	if err != nil || rc == nil {
		return st, err
	}
	switch l.Type {
	case model.LinkUART:
		u, err := rc.GetLink(ctx, l.RunnerLink)
		if err == nil {
			st.UART = &u
		} else if !runnerapi.IsNotFound(err) {
			return st, err
		}
	case model.LinkEthernet:
		g, err := rc.GetSegment(ctx, l.RunnerLink)
		if err == nil {
			st.Ethernet = &g
		} else if !runnerapi.IsNotFound(err) {
			return st, err
		}
	}
	return st, nil
}

// SetLinkFaults changes a link's faults, stored with the system and, when
// its runner carries the link, applied at once.
func (svc *Service) SetLinkFaults(ctx context.Context, id, name string, f model.LinkFaults) (LinkStatus, error) {
	if _, err := f.Check(); err != nil {
		return LinkStatus{}, fail.Invalid("%v", err)
	}
	sys, err := svc.ownSystem(ctx, id)
	if err != nil {
		return LinkStatus{}, err
	}
	if _, err := link(sys, name); err != nil {
		return LinkStatus{}, err
	}
	sys, err = svc.d.State.UpdateSystem(ctx, id, func(x *model.System) error {
		for i := range x.Links {
			if x.Links[i].Name == name {
				x.Links[i].Faults = f
			}
		}
		return nil
	})
	if err != nil {
		return LinkStatus{}, err
	}
	l, _ := link(sys, name)
	rc, err := svc.systemRunner(ctx, &sys, false)
	if err == nil && rc != nil {
		set := rc.SetLinkFaults
		if l.Type == model.LinkEthernet {
			set = func(ctx context.Context, id string, f runnerapi.LinkFaults) (runnerapi.Link, error) {
				_, err := rc.SetSegmentFaults(ctx, id, f)
				return runnerapi.Link{}, err
			}
		}
		// A link the runner does not carry yet gets the faults when the
		// system powers on.
		if _, err = set(ctx, l.RunnerLink, f); runnerapi.IsNotFound(err) {
			err = nil
		}
	}
	if err != nil {
		return LinkStatus{}, err
	}
	if err := svc.d.Publisher.Publish(events.WithTenant(context.Background(), model.TenantOr(sys.Tenant)), events.TypeSystemLinkChanged, sys.ID,
		events.LinkChanged{SystemID: sys.ID, Tenant: sys.Tenant, Link: l}); err != nil {
		svc.d.Log.Warn("publish", "type", events.TypeSystemLinkChanged, "err", err)
	}
	return svc.Link(ctx, id, name)
}

// LinkCapture writes what crossed a link: a UART link's records after seq
// after as JSON (runnerapi.LinkCapture), an Ethernet link's frames as a
// pcap file. contentType is called with the type before the first byte.
func (svc *Service) LinkCapture(ctx context.Context, id, name string, after uint64, contentType func(string), w io.Writer) error {
	l, rc, err := svc.LinkOnRunner(ctx, id, name)
	if err != nil {
		return err
	}
	never := func(err error) error {
		if runnerapi.IsNotFound(err) {
			return fail.Conflict("link %s of system %s has carried nothing yet: power the system on (POST /api/v1/systems/%s/poweron)", name, id, id)
		}
		return err
	}
	if l.Type == model.LinkEthernet {
		contentType("application/vnd.tcpdump.pcap")
		return never(rc.SegmentPcap(ctx, l.RunnerLink, w))
	}
	c, err := rc.LinkCapture(ctx, l.RunnerLink, after)
	if err != nil {
		return never(err)
	}
	contentType("application/json")
	return json.NewEncoder(w).Encode(c)
}

// LinkOnRunner is a link the system's runner carries, and that runner;
// a link never powered on has nothing to show yet.
func (svc *Service) LinkOnRunner(ctx context.Context, id, name string) (model.SystemLink, *runnerapi.Client, error) {
	sys, err := svc.ownSystem(ctx, id)
	if err != nil {
		return model.SystemLink{}, nil, err
	}
	l, err := link(sys, name)
	if err != nil {
		return l, nil, err
	}
	rc, err := svc.systemRunner(ctx, &sys, false)
	if err == nil && rc == nil {
		err = fail.Conflict("system %s's runner %s is gone; power the system on to carry link %s again", id, sys.RunnerID, name)
	}
	return l, rc, err
}
