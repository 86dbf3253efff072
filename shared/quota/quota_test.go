package quota

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/testenv"
)

// clients runs each test against the real redis-server and miniredis (the
// standalone server's), since the Lua scripts must behave the same on both.
func clients(t *testing.T) map[string]*redis.Client {
	opt, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	real := redis.NewClient(opt)
	emb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { real.Close(); emb.Close() })
	return map[string]*redis.Client{"redis-server": real, "miniredis": emb}
}

func httpErr(t *testing.T, err error) *httpapi.Error {
	t.Helper()
	var he *httpapi.Error
	if !errors.As(err, &he) {
		t.Fatalf("not an API error: %v", err)
	}
	return he
}

func TestSessionsLimit(t *testing.T) {
	ctx := context.Background()
	for name, rdb := range clients(t) {
		t.Run(name, func(t *testing.T) {
			q := New(rdb, Config{Sessions: 3, StorageBytes: 100, Jobs: 1})
			for i := range 3 {
				if err := q.Acquire(ctx, "a", Sessions, fmt.Sprint("s", i), 1); err != nil {
					t.Fatal(err)
				}
			}
			err := q.Acquire(ctx, "a", Sessions, "s3", 1)
			if !errors.Is(err, ErrExceeded) {
				t.Fatalf("4th: %v", err)
			}
			he := httpErr(t, err)
			want := "quota exceeded: sessions 3/3 for tenant a; delete a session or ask an admin to raise the limit"
			if he.Status != http.StatusTooManyRequests || he.Code != "quota_exceeded" || he.Message != want {
				t.Fatalf("refusal: %d %s %q", he.Status, he.Code, he.Message)
			}
			// Re-acquiring a held member is not a second slot.
			if err := q.Acquire(ctx, "a", Sessions, "s1", 1); err != nil {
				t.Fatalf("re-acquire: %v", err)
			}
			// Tenants are independent.
			if err := q.Acquire(ctx, "b", Sessions, "s0", 1); err != nil {
				t.Fatalf("tenant b: %v", err)
			}
			// Release frees a slot; releasing twice does not free two.
			for range 2 {
				if err := q.Release(ctx, "a", Sessions, "s0"); err != nil {
					t.Fatal(err)
				}
			}
			if u, _ := q.Usage(ctx, "a"); u.Sessions.Used != 2 || u.Sessions.Limit != 3 || u.Sessions.Source != "default" {
				t.Fatalf("usage after double release: %+v", u.Sessions)
			}
			if err := q.Acquire(ctx, "a", Sessions, "s3", 1); err != nil {
				t.Fatalf("after release: %v", err)
			}
			if err := q.Acquire(ctx, "a", Sessions, "s4", 1); !errors.Is(err, ErrExceeded) {
				t.Fatalf("full again: %v", err)
			}
		})
	}
}

// Ten instances racing for three slots: exactly three win.
func TestConcurrentAcquire(t *testing.T) {
	ctx := context.Background()
	for name, rdb := range clients(t) {
		t.Run(name, func(t *testing.T) {
			q := New(rdb, Config{Sessions: 3, Jobs: 3})
			for _, kind := range []Kind{Sessions, Jobs} {
				var wg sync.WaitGroup
				var mu sync.Mutex
				won, refused := 0, 0
				start := make(chan struct{})
				for i := range 10 {
					wg.Go(func() {
						<-start
						err := q.Acquire(ctx, "racer", kind, fmt.Sprint("m", i), 1)
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil:
							won++
						case errors.Is(err, ErrExceeded):
							refused++
						default:
							t.Error(err)
						}
					})
				}
				close(start)
				wg.Wait()
				u, _ := q.Usage(ctx, "racer")
				if won != 3 || refused != 7 || u.item(kind).Used != 3 {
					t.Fatalf("%s: won %d refused %d used %d", kind, won, refused, u.item(kind).Used)
				}
			}
		})
	}
}

func TestStorageAndJobs(t *testing.T) {
	ctx := context.Background()
	for name, rdb := range clients(t) {
		t.Run(name, func(t *testing.T) {
			q := New(rdb, Config{Sessions: 1, StorageBytes: 1 << 30, Jobs: 1})
			if err := q.Acquire(ctx, "a", Storage, ProgramKey("p1"), 700<<20); err != nil {
				t.Fatal(err)
			}
			err := q.Acquire(ctx, "a", Storage, SnapshotKey("s1"), 400<<20)
			he := httpErr(t, err)
			want := "storage quota exceeded: tenant a stores 700.0 MiB of 1.0 GiB and this needs 400.0 MiB more; delete programs or snapshots or ask an admin to raise the limit"
			if !errors.Is(err, ErrExceeded) || he.Status != http.StatusForbidden || he.Message != want {
				t.Fatalf("storage refusal: %d %q", he.Status, he.Message)
			}
			// Exactly up to the limit fits.
			if err := q.Acquire(ctx, "a", Storage, SnapshotKey("s1"), 324<<20); err != nil {
				t.Fatalf("exact fit: %v", err)
			}
			if u, _ := q.Usage(ctx, "a"); u.StorageBytes.Used != 1<<30 {
				t.Fatalf("storage used %d", u.StorageBytes.Used)
			}
			// Deleting the program frees its bytes, once.
			q.Release(ctx, "a", Storage, ProgramKey("p1"))
			q.Release(ctx, "a", Storage, ProgramKey("p1"))
			if u, _ := q.Usage(ctx, "a"); u.StorageBytes.Used != 324<<20 {
				t.Fatalf("after delete: %d", u.StorageBytes.Used)
			}
			if err := q.Acquire(ctx, "a", Jobs, "j1", 1); err != nil {
				t.Fatal(err)
			}
			err = q.Acquire(ctx, "a", Jobs, "j2", 1)
			he = httpErr(t, err)
			want = "quota exceeded: running jobs 1/1 for tenant a; wait for a job to finish or ask an admin to raise the limit"
			if he.Status != http.StatusTooManyRequests || he.Message != want {
				t.Fatalf("jobs refusal: %d %q", he.Status, he.Message)
			}
		})
	}
}

func TestOverrides(t *testing.T) {
	ctx := context.Background()
	for name, rdb := range clients(t) {
		t.Run(name, func(t *testing.T) {
			q := New(rdb, Config{Sessions: 1, StorageBytes: 10, Jobs: 1})
			q.Acquire(ctx, "a", Sessions, "s0", 1)
			if err := q.Acquire(ctx, "a", Sessions, "s1", 1); !errors.Is(err, ErrExceeded) {
				t.Fatalf("default limit: %v", err)
			}
			five, unlimited := int64(5), Unlimited
			if err := q.SetOverrides(ctx, "a", Overrides{Sessions: &five, StorageBytes: &unlimited}); err != nil {
				t.Fatal(err)
			}
			for i := 1; i < 5; i++ {
				if err := q.Acquire(ctx, "a", Sessions, fmt.Sprint("s", i), 1); err != nil {
					t.Fatalf("raised limit, session %d: %v", i, err)
				}
			}
			if err := q.Acquire(ctx, "a", Sessions, "s5", 1); !errors.Is(err, ErrExceeded) || httpErr(t, err).Message[:30] != "quota exceeded: sessions 5/5 f" {
				t.Fatalf("override limit: %v", err)
			}
			if err := q.Acquire(ctx, "a", Storage, "big", 1<<40); err != nil {
				t.Fatalf("unlimited storage: %v", err)
			}
			u, _ := q.Usage(ctx, "a")
			if u.Sessions != (Item{Limit: 5, Used: 5, Source: "override"}) || u.StorageBytes.Limit != Unlimited || u.Jobs.Source != "default" {
				t.Fatalf("usage: %+v", u)
			}
			// Other tenants keep the defaults.
			if u, _ := q.Usage(ctx, "b"); u.Sessions.Limit != 1 {
				t.Fatalf("b: %+v", u)
			}
			// PUT replaces: an empty override is back to the defaults.
			if err := q.SetOverrides(ctx, "a", Overrides{}); err != nil {
				t.Fatal(err)
			}
			if u, _ := q.Usage(ctx, "a"); u.Sessions.Limit != 1 || u.Sessions.Source != "default" {
				t.Fatalf("reset: %+v", u.Sessions)
			}
			bad := int64(-2)
			if err := q.SetOverrides(ctx, "a", Overrides{Jobs: &bad}); httpErr(t, err).Status != 400 {
				t.Fatalf("bad override: %v", err)
			}
			if ts, _ := q.Tenants(ctx); len(ts) != 1 || ts[0] != "a" {
				t.Fatalf("tenants %v", ts)
			}
		})
	}
}

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	for name, rdb := range clients(t) {
		t.Run(name, func(t *testing.T) {
			q := New(rdb, Config{Sessions: 10, StorageBytes: 100})
			for _, m := range []string{"kept", "crashed-create", "lost-release"} {
				q.Acquire(ctx, "a", Sessions, m, 1)
			}
			// A grace period keeps holdings that may be creates in flight.
			if n, err := q.Reconcile(ctx, "a", Sessions, map[string]int64{"kept": 1}, time.Hour); err != nil || n != 0 {
				t.Fatalf("within grace: %d %v", n, err)
			}
			// Past it, the truth wins: missing holdings go, untracked ones come.
			n, err := q.Reconcile(ctx, "a", Sessions, map[string]int64{"kept": 1, "untracked": 1}, 0)
			if err != nil || n != 3 {
				t.Fatalf("reconcile: %d %v", n, err)
			}
			if u, _ := q.Usage(ctx, "a"); u.Sessions.Used != 2 {
				t.Fatalf("used %d", u.Sessions.Used)
			}
			// Sizes are corrected too.
			if err := q.Acquire(ctx, "a", Storage, "p", 5); err != nil {
				t.Fatal(err)
			}
			if n, _ := q.Reconcile(ctx, "a", Storage, map[string]int64{"p": 7}, 0); n != 1 {
				t.Fatalf("size fix: %d", n)
			}
			if u, _ := q.Usage(ctx, "a"); u.StorageBytes.Used != 7 {
				t.Fatalf("bytes %d", u.StorageBytes.Used)
			}
			// A scoped reconcile leaves the rest of the kind alone.
			if err := errors.Join(q.Acquire(ctx, "a", Storage, ProgramKey("gone"), 3), q.Acquire(ctx, "a", Storage, SnapshotKey("s"), 11)); err != nil {
				t.Fatal(err)
			}
			if n, _ := q.ReconcileScope(ctx, "a", Storage, ProgramKey(""), map[string]int64{ProgramKey("new"): 2}, 0); n != 2 {
				t.Fatalf("scoped: %d", n)
			}
			if u, _ := q.Usage(ctx, "a"); u.StorageBytes.Used != 7+11+2 {
				t.Fatalf("scoped bytes %d", u.StorageBytes.Used)
			}
		})
	}
}

// A nil Quota is unlimited, so handlers work without one.
func TestNilIsUnlimited(t *testing.T) {
	var q *Quota
	ctx := context.Background()
	if err := q.Acquire(ctx, "a", Sessions, "x", 1); err != nil {
		t.Fatal(err)
	}
	if err := q.Release(ctx, "a", Sessions, "x"); err != nil {
		t.Fatal(err)
	}
	if u, err := q.Usage(ctx, "a"); err != nil || u.Sessions.Limit != Unlimited {
		t.Fatalf("%+v %v", u, err)
	}
	if err := q.SetOverrides(ctx, "a", Overrides{}); httpErr(t, err).Status != 503 {
		t.Fatalf("set on nil: %v", err)
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 1 << 30: "1.0 GiB", 1288490189: "1.2 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// ReconcileHoldings sets each tenant's part of a kind under a prefix to
// what the holdings say, leaving the rest of the kind alone.
func TestReconcileHoldings(t *testing.T) {
	ctx := context.Background()
	for name, rdb := range clients(t) {
		t.Run(name, func(t *testing.T) {
			q := New(rdb, Config{StorageBytes: 1 << 30})
			if err := q.Acquire(ctx, "a", Storage, SnapshotKey("s1"), 100); err != nil {
				t.Fatal(err)
			}
			if err := q.Acquire(ctx, "a", Storage, ProgramKey("gone"), 50); err != nil {
				t.Fatal(err)
			}
			h := Holdings{}
			h.Add("a", ProgramKey("p1"), 10)
			h.Add("b", ProgramKey("p2"), 20)
			if err := q.ReconcileHoldings(ctx, Storage, ProgramKey(""), h, 0); err != nil {
				t.Fatal(err)
			}
			for tenant, want := range map[string]int64{"a": 110, "b": 20} {
				u, err := q.Usage(ctx, tenant)
				if err != nil {
					t.Fatal(err)
				}
				if got := u.StorageBytes.Used; got != want {
					t.Errorf("%s: storage used %d, want %d", tenant, got, want)
				}
			}
		})
	}
}
