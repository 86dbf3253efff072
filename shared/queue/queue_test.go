package queue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/testenv"
)

// servers runs each test on a real redis-server and on miniredis, the
// standalone mode's embedded server.
func servers(t *testing.T, fn func(t *testing.T, rdb *redis.Client)) {
	t.Run("redis-server", func(t *testing.T) {
		opt, err := redis.ParseURL(testenv.Redis(t))
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(opt)
		t.Cleanup(func() { rdb.Close() })
		fn(t, rdb)
	})
	t.Run("miniredis", func(t *testing.T) {
		m := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { rdb.Close() })
		fn(t, rdb)
	})
}

func newQueue(t *testing.T, rdb *redis.Client, lease time.Duration, attempts int) *Queue {
	t.Helper()
	q, err := New(context.Background(), rdb, Config{Stream: "test:jobs", Group: "workers", Lease: lease, MaxAttempts: attempts})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// claimEventually claims until a message comes (a reclaim waits for the
// lease to pass).
func claimEventually(t *testing.T, q *Queue, consumer string) Message {
	t.Helper()
	for range 200 {
		m, err := q.Claim(context.Background(), consumer, 50*time.Millisecond)
		if errors.Is(err, ErrEmpty) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	t.Fatalf("%s never got a message", consumer)
	return Message{}
}

func TestDedup(t *testing.T) {
	servers(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		q := newQueue(t, rdb, time.Minute, 3)
		for i, want := range []bool{true, false, false} {
			added, err := q.Enqueue(ctx, "job-1")
			if err != nil {
				t.Fatal(err)
			}
			if added != want {
				t.Fatalf("enqueue #%d: added=%v, want %v", i+1, added, want)
			}
		}
		st, err := q.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Depth != 1 || st.Pending != 0 {
			t.Fatalf("stats after a duplicate enqueue: %+v, want depth 1", st)
		}
		m := claimEventually(t, q, "w1")
		if m.JobID != "job-1" || m.Attempt != 1 || m.Exhausted {
			t.Fatalf("claimed %+v", m)
		}
		st, _ = q.Stats(ctx)
		if st.Depth != 0 || st.Pending != 1 || st.Consumers["w1"] != 1 {
			t.Fatalf("stats while claimed: %+v", st)
		}
		if err := q.Ack(ctx, m); err != nil {
			t.Fatal(err)
		}
		if m, err := q.Claim(ctx, "w2", 10*time.Millisecond); !errors.Is(err, ErrEmpty) {
			t.Fatalf("after ack, claim gave %+v, %v; want empty", m, err)
		}
		st, _ = q.Stats(ctx)
		if st.Depth != 0 || st.Pending != 0 || st.OldestAgeMS != 0 {
			t.Fatalf("stats when done: %+v", st)
		}
	})
}

func TestReclaimAfterLease(t *testing.T) {
	servers(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		q := newQueue(t, rdb, 200*time.Millisecond, 3)
		if _, err := q.Enqueue(ctx, "job-1"); err != nil {
			t.Fatal(err)
		}
		dead := claimEventually(t, q, "dead-worker") // never acks or extends
		if dead.Attempt != 1 {
			t.Fatalf("first claim: %+v", dead)
		}
		m := claimEventually(t, q, "live-worker")
		if m.JobID != "job-1" || m.StreamID != dead.StreamID || m.Attempt != 2 || m.Exhausted {
			t.Fatalf("reclaim: %+v, want job-1 attempt 2", m)
		}
		st, _ := q.Stats(ctx)
		if st.Consumers["live-worker"] != 1 || st.Consumers["dead-worker"] != 0 {
			t.Fatalf("owners after reclaim: %+v", st.Consumers)
		}
		if err := q.Ack(ctx, m); err != nil {
			t.Fatal(err)
		}
	})
}

func TestExtendKeepsLease(t *testing.T) {
	servers(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		q := newQueue(t, rdb, 300*time.Millisecond, 3)
		q.Enqueue(ctx, "job-1")
		m := claimEventually(t, q, "w1")
		// The holder extends well within the lease for several leases; the
		// other worker must never get the job meanwhile.
		for range 8 {
			if err := q.Extend(ctx, "w1", m); err != nil {
				t.Fatal(err)
			}
			if got, err := q.Claim(ctx, "w2", 100*time.Millisecond); !errors.Is(err, ErrEmpty) {
				t.Fatalf("a live lease was reclaimed: %+v, %v", got, err)
			}
		}
		q.Ack(ctx, m)
	})
}

func TestPoisonJobIsExhausted(t *testing.T) {
	servers(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		q := newQueue(t, rdb, 100*time.Millisecond, 2)
		q.Enqueue(ctx, "poison")
		for attempt := 1; attempt <= 2; attempt++ {
			m := claimEventually(t, q, "crashing-worker")
			if m.Attempt != attempt || m.Exhausted {
				t.Fatalf("delivery %d: %+v", attempt, m)
			}
		}
		m := claimEventually(t, q, "w")
		if !m.Exhausted || m.Attempt != 3 {
			t.Fatalf("third delivery of a job allowed 2 attempts: %+v, want exhausted", m)
		}
		if err := q.Ack(ctx, m); err != nil {
			t.Fatal(err)
		}
		if got, err := q.Claim(ctx, "w", 150*time.Millisecond); !errors.Is(err, ErrEmpty) {
			t.Fatalf("the poison job came back: %+v, %v", got, err)
		}
	})
}

func TestBlockingClaimWakesOnEnqueue(t *testing.T) {
	servers(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		q := newQueue(t, rdb, time.Minute, 3)
		got := make(chan Message, 1)
		go func() {
			m, err := q.Claim(ctx, "w", 10*time.Second)
			if err != nil {
				t.Error(err)
			}
			got <- m
		}()
		time.Sleep(100 * time.Millisecond) // let the claim block first
		q.Enqueue(ctx, "late")
		if m := <-got; m.JobID != "late" {
			t.Fatalf("blocked claim got %+v", m)
		}
	})
}

// A deferred job goes behind the jobs queued after it and its delivery is
// not counted as an attempt, however often it is deferred.
func TestDeferMovesToBackWithoutAttempt(t *testing.T) {
	servers(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		q := newQueue(t, rdb, time.Minute, 2)
		for _, id := range []string{"a", "b"} {
			if _, err := q.Enqueue(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		for range 5 {
			m := claimEventually(t, q, "w")
			if m.JobID != "a" {
				t.Fatalf("claimed %q, want a at the front before b is taken", m.JobID)
			}
			if m.Attempt != 1 || m.Exhausted {
				t.Fatalf("deferred job on attempt %d (exhausted %v), want 1", m.Attempt, m.Exhausted)
			}
			if err := q.Defer(ctx, m); err != nil {
				t.Fatal(err)
			}
			next := claimEventually(t, q, "w")
			if next.JobID != "b" {
				t.Fatalf("after deferring a, claimed %q, want b", next.JobID)
			}
			if err := q.Defer(ctx, next); err != nil {
				t.Fatal(err)
			}
		}
		st, err := q.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Depth != 2 || st.Pending != 0 {
			t.Fatalf("stats after deferring: depth %d pending %d, want 2 and 0", st.Depth, st.Pending)
		}
	})
}

// A worker whose lease lapsed and whose job another worker reclaimed can
// neither renew the lease (which would take the job back and run it twice)
// nor ack it; the worker that holds it now can do both.
func TestExtendAfterReclaimIsLeaseLost(t *testing.T) {
	servers(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		q := newQueue(t, rdb, 200*time.Millisecond, 3)
		if _, err := q.Enqueue(ctx, "job-1"); err != nil {
			t.Fatal(err)
		}
		slow := claimEventually(t, q, "slow-worker")
		if err := q.Extend(ctx, "slow-worker", slow); err != nil {
			t.Fatalf("extend while holding it: %v", err)
		}
		m := claimEventually(t, q, "live-worker") // after the lease lapsed
		if err := q.Extend(ctx, "slow-worker", slow); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("extend by the worker that lost the lease: %v, want ErrLeaseLost", err)
		}
		if err := q.Ack(ctx, slow); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("ack by the worker that lost the lease: %v, want ErrLeaseLost", err)
		}
		st, _ := q.Stats(ctx)
		if st.Consumers["live-worker"] != 1 || st.Consumers["slow-worker"] != 0 || st.Pending != 1 {
			t.Fatalf("owners after the slow worker tried: %+v", st)
		}
		if err := q.Extend(ctx, "live-worker", m); err != nil {
			t.Fatalf("extend by the holder: %v", err)
		}
		if err := q.Ack(ctx, m); err != nil {
			t.Fatalf("ack by the holder: %v", err)
		}
		if err := q.Extend(ctx, "live-worker", m); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("extend after ack: %v, want ErrLeaseLost", err)
		}
	})
}

// An enqueue that fails leaves the id unremembered, so a retry queues it.
func TestFailedEnqueueIsRetried(t *testing.T) {
	servers(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		q := newQueue(t, rdb, time.Minute, 3)
		rdb.Del(ctx, "test:jobs")
		rdb.Set(ctx, "test:jobs", "not a stream", 0)
		if _, err := q.Enqueue(ctx, "job-1"); err == nil {
			t.Fatal("enqueue onto a broken stream succeeded")
		}
		rdb.Del(ctx, "test:jobs")
		q = newQueue(t, rdb, time.Minute, 3)
		if ok, err := q.Enqueue(ctx, "job-1"); err != nil || !ok {
			t.Fatalf("retry after a failed enqueue: %v %v, want queued", ok, err)
		}
	})
}
