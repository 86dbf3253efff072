package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/model"
)

const (
	prefixRecording = "ms:recording:" // string: JSON recording
	keyRecordings   = "ms:recordings" // zset of recording ids by creation
)

// PutRecording stores a recording and indexes it.
func (s *Store) PutRecording(ctx context.Context, r model.Recording) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		return put(ctx, p, prefixRecording+r.ID, keyRecordings, r.ID, r.CreatedAt, r)
	})
	if err != nil {
		return fmt.Errorf("state: put recording: %w", err)
	}
	return nil
}

// GetRecording returns a recording or ErrNotFound.
func (s *Store) GetRecording(ctx context.Context, id string) (model.Recording, error) {
	return get[model.Recording](ctx, s.rdb, prefixRecording+id)
}

// ListRecordings returns one page of all recordings, oldest first, and the
// total.
func (s *Store) ListRecordings(ctx context.Context, offset, limit int) ([]model.Recording, int, error) {
	return page[model.Recording](ctx, s.rdb, keyRecordings, prefixRecording, offset, limit)
}

// UpdateRecording changes a recording with fn, atomically; fn's error
// aborts the change and is returned.
func (s *Store) UpdateRecording(ctx context.Context, id string, fn func(*model.Recording) error) (model.Recording, error) {
	return update(ctx, s.rdb, prefixRecording, "recording", id, fn)
}

// DeleteRecording removes a recording from the index.
func (s *Store) DeleteRecording(ctx context.Context, id string) error {
	var n *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.Del(ctx, prefixRecording+id)
		p.ZRem(ctx, keyRecordings, id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: delete recording: %w", err)
	}
	if n.Val() == 0 {
		return ErrNotFound
	}
	return nil
}

// errNotActive aborts AbandonRecording's change of a recording that is no
// longer being made.
var errNotActive = errors.New("recording not active")

// AbandonRecording marks a recording that is still being made as failed
// with reason, when the machine making it is gone without storing it (its
// runner died); it reports whether it did. Recordings in any other state
// are left as they are.
func (s *Store) AbandonRecording(ctx context.Context, id, reason string) (bool, error) {
	if id == "" {
		return false, nil
	}
	_, err := s.UpdateRecording(ctx, id, func(r *model.Recording) error {
		if r.State != model.RecordingActive {
			return errNotActive
		}
		r.State, r.Reason = model.RecordingFailed, reason
		return nil
	})
	if errors.Is(err, errNotActive) || errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
