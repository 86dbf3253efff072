package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// prefixEvents keys each tenant's event stream: a Redis Stream of the
// tenant's CloudEvents (structured JSON), capped at about the configured
// length, that GET /api/v1/stream/events replays and follows.
const prefixEvents = "ms:events:"

// StreamEvent is one entry of a tenant's event stream.
type StreamEvent struct {
	// ID is the entry id ("<ms>-<seq>"), the position clients resume from.
	ID string
	// Event is the CloudEvent in structured-mode JSON.
	Event []byte
}

func eventsKey(tenant string) string { return prefixEvents + tenant }

// AppendEvent adds an event to the tenant's stream and returns its id. The
// stream keeps about maxLen entries: Redis trims whole nodes (approximate
// MAXLEN), so it may hold a few more, which costs nothing.
func (s *Store) AppendEvent(ctx context.Context, tenant string, event []byte, maxLen int64) (string, error) {
	id, err := s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: eventsKey(tenant), MaxLen: maxLen, Approx: true, Values: []any{"e", event},
	}).Result()
	if err != nil {
		return "", fmt.Errorf("state: append event for tenant %s: %w", tenant, err)
	}
	return id, nil
}

// EventBounds returns the ids of the oldest and newest entries of the
// tenant's stream, both "" when it holds none.
func (s *Store) EventBounds(ctx context.Context, tenant string) (oldest, newest string, err error) {
	key := eventsKey(tenant)
	var first, last *redis.XMessageSliceCmd
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		first = p.XRangeN(ctx, key, "-", "+", 1)
		last = p.XRevRangeN(ctx, key, "+", "-", 1)
		return nil
	})
	if err != nil {
		return "", "", fmt.Errorf("state: event stream bounds of tenant %s: %w", tenant, err)
	}
	if f := first.Val(); len(f) > 0 {
		oldest = f[0].ID
	}
	if l := last.Val(); len(l) > 0 {
		newest = l[0].ID
	}
	return oldest, newest, nil
}

// EventsAfter returns up to count entries of the tenant's stream that come
// after the entry id after, oldest first.
func (s *Store) EventsAfter(ctx context.Context, tenant, after string, count int64) ([]StreamEvent, error) {
	msgs, err := s.rdb.XRangeN(ctx, eventsKey(tenant), "("+after, "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("state: read events of tenant %s after %s: %w", tenant, after, err)
	}
	return streamEvents(msgs), nil
}

// ReadEvents waits up to block for entries after the given id of each
// tenant's stream (tenant to id) and returns those that came, up to count
// per tenant, by tenant; none when block passed without any. One call
// follows every tenant, so a process holds one Redis connection for all its
// event stream clients.
func (s *Store) ReadEvents(ctx context.Context, after map[string]string, count int64, block time.Duration) (map[string][]StreamEvent, error) {
	args := make([]string, 0, 2*len(after))
	ids := make([]string, 0, len(after))
	for tenant, id := range after {
		args = append(args, eventsKey(tenant))
		ids = append(ids, id)
	}
	streams, err := s.rdb.XRead(ctx, &redis.XReadArgs{Streams: append(args, ids...), Count: count, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: follow event streams: %w", err)
	}
	out := make(map[string][]StreamEvent, len(streams))
	for _, st := range streams {
		out[strings.TrimPrefix(st.Stream, prefixEvents)] = streamEvents(st.Messages)
	}
	return out, nil
}

func streamEvents(msgs []redis.XMessage) []StreamEvent {
	out := make([]StreamEvent, 0, len(msgs))
	for _, m := range msgs {
		e, _ := m.Values["e"].(string)
		out = append(out, StreamEvent{ID: m.ID, Event: []byte(e)})
	}
	return out
}
