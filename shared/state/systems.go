package state

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/model"
)

const (
	prefixSystem     = "ms:system:"     // string: JSON system
	keySystems       = "ms:systems"     // zset of system ids by creation
	prefixSystemSnap = "ms:systemsnap:" // string: JSON system snapshot
	keySystemSnaps   = "ms:systemsnaps" // zset of system snapshot ids by creation
)

// PutSystem stores a system and indexes it.
func (s *Store) PutSystem(ctx context.Context, sys model.System) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		return put(ctx, p, prefixSystem+sys.ID, keySystems, sys.ID, sys.CreatedAt, sys)
	})
	if err != nil {
		return fmt.Errorf("state: put system: %w", err)
	}
	return nil
}

// GetSystem returns a system or ErrNotFound.
func (s *Store) GetSystem(ctx context.Context, id string) (model.System, error) {
	return get[model.System](ctx, s.rdb, prefixSystem+id)
}

// ListSystems returns one page of all systems, oldest first, and the total.
func (s *Store) ListSystems(ctx context.Context, offset, limit int) ([]model.System, int, error) {
	return page[model.System](ctx, s.rdb, keySystems, prefixSystem, offset, limit)
}

// UpdateSystem changes a system with fn, atomically; fn's error aborts the
// change and is returned.
func (s *Store) UpdateSystem(ctx context.Context, id string, fn func(*model.System) error) (model.System, error) {
	return update(ctx, s.rdb, prefixSystem, "system", id, stamped(fn, func(v *model.System) *time.Time { return &v.UpdatedAt }))
}

// DeleteSystem removes a system and its index entry.
func (s *Store) DeleteSystem(ctx context.Context, id string) error {
	return s.remove(ctx, "system", prefixSystem+id, keySystems, id)
}

// PutSystemSnapshot stores a system snapshot and indexes it.
func (s *Store) PutSystemSnapshot(ctx context.Context, v model.SystemSnapshot) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		return put(ctx, p, prefixSystemSnap+v.ID, keySystemSnaps, v.ID, v.CreatedAt, v)
	})
	if err != nil {
		return fmt.Errorf("state: put system snapshot: %w", err)
	}
	return nil
}

// GetSystemSnapshot returns a system snapshot or ErrNotFound.
func (s *Store) GetSystemSnapshot(ctx context.Context, id string) (model.SystemSnapshot, error) {
	return get[model.SystemSnapshot](ctx, s.rdb, prefixSystemSnap+id)
}

// ListSystemSnapshots returns one page of all system snapshots, oldest
// first, and the total.
func (s *Store) ListSystemSnapshots(ctx context.Context, offset, limit int) ([]model.SystemSnapshot, int, error) {
	return page[model.SystemSnapshot](ctx, s.rdb, keySystemSnaps, prefixSystemSnap, offset, limit)
}

// DeleteSystemSnapshot removes a system snapshot and its index entry.
func (s *Store) DeleteSystemSnapshot(ctx context.Context, id string) error {
	return s.remove(ctx, "system snapshot", prefixSystemSnap+id, keySystemSnaps, id)
}

// remove deletes the value at key and id from index, ErrNotFound if there
// was no value.
func (s *Store) remove(ctx context.Context, what, key, index, id string) error {
	var n *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.Del(ctx, key)
		p.ZRem(ctx, index, id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: delete %s: %w", what, err)
	}
	if n.Val() == 0 {
		return ErrNotFound
	}
	return nil
}
