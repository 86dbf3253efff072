package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/queue"
	"github.com/machineserver/machineserver/shared/quota"
)

// ErrNotFound is returned for a missing session, program or runner.
var ErrNotFound = model.ErrNotFound

const (
	keySessions          = "ms:sessions"            // zset id by creation time
	keyPrograms          = "ms:programs"            // zset id by creation time
	keyRunners           = "ms:runners"             // set of runner ids
	prefixSession        = "ms:session:"            // string: JSON session
	prefixProgram        = "ms:program:"            // string: JSON program
	prefixRunner         = "ms:runner:"             // string: JSON runner, with TTL
	keySnapshots         = "ms:snapshots"           // zset id by creation time
	prefixSnap           = "ms:snapshot:"           // string: JSON snapshot
	prefixSnapOf         = "ms:snapshots-of:"       // zset of one session's snapshots
	prefixSnapUse        = "ms:snapshot-use:"       // counter of restores reading a snapshot
	prefixTenantSessions = "ms:sessions-of-tenant:" // zset of one tenant's session ids by creation time
	maxTxRetries         = 20
)

// Store is the Redis-backed state.
type Store struct {
	rdb *redis.Client
	// embedded is the in-process server in standalone mode; nil otherwise.
	embedded *miniredis.Miniredis
	// runners caches decoded runner records by id with the bytes they came
	// from: a record carries the runner's capabilities (kilobytes of JSON)
	// and is read on most requests, but changes only when the runner
	// registers again.
	runners sync.Map // id -> cachedRunner
}

type cachedRunner struct {
	raw []byte
	r   Runner
}

// Open connects to the Redis server at url (redis://host:port/db) and checks
// that it answers.
func Open(ctx context.Context, url string) (*Store, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("state: parse redis url: %w", err)
	}
	rdb := redis.NewClient(opt)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("state: ping %s: %w", opt.Addr, err)
	}
	return &Store{rdb: rdb}, nil
}

// OpenEmbedded starts an in-process Redis-compatible server on loopback and
// connects to it, for standalone mode and tests.
func OpenEmbedded(ctx context.Context) (*Store, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("state: start embedded redis: %w", err)
	}
	s, err := Open(ctx, "redis://"+m.Addr()+"/0")
	if err != nil {
		m.Close()
		return nil, err
	}
	s.embedded = m
	return s, nil
}

// Addr is the Redis address, for /health.
func (s *Store) Addr() string {
	if s.embedded != nil {
		return "embedded:" + s.embedded.Addr()
	}
	return s.rdb.Options().Addr
}

// Ping checks the connection.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// Close closes the client and, in standalone mode, the embedded server.
func (s *Store) Close() error {
	err := s.rdb.Close()
	if s.embedded != nil {
		s.embedded.Close()
	}
	return err
}

// The state layer owns every Redis key: the stores below keep their own key
// families (ms:jobqueue*, ms:quota*, ms:apikey*, ms:audit, ...) on this
// Store's connection, and nothing else is handed the client.

// Queue is the job queue on this Store's Redis.
func (s *Store) Queue(ctx context.Context, cfg queue.Config) (*queue.Queue, error) {
	return queue.New(ctx, s.rdb, cfg)
}

// Quota is the per-tenant quota store on this Store's Redis.
func (s *Store) Quota(cfg quota.Config) *quota.Quota { return quota.New(s.rdb, cfg) }

// Authenticator is the credential checker (API keys, session-token
// revocations, the audit stream) on this Store's Redis.
func (s *Store) Authenticator(ctx context.Context, o auth.Options) (*auth.Authenticator, error) {
	o.Redis = s.rdb
	return auth.New(ctx, o)
}

func put(ctx context.Context, pipe redis.Cmdable, key, index, id string, created time.Time, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	pipe.Set(ctx, key, b, 0)
	pipe.ZAdd(ctx, index, redis.Z{Score: float64(created.UnixNano()), Member: id})
	return nil
}

func get[T any](ctx context.Context, rdb redis.Cmdable, key string) (T, error) {
	return value[T](key, rdb.Get(ctx, key))
}

// value decodes the reply of a GET of key (sent alone or pipelined);
// a missing key is ErrNotFound.
func value[T any](key string, c *redis.StringCmd) (T, error) {
	var v T
	b, err := c.Bytes()
	if errors.Is(err, redis.Nil) {
		return v, ErrNotFound
	}
	if err != nil {
		return v, fmt.Errorf("state: get %s: %w", key, err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("state: decode %s: %w", key, err)
	}
	return v, nil
}

// page lists one page of an index, oldest first, and the total.
func page[T any](ctx context.Context, rdb *redis.Client, index, prefix string, offset, limit int) ([]T, int, error) {
	total, err := rdb.ZCard(ctx, index).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("state: count %s: %w", index, err)
	}
	ids, err := rdb.ZRange(ctx, index, int64(offset), int64(offset+limit-1)).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("state: list %s: %w", index, err)
	}
	out := make([]T, 0, len(ids))
	if len(ids) == 0 {
		return out, int(total), nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = prefix + id
	}
	vals, err := rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("state: mget: %w", err)
	}
	for _, raw := range vals {
		str, ok := raw.(string)
		if !ok {
			continue // deleted between ZRANGE and MGET
		}
		var v T
		if err := json.Unmarshal([]byte(str), &v); err != nil {
			return nil, 0, fmt.Errorf("state: decode: %w", err)
		}
		out = append(out, v)
	}
	return out, int(total), nil
}

// CreateSession stores a new session.
func (s *Store) CreateSession(ctx context.Context, sess model.Session) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if err := put(ctx, p, prefixSession+sess.ID, keySessions, sess.ID, sess.CreatedAt, sess); err != nil {
			return err
		}
		p.ZAdd(ctx, tenantSessions(sess.Tenant), redis.Z{Score: float64(sess.CreatedAt.UnixNano()), Member: sess.ID})
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: create session: %w", err)
	}
	return nil
}

// DefaultTenant owns sessions stored without a tenant (before tenants
// existed); it matches auth.DefaultTenant.
const DefaultTenant = model.DefaultTenant

// tenantSessions is the per-tenant index, so a tenant's list pages over its
// own sessions (filtering one global page would give short pages and a wrong
// total).
func tenantSessions(tenant string) string {
	return prefixTenantSessions + model.TenantOr(tenant)
}

// ListTenantSessions returns one page of a tenant's sessions, oldest first,
// and that tenant's total.
func (s *Store) ListTenantSessions(ctx context.Context, tenant string, offset, limit int) ([]model.Session, int, error) {
	return page[model.Session](ctx, s.rdb, tenantSessions(tenant), prefixSession, offset, limit)
}

// IndexSessionTenants adds every stored session to its tenant's index, for
// sessions stored before the index existed; it is idempotent and returns how
// many sessions it saw.
func (s *Store) IndexSessionTenants(ctx context.Context) (int, error) {
	all, _, err := s.ListSessions(ctx, 0, 1<<30)
	if err != nil {
		return 0, err
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, sess := range all {
			p.ZAdd(ctx, tenantSessions(sess.Tenant), redis.Z{Score: float64(sess.CreatedAt.UnixNano()), Member: sess.ID})
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("state: index session tenants: %w", err)
	}
	return len(all), nil
}

// GetSession returns a session or ErrNotFound.
func (s *Store) GetSession(ctx context.Context, id string) (model.Session, error) {
	return get[model.Session](ctx, s.rdb, prefixSession+id)
}

// ListSessions returns one page of sessions, oldest first, and the total.
func (s *Store) ListSessions(ctx context.Context, offset, limit int) ([]model.Session, int, error) {
	return page[model.Session](ctx, s.rdb, keySessions, prefixSession, offset, limit)
}

// UpdateSession applies fn to the stored session atomically (optimistic
// locking with WATCH), so the functions and the runner can both change a
// session without losing each other's writes. If fn returns an error nothing
// is written and that error is returned.
func (s *Store) UpdateSession(ctx context.Context, id string, fn func(*model.Session) error) (model.Session, error) {
	return update(ctx, s.rdb, prefixSession, "session", id, stamped(fn, func(v *model.Session) *time.Time { return &v.UpdatedAt }))
}

// update applies fn to the value stored under prefix+id atomically
// (optimistic locking with WATCH), so the functions and the runner can both
// change it without losing each other's writes. If fn returns an error
// nothing is written and that error is returned.
func update[T any](ctx context.Context, rdb *redis.Client, prefix, what, id string, fn func(*T) error) (T, error) {
	key := prefix + id
	var out T
	for range maxTxRetries {
		err := rdb.Watch(ctx, func(tx *redis.Tx) error {
			v, err := get[T](ctx, tx, key)
			if err != nil {
				return err
			}
			if err := fn(&v); err != nil {
				return err
			}
			b, err := json.Marshal(v)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, b, 0)
				return nil
			})
			out = v
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		return out, err
	}
	return out, fmt.Errorf("state: update %s %s: too much contention", what, id)
}

// stamped is fn that also moves the value's UpdatedAt (at) when it
// changes it.
func stamped[T any](fn func(*T) error, at func(*T) *time.Time) func(*T) error {
	return func(v *T) error {
		if err := fn(v); err != nil {
			return err
		}
		*at(v) = time.Now().UTC()
		return nil
	}
}

// DeleteSession removes a session; a missing one is ErrNotFound.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	sess, err := s.GetSession(ctx, id)
	if err != nil {
		return err
	}
	// The tenant never changes, so reading it before the delete is safe.
	var n *redis.IntCmd
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.Del(ctx, prefixSession+id)
		p.ZRem(ctx, keySessions, id)
		p.ZRem(ctx, tenantSessions(sess.Tenant), id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: delete session %s: %w", id, err)
	}
	if n.Val() == 0 {
		return ErrNotFound
	}
	return nil
}

func (s *Store) del(ctx context.Context, key, index, id string) error {
	var n *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.Del(ctx, key)
		p.ZRem(ctx, index, id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: delete %s: %w", key, err)
	}
	if n.Val() == 0 {
		return ErrNotFound
	}
	return nil
}

// SessionsOnRunner lists every session bound to a runner (for reconciling
// after a runner restart).
func (s *Store) SessionsOnRunner(ctx context.Context, runnerID string) ([]model.Session, error) {
	all, _, err := s.ListSessions(ctx, 0, 1<<30)
	if err != nil {
		return nil, err
	}
	var out []model.Session
	for _, sess := range all {
		if sess.RunnerID == runnerID {
			out = append(out, sess)
		}
	}
	return out, nil
}

// PutProgram indexes a program (its manifest is in the blob store).
func (s *Store) PutProgram(ctx context.Context, p model.Program) error {
	_, err := s.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		return put(ctx, pipe, prefixProgram+p.ID, keyPrograms, p.ID, p.CreatedAt, p)
	})
	if err != nil {
		return fmt.Errorf("state: put program: %w", err)
	}
	return nil
}

// GetProgram returns a program or ErrNotFound.
func (s *Store) GetProgram(ctx context.Context, id string) (model.Program, error) {
	return get[model.Program](ctx, s.rdb, prefixProgram+id)
}

// ListPrograms returns one page of programs, oldest first, and the total.
func (s *Store) ListPrograms(ctx context.Context, offset, limit int) ([]model.Program, int, error) {
	return page[model.Program](ctx, s.rdb, keyPrograms, prefixProgram, offset, limit)
}

// DeleteProgram removes a program from the index.
func (s *Store) DeleteProgram(ctx context.Context, id string) error {
	return s.del(ctx, prefixProgram+id, keyPrograms, id)
}

// Runner is a runner's registration: where to reach it and what it offers.
type Runner struct {
	ID           string             `json:"id"`
	URL          string             `json:"url"`
	Capacity     int                `json:"capacity"`
	Running      int                `json:"running"`
	Capabilities board.Capabilities `json:"capabilities"`
	StartedAt    time.Time          `json:"started_at"`
	HeartbeatAt  time.Time          `json:"heartbeat_at"`
}

// Free is how many more emulators the runner accepts.
func (r Runner) Free() int { return r.Capacity - r.Running }

// RegisterRunner records (or refreshes) a runner; the record expires after
// ttl unless refreshed, so a dead runner disappears from the registry.
func (s *Store) RegisterRunner(ctx context.Context, r Runner, ttl time.Duration) error {
	r.HeartbeatAt = time.Now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, prefixRunner+r.ID, b, ttl)
		p.SAdd(ctx, keyRunners, r.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: register runner: %w", err)
	}
	return nil
}

// UnregisterRunner removes a runner at shutdown.
func (s *Store) UnregisterRunner(ctx context.Context, id string) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, prefixRunner+id)
		p.SRem(ctx, keyRunners, id)
		return nil
	})
	return err
}

// Runner returns a live runner by id.
// The record is read every time (so a runner that is gone is seen at once);
// only its decoding is skipped when the bytes are unchanged. Callers must
// not modify the capabilities' slices.
func (s *Store) Runner(ctx context.Context, id string) (Runner, error) {
	return s.runner(id, s.rdb.Get(ctx, prefixRunner+id))
}

// runner decodes the reply of a GET of runner id's record (sent alone or
// pipelined), unless it is the record decoded last.
func (s *Store) runner(id string, c *redis.StringCmd) (Runner, error) {
	b, err := c.Bytes()
	if errors.Is(err, redis.Nil) {
		return Runner{}, ErrNotFound
	}
	if err != nil {
		return Runner{}, fmt.Errorf("state: get runner %s: %w", id, err)
	}
	if c, ok := s.runners.Load(id); ok && bytes.Equal(c.(cachedRunner).raw, b) {
		return c.(cachedRunner).r, nil
	}
	var r Runner
	if err := json.Unmarshal(b, &r); err != nil {
		return Runner{}, fmt.Errorf("state: decode runner %s: %w", id, err)
	}
	s.runners.Store(id, cachedRunner{raw: b, r: r})
	return r, nil
}

// RunnerAndProgram reads a session's runner and program in one round trip;
// each missing one is ErrNotFound in its own error.
func (s *Store) RunnerAndProgram(ctx context.Context, runnerID, programID string) (r Runner, p model.Program, runnerErr, programErr error) {
	var rc, pc *redis.StringCmd
	// A failed round trip fails both commands: each reports it below.
	_, _ = s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		rc = pl.Get(ctx, prefixRunner+runnerID)
		pc = pl.Get(ctx, prefixProgram+programID)
		return nil
	})
	r, runnerErr = s.runner(runnerID, rc)
	p, programErr = value[model.Program](prefixProgram+programID, pc)
	return r, p, runnerErr, programErr
}

// RunnerAlive reports whether runner id is registered (its heartbeat has
// not lapsed), without reading its record.
func (s *Store) RunnerAlive(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.Exists(ctx, prefixRunner+id).Result()
	if err != nil {
		return false, fmt.Errorf("state: runner %s: %w", id, err)
	}
	return n == 1, nil
}

// Runners lists live runners, most free capacity first; expired ones are
// pruned from the set.
func (s *Store) Runners(ctx context.Context) ([]Runner, error) {
	ids, err := s.rdb.SMembers(ctx, keyRunners).Result()
	if err != nil {
		return nil, fmt.Errorf("state: list runners: %w", err)
	}
	var out []Runner
	for _, id := range ids {
		r, err := s.Runner(ctx, id)
		if errors.Is(err, ErrNotFound) {
			s.rdb.SRem(ctx, keyRunners, id)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Free() != out[j].Free() {
			return out[i].Free() > out[j].Free()
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// PutSnapshot indexes a snapshot (its manifest is in the blob store).
func (s *Store) PutSnapshot(ctx context.Context, snap model.Snapshot) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if err := put(ctx, p, prefixSnap+snap.ID, keySnapshots, snap.ID, snap.CreatedAt, snap); err != nil {
			return err
		}
		p.ZAdd(ctx, prefixSnapOf+snap.SessionID, redis.Z{Score: float64(snap.CreatedAt.UnixNano()), Member: snap.ID})
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: put snapshot: %w", err)
	}
	return nil
}

// GetSnapshot returns a snapshot or ErrNotFound.
func (s *Store) GetSnapshot(ctx context.Context, id string) (model.Snapshot, error) {
	return get[model.Snapshot](ctx, s.rdb, prefixSnap+id)
}

// ListSnapshots returns one page of a session's snapshots (or of all, for an
// empty sessionID), oldest first, and the total.
func (s *Store) ListSnapshots(ctx context.Context, sessionID string, offset, limit int) ([]model.Snapshot, int, error) {
	index := keySnapshots
	if sessionID != "" {
		index = prefixSnapOf + sessionID
	}
	return page[model.Snapshot](ctx, s.rdb, index, prefixSnap, offset, limit)
}

// DeleteSnapshot removes a snapshot from the index.
func (s *Store) DeleteSnapshot(ctx context.Context, snap model.Snapshot) error {
	var n *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.Del(ctx, prefixSnap+snap.ID)
		p.ZRem(ctx, keySnapshots, snap.ID)
		p.ZRem(ctx, prefixSnapOf+snap.SessionID, snap.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: delete snapshot: %w", err)
	}
	if n.Val() == 0 {
		return ErrNotFound
	}
	return nil
}

// UseSnapshot marks a snapshot as read by a restore until the returned
// release is called (or lease passes, should the caller die), so it cannot
// be deleted under the restore.
func (s *Store) UseSnapshot(ctx context.Context, id string, lease time.Duration) (release func(), err error) {
	key := prefixSnapUse + id
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, key)
		p.Expire(ctx, key, lease)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: use snapshot: %w", err)
	}
	return func() { s.rdb.Decr(context.WithoutCancel(ctx), key) }, nil
}

// SnapshotInUse reports whether a restore is reading the snapshot.
func (s *Store) SnapshotInUse(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.Get(ctx, prefixSnapUse+id).Int()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	return n > 0, err
}
