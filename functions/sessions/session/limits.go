package session

import (
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// checkLimits refuses a session's limits that are out of range (invalid) or
// that the runners cannot enforce (unprocessable): a CPU or memory cap that would be
// silently ignored is worse than none.
func checkLimits(l *model.Limits, caps board.Capabilities) error {
	if err := runnerapi.CheckLimits(l); err != nil {
		return err
	}
	if l == nil {
		return nil
	}
	ls := caps.Limits
	if ls == nil {
		ls = &board.LimitSupport{Cgroup: "none", Reason: "the runner does not report limit support"}
	}
	if l.CPUPercent > 0 && !ls.CPU {
		return fail.Unprocessable("CPU limits cannot be enforced on the runners (cgroup %s: %s); omit limits.cpu_percent", ls.Cgroup, ls.Reason)
	}
	if l.MemoryMB > 0 && !ls.Memory {
		return fail.Unprocessable("memory limits cannot be enforced on the runners (cgroup %s: %s); omit limits.memory_mb", ls.Cgroup, ls.Reason)
	}
	return nil
}
