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

var (
	// ErrEmpty is returned by Claim when no message arrived in time.
	ErrEmpty = errors.New("queue: empty")
	// ErrLeaseLost is returned by Extend and Ack when the consumer no
	// longer holds the message: its lease lapsed and another worker
	// reclaimed it (or it was finished), so this one must stop.
	ErrLeaseLost = errors.New("queue: lease lost")
)

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
	// Consumer is who claimed it; Ack and Extend act only while it still
	// holds the message.
	Consumer string
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

// enqueue adds the entry and sets the dedup key in one step, so a crash
// cannot leave an id remembered but never queued. XADD goes first: a script
// is not rolled back when a command fails, and a failed XADD must not leave
// the id remembered.
var enqueue = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 1`)

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
	m := Message{StreamID: msgs[0].ID, Consumer: consumer}
	m.JobID, _ = msgs[0].Values["job"].(string)
	n, err := q.rdb.HIncrBy(ctx, q.attemptsKey(), m.JobID, 1).Result()
	if err != nil {
		return Message{}, fmt.Errorf("queue: count attempt of %s: %w", m.JobID, err)
	}
	m.Attempt = int(n)
	m.Exhausted = m.Attempt > q.cfg.MaxAttempts
	return m, nil
}

// owned runs when ARGV[3] still holds entry ARGV[2] of group ARGV[1]: a
// worker whose lease lapsed must not take the job back (XCLAIM with no
// minimum idle time would) or finish it while another worker runs it.
const owned = `
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then
  return 0
end
`

// extend resets the idle time of an entry its consumer still holds.
var extend = redis.NewScript(owned + `
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1`)

// ack finishes an entry its consumer still holds.
var ack = redis.NewScript(owned + `
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[4])
return 1`)

// Extend renews consumer's lease on m, so a long job is not reclaimed from
// a live worker. Call it well within Lease. It returns ErrLeaseLost when
// another worker reclaimed m after the lease lapsed: the caller must stop
// running the job and neither record a result nor Ack.
func (q *Queue) Extend(ctx context.Context, consumer string, m Message) error {
	n, err := extend.Run(ctx, q.rdb, []string{q.cfg.Stream}, q.cfg.Group, m.StreamID, consumer).Int()
	if err != nil {
		return fmt.Errorf("queue: extend %s: %w", m.JobID, err)
	}
	if n == 0 {
		return fmt.Errorf("queue: extend %s for %s: %w", m.JobID, consumer, ErrLeaseLost)
	}
	return nil
}

// Ack finishes a delivery: the entry leaves the group's pending list and the
// stream, and its attempt count is dropped. It returns ErrLeaseLost, and
// changes nothing, when m's consumer no longer holds the entry.
func (q *Queue) Ack(ctx context.Context, m Message) error {
	n, err := ack.Run(ctx, q.rdb, []string{q.cfg.Stream, q.attemptsKey()}, q.cfg.Group, m.StreamID, m.Consumer, m.JobID).Int()
	if err != nil {
		return fmt.Errorf("queue: ack %s: %w", m.JobID, err)
	}
	if n == 0 {
		return fmt.Errorf("queue: ack %s for %s: %w", m.JobID, m.Consumer, ErrLeaseLost)
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
