package auth

import (
	"context"
	"errors"
	"fmt"
	"testing"

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
