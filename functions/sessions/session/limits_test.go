package session

import (
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

func TestCheckLimits(t *testing.T) {
	v1 := board.Capabilities{Limits: &board.LimitSupport{CPU: true, Memory: true, Cgroup: "v1"}}
	none := board.Capabilities{Limits: &board.LimitSupport{Cgroup: "none", Reason: "read-only /sys/fs/cgroup"}}
	for _, c := range []struct {
		limits *model.Limits
		caps   board.Capabilities
		status int
		says   string
	}{
		{nil, none, 0, ""},
		{&model.Limits{}, none, 0, ""},
		{&model.Limits{CPUPercent: 20, MemoryMB: 64}, v1, 0, ""},
		{&model.Limits{CPUPercent: 101}, v1, 400, "1 to 100"},
		{&model.Limits{MemoryMB: 15}, v1, 400, "16 to 4096"},
		{&model.Limits{CPUPercent: 20}, none, 422, "CPU limits cannot be enforced"},
		{&model.Limits{MemoryMB: 64}, none, 422, "memory limits cannot be enforced"},
		{&model.Limits{CPUPercent: 20}, board.Capabilities{}, 422, "does not report"},
	} {
		err := checkLimits(c.limits, c.caps)
		he := httpapi.AsError(err)
		switch {
		case c.status == 0 && err != nil:
			t.Errorf("%+v on %+v: %v", c.limits, c.caps.Limits, err)
		case c.status != 0 && (he == nil || he.Status != c.status || !strings.Contains(he.Message, c.says)):
			t.Errorf("%+v on %+v: %v, want %d saying %q", c.limits, c.caps.Limits, err, c.status, c.says)
		}
	}
}
