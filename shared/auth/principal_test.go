package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/model"
)

// Hidden answers a missing record and another tenant's alike, and lets the
// caller's own record and any other error through.
func TestHidden(t *testing.T) {
	ctx := WithPrincipal(context.Background(), Principal{Actor: "key:k", Tenant: "acme"})
	boom := errors.New("redis down")
	for _, c := range []struct {
		tenant string
		err    error
		hidden bool
	}{
		{"acme", nil, false},
		{"globex", nil, true},
		{"", nil, true}, // a record from before tenants is the default tenant's
		{"acme", fmt.Errorf("get: %w", model.ErrNotFound), true},
		{"acme", boom, false},
	} {
		if got := Hidden(ctx, c.tenant, c.err); got != c.hidden {
			t.Errorf("Hidden(tenant %q, %v) = %v, want %v", c.tenant, c.err, got, c.hidden)
		}
	}
}

// Lookup answers a malformed id, a missing record and another tenant's
// with the same kind of not found, and hands the caller's own record and
// any other error through.
func TestLookup(t *testing.T) {
	ctx := WithPrincipal(context.Background(), Principal{Actor: "key:k", Tenant: "acme"})
	const id = "0123456789abcdef"
	boom := errors.New("redis down")
	records := map[string]model.Session{id: {ID: id, Tenant: "acme"}, "fedcba9876543210": {ID: "fedcba9876543210", Tenant: "globex"}}
	get := func(_ context.Context, id string) (model.Session, error) {
		if id == "00000000000000ff" {
			return model.Session{}, boom
		}
		s, ok := records[id]
		if !ok {
			return s, fmt.Errorf("get: %w", model.ErrNotFound)
		}
		return s, nil
	}
	owner := func(s model.Session) string { return s.Tenant }
	if s, err := Lookup(ctx, "session", id, get, owner); err != nil || s.ID != id {
		t.Fatalf("own record: %+v, %v", s, err)
	}
	for in, want := range map[string]string{
		"nope":             `session "nope" not found (ids are 16 hex digits)`,
		"fedcba9876543210": "session fedcba9876543210 not found",
		"1111111111111111": "session 1111111111111111 not found",
	} {
		_, err := Lookup(ctx, "session", in, get, owner)
		if !errors.Is(err, fail.ErrNotFound) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want not found %q", in, err, want)
		}
	}
	if _, err := Lookup(ctx, "session", "00000000000000ff", get, owner); !errors.Is(err, boom) {
		t.Errorf("another error: %v", err)
	}
}
