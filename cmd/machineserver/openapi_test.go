package main

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/events"
	jobs "github.com/machineserver/machineserver/functions/jobs/handler"
	programs "github.com/machineserver/machineserver/functions/programs/handler"
	sessions "github.com/machineserver/machineserver/functions/sessions/handler"
	"github.com/machineserver/machineserver/functions/sessions/session"
	snapshots "github.com/machineserver/machineserver/functions/snapshots/handler"
	"github.com/machineserver/machineserver/shared/audit"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/openapi/openapitest"
	"github.com/machineserver/machineserver/shared/queue"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// notAPI reports whether a route is outside the JSON API the document
// describes: the web UI's files under /ui and the root's redirect to it.
// Everything else is documented, /health, /metrics and the CloudEvents
// receivers included.
func notAPI(rt httpapi.Route) bool {
	return rt.Pattern == "/{$}" || rt.Pattern == "/ui" || strings.HasPrefix(rt.Pattern, "/ui/")
}

// TestOpenAPIMatchesRoutes checks the OpenAPI document against the real
// route tables of the standalone server (the admin API included) both
// ways: every route is documented with the scope it declares, and every
// documented operation is a route. The functions' own Services serve a
// subset of these, plus their in-cluster POST / (not public, so not
// documented).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := openapitest.Served(t)
	documented := map[string]openapitest.Operation{}
	for _, op := range doc.Operations() {
		documented[op.Method+" "+op.Path] = op
	}
	served := map[string]bool{}
	for _, rt := range servedRoutes(t)["standalone"] {
		key := rt.Method + " " + rt.Pattern
		if notAPI(rt) {
			continue
		}
		served[key] = true
		op, ok := documented[key]
		if !ok {
			t.Errorf("%s is served but not documented in shared/openapi/openapi.json", key)
			continue
		}
		roles, public := op.Roles()
		switch {
		case rt.Scope == httpapi.ScopePublic && !public:
			t.Errorf("%s (%s) is public, but the document asks for %v", key, op.ID, roles)
		case rt.Scope != httpapi.ScopePublic && !slices.Equal(roles, []string{string(rt.Scope)}):
			t.Errorf("%s (%s) needs the %s scope, but the document's security roles are %v (public %v)", key, op.ID, rt.Scope, roles, public)
		}
	}
	for key, op := range documented {
		if !served[key] {
			t.Errorf("%s (%s) is documented, but the standalone server has no such route", key, op.ID)
		}
	}
}

// TestOpenAPISchemasFollowGoTypes checks that each documented body lists
// exactly the JSON fields of the Go type its handler encodes or decodes,
// so a field added in Go fails here until the document (or the event
// schema it refers to) has it too.
func TestOpenAPISchemasFollowGoTypes(t *testing.T) {
	doc := openapitest.Served(t)
	for _, c := range []struct {
		schema string // a JSON pointer under /components/schemas
		v      any
		// unlisted are fields the Go type has that never reach the API.
		unlisted []string
	}{
		{"Session", model.Session{}, nil},
		{"Limits", model.Limits{}, nil},
		{"events.defs/$defs/BoardConfig", model.BoardConfig{}, nil},
		// A stored program has no reason; a rejected one no image.
		{"Program", model.Program{}, []string{"reason"}},
		{"events.defs/$defs/RejectedProgram", model.Program{}, []string{"load_address", "entry", "arch"}},
		{"Snapshot", model.Snapshot{}, nil},
		{"Job", model.Job{}, nil},
		{"JobSpec", model.JobSpec{}, nil},
		{"JobTemplate", model.JobSpec{}, []string{"program_id", "program_key"}},
		{"JobRule", model.JobRule{}, nil},
		{"Recording", model.Recording{}, nil},
		{"events.defs/$defs/Recording/properties/files/items", model.RecordingFile{}, nil},
		{"CreateSessionRequest", sessions.CreateRequest{}, nil},
		{"LoadProgramRequest", sessions.LoadRequest{}, nil},
		{"SessionList", sessions.List{}, nil},
		{"MergeRequest", sessions.MergeRequest{}, nil},
		{"GDBInfo", session.GDBInfo{}, nil},
		{"GDBInfo/properties/snippets", session.GDBSnippets{}, nil},
		{"ReplayRequest", session.ReplayRequest{}, nil},
		{"RecordingList", session.Recordings{}, nil},
		{"System", model.System{}, nil},
		{"SystemNode", model.SystemNode{}, nil},
		{"SystemLink", model.SystemLink{}, nil},
		{"LinkFaults", model.LinkFaults{}, nil},
		{"SystemSpec", model.SystemSpec{}, nil},
		{"NodeSpec", model.NodeSpec{}, nil},
		{"LinkSpec", model.LinkSpec{}, nil},
		{"SystemList", session.Systems{}, nil},
		{"LinkStatus", session.LinkStatus{}, nil},
		{"SystemClock", runnerapi.Clock{}, nil},
		{"RunnerLink", runnerapi.Link{}, nil},
		{"RunnerLink/properties/ends/items", runnerapi.LinkEnd{}, nil},
		{"RunnerLink/properties/directions/items", runnerapi.LinkDirection{}, nil},
		{"RunnerSegment", runnerapi.Segment{}, nil},
		{"RunnerSegment/properties/ports/items", runnerapi.SegmentPort{}, nil},
		{"LinkCapture", runnerapi.LinkCapture{}, nil},
		{"LinkRecord", runnerapi.LinkRecord{}, nil},
		{"FrameRecord", runnerapi.FrameRecord{}, nil},
		{"LinkStreamGap", runnerapi.StreamGap{}, nil},
		{"CoverageReport", events.CoverageReport{}, nil},
		{"CoverageJSON", coverage.Report{}, nil},
		{"FileReport", coverage.FileReport{}, nil},
		{"FunctionCount", coverage.FunctionCount{}, nil},
		{"FileReport/properties/branches/items", coverage.BranchCount{}, nil},
		{"ProgramList", programs.List{}, nil},
		{"Notified", programs.Notified{}, nil},
		{"Notified/properties/ignored/items", programs.Ignored{}, nil},
		{"CreateSnapshotRequest", snapshots.CreateRequest{}, nil},
		{"RestoreRequest", snapshots.RestoreRequest{}, nil},
		{"ForkRequest", snapshots.ForkRequest{}, nil},
		{"SnapshotList", snapshots.List{}, nil},
		{"SystemSnapshot", model.SystemSnapshot{}, nil},
		{"SystemSnapshotNode", model.SystemSnapshotNode{}, nil},
		{"SystemSnapshotList", snapshots.SystemList{}, nil},
		{"SystemForkRequest", snapshots.SystemForkRequest{}, nil},
		{"JobList", jobs.List{}, nil},
		{"JobStats", jobs.Stats{}, nil},
		{"JobStats/properties/queue", queue.Stats{}, nil},
		{"RuleRequest", jobs.RuleRequest{}, nil},
		{"Capabilities", board.Capabilities{}, nil},
		{"Capabilities/properties/backends/items", board.Backend{}, nil},
		{"Capabilities/properties/limits", board.LimitSupport{}, nil},
		{"Board", board.Board{}, nil},
		{"Board/properties/uarts/items", board.UART{}, nil},
		{"CreateKeyRequest", auth.CreateKeyRequest{}, nil},
		// The hash of a key's secret is never answered.
		{"Key", auth.Key{}, []string{"hash"}},
		// A new key is neither used nor revoked yet.
		{"CreatedKey", auth.CreatedKey{}, []string{"hash", "last_used", "revoked_at"}},
		{"TokenRequest", auth.TokenRequest{}, nil},
		{"SessionToken", auth.TokenResponse{}, nil},
		{"AuditList/properties/records/items", audit.Record{}, nil},
		{"QuotaUsage", quota.Usage{}, nil},
		{"QuotaItem", quota.Item{}, nil},
		{"QuotaOverrides", quota.Overrides{}, nil},
	} {
		got, err := doc.Properties("/components/schemas/" + c.schema)
		if err != nil {
			t.Errorf("%s: %v", c.schema, err)
			continue
		}
		want := slices.DeleteFunc(jsonFields(reflect.TypeOf(c.v)), func(f string) bool { return slices.Contains(c.unlisted, f) })
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s documents %v; %T has %v", c.schema, got, c.v, want)
		}
	}
}

// jsonFields are the JSON member names encoding/json gives a struct type.
func jsonFields(typ reflect.Type) []string {
	var out []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case f.Anonymous && name == "":
			out = append(out, jsonFields(f.Type)...)
		case name == "":
			out = append(out, f.Name)
		default:
			out = append(out, name)
		}
	}
	return out
}
