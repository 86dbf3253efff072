package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	report "github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/state"
)

// CoverageFormats are the coverage report formats and their content types.
var CoverageFormats = map[string]string{
	"json":   "application/json",
	"lcov":   "text/plain; charset=utf-8",
	"html":   "application/zip",
	"counts": "text/plain; charset=utf-8",
}

func coverageKey(id, format string) string {
	name := map[string]string{"json": "report.json", "lcov": "report.info", "html": "report-html.zip", "counts": "counts.mscov"}[format]
	return "coverage/" + id + "/" + name
}

func coverageManifestKey(id string) string { return "coverage/" + id + "/manifest.json" }

// storedManifest is a report's manifest in the blob store: the event's
// fields plus the tenant that owns the report (only it can read or merge
// it; a manifest without one belongs to the default tenant).
type storedManifest struct {
	events.CoverageReport
	Tenant string `json:"tenant,omitempty"`
}

// MergeRequest is POST /api/v1/coverage/merge: the live counts of sessions
// and stored reports, all of the same program.
type MergeRequest struct {
	SessionIDs []string `json:"session_ids,omitempty"`
	ReportIDs  []string `json:"report_ids,omitempty"`
}

// CoverageStart opens the session's coverage window.
func (svc *Service) CoverageStart(ctx context.Context, id string) (model.Session, error) {
	s, err := svc.Get(ctx, id)
	if err != nil {
		return s, err
	}
	if s.ProgramID == "" {
		return s, fail.Conflict("session %s has no program; coverage is reported against the program loaded in the session", id)
	}
	rc, err := svc.runner(ctx, &s, true)
	if err != nil {
		return s, err
	}
	if err := rc.CoverageStart(ctx, id); err != nil {
		return s, err
	}
	return svc.d.State.UpdateSession(ctx, id, func(x *model.Session) error { x.Coverage = true; return nil })
}

// CoverageStop closes the window and stores its report.
func (svc *Service) CoverageStop(ctx context.Context, id string) (events.CoverageReport, error) {
	s, err := svc.Get(ctx, id)
	if err != nil {
		return events.CoverageReport{}, err
	}
	rc, err := svc.runner(ctx, &s, false)
	if err == nil && rc == nil {
		err = fail.Unavailable("runner %s of session %s is gone; its counts went with it", s.RunnerID, id)
	}
	if err != nil {
		return events.CoverageReport{}, err
	}
	if err := rc.CoverageStop(ctx, id); err != nil {
		return events.CoverageReport{}, err
	}
	if _, err := svc.d.State.UpdateSession(ctx, id, func(x *model.Session) error { x.Coverage = false; return nil }); err != nil {
		return events.CoverageReport{}, err
	}
	c, err := rc.Coverage(ctx, id)
	if err != nil {
		return events.CoverageReport{}, err
	}
	return svc.StoreReport(ctx, s.ProgramID, c, []string{id}, nil)
}

// sessionCounts are the counts of a session's window so far.
func (svc *Service) sessionCounts(ctx context.Context, id string) (model.Session, report.Counts, error) {
	s, err := svc.Get(ctx, id)
	if err != nil {
		return s, report.Counts{}, err
	}
	if s.ProgramID == "" {
		return s, report.Counts{}, fail.Conflict("session %s has no program, so it has no coverage", id)
	}
	rc, err := svc.runner(ctx, &s, false)
	if err == nil && rc == nil {
		err = fail.Unavailable("runner %s of session %s is gone", s.RunnerID, id)
	}
	if err != nil {
		return s, report.Counts{}, err
	}
	c, err := rc.Coverage(ctx, id)
	return s, c, err
}

// analyze maps counts onto the program's image: onto its own sources, or
// with all, onto every file (the toolchain's and libraries' too).
func (svc *Service) analyze(ctx context.Context, programID string, c report.Counts, all bool) (*report.Report, model.Program, error) {
	p, err := svc.d.State.GetProgram(ctx, programID)
	if errors.Is(err, state.ErrNotFound) {
		return nil, p, fail.Unprocessable("program %s is gone", programID)
	}
	if err != nil {
		return nil, p, err
	}
	prog := report.RawProgram()
	if p.Format == model.FormatELF {
		img, err := blob.GetBytes(ctx, svc.d.Blobs, model.ProgramImageKey(p.ID))
		if err != nil {
			return nil, p, fmt.Errorf("program image %s: %w", p.ID, err)
		}
		if prog, err = report.LoadELF(bytes.NewReader(img)); err != nil {
			return nil, p, fail.Unprocessable("program %s: %v", p.ID, err)
		}
	}
	if all {
		return report.AnalyzeAll(prog, c), p, nil
	}
	return report.Analyze(prog, c), p, nil
}

// render writes a report in a format.
func render(r *report.Report, c report.Counts, format, name string) ([]byte, error) {
	var b bytes.Buffer
	var err error
	switch format {
	case "json":
		err = r.WriteJSON(&b)
	case "lcov":
		err = r.WriteLCOV(&b, name)
	case "html":
		err = r.WriteHTMLZip(&b, nil)
	case "counts":
		_, err = c.WriteTo(&b)
	default:
		return nil, fail.Invalid("format must be json, lcov, html or counts; got %q", format)
	}
	if errors.Is(err, report.ErrNoDebugInfo) || errors.Is(err, report.ErrNoSymbols) || errors.Is(err, report.ErrAddressOnly) {
		return nil, fail.Unprocessable("%v", err)
	}
	return b.Bytes(), err
}

// StoreReport writes a report's artifacts and manifest and announces it.
func (svc *Service) StoreReport(ctx context.Context, programID string, c report.Counts, sessions, parents []string) (events.CoverageReport, error) {
	rep, p, err := svc.analyze(ctx, programID, c, false)
	if err != nil {
		return events.CoverageReport{}, err
	}
	m := events.CoverageReport{
		ID: model.NewID(), ProgramID: p.ID, ProgramSHA256: p.SHA256, Sessions: sessions, Parents: parents,
		Level: string(rep.Level), Final: rep.Final, Notes: rep.Notes, Artifacts: map[string]string{}, CreatedAt: time.Now().UTC(),
		Totals: events.CoverageTotals{
			LinesFound: rep.Totals.Lines.Found, LinesHit: rep.Totals.Lines.Hit,
			FunctionsFound: rep.Totals.Functions.Found, FunctionsHit: rep.Totals.Functions.Hit,
			BranchesFound: rep.Totals.Branches.Found, BranchesHit: rep.Totals.Branches.Hit,
		},
	}
	for _, f := range []string{"counts", "json", "lcov", "html"} {
		b, err := render(rep, c, f, m.ID)
		var fe *fail.Error
		if errors.As(err, &fe) {
			continue // lcov of a program without source lines
		}
		if err != nil {
			return m, err
		}
		key := coverageKey(m.ID, f)
		if err := svc.d.Blobs.Put(ctx, key, bytes.NewReader(b), int64(len(b)), CoverageFormats[f]); err != nil {
			return m, fmt.Errorf("store coverage %s: %w", f, err)
		}
		m.Artifacts[f] = key
	}
	mb, _ := json.MarshalIndent(storedManifest{CoverageReport: m, Tenant: auth.Tenant(ctx)}, "", "  ")
	if err := svc.d.Blobs.Put(ctx, coverageManifestKey(m.ID), bytes.NewReader(mb), int64(len(mb)), "application/json"); err != nil {
		return m, fmt.Errorf("store coverage manifest: %w", err)
	}
	if err := svc.d.Publisher.Publish(events.WithTenant(context.WithoutCancel(ctx), auth.Tenant(ctx)), events.TypeCoverageReady, m.ID, m); err != nil {
		svc.d.Log.Warn("publish", "type", events.TypeCoverageReady, "err", err)
	}
	return m, nil
}

// storedReport reads a stored report's manifest and counts.
func (svc *Service) storedReport(ctx context.Context, id string) (events.CoverageReport, report.Counts, error) {
	var m events.CoverageReport
	if !model.ValidID(id) {
		return m, report.Counts{}, fail.NotFound("coverage report %q not found (ids are 16 hex digits)", id)
	}
	b, err := blob.GetBytes(ctx, svc.d.Blobs, coverageManifestKey(id))
	if errors.Is(err, blob.ErrNotFound) {
		return m, report.Counts{}, fail.NotFound("coverage report %s not found", id)
	}
	if err != nil {
		return m, report.Counts{}, err
	}
	var sm storedManifest
	if err := json.Unmarshal(b, &sm); err != nil {
		return m, report.Counts{}, fmt.Errorf("coverage manifest %s: %w", id, err)
	}
	if !auth.Owns(ctx, sm.Tenant) {
		// Exactly the answer for an unknown id, so ids do not leak.
		return m, report.Counts{}, fail.NotFound("coverage report %s not found", id)
	}
	m = sm.CoverageReport
	cb, err := blob.GetBytes(ctx, svc.d.Blobs, m.Artifacts["counts"])
	if err != nil {
		return m, report.Counts{}, err
	}
	c, err := report.Parse(bytes.NewReader(cb))
	return m, c, err
}

// Merge adds up the counts of sessions and stored reports of one program
// into a new stored report (forked or sharded CI runs).
func (svc *Service) Merge(ctx context.Context, in MergeRequest) (events.CoverageReport, error) {
	if len(in.SessionIDs)+len(in.ReportIDs) < 1 || len(in.SessionIDs)+len(in.ReportIDs) > 100 {
		return events.CoverageReport{}, fail.Invalid("give 1 to 100 session_ids and report_ids in all")
	}
	var all []report.Counts
	sha := ""
	program := ""
	same := func(pid string) error {
		p, err := svc.d.State.GetProgram(ctx, pid)
		if err != nil {
			return fail.Unprocessable("program %s is gone", pid)
		}
		if sha == "" {
			sha, program = p.SHA256, p.ID
		}
		if p.SHA256 != sha {
			return fail.Unprocessable("coverage of different programs cannot be merged (%s and %s)", program, p.ID)
		}
		return nil
	}
	sessions := []string{}
	for _, id := range in.SessionIDs {
		s, c, err := svc.sessionCounts(ctx, id)
		if err != nil {
			return events.CoverageReport{}, err
		}
		if err := same(s.ProgramID); err != nil {
			return events.CoverageReport{}, err
		}
		all, sessions = append(all, c), append(sessions, id)
	}
	for _, id := range in.ReportIDs {
		m, c, err := svc.storedReport(ctx, id)
		if err != nil {
			return events.CoverageReport{}, err
		}
		if err := same(m.ProgramID); err != nil {
			return events.CoverageReport{}, err
		}
		all = append(all, c)
		for _, s := range m.Sessions {
			if !slices.Contains(sessions, s) {
				sessions = append(sessions, s)
			}
		}
	}
	return svc.StoreReport(ctx, program, report.Merge(all...), sessions, in.ReportIDs)
}

// LiveCounts are a session's coverage counts so far (a snapshot while the
// machine runs), not stored.
func (svc *Service) LiveCounts(ctx context.Context, id string) (model.Session, report.Counts, error) {
	return svc.sessionCounts(ctx, id)
}

// StoredReport is a stored report's manifest and counts.
func (svc *Service) StoredReport(ctx context.Context, id string) (events.CoverageReport, report.Counts, error) {
	return svc.storedReport(ctx, id)
}

// Report renders counts of programID as format (json, lcov, html or
// counts; CoverageFormats gives their content types) named name; all keeps
// the toolchain's and libraries' source files.
func (svc *Service) Report(ctx context.Context, programID string, c report.Counts, format, name string, all bool) ([]byte, error) {
	if _, ok := CoverageFormats[format]; !ok {
		return nil, fail.Invalid("format must be json, lcov, html or counts; got %q", format)
	}
	rep, _, err := svc.analyze(ctx, programID, c, all)
	if err != nil {
		return nil, err
	}
	return render(rep, c, format, name)
}
