package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/functions/programs/program"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/state"
	"github.com/machineserver/machineserver/shared/testenv"
)

// bucketFixture is a programs handler watching "fwb" (prefix ci/, tenant
// acme) and "other" (any key, default tenant), both backed by one real
// versitygw bucket store each.
type bucketFixture struct {
	h       *Handler
	st      *state.Store
	blobs   blob.Store
	fw      blob.Store
	mux     *http.ServeMux
	ev      http.Handler
	stored  atomic.Int32
	pub     *recordingPublisher
	watches []Watch
}

type recordingPublisher struct {
	mu    sync.Mutex
	types []string
}

func (p *recordingPublisher) Publish(_ context.Context, typ, _ string, _ any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.types = append(p.types, typ)
	return nil
}

func (p *recordingPublisher) count(typ string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, t := range p.types {
		if t == typ {
			n++
		}
	}
	return n
}

func newBucketFixture(t *testing.T) *bucketFixture {
	t.Helper()
	cfg := testenv.S3(t)
	fwCfg := cfg
	fwCfg.Bucket = "fwb"
	fw, err := blob.NewS3(t.Context(), fwCfg)
	if err != nil {
		t.Fatal(err)
	}
	otherCfg := cfg
	otherCfg.Bucket = "other"
	other, err := blob.NewS3(t.Context(), otherCfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.OpenEmbedded(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, _ := blob.NewFS(t.TempDir())
	f := &bucketFixture{st: st, blobs: blobs, fw: fw, pub: &recordingPublisher{}}
	ws, err := program.ParseWatches("fwb/ci/=acme, other")
	if err != nil {
		t.Fatal(err)
	}
	ws[0].Objects, ws[1].Objects = fw, other
	f.watches = ws
	f.h = New(Deps{State: st, Blobs: blobs, Publisher: f.pub, MaxUpload: 1 << 20, Log: slog.New(slog.DiscardHandler),
		Watches: ws, WebhookToken: "hook-token", OnStored: func(context.Context, model.Program) { f.stored.Add(1) }})
	f.mux = http.NewServeMux()
	httpapi.Mount(f.mux, f.h.Routes()...)
	f.ev, err = f.h.Events(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *bucketFixture) put(t *testing.T, key string, b []byte) string {
	t.Helper()
	if err := blob.PutBytes(t.Context(), f.fw, key, b, ""); err != nil {
		t.Fatal(err)
	}
	info, err := f.fw.Stat(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return info.ETag
}

func (f *bucketFixture) post(t *testing.T, body string) (int, Notified, string) {
	t.Helper()
	return f.postTo(t, NotificationsPath+"?token=hook-token", body)
}

func (f *bucketFixture) postTo(t *testing.T, target, body string) (int, Notified, string) {
	t.Helper()
	req := httptest.NewRequest("POST", target, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, req)
	var n Notified
	json.Unmarshal(rec.Body.Bytes(), &n)
	return rec.Code, n, rec.Body.String()
}

// record builds a notification body the way each sender spells it.
func record(eventName, bucket, key, etag string) string {
	return fmt.Sprintf(`{"eventVersion":"2.2","eventSource":"aws:s3","awsRegion":"us-east-1","eventName":%q,
	  "userIdentity":{"PrincipalId":"ci"},"s3":{"s3SchemaVersion":"1.0","bucket":{"name":%q,"arn":"arn:aws:s3:::%s"},
	  "object":{"key":%q,"size":3,"eTag":%q,"versionId":null,"sequencer":"1"}}}`, eventName, bucket, bucket, key, etag)
}

func TestNotificationForms(t *testing.T) {
	f := newBucketFixture(t)
	fw := firmware(t)

	// versitygw: "s3:" prefix, quoted ETag, the key as is (a space and a +).
	etag := f.put(t, "ci/my fw+1.elf", fw)
	body := `{"Records":[` + record("s3:ObjectCreated:Put", "fwb", "ci/my fw+1.elf", `"`+etag+`"`) + `]}`
	code, n, raw := f.post(t, body)
	if code != 200 || len(n.Programs) != 1 {
		t.Fatalf("versitygw form: %d %s", code, raw)
	}
	p := n.Programs[0]
	if p.State != program.StateStored || p.Bucket != "fwb" || p.SourceKey != "ci/my fw+1.elf" || p.Tenant != "acme" || p.Format != model.FormatELF || p.Name != "my fw+1.elf" {
		t.Fatalf("program %+v", p)
	}
	if want := program.ObjectID("fwb", "ci/my fw+1.elf", etag); p.ID != want {
		t.Fatalf("id %s, want the deterministic %s", p.ID, want)
	}
	// The same notification again, and in AWS's spelling (no "s3:", the key
	// URL-encoded, ETag unquoted): the same one program.
	awsKey := url.QueryEscape("ci/my fw+1.elf")
	for _, b := range []string{body, `{"Records":[` + record("ObjectCreated:Put", "fwb", awsKey, etag) + `]}`} {
		code, n, raw := f.post(t, b)
		if code != 200 || len(n.Programs) != 1 || n.Programs[0].ID != p.ID {
			t.Fatalf("redelivery: %d %s", code, raw)
		}
	}
	// MinIO: EventName and Key at the top, key encoded.
	etag2 := f.put(t, "ci/b c.hex", hexImage())
	minio := `{"EventName":"s3:ObjectCreated:Put","Key":"fwb/ci/b+c.hex","Records":[` + record("s3:ObjectCreated:Put", "fwb", "ci/b+c.hex", etag2) + `]}`
	code, n, raw = f.post(t, minio)
	if code != 200 || len(n.Programs) != 1 || n.Programs[0].SourceKey != "ci/b c.hex" || n.Programs[0].Format != model.FormatHEX {
		t.Fatalf("minio form: %d %s", code, raw)
	}
	ctx := auth.WithPrincipal(t.Context(), auth.Principal{Tenant: "acme"})
	if l, err := f.h.List(ctx, 1, 100); err != nil || l.Total != 2 {
		t.Fatalf("list: %+v %v", l, err)
	}
	if got := f.stored.Load(); got != 2 || f.pub.count(events.TypeProgramStored) != 2 {
		t.Fatalf("OnStored ran %d times, %d program.stored events; want 2", got, f.pub.count(events.TypeProgramStored))
	}
	// program_key resolves to the registered program.
	if got, err := program.ProgramForKey(ctx, f.st, "ci/my fw+1.elf"); err != nil || got.ID != p.ID {
		t.Fatalf("ProgramForKey: %+v %v", got, err)
	}

	// Outside the watched prefix, a removal, an object that is gone: ignored.
	f.put(t, "docs/readme.txt", []byte("hello"))
	code, n, raw = f.post(t, `{"Records":[`+record("s3:ObjectCreated:Put", "fwb", "docs/readme.txt", "")+`,`+
		record("s3:ObjectRemoved:Delete", "fwb", "ci/x.elf", "")+`,`+record("s3:ObjectCreated:Put", "fwb", "ci/gone.elf", "")+`]}`)
	if code != 200 || len(n.Programs) != 0 || len(n.Ignored) != 3 {
		t.Fatalf("ignored: %d %s", code, raw)
	}
}

func TestNotificationRefusals(t *testing.T) {
	f := newBucketFixture(t)
	// versitygw's start-up message.
	code, n, raw := f.post(t, `{"Bucket":"Test-Bucket","Event":"s3:TestEvent","Service":"S3","Time":"2026-11-27T04:49:07Z"}`)
	if code != 200 || !n.Test || len(n.Programs) != 0 {
		t.Fatalf("test event: %d %s", code, raw)
	}
	for name, tc := range map[string]struct {
		body string
		code int
		say  string
	}{
		"malformed":      {`{"Records":[{"eventName":`, 400, "malformed"},
		"no records":     {`{"Records":[]}`, 400, "Records"},
		"not an object":  {`[1,2]`, 400, "malformed"},
		"unknown bucket": {`{"Records":[` + record("s3:ObjectCreated:Put", "nope", "ci/a.elf", "") + `]}`, 422, "fwb/ci/, other/"},
		"no key":         {`{"Records":[` + record("s3:ObjectCreated:Put", "fwb", "", "") + `]}`, 400, "s3.object.key"},
	} {
		code, _, raw := f.post(t, tc.body)
		if code != tc.code || !strings.Contains(raw, tc.say) || !strings.Contains(raw, `"error"`) {
			t.Errorf("%s: %d %s", name, code, raw)
		}
	}
}

func TestRejectedObject(t *testing.T) {
	f := newBucketFixture(t)
	etag := f.put(t, "ci/broken.elf", []byte("\x7fELF not really"))
	code, n, raw := f.post(t, `{"Records":[`+record("s3:ObjectCreated:Put", "fwb", "ci/broken.elf", etag)+`]}`)
	if code != 200 || len(n.Programs) != 1 {
		t.Fatalf("%d %s", code, raw)
	}
	p := n.Programs[0]
	if p.State != program.StateRejected || p.Reason == "" || len(p.SHA256) != 64 {
		t.Fatalf("rejected program %+v", p)
	}
	// A manifest with the reason, never an image; no program.stored, no jobs.
	objs, _ := f.blobs.List(t.Context(), "programs/"+p.ID+"/")
	if len(objs) != 1 || objs[0].Key != model.ProgramManifestKey(p.ID) {
		t.Fatalf("blobs of a rejected program: %v", objs)
	}
	if f.stored.Load() != 0 || f.pub.count(events.TypeProgramRejected) != 1 || f.pub.count(events.TypeProgramStored) != 0 {
		t.Fatalf("OnStored %d, events %v", f.stored.Load(), f.pub.types)
	}
	// Redelivered: the same rejected program, not a second one.
	if _, n, _ := f.post(t, `{"Records":[`+record("s3:ObjectCreated:Put", "fwb", "ci/broken.elf", etag)+`]}`); len(n.Programs) != 1 || n.Programs[0].ID != p.ID {
		t.Fatalf("redelivery: %+v", n)
	}
	// Fresh Redis: the rejected program comes back from its manifest.
	st2, _ := state.OpenEmbedded(context.Background())
	defer st2.Close()
	h2 := New(Deps{State: st2, Blobs: f.blobs, Publisher: events.Nop, Log: slog.New(slog.DiscardHandler)})
	if n, err := h2.Reindex(t.Context()); err != nil || n != 1 {
		t.Fatalf("reindex: %d %v", n, err)
	}
}

// TestConcurrentDeliveries: many deliveries of one notification at once
// register one program once.
func TestConcurrentDeliveries(t *testing.T) {
	f := newBucketFixture(t)
	etag := f.put(t, "ci/fw.elf", firmware(t))
	rec := events.S3Record{EventName: "s3:ObjectCreated:Put", S3: events.S3Entity{Bucket: events.S3Bucket{Name: "fwb"}, Object: events.S3Object{Key: "ci/fw.elf", ETag: etag}}}
	var wg sync.WaitGroup
	ids := make([]string, 8)
	errs := make([]error, 8)
	for i := range ids {
		wg.Go(func() {
			p, _, err := f.h.Register(t.Context(), rec)
			ids[i], errs[i] = p.ID, err
		})
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("delivery %d: %s %v (first %s)", i, ids[i], errs[i], ids[0])
		}
	}
	if f.stored.Load() != 1 || f.pub.count(events.TypeProgramStored) != 1 {
		t.Fatalf("stored %d times", f.stored.Load())
	}
	all, total, _ := f.st.ListPrograms(t.Context(), 0, 100)
	if total != 1 || all[0].ID != ids[0] {
		t.Fatalf("programs: %d %+v", total, all)
	}
}

func TestNotificationCloudEvents(t *testing.T) {
	f := newBucketFixture(t)
	etag := f.put(t, "ci/fw.elf", firmware(t))
	send := func(header http.Header, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/", strings.NewReader(body))
		for k, v := range header {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		f.ev.ServeHTTP(rec, req)
		return rec
	}
	data := record("ObjectCreated:Put", "fwb", "ci/fw.elf", etag)
	binary := func(omit string) http.Header {
		h := http.Header{
			"Ce-Specversion": {"1.0"}, "Ce-Id": {"req-1.id2"}, "Ce-Source": {"aws:s3.us-east-1.fwb"},
			"Ce-Type": {events.TypeS3ObjectCreatedPut}, "Ce-Subject": {"ci/fw.elf"}, "Content-Type": {"application/json"},
		}
		delete(h, omit)
		return h
	}
	rec := send(binary(""), data)
	if rec.Code != 200 || rec.Header().Get("Ce-Type") != events.TypeProgramStored {
		t.Fatalf("binary mode: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	var p model.Program
	json.Unmarshal(rec.Body.Bytes(), &p)
	if p.ID != program.ObjectID("fwb", "ci/fw.elf", strings.Trim(etag, `"`)) || p.State != program.StateStored {
		t.Fatalf("reply %s", rec.Body)
	}
	// Redelivered in structured mode: the same program.
	structured := fmt.Sprintf(`{"specversion":"1.0","id":"req-1.id2","source":"aws:s3.us-east-1.fwb","type":%q,"datacontenttype":"application/json","data":%s}`, events.TypeS3ObjectCreatedPut, data)
	rec = send(http.Header{"Content-Type": {"application/cloudevents+json"}}, structured)
	json.Unmarshal(rec.Body.Bytes(), &p)
	if rec.Code != 200 || p.ID != program.ObjectID("fwb", "ci/fw.elf", strings.Trim(etag, `"`)) {
		t.Fatalf("structured: %d %s", rec.Code, rec.Body)
	}
	if n, _, _ := f.st.ListPrograms(t.Context(), 0, 10); len(n) != 1 {
		t.Fatalf("%d programs", len(n))
	}
	// Missing required attributes or data: 4xx, which Knative does not retry.
	for _, omit := range []string{"Ce-Id", "Ce-Source", "Ce-Type", "Ce-Specversion"} {
		if rec := send(binary(omit), data); rec.Code < 400 || rec.Code >= 500 {
			t.Errorf("without %s: %d %s", omit, rec.Code, rec.Body)
		}
	}
	// A store's plain webhook POST to the root (the in-cluster webhook URL).
	rec = send(http.Header{"Content-Type": {"application/json; charset=utf-8"}}, `{"Records":[`+data+`]}`)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), program.ObjectID("fwb", "ci/fw.elf", strings.Trim(etag, `"`))) {
		t.Fatalf("webhook at the root: %d %s", rec.Code, rec.Body)
	}
	for name, body := range map[string]string{
		"not JSON":       `{"s3":`,
		"no bucket":      `{"eventName":"ObjectCreated:Put","s3":{"object":{"key":"ci/fw.elf"}}}`,
		"unknown bucket": record("ObjectCreated:Put", "nope", "ci/fw.elf", etag),
	} {
		if rec := send(binary(""), body); rec.Code < 400 || rec.Code >= 500 {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
}

func TestTenantOwnership(t *testing.T) {
	blobs, _ := blob.NewFS(t.TempDir())
	h, _ := setup(t, blobs, 1<<20)
	acme := auth.WithPrincipal(t.Context(), auth.Principal{Tenant: "acme"})
	other := auth.WithPrincipal(t.Context(), auth.Principal{Tenant: "other"})
	p, err := h.Store(acme, Upload{Name: "x", Format: "bin", Data: []byte{1, 2}})
	if err != nil || p.Tenant != "acme" {
		t.Fatalf("%+v %v", p, err)
	}
	if _, err := h.Get(other, p.ID); !isStatus(err, 404) {
		t.Fatalf("another tenant's get: %v", err)
	}
	if _, err := h.Delete(other, p.ID); !isStatus(err, 404) {
		t.Fatalf("another tenant's delete: %v", err)
	}
	if l, _ := h.List(other, 1, 10); l.Total != 0 || len(l.Programs) != 0 {
		t.Fatalf("another tenant lists %+v", l)
	}
	if l, _ := h.List(acme, 1, 10); l.Total != 1 {
		t.Fatalf("owner lists %+v", l)
	}
	// Without authentication everything is the default tenant's.
	if _, err := h.Get(context.Background(), p.ID); !isStatus(err, 404) {
		t.Fatalf("default tenant's get: %v", err)
	}
	if _, err := h.Get(acme, p.ID); err != nil {
		t.Fatal(err)
	}
}

// hexImage is a one-record Intel HEX image.
func hexImage() []byte {
	return []byte(":0400000001020304F2\n:00000001FF\n")
}

func isStatus(err error, status int) bool {
	e := httpapi.AsError(err)
	return e != nil && e.Status == status
}

// A notification without the webhook token (and without a credential) is
// refused before anything is read; one with too many records is refused.
func TestWebhookNeedsItsToken(t *testing.T) {
	f := newBucketFixture(t)
	etag := f.put(t, "ci/a.elf", firmware(t))
	note := `{"Records":[` + record("s3:ObjectCreated:Put", "fwb", "ci/a.elf", etag) + `]}`
	for _, target := range []string{NotificationsPath, NotificationsPath + "?token=", NotificationsPath + "?token=hook-tokeN"} {
		code, _, body := f.postTo(t, target, note)
		if code != http.StatusUnauthorized || !strings.Contains(body, "MS_PROGRAMS_WEBHOOK_TOKEN") {
			t.Errorf("%s: %d %s, want 401 naming the token", target, code, body)
		}
	}
	if n := f.stored.Load(); n != 0 {
		t.Fatalf("%d programs stored from refused notifications", n)
	}
	many := `{"Records":[` + strings.Repeat(`{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"fwb"},"object":{"key":"ci/a.elf"}}},`, program.MaxRecords) + `{}]}`
	if code, _, body := f.post(t, many); code != http.StatusBadRequest || !strings.Contains(body, "at most") {
		t.Fatalf("%d records: %d %s", program.MaxRecords+1, code, body)
	}
}
