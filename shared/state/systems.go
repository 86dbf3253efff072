package state

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/model"
)

const (
	prefixSystem = "ms:system:" // string: JSON system
	keySystems   = "ms:systems" // zset of system ids by creation
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
	var n *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.Del(ctx, prefixSystem+id)
		p.ZRem(ctx, keySystems, id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: delete system: %w", err)
	}
	if n.Val() == 0 {
		return ErrNotFound
	}
	return nil
}
