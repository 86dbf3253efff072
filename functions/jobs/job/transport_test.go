package job

import (
	"github.com/machineserver/machineserver/shared/testenv"
	"testing"
)

// The use cases must stay transport-free: HTTP status codes belong to the
// adapters, which map the domain errors.
func TestNoTransportImports(t *testing.T) { testenv.NoTransport(t) }
