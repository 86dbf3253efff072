package program

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/fwimage"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/state"
)

// Program states (model.Program.State).
const (
	StateStored   = model.ProgramStored
	StateRejected = model.ProgramRejected
)

// Watch is a bucket, and optionally a key prefix in it, whose new objects
// are registered as programs of Tenant.
type Watch struct {
	Bucket string
	Prefix string
	Tenant string
	// Objects reads the bucket's objects.
	Objects blob.Store
}

func (w Watch) String() string { return w.Bucket + "/" + w.Prefix }

// ParseWatches parses MS_PROGRAMS_BUCKET: comma-separated entries
// "bucket[/prefix][=tenant]"; the tenant defaults to auth.DefaultTenant.
// The result has no Objects yet: the caller connects each bucket.
func ParseWatches(s string) ([]Watch, error) {
	var out []Watch
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		loc, tenant, _ := strings.Cut(e, "=")
		tenant = model.TenantOr(tenant)
		bucket, prefix, _ := strings.Cut(loc, "/")
		if bucket == "" {
			return nil, fmt.Errorf("watched bucket entry %q: want bucket[/prefix][=tenant]", e)
		}
		out = append(out, Watch{Bucket: bucket, Prefix: prefix, Tenant: tenant})
	}
	return out, nil
}

// Notified is the outcome of one notification: what was registered (or
// found registered already) and which records were ignored and why.
type Notified struct {
	Programs []model.Program `json:"programs"`
	Ignored  []Ignored       `json:"ignored,omitempty"`
	// Test is set for a store's test message (s3:TestEvent).
	Test bool `json:"test,omitempty"`
}

// Ignored is a record that did not lead to a program.
type Ignored struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// MaxRecords bounds the records of one notification: each makes the
// function read an object.
const MaxRecords = 100

// WebhookAllowed reports whether a bucket notification may be handled: it
// came with a credential (the auth middleware checked it and the write
// scope) or with the webhook token, which is how a store that cannot send
// headers (versitygw's --event-webhook-url, a MinIO webhook endpoint)
// proves it is the configured one.
func (svc *Service) WebhookAllowed(ctx context.Context, token string) bool {
	if _, ok := auth.FromContext(ctx); ok {
		return true
	}
	return svc.d.WebhookToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(svc.d.WebhookToken)) == 1
}

// Notify handles a notification body (S3 event JSON): every ObjectCreated record of a watched
// bucket is registered; other events are ignored.
func (svc *Service) Notify(ctx context.Context, body []byte) (Notified, error) {
	out := Notified{Programs: []model.Program{}}
	var n events.S3Notification
	if err := json.Unmarshal(body, &n); err != nil {
		return out, fail.Invalid("malformed S3 event notification: %v", err)
	}
	if n.Event == events.S3TestEvent {
		out.Test = true
		return out, nil
	}
	if len(n.Records) == 0 {
		return out, fail.Invalid(`an S3 event notification needs "Records" (or "Event": %q)`, events.S3TestEvent)
	}
	if len(n.Records) > MaxRecords {
		return out, fail.Invalid("a notification carries at most %d records, this one %d", MaxRecords, len(n.Records))
	}
	for _, rec := range n.Records {
		if !rec.ObjectCreated() {
			out.Ignored = append(out.Ignored, Ignored{rec.S3.Bucket.Name, rec.S3.Object.Key, fmt.Sprintf("event %q is not ObjectCreated", rec.EventName)})
			continue
		}
		p, ign, err := svc.Register(ctx, rec)
		if err != nil {
			return out, err
		}
		if ign != nil {
			out.Ignored = append(out.Ignored, *ign)
			continue
		}
		out.Programs = append(out.Programs, p)
	}
	return out, nil
}

// Register turns one ObjectCreated record into a program, exactly once per
// object version: the program id is derived from bucket, key and ETag, and
// a Redis claim makes concurrent deliveries of the same record wait for one
// registration. Objects that fail validation become rejected programs (a
// manifest with the reason, no image). A record outside the watched
// prefixes, or for an object that is gone or was overwritten since, is
// ignored (the newer version has its own notification).
func (svc *Service) Register(ctx context.Context, rec events.S3Record) (model.Program, *Ignored, error) {
	bucket, rawKey := rec.S3.Bucket.Name, rec.S3.Object.Key
	if bucket == "" || rawKey == "" {
		return model.Program{}, nil, fail.Invalid("the record needs s3.bucket.name and s3.object.key")
	}
	watches := svc.watchesOf(bucket)
	if len(watches) == 0 {
		return model.Program{}, nil, fail.Unprocessable("bucket %q is not watched for programs; watched: %s", bucket, svc.watched())
	}
	if watches[0].Objects == nil {
		return model.Program{}, nil, fmt.Errorf("watched bucket %s has no store (WatchConfig.Open connects it)", bucket)
	}
	key, info, err := resolveKey(ctx, watches[0].Objects, rawKey)
	if errors.Is(err, blob.ErrNotFound) {
		return model.Program{}, &Ignored{bucket, rawKey, "the object no longer exists"}, nil
	}
	if err != nil {
		return model.Program{}, nil, err
	}
	w, ok := matchPrefix(watches, key)
	if !ok {
		return model.Program{}, &Ignored{bucket, key, "the key is outside the watched prefixes " + svc.watched()}, nil
	}
	etag := strings.Trim(rec.S3.Object.ETag, `"`)
	if stored := strings.Trim(info.ETag, `"`); etag == "" {
		etag = stored
	} else if stored != "" && stored != etag {
		return model.Program{}, &Ignored{bucket, key, "the object was overwritten since this notification (ETag " + etag + ", now " + stored + ")"}, nil
	}
	id := ObjectID(bucket, key, etag)
	if p, ok, err := svc.registered(ctx, id); err != nil || ok {
		return p, nil, err
	}
	claimed, err := svc.d.State.ClaimProgram(ctx, id, claimTTL)
	if err != nil {
		return model.Program{}, nil, err
	}
	if !claimed {
		p, err := svc.awaitRegistered(ctx, id)
		return p, nil, err
	}
	// Claimed: a delivery that finished just before our claim left its
	// program behind, so look once more before doing the work.
	if p, ok, err := svc.registered(ctx, id); err != nil || ok {
		return p, nil, err
	}
	p, err := svc.registerObject(ctx, w, id, key)
	if err != nil {
		// Let a redelivery try again at once rather than after the TTL.
		svc.d.State.ReleaseProgram(context.WithoutCancel(ctx), id)
	}
	return p, nil, err
}

// claimTTL bounds how long a crashed registration blocks redeliveries.
const claimTTL = 2 * time.Minute

// ObjectID is the id of the program registered from an object version:
// the first 16 hex digits of sha256(bucket, key, etag), so the same object
// version always gets the same id.
func ObjectID(bucket, key, etag string) string {
	sum := sha256.Sum256([]byte(bucket + "\x00" + key + "\x00" + etag))
	return hex.EncodeToString(sum[:8])
}

// resolveKey finds the object: the key as sent (versitygw), else its URL
// decoding (AWS and MinIO encode keys, a space as "+").
func resolveKey(ctx context.Context, objs blob.Store, raw string) (string, blob.Info, error) {
	info, err := objs.Stat(ctx, raw)
	if !errors.Is(err, blob.ErrNotFound) {
		return raw, info, err
	}
	dec, derr := url.QueryUnescape(raw)
	if derr != nil || dec == raw {
		return raw, info, err
	}
	info, err = objs.Stat(ctx, dec)
	return dec, info, err
}

func (svc *Service) watchesOf(bucket string) []Watch {
	var out []Watch
	for _, w := range svc.d.Watches {
		if w.Bucket == bucket {
			out = append(out, w)
		}
	}
	return out
}

// matchPrefix picks the watch with the longest prefix of key.
func matchPrefix(ws []Watch, key string) (Watch, bool) {
	best, ok := Watch{}, false
	for _, w := range ws {
		if strings.HasPrefix(key, w.Prefix) && (!ok || len(w.Prefix) > len(best.Prefix)) {
			best, ok = w, true
		}
	}
	return best, ok
}

func (svc *Service) watched() string {
	if len(svc.d.Watches) == 0 {
		return "none (set MS_PROGRAMS_BUCKET)"
	}
	var s []string
	for _, w := range svc.d.Watches {
		s = append(s, w.String())
	}
	return strings.Join(s, ", ")
}

// registered finds a program in the index, or in the blob store when Redis
// lost it (the manifest is the truth).
func (svc *Service) registered(ctx context.Context, id string) (model.Program, bool, error) {
	p, err := svc.d.State.GetProgram(ctx, id)
	if err == nil {
		return p, true, nil
	}
	if !errors.Is(err, state.ErrNotFound) {
		return p, false, err
	}
	b, err := blob.GetBytes(ctx, svc.d.Blobs, model.ProgramManifestKey(id))
	if errors.Is(err, blob.ErrNotFound) {
		return p, false, nil
	}
	if err != nil {
		return p, false, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, false, fmt.Errorf("program %s manifest: %w", id, err)
	}
	return p, true, svc.d.State.PutProgram(ctx, p)
}

// awaitRegistered waits for the delivery holding the claim to finish.
func (svc *Service) awaitRegistered(ctx context.Context, id string) (model.Program, error) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if p, ok, err := svc.registered(ctx, id); err != nil || ok {
			return p, err
		}
		held, err := svc.d.State.ProgramClaimed(ctx, id)
		if err != nil {
			return model.Program{}, err
		}
		if !held {
			// The other delivery failed and let go; a retry will register it.
			return model.Program{}, fail.Unavailable("program %s: another delivery of this notification failed; retry", id)
		}
		select {
		case <-ctx.Done():
			return model.Program{}, fail.Unavailable("program %s is being registered by another delivery of this notification; retry", id)
		case <-t.C:
		}
	}
}

// registerObject reads, validates and stores the object as program id.
func (svc *Service) registerObject(ctx context.Context, w Watch, id, key string) (model.Program, error) {
	p := model.Program{ID: id, Tenant: w.Tenant, Name: nameOf(key), Bucket: w.Bucket, SourceKey: key, CreatedAt: time.Now().UTC()}
	data, err := readLimited(ctx, w.Objects, key, svc.d.MaxUpload)
	var reason string
	switch {
	case errors.Is(err, errTooLarge):
		reason = fmt.Sprintf("firmware image is larger than the limit of %d bytes", svc.d.MaxUpload)
	case err != nil:
		return p, fmt.Errorf("read %s/%s: %w", w.Bucket, key, err)
	default:
		reason, err = validate(&p, key, data)
		if err != nil {
			return p, err
		}
	}
	if reason != "" {
		p.State, p.Reason, p.Segments = StateRejected, reason, nil
		data = nil
	}
	if err := svc.save(ctx, p, data); err != nil {
		return p, err
	}
	svc.announce(ctx, p)
	if p.State == StateStored {
		if err := svc.d.State.SetProgramKey(ctx, key, p.ID); err != nil {
			svc.d.Log.Warn("program key index", "key", key, "err", err)
		}
	}
	svc.d.Log.Info("program registered from bucket", "id", p.ID, "bucket", w.Bucket, "key", key, "state", p.State, "reason", p.Reason)
	return p, nil
}

var errTooLarge = errors.New("object too large")

func readLimited(ctx context.Context, objs blob.Store, key string, max int64) ([]byte, error) {
	rc, _, err := objs.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, errTooLarge
	}
	return b, nil
}

// validate fills p from the image, or returns why it is rejected. The
// format comes from the key's extension, else from the content.
func validate(p *model.Program, key string, data []byte) (reason string, err error) {
	var format model.Format
	switch ext := strings.ToLower(path.Ext(key)); ext {
	case ".elf", ".axf":
		format = model.FormatELF
	case ".hex", ".ihex":
		format = model.FormatHEX
	case ".bin":
		format = model.FormatBIN
	default:
		format, err = fwimage.Detect(data)
	}
	if err == nil {
		var info fwimage.Info
		info, err = fwimage.Parse(format, data, nil)
		if err == nil {
			p.Format, p.State = format, StateStored
			p.Size, p.SHA256, p.Entry, p.Segments, p.Arch = info.Size, info.SHA256, info.Entry, info.Segments, info.Machine
			return "", nil
		}
	}
	var fe *fwimage.Error
	if !errors.As(err, &fe) {
		return "", err
	}
	sum := sha256.Sum256(data)
	p.Format, p.Size, p.SHA256 = format, int64(len(data)), hex.EncodeToString(sum[:])
	return fe.Msg, nil
}

// nameOf names a program after its object: the key's last segment.
func nameOf(key string) string {
	n := path.Base(key)
	if len(n) > 128 {
		n = n[:128]
	}
	return n
}

// ProgramForKey returns the latest stored program registered from a bucket
// object key: how a job's program_key is resolved.
func ProgramForKey(ctx context.Context, st *state.Store, key string) (model.Program, error) {
	id, err := st.ProgramKey(ctx, key)
	if err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return model.Program{}, fail.NotFound("no program was registered from key %q", key)
		}
		return model.Program{}, err
	}
	p, err := st.GetProgram(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return p, fail.NotFound("the program registered from key %q (%s) was deleted", key, id)
	}
	if err == nil && !auth.Owns(ctx, p.Tenant) {
		return model.Program{}, fail.NotFound("no program was registered from key %q", key)
	}
	return p, err
}

// reindexKey points the key index at v unless a newer program from the same
// key is there already (manifests are listed by id, not by time).
func (svc *Service) reindexKey(ctx context.Context, v model.Program) {
	if cur, err := svc.d.State.ProgramKey(ctx, v.SourceKey); err == nil {
		if p, err := svc.d.State.GetProgram(ctx, cur); err == nil && p.CreatedAt.After(v.CreatedAt) {
			return
		}
	}
	if err := svc.d.State.SetProgramKey(ctx, v.SourceKey, v.ID); err != nil {
		svc.d.Log.Warn("program key index", "key", v.SourceKey, "err", err)
	}
}

// WatchConfig configures the bucket trigger from the environment of the
// binary that embeds it (the handler itself never reads the environment).
// The watched buckets live on the S3 endpoint MS_S3_ENDPOINT names, the
// same one the distributed blob store uses; the standalone server, whose
// blobs are on disk, reads these variables only for the trigger.
type WatchConfig struct {
	// Buckets is MS_PROGRAMS_BUCKET: "bucket[/prefix][=tenant]", comma
	// separated; empty disables the trigger.
	Buckets string `envconfig:"MS_PROGRAMS_BUCKET"`
	// WebhookToken is what a store must put in the webhook URL
	// (?token=) to post notifications without an API key.
	WebhookToken string `envconfig:"MS_PROGRAMS_WEBHOOK_TOKEN"`
	Endpoint     string `envconfig:"MS_S3_ENDPOINT"`
	AccessKey    string `envconfig:"MS_S3_ACCESS_KEY"`
	SecretKey    string `envconfig:"MS_S3_SECRET_KEY"`
	Region       string `envconfig:"MS_S3_REGION" default:"us-east-1"`
	Secure       bool   `envconfig:"MS_S3_SECURE"`
}

// Open parses the watched buckets and connects each one (creating it if it
// does not exist, so a CI can upload into it at once).
func (c WatchConfig) Open(ctx context.Context) ([]Watch, error) {
	ws, err := ParseWatches(c.Buckets)
	if err != nil || len(ws) == 0 {
		return nil, err
	}
	if c.Endpoint == "" {
		return nil, fmt.Errorf("MS_PROGRAMS_BUCKET %q needs MS_S3_ENDPOINT and credentials to read the bucket", c.Buckets)
	}
	stores := map[string]blob.Store{}
	for i, w := range ws {
		if stores[w.Bucket] == nil {
			s, err := blob.NewS3(ctx, blob.S3Config{Endpoint: c.Endpoint, AccessKey: c.AccessKey, SecretKey: c.SecretKey, Bucket: w.Bucket, Region: c.Region, Secure: c.Secure})
			if err != nil {
				return nil, fmt.Errorf("watched bucket %s: %w", w.Bucket, err)
			}
			stores[w.Bucket] = s
		}
		ws[i].Objects = stores[w.Bucket]
	}
	return ws, nil
}
