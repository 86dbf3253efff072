package state

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/model"
)

const (
	keyJobs       = "ms:jobs"      // zset id by creation time
	prefixJob     = "ms:job:"      // string: JSON job
	keyJobRules   = "ms:job-rules" // hash rule id -> JSON rule
	maxListedJobs = 1 << 20
)

// CreateJob stores a new job unless one with its id exists (a duplicate
// request); it reports whether it stored it.
func (s *Store) CreateJob(ctx context.Context, j model.Job) (bool, error) {
	b, err := json.Marshal(j)
	if err != nil {
		return false, err
	}
	ok, err := s.rdb.SetNX(ctx, prefixJob+j.ID, b, 0).Result()
	if err != nil {
		return false, fmt.Errorf("state: create job: %w", err)
	}
	if ok {
		err = s.rdb.ZAdd(ctx, keyJobs, redis.Z{Score: float64(j.CreatedAt.UnixNano()), Member: j.ID}).Err()
		if err != nil {
			return false, fmt.Errorf("state: index job: %w", err)
		}
	}
	return ok, nil
}

// GetJob returns a job or ErrNotFound.
func (s *Store) GetJob(ctx context.Context, id string) (model.Job, error) {
	return get[model.Job](ctx, s.rdb, prefixJob+id)
}

// ListJobs returns one page of the jobs that keep (nil: all), oldest first,
// and how many there are.
func (s *Store) ListJobs(ctx context.Context, keep func(model.Job) bool, offset, limit int) ([]model.Job, int, error) {
	if keep == nil {
		return page[model.Job](ctx, s.rdb, keyJobs, prefixJob, offset, limit)
	}
	all, _, err := page[model.Job](ctx, s.rdb, keyJobs, prefixJob, 0, maxListedJobs)
	if err != nil {
		return nil, 0, err
	}
	out := []model.Job{}
	n := 0
	for _, j := range all {
		if !keep(j) {
			continue
		}
		if n >= offset && len(out) < limit {
			out = append(out, j)
		}
		n++
	}
	return out, n, nil
}

// UpdateJob applies fn to the stored job atomically (WATCH, as sessions
// do), so a worker finishing a job and a cancel request cannot lose each
// other's writes. If fn returns an error nothing is written.
func (s *Store) UpdateJob(ctx context.Context, id string, fn func(*model.Job) error) (model.Job, error) {
	return update(ctx, s.rdb, prefixJob, "job", id, stamped(fn, func(v *model.Job) *time.Time { return &v.UpdatedAt }))
}

// PutJobRule stores (or replaces) a job rule.
func (s *Store) PutJobRule(ctx context.Context, r model.JobRule) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := s.rdb.HSet(ctx, keyJobRules, r.ID, b).Err(); err != nil {
		return fmt.Errorf("state: put job rule: %w", err)
	}
	return nil
}

// JobRules lists every job rule.
func (s *Store) JobRules(ctx context.Context) ([]model.JobRule, error) {
	m, err := s.rdb.HGetAll(ctx, keyJobRules).Result()
	if err != nil {
		return nil, fmt.Errorf("state: list job rules: %w", err)
	}
	out := make([]model.JobRule, 0, len(m))
	for id, raw := range m {
		var r model.JobRule
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			return nil, fmt.Errorf("state: decode job rule %s: %w", id, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// DeleteJobRule removes a rule; a missing one is ErrNotFound.
func (s *Store) DeleteJobRule(ctx context.Context, id string) error {
	n, err := s.rdb.HDel(ctx, keyJobRules, id).Result()
	if err != nil {
		return fmt.Errorf("state: delete job rule: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// ProgramBySourceKey returns tenant's newest stored program registered from
// a bucket object key (the program's "source_key", set by the object-upload
// trigger), or ErrNotFound. Other tenants' programs and rejected ones are
// never returned: a key names an object in a bucket, and buckets of
// different tenants may hold the same key.
func (s *Store) ProgramBySourceKey(ctx context.Context, tenant, key string) (model.Program, error) {
	type sourced struct {
		ID        string `json:"id"`
		Tenant    string `json:"tenant"`
		SourceKey string `json:"source_key"`
		State     string `json:"state"`
	}
	all, _, err := page[sourced](ctx, s.rdb, keyPrograms, prefixProgram, 0, maxListedJobs)
	if err != nil {
		return model.Program{}, err
	}
	for i := len(all) - 1; i >= 0; i-- {
		p := all[i]
		if p.SourceKey == key && sameTenant(p.Tenant, tenant) && (p.State == "" || p.State == model.ProgramStored) {
			return s.GetProgram(ctx, p.ID)
		}
	}
	return model.Program{}, ErrNotFound
}

// sameTenant compares tenants, "" being the default one ("default").
func sameTenant(a, b string) bool {
	if a == "" {
		a = "default"
	}
	if b == "" {
		b = "default"
	}
	return a == b
}

// DeleteJob removes a job record and its index entry (a job that could not
// be queued, so a retry of the request starts afresh).
func (s *Store) DeleteJob(ctx context.Context, id string) error {
	return s.del(ctx, prefixJob+id, keyJobs, id)
}
