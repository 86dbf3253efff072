package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The object-upload trigger's keys: a claim per program being registered
// (so concurrent deliveries of one notification register it once), and the
// index from a bucket object key to the latest program registered from it.
const (
	prefixProgramClaim = "ms:program-claim:" // string, with a TTL
	prefixProgramKey   = "ms:program-key:"   // string: program id
)

// ClaimProgram claims the registration of program id for ttl; false means
// another delivery holds the claim.
func (s *Store) ClaimProgram(ctx context.Context, id string, ttl time.Duration) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, prefixProgramClaim+id, "1", ttl).Result()
	if err != nil {
		return false, fmt.Errorf("claim program %s: %w", id, err)
	}
	return ok, nil
}

// ReleaseProgram lets go of a claim, so a redelivery may try at once.
func (s *Store) ReleaseProgram(ctx context.Context, id string) error {
	return s.rdb.Del(ctx, prefixProgramClaim+id).Err()
}

// ProgramClaimed reports whether a claim on id is held.
func (s *Store) ProgramClaimed(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.Exists(ctx, prefixProgramClaim+id).Result()
	return n > 0, err
}

// SetProgramKey points the index of a bucket object key at program id.
func (s *Store) SetProgramKey(ctx context.Context, key, id string) error {
	return s.rdb.Set(ctx, prefixProgramKey+key, id, 0).Err()
}

// ProgramKey is the id of the latest program registered from key, or
// ErrNotFound.
func (s *Store) ProgramKey(ctx context.Context, key string) (string, error) {
	id, err := s.rdb.Get(ctx, prefixProgramKey+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	return id, err
}

// UnsetProgramKey drops key's index entry if it still names program id (a
// newer version may have replaced it).
func (s *Store) UnsetProgramKey(ctx context.Context, key, id string) error {
	return s.rdb.Eval(ctx, `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`, []string{prefixProgramKey + key}, id).Err()
}
