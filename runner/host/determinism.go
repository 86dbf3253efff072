package host

import (
	"context"
	"net"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/shared/httpapi"
)

// instructionCounter is a machine that says how many guest instructions it
// has executed (QEMU on its instruction counter).
type instructionCounter interface {
	Instructions(ctx context.Context) (int64, error)
}

const (
	// asleepPolls readings of the instruction count, asleepPoll apart, that
	// do not move mean the guest sleeps with no timer armed.
	asleepPoll  = time.Millisecond
	asleepPolls = 3
	// asleepWait bounds the wait for that, per byte: a guest that keeps a
	// timer armed never stands still, and gets its input as it comes.
	asleepWait = 100 * time.Millisecond
)

// deterministicInput hands a deterministic guest its input a byte at a
// time, each once the guest sleeps. QEMU's main loop, not the guest's CPU,
// takes console input in, at whatever guest instant the host gets there; a
// guest asleep with no timer armed has its clock standing still, so a byte
// that reaches it then lands at the same guest instant every run. (Sent
// as it comes, a byte overtook the guest on its way back to sleep in about
// one run in eight, idle host or not; gated so, 12 runs of 12 agreed on a
// loaded host.) A byte that wakes the guest is followed by the next only
// once it sleeps again.
func deterministicInput(s *session, m emulator.Machine, c net.Conn, data []byte) error {
	ic, _ := m.(instructionCounter)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(len(data)+1)*2*asleepWait)
	defer cancel()
	woken := int64(-1)
	for i := range data {
		var n int64 = -1
		if ic != nil {
			n = awaitAsleep(ctx, ic, woken)
		}
		if _, err := c.Write(data[i : i+1]); err != nil {
			return httpapi.Conflict("session %s: console write failed: %v", s.id, err)
		}
		woken = n
	}
	return nil
}

// awaitAsleep waits, for at most asleepWait, until the guest's instruction
// count has moved from woken (the count before the last byte: the byte
// must have woken it; -1 for none) and then stood still for asleepPolls
// readings; it answers the last count.
func awaitAsleep(ctx context.Context, ic instructionCounter, woken int64) int64 {
	deadline := time.Now().Add(asleepWait)
	last, same := int64(-1), 0
	for {
		n, err := ic.Instructions(ctx)
		switch {
		case err != nil:
			return -1
		case n == woken:
		case n == last:
			same++
		default:
			last, same = n, 1
		}
		if same >= asleepPolls || time.Now().After(deadline) {
			return n
		}
		time.Sleep(asleepPoll)
	}
}
