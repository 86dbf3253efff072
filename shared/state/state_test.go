package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/testenv"
)

// Both backends run the same code: the real redis-server and the embedded one.
func stores(t *testing.T) map[string]*Store {
	ctx := context.Background()
	real, err := Open(ctx, testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	emb, err := OpenEmbedded(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { real.Close(); emb.Close() })
	return map[string]*Store{"redis-server": real, "embedded": emb}
}

func TestSessions(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			base := time.Now().UTC()
			for i := range 5 {
				err := s.CreateSession(ctx, model.Session{ID: fmt.Sprintf("%016x", i), Name: fmt.Sprint(i), RunnerID: "r1",
					State: model.StateCreated, CreatedAt: base.Add(time.Duration(i) * time.Second)})
				if err != nil {
					t.Fatal(err)
				}
			}
			page, total, err := s.ListSessions(ctx, 2, 2)
			if err != nil || total != 5 || len(page) != 2 || page[0].Name != "2" || page[1].Name != "3" {
				t.Fatalf("page: %v %d %v", page, total, err)
			}
			if _, err := s.GetSession(ctx, "missing"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("missing: %v", err)
			}
			if _, err := s.UpdateSession(ctx, "missing", func(*model.Session) error { return nil }); !errors.Is(err, ErrNotFound) {
				t.Fatalf("update missing: %v", err)
			}
			boom := errors.New("boom")
			if _, err := s.UpdateSession(ctx, fmt.Sprintf("%016x", 0), func(x *model.Session) error { x.Name = "changed"; return boom }); !errors.Is(err, boom) {
				t.Fatalf("fn error: %v", err)
			}
			if got, _ := s.GetSession(ctx, fmt.Sprintf("%016x", 0)); got.Name != "0" {
				t.Fatal("a failed update wrote")
			}
			if err := s.DeleteSession(ctx, fmt.Sprintf("%016x", 4)); err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteSession(ctx, fmt.Sprintf("%016x", 4)); !errors.Is(err, ErrNotFound) {
				t.Fatalf("double delete: %v", err)
			}
			on, _ := s.SessionsOnRunner(ctx, "r1")
			if len(on) != 4 {
				t.Fatalf("on runner: %d", len(on))
			}
		})
	}
}

// Concurrent writers never lose each other's updates.
func TestUpdateSessionIsAtomic(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			id := "00000000000000aa"
			if err := s.CreateSession(ctx, model.Session{ID: id, CreatedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			const n = 10
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := s.UpdateSession(ctx, id, func(x *model.Session) error {
						x.Name += fmt.Sprint(i % 10)
						return nil
					})
					if err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			got, _ := s.GetSession(ctx, id)
			if len(got.Name) != n {
				t.Fatalf("lost updates: %q", got.Name)
			}
		})
	}
}

func TestRunnersExpire(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if err := s.RegisterRunner(ctx, Runner{ID: "a", Capacity: 4, Running: 3}, time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := s.RegisterRunner(ctx, Runner{ID: "b", Capacity: 4, Running: 1}, time.Minute); err != nil {
				t.Fatal(err)
			}
			rs, err := s.Runners(ctx)
			if err != nil || len(rs) != 2 || rs[0].ID != "b" {
				t.Fatalf("most free first: %v %v", rs, err)
			}
			s.UnregisterRunner(ctx, "b")
			if rs, _ := s.Runners(ctx); len(rs) != 1 || rs[0].ID != "a" {
				t.Fatalf("after unregister: %v", rs)
			}
			if _, err := s.Runner(ctx, "b"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("gone runner: %v", err)
			}
		})
	}
}

func TestPrograms(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := model.Program{ID: "00000000000000bb", Name: "fw", Format: model.FormatELF, CreatedAt: time.Now()}
			if err := s.PutProgram(ctx, p); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetProgram(ctx, p.ID)
			if err != nil || got.Name != "fw" {
				t.Fatalf("get: %v %v", got, err)
			}
			if err := s.DeleteProgram(ctx, p.ID); err != nil {
				t.Fatal(err)
			}
			if _, total, _ := s.ListPrograms(ctx, 0, 10); total != 0 {
				t.Fatalf("total after delete: %d", total)
			}
		})
	}
}

// RunnerAndProgram reads both in one round trip and says which is missing.
func TestRunnerAndProgram(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if err := s.RegisterRunner(ctx, Runner{ID: "r", URL: "http://r", Capacity: 2}, time.Minute); err != nil {
				t.Fatal(err)
			}
			p := model.Program{ID: "00000000000000cc", Name: "fw", SHA256: "ab"}
			if err := s.PutProgram(ctx, p); err != nil {
				t.Fatal(err)
			}
			r, got, rerr, perr := s.RunnerAndProgram(ctx, "r", p.ID)
			if rerr != nil || perr != nil || r.URL != "http://r" || got.SHA256 != "ab" {
				t.Fatalf("both there: %+v %+v %v %v", r, got, rerr, perr)
			}
			_, _, rerr, perr = s.RunnerAndProgram(ctx, "gone", p.ID)
			if !errors.Is(rerr, ErrNotFound) || perr != nil {
				t.Fatalf("runner missing: %v %v", rerr, perr)
			}
			_, _, rerr, perr = s.RunnerAndProgram(ctx, "r", "00000000000000dd")
			if rerr != nil || !errors.Is(perr, ErrNotFound) {
				t.Fatalf("program missing: %v %v", rerr, perr)
			}
		})
	}
}

// Each tenant pages over its own sessions; deleting drops them from the
// tenant's index, and sessions without a tenant are the default tenant's.
func TestTenantSessions(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			base := time.Now().UTC()
			for i, tenant := range []string{"a", "b", "a", "", "a", "b", "a"} {
				err := s.CreateSession(ctx, model.Session{ID: fmt.Sprintf("%016x", i), Tenant: tenant, Name: fmt.Sprint(i), CreatedAt: base.Add(time.Duration(i) * time.Second)})
				if err != nil {
					t.Fatal(err)
				}
			}
			page, total, err := s.ListTenantSessions(ctx, "a", 2, 2)
			if err != nil || total != 4 || len(page) != 2 || page[0].Name != "4" || page[1].Name != "6" {
				t.Fatalf("a page 2: %v %d %v", page, total, err)
			}
			if _, total, _ := s.ListTenantSessions(ctx, DefaultTenant, 0, 10); total != 1 {
				t.Fatalf("default: %d", total)
			}
			if err := s.DeleteSession(ctx, fmt.Sprintf("%016x", 4)); err != nil {
				t.Fatal(err)
			}
			page, total, _ = s.ListTenantSessions(ctx, "a", 0, 10)
			if total != 3 || len(page) != 3 || page[2].Name != "6" {
				t.Fatalf("after delete: %v %d", page, total)
			}
			// A lost index is rebuilt from the sessions.
			s.rdb.Del(ctx, tenantSessions("b"))
			if n, err := s.IndexSessionTenants(ctx); err != nil || n != 6 {
				t.Fatalf("reindex: %d %v", n, err)
			}
			if _, total, _ := s.ListTenantSessions(ctx, "b", 0, 10); total != 2 {
				t.Fatalf("b reindexed: %d", total)
			}
		})
	}
}
