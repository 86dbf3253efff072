package auth

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/testenv"
)

func realRedis(t *testing.T) redis.UniversalClient {
	opt, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// The key store on a real redis-server: create, verify, list, revoke,
// bootstrap.
func TestKeyStore(t *testing.T) {
	ctx := context.Background()
	s := NewKeyStore(realRedis(t))
	k, key, err := s.Create(ctx, "ci", "acme", []Scope{ScopeRead, ScopeWrite})
	if err != nil {
		t.Fatal(err)
	}
	if id, secret, err := ParseKey(key); err != nil || id != k.ID || len(secret) != 64 {
		t.Fatalf("key %q: %v", key, err)
	}
	got, err := s.Verify(ctx, key)
	if err != nil || got.Tenant != "acme" || got.Principal().Actor != "key:"+k.ID {
		t.Fatalf("verify: %+v %v", got, err)
	}
	if _, err := s.Verify(ctx, key[:len(key)-1]+"g"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("wrong secret: %v", err)
	}
	if _, err := s.Verify(ctx, "ms_nope_"+strings.Repeat("a", 40)); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown id: %v", err)
	}
	if _, err := s.Verify(ctx, "Bearer x"); !errors.Is(err, ErrKeyFormat) {
		t.Errorf("format: %v", err)
	}
	other, _, _ := s.Create(ctx, "other", "globex", []Scope{ScopeAdmin})
	l, err := s.List(ctx, "acme")
	if err != nil || len(l) != 1 || l[0].ID != k.ID || l[0].Hash != "" || l[0].LastUsed == nil {
		t.Fatalf("list acme: %+v %v", l, err)
	}
	if all, _ := s.List(ctx, ""); len(all) != 2 || all[1].ID != other.ID {
		t.Errorf("list all: %+v", all)
	}
	r1, err := s.Revoke(ctx, k.ID)
	if err != nil || r1.RevokedAt == nil {
		t.Fatalf("revoke: %v", err)
	}
	r2, _ := s.Revoke(ctx, k.ID)
	if !r2.RevokedAt.Equal(*r1.RevokedAt) {
		t.Error("second revoke moved the time")
	}
	if _, err := s.Verify(ctx, key); !errors.Is(err, ErrRevokedKey) {
		t.Errorf("revoked: %v", err)
	}
	if _, err := s.Revoke(ctx, "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke unknown: %v", err)
	}

	boot := "ms_boot_" + strings.Repeat("Ab1", 12)
	for range 2 {
		b, err := s.EnsureKey(ctx, boot, "bootstrap", DefaultTenant, []Scope{ScopeAdmin})
		if err != nil || b.ID != "boot" {
			t.Fatalf("ensure: %+v %v", b, err)
		}
	}
	if _, err := s.Verify(ctx, boot); err != nil {
		t.Errorf("bootstrap key: %v", err)
	}
	if _, err := s.EnsureKey(ctx, "ms_boot_"+strings.Repeat("Zz9", 12), "bootstrap", DefaultTenant, []Scope{ScopeAdmin}); err == nil {
		t.Error("same id with another secret accepted")
	}
	if all, _ := s.List(ctx, DefaultTenant); len(all) != 1 {
		t.Errorf("bootstrap stored %d times", len(all))
	}
}
