package snapshot

import (
	"context"
	"errors"
	"github.com/machineserver/machineserver/shared/testenv"
	"testing"

	"github.com/machineserver/machineserver/shared/fail"
)

// The use cases know no transport: HTTP belongs to the handler package,
// which maps the domain errors to statuses.
func TestNoTransportImports(t *testing.T) { testenv.NoTransport(t) }

// Refusals are domain errors, whose kind the adapters map.
func TestForkRefusalIsDomainError(t *testing.T) {
	for _, n := range []int{0, MaxFork + 1} {
		_, err := New(Deps{}).Fork(context.Background(), "0123456789abcdef", ForkRequest{Count: n})
		var fe *fail.Error
		if !errors.As(err, &fe) || !errors.Is(err, fail.ErrInvalid) {
			t.Errorf("count %d: %T %v", n, err, err)
		}
	}
}
