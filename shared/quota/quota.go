package quota

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/httpapi"
)

// Kind is a limited resource.
type Kind string

const (
	// Sessions counts a tenant's sessions (each holds 1).
	Sessions Kind = "sessions"
	// Storage counts the bytes of a tenant's programs, snapshots and
	// recordings.
	Storage Kind = "storage_bytes"
	// Jobs counts a tenant's running jobs (each holds 1).
	Jobs Kind = "jobs"
)

// Kinds lists every kind, in the order reports show them.
var Kinds = []Kind{Sessions, Storage, Jobs}

// Unlimited as a limit lets a tenant hold any amount.
const Unlimited int64 = -1

// Config is the limits every tenant has unless an admin overrides them.
type Config struct {
	Sessions     int64 `envconfig:"MS_QUOTA_SESSIONS" default:"20"`
	StorageBytes int64 `envconfig:"MS_QUOTA_STORAGE_BYTES" default:"1073741824"`
	Jobs         int64 `envconfig:"MS_QUOTA_JOBS" default:"4"`
}

func (c Config) limit(k Kind) int64 {
	switch k {
	case Sessions:
		return c.Sessions
	case Storage:
		return c.StorageBytes
	default:
		return c.Jobs
	}
}

// ProgramKey and SnapshotKey name storage holdings, so programs and
// snapshots with the same id never collide.
func ProgramKey(id string) string  { return "program:" + id }
func SnapshotKey(id string) string { return "snapshot:" + id }

// RecordingKey is the holding of a stored recording.
func RecordingKey(id string) string { return "recording:" + id }

// Quota enforces limits in Redis. A nil *Quota is unlimited: every method
// works and acquires always succeed, so tests and tools need no Redis.
type Quota struct {
	rdb redis.UniversalClient
	cfg Config
}

// New returns a Quota on rdb with cfg's limits as defaults.
func New(rdb redis.UniversalClient, cfg Config) *Quota { return &Quota{rdb: rdb, cfg: cfg} }

const keyTenants = "ms:quota:tenants" // set of tenants with holdings or overrides

func keyOverride(tenant string) string      { return "ms:quota:override:" + tenant } // hash kind -> limit
func keyHeld(tenant string, k Kind) string  { return "ms:quota:held:" + tenant + ":" + string(k) }
func keySince(tenant string, k Kind) string { return "ms:quota:since:" + tenant + ":" + string(k) }
func validKind(k Kind) bool                 { return k == Sessions || k == Storage || k == Jobs }
func errKind(k Kind) error                  { return fmt.Errorf("quota: unknown kind %q", k) }
func nowMillis() string                     { return strconv.FormatInt(time.Now().UnixMilli(), 10) }

// acquire counts the tenant's holdings, compares them with its limit (the
// override, else the default) and records the member, all in one script so
// no other client can slip in between. A member already held succeeds
// without counting twice.
var acquire = redis.NewScript(`
local used = 0
local vals = redis.call('HVALS', KEYS[1])
for i = 1, #vals do used = used + tonumber(vals[i]) end
local limit = tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or ARGV[3])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {1, used, limit} end
local n = tonumber(ARGV[2])
if limit >= 0 and used + n > limit then return {0, used, limit} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[6])
return {1, used + n, limit}
`)

// Acquire records that tenant holds n of kind under member (a resource id),
// or refuses with an *ExceededError when that would pass the tenant's limit.
// Acquiring a member already held succeeds and counts it once.
func (q *Quota) Acquire(ctx context.Context, tenant string, kind Kind, member string, n int64) error {
	if q == nil {
		return nil
	}
	if !validKind(kind) {
		return errKind(kind)
	}
	if n < 0 {
		return fmt.Errorf("quota: negative amount %d", n)
	}
	res, err := acquire.Run(ctx, q.rdb,
		[]string{keyHeld(tenant, kind), keySince(tenant, kind), keyOverride(tenant), keyTenants},
		member, n, q.cfg.limit(kind), string(kind), nowMillis(), tenant).Int64Slice()
	if err != nil {
		return fmt.Errorf("quota: acquire %s for %s: %w", kind, tenant, err)
	}
	if res[0] == 1 {
		return nil
	}
	return &ExceededError{Tenant: tenant, Kind: kind, Used: res[1], Limit: res[2], Requested: n}
}

// Release drops member's holding; releasing what is not held is a no-op, so
// a double delete cannot drift the count.
func (q *Quota) Release(ctx context.Context, tenant string, kind Kind, member string) error {
	if q == nil {
		return nil
	}
	if !validKind(kind) {
		return errKind(kind)
	}
	_, err := q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, keyHeld(tenant, kind), member)
		p.ZRem(ctx, keySince(tenant, kind), member)
		return nil
	})
	if err != nil {
		return fmt.Errorf("quota: release %s for %s: %w", kind, tenant, err)
	}
	return nil
}

// reconcile makes the holdings equal to the truth it is given, except that
// holdings newer than the cutoff stay: they may be creates in flight on
// another instance, acquired but not yet stored.
var reconcile = redis.NewScript(`
local truth = {}
for i = 4, #ARGV, 2 do truth[ARGV[i]] = ARGV[i + 1] end
local changed = 0
local held = redis.call('HGETALL', KEYS[1])
for i = 1, #held, 2 do
  local m = held[i]
  if string.sub(m, 1, #ARGV[3]) ~= ARGV[3] then
    -- outside the scope this truth covers
  elseif not truth[m] then
    local since = tonumber(redis.call('ZSCORE', KEYS[2], m) or '0')
    if since <= tonumber(ARGV[1]) then
      redis.call('HDEL', KEYS[1], m)
      redis.call('ZREM', KEYS[2], m)
      changed = changed + 1
    end
  elseif held[i + 1] ~= truth[m] then
    redis.call('HSET', KEYS[1], m, truth[m])
    changed = changed + 1
  end
end
for m, n in pairs(truth) do
  if redis.call('HSETNX', KEYS[1], m, n) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[2], m)
    changed = changed + 1
  end
end
return changed
`)

// Reconcile sets tenant's holdings of kind to truth (member to amount, as
// recounted from state), repairing what a crash between acquire and store,
// or between delete and release, left behind. Holdings younger than grace
// are kept even if truth lacks them. It returns how many holdings changed.
func (q *Quota) Reconcile(ctx context.Context, tenant string, kind Kind, truth map[string]int64, grace time.Duration) (int, error) {
	return q.ReconcileScope(ctx, tenant, kind, "", truth, grace)
}

// Holdings are, per tenant, the bytes each stored artifact holds (by its
// member key, e.g. ProgramKey(id)): what a rebuild from the blob store
// finds, to reconcile the quota with.
type Holdings map[string]map[string]int64

// Add records that tenant holds n under member.
func (h Holdings) Add(tenant, member string, n int64) {
	if h[tenant] == nil {
		h[tenant] = map[string]int64{}
	}
	h[tenant][member] = n
}

// ReconcileHoldings reconciles, for every tenant in h, the holdings of kind
// whose member starts with prefix with what h says (ReconcileScope).
func (q *Quota) ReconcileHoldings(ctx context.Context, kind Kind, prefix string, h Holdings, grace time.Duration) error {
	for t, truth := range h {
		if _, err := q.ReconcileScope(ctx, t, kind, prefix, truth, grace); err != nil {
			return err
		}
	}
	return nil
}

// ReconcileScope is Reconcile for the holdings whose member starts with
// prefix only, for a caller that knows part of a kind: the programs function
// reconciles Storage with prefix ProgramKey("") without touching snapshots'.
func (q *Quota) ReconcileScope(ctx context.Context, tenant string, kind Kind, prefix string, truth map[string]int64, grace time.Duration) (int, error) {
	if q == nil {
		return 0, nil
	}
	if !validKind(kind) {
		return 0, errKind(kind)
	}
	args := []any{time.Now().Add(-grace).UnixMilli(), nowMillis(), prefix}
	for m, n := range truth {
		args = append(args, m, strconv.FormatInt(n, 10))
	}
	n, err := reconcile.Run(ctx, q.rdb, []string{keyHeld(tenant, kind), keySince(tenant, kind)}, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("quota: reconcile %s for %s: %w", kind, tenant, err)
	}
	if len(truth) > 0 {
		if err := q.rdb.SAdd(ctx, keyTenants, tenant).Err(); err != nil {
			return n, fmt.Errorf("quota: reconcile %s for %s: %w", kind, tenant, err)
		}
	}
	return n, nil
}

// Tenants lists the tenants that hold something or have overrides.
func (q *Quota) Tenants(ctx context.Context) ([]string, error) {
	if q == nil {
		return nil, nil
	}
	ts, err := q.rdb.SMembers(ctx, keyTenants).Result()
	if err != nil {
		return nil, fmt.Errorf("quota: tenants: %w", err)
	}
	return ts, nil
}

// Item is one limit of a tenant and what it uses of it.
type Item struct {
	// Limit is the effective limit; -1 is unlimited.
	Limit int64 `json:"limit"`
	Used  int64 `json:"used"`
	// Source is "default" (configuration) or "override" (set by an admin).
	Source string `json:"source"`
}

// Usage is a tenant's limits and usage.
type Usage struct {
	Tenant       string `json:"tenant"`
	Sessions     Item   `json:"sessions"`
	StorageBytes Item   `json:"storage_bytes"`
	Jobs         Item   `json:"jobs"`
}

func (u *Usage) item(k Kind) *Item {
	switch k {
	case Sessions:
		return &u.Sessions
	case Storage:
		return &u.StorageBytes
	default:
		return &u.Jobs
	}
}

// Usage reports tenant's effective limits and current holdings.
func (q *Quota) Usage(ctx context.Context, tenant string) (Usage, error) {
	u := Usage{Tenant: tenant}
	if q == nil {
		for _, k := range Kinds {
			*u.item(k) = Item{Limit: Unlimited, Source: "default"}
		}
		return u, nil
	}
	over, err := q.rdb.HGetAll(ctx, keyOverride(tenant)).Result()
	if err != nil {
		return u, fmt.Errorf("quota: usage of %s: %w", tenant, err)
	}
	for _, k := range Kinds {
		it := Item{Limit: q.cfg.limit(k), Source: "default"}
		if v, ok := over[string(k)]; ok {
			if it.Limit, err = strconv.ParseInt(v, 10, 64); err != nil {
				return u, fmt.Errorf("quota: override %s of %s: %w", k, tenant, err)
			}
			it.Source = "override"
		}
		vals, err := q.rdb.HVals(ctx, keyHeld(tenant, k)).Result()
		if err != nil {
			return u, fmt.Errorf("quota: usage of %s: %w", tenant, err)
		}
		for _, v := range vals {
			n, _ := strconv.ParseInt(v, 10, 64)
			it.Used += n
		}
		*u.item(k) = it
	}
	return u, nil
}

// Overrides are an admin's per-tenant limits; a nil field means the default.
type Overrides struct {
	Sessions     *int64 `json:"sessions,omitempty"`
	StorageBytes *int64 `json:"storage_bytes,omitempty"`
	Jobs         *int64 `json:"jobs,omitempty"`
}

func (o Overrides) field(k Kind) *int64 {
	switch k {
	case Sessions:
		return o.Sessions
	case Storage:
		return o.StorageBytes
	default:
		return o.Jobs
	}
}

// SetOverrides replaces tenant's overrides with o (fields left nil go back
// to the defaults). Lowering a limit below current usage refuses new
// acquires only; nothing held is taken away.
func (q *Quota) SetOverrides(ctx context.Context, tenant string, o Overrides) error {
	if q == nil {
		return httpapi.Unavailable("quotas are not enabled on this server")
	}
	for _, k := range Kinds {
		if v := o.field(k); v != nil && *v < Unlimited {
			return httpapi.BadRequest("%s must be -1 (unlimited) or a limit of 0 or more; got %d", k, *v)
		}
	}
	_, err := q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, keyOverride(tenant))
		for _, k := range Kinds {
			if v := o.field(k); v != nil {
				p.HSet(ctx, keyOverride(tenant), string(k), *v)
			}
		}
		p.SAdd(ctx, keyTenants, tenant)
		return nil
	})
	if err != nil {
		return fmt.Errorf("quota: set overrides of %s: %w", tenant, err)
	}
	return nil
}

// ErrExceeded matches every refusal (errors.Is).
var ErrExceeded = errors.New("quota exceeded")

// ExceededError is a refused acquire: which limit, for whom, and how much.
type ExceededError struct {
	Tenant    string
	Kind      Kind
	Used      int64
	Limit     int64
	Requested int64
}

func (e *ExceededError) Error() string { return e.HTTP().Message }

// Is makes errors.Is(err, ErrExceeded) hold.
func (e *ExceededError) Is(target error) bool { return target == ErrExceeded }

// As lets httpapi.WriteError (and the CloudEvents replies) find the HTTP
// error without knowing this package.
func (e *ExceededError) As(target any) bool {
	if p, ok := target.(**httpapi.Error); ok {
		*p = e.HTTP()
		return true
	}
	return false
}

// HTTP is the API error: 429 for concurrency limits (sessions, jobs), which
// free up by themselves, 403 for storage, which does not.
func (e *ExceededError) HTTP() *httpapi.Error {
	var he *httpapi.Error
	switch e.Kind {
	case Storage:
		he = httpapi.Errorf(http.StatusForbidden, "quota_exceeded",
			"storage quota exceeded: tenant %s stores %s of %s and this needs %s more; delete programs or snapshots or ask an admin to raise the limit",
			e.Tenant, Bytes(e.Used), Bytes(e.Limit), Bytes(e.Requested))
	case Jobs:
		he = httpapi.Errorf(http.StatusTooManyRequests, "quota_exceeded",
			"quota exceeded: running jobs %d/%d for tenant %s; wait for a job to finish or ask an admin to raise the limit", e.Used, e.Limit, e.Tenant)
	default:
		he = httpapi.Errorf(http.StatusTooManyRequests, "quota_exceeded",
			"quota exceeded: sessions %d/%d for tenant %s; delete a session or ask an admin to raise the limit", e.Used, e.Limit, e.Tenant)
	}
	he.Details = map[string]any{"tenant": e.Tenant, "limit": e.Kind, "used": e.Used, "max": e.Limit, "requested": e.Requested}
	return he
}

// Bytes formats a size for people (binary units, one decimal).
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
