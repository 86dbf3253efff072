package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrEmpty is returned by Claim when no message arrived in time.
var ErrEmpty = errors.New("queue: empty")

// Config names the stream and tunes delivery.
type Config struct {
	// Stream is the Redis key of the stream; the dedup keys and the attempt
	// counts live under the same prefix.
	Stream string
	Group  string
	// Lease is how long a claimed message may go without its worker
	// extending it before another worker reclaims it.
	Lease time.Duration
	// MaxAttempts bounds the deliveries of one job.
	MaxAttempts int
	// DedupTTL is how long an enqueued id is remembered.
	DedupTTL time.Duration
}

// Queue is a job queue on one Redis stream and consumer group.
type Queue struct {
	rdb *redis.Client
	cfg Config
}

// Message is one delivery of a job.
type Message struct {
	// StreamID is the stream entry, for Ack and Extend.
	StreamID string
	JobID    string
	// Attempt is this delivery's number, from 1.
	Attempt int
	// Exhausted is set when Attempt exceeds MaxAttempts: the caller must
	// record the job as failed for good and Ack it, not run it.
	Exhausted bool
}

// Stats is the queue's state.
type Stats struct {
	// Depth is how many jobs wait for a worker.
	Depth int64 `json:"depth"`
	// Pending is how many jobs a worker claimed and has not finished.
	Pending int64 `json:"pending"`
	// OldestAgeMS is the age of the oldest unfinished job, waiting or
	// claimed; 0 when there is none.
	OldestAgeMS int64 `json:"oldest_age_ms"`
	// Consumers maps each worker to its claimed jobs.
	Consumers map[string]int64 `json:"consumers"`
}

// New returns the queue, creating the stream and the group if needed.
func New(ctx context.Context, rdb *redis.Client, cfg Config) (*Queue, error) {
	if cfg.Stream == "" || cfg.Group == "" {
		return nil, errors.New("queue: stream and group are required")
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.DedupTTL <= 0 {
		cfg.DedupTTL = 24 * time.Hour
	}
	// "0": a group created after jobs were added still delivers them.
	err := rdb.XGroupCreateMkStream(ctx, cfg.Stream, cfg.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return nil, fmt.Errorf("queue: create group: %w", err)
	}
	return &Queue{rdb: rdb, cfg: cfg}, nil
}

// Lease is the configured lease.
func (q *Queue) Lease() time.Duration { return q.cfg.Lease }

func (q *Queue) dedupKey(id string) string { return q.cfg.Stream + ":dedup:" + id }
func (q *Queue) attemptsKey() string       { return q.cfg.Stream + ":attempts" }

// enqueue sets the dedup key and adds the entry in one step, so a crash
// cannot leave an id remembered but never queued.
var enqueue = redis.NewScript(`
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
  return 1
end
return 0`)

// Enqueue adds a job once: it reports false if the id was enqueued before
// (a duplicate delivery of the same request).
func (q *Queue) Enqueue(ctx context.Context, jobID string) (bool, error) {
	n, err := enqueue.Run(ctx, q.rdb, []string{q.dedupKey(jobID), q.cfg.Stream}, jobID, q.cfg.DedupTTL.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("queue: enqueue %s: %w", jobID, err)
	}
	return n == 1, nil
}

// Claim hands consumer one job: first a message whose worker let its lease
// lapse, else a new one, waiting up to block for it (ErrEmpty if none came).
func (q *Queue) Claim(ctx context.Context, consumer string, block time.Duration) (Message, error) {
	msgs, _, err := q.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: q.cfg.Stream, Group: q.cfg.Group, Consumer: consumer,
		MinIdle: q.cfg.Lease, Start: "0-0", Count: 1,
	}).Result()
	if err != nil {
		return Message{}, fmt.Errorf("queue: reclaim: %w", err)
	}
	if len(msgs) == 0 {
		streams, err := q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: q.cfg.Group, Consumer: consumer, Streams: []string{q.cfg.Stream, ">"},
			Count: 1, Block: block,
		}).Result()
		if errors.Is(err, redis.Nil) {
			return Message{}, ErrEmpty
		}
		if err != nil {
			return Message{}, fmt.Errorf("queue: read: %w", err)
		}
		if len(streams) > 0 {
			msgs = streams[0].Messages
		}
	}
	if len(msgs) == 0 {
		return Message{}, ErrEmpty
	}
	m := Message{StreamID: msgs[0].ID}
	m.JobID, _ = msgs[0].Values["job"].(string)
	n, err := q.rdb.HIncrBy(ctx, q.attemptsKey(), m.JobID, 1).Result()
	if err != nil {
		return Message{}, fmt.Errorf("queue: count attempt of %s: %w", m.JobID, err)
	}
	m.Attempt = int(n)
	m.Exhausted = m.Attempt > q.cfg.MaxAttempts
	return m, nil
}

// Extend renews consumer's lease on m (XCLAIM resets the idle time), so a
// long job is not reclaimed from a live worker. Call it well within Lease.
func (q *Queue) Extend(ctx context.Context, consumer string, m Message) error {
	err := q.rdb.XClaimJustID(ctx, &redis.XClaimArgs{
		Stream: q.cfg.Stream, Group: q.cfg.Group, Consumer: consumer, MinIdle: 0, Messages: []string{m.StreamID},
	}).Err()
	if err != nil {
		return fmt.Errorf("queue: extend %s: %w", m.JobID, err)
	}
	return nil
}

// Ack finishes a delivery: the entry leaves the group's pending list and the
// stream, and its attempt count is dropped.
func (q *Queue) Ack(ctx context.Context, m Message) error {
	_, err := q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, q.cfg.Stream, q.cfg.Group, m.StreamID)
		p.XDel(ctx, q.cfg.Stream, m.StreamID)
		p.HDel(ctx, q.attemptsKey(), m.JobID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("queue: ack %s: %w", m.JobID, err)
	}
	return nil
}

// Defer puts a claimed job back at the end of the stream without counting
// the delivery as an attempt: the job could not start yet (its tenant is at
// its running-jobs quota), which is no fault of the job, and other tenants'
// jobs queued behind it go first.
func (q *Queue) Defer(ctx context.Context, m Message) error {
	_, err := q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, q.cfg.Stream, q.cfg.Group, m.StreamID)
		p.XDel(ctx, q.cfg.Stream, m.StreamID)
		p.XAdd(ctx, &redis.XAddArgs{Stream: q.cfg.Stream, Values: []string{"job", m.JobID}})
		p.HIncrBy(ctx, q.attemptsKey(), m.JobID, -1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("queue: defer %s: %w", m.JobID, err)
	}
	return nil
}

// Stats reports depth, claimed jobs and the oldest job's age. Acked entries
// are deleted from the stream, so its length is waiting plus claimed.
func (q *Queue) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Consumers: map[string]int64{}}
	n, err := q.rdb.XLen(ctx, q.cfg.Stream).Result()
	if err != nil {
		return st, fmt.Errorf("queue: length: %w", err)
	}
	p, err := q.rdb.XPending(ctx, q.cfg.Stream, q.cfg.Group).Result()
	if err != nil {
		return st, fmt.Errorf("queue: pending: %w", err)
	}
	st.Pending, st.Depth = p.Count, max(n-p.Count, 0)
	for c, k := range p.Consumers {
		st.Consumers[c] = k
	}
	first, err := q.rdb.XRangeN(ctx, q.cfg.Stream, "-", "+", 1).Result()
	if err != nil {
		return st, fmt.Errorf("queue: oldest: %w", err)
	}
	if len(first) == 1 {
		ms, _ := strconv.ParseInt(strings.SplitN(first[0].ID, "-", 2)[0], 10, 64)
		st.OldestAgeMS = max(time.Now().UnixMilli()-ms, 0)
	}
	return st, nil
}
