package link_test

import (
	"context"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/link"
	"github.com/machineserver/machineserver/runner/qemu"
)

// Machines the runner's backend launches with a linked NIC (emulator.Spec
// NIC) join a Switch as they are: ethping finds ethpong by its hello and
// their round trips cross the switch, each node with the MAC it was given.
func TestSwitchWithBackendNICs(t *testing.T) {
	b := qemu.New(qemu.Options{Binaries: []string{"qemu-system-arm"}})
	sw, err := link.NewSwitch(link.SwitchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sw.Close() })
	macs := map[string]string{"ethping.elf": "02:00:00:00:00:21", "ethpong.elf": "02:00:00:00:00:22"}
	nodes := map[string]node{}
	for _, fw := range []string{"ethpong.elf", "ethping.elf"} {
		n := launch(t, b, firmware(t, fw), emulator.NIC{MAC: macs[fw]})
		w, ok := n.m.(emulator.Wired)
		if !ok || w.NIC() == nil {
			t.Fatalf("%s: a %T without a NIC", fw, n.m)
		}
		if err := sw.AddPort(fw, w.NIC()); err != nil {
			t.Fatal(err)
		}
		nodes[fw] = n
	}
	for _, fw := range []string{"ethpong.elf", "ethping.elf"} {
		if err := nodes[fw].m.Resume(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ping := nodes["ethping.elf"]
	peer := waitLines(t, ping.console, 0, "peer ", 1)[0]
	if !strings.Contains(peer, macs["ethpong.elf"]) {
		t.Fatalf("ethping found %q, want ethpong at %s", peer, macs["ethpong.elf"])
	}
	rtt := waitLines(t, ping.console, 0, "rtt ", 2)
	if !strings.HasSuffix(rtt[1], macs["ethpong.elf"]) {
		t.Fatalf("round trips %q", rtt)
	}

}
