package link_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/emulator/emulatortest"
	"github.com/machineserver/machineserver/runner/link"
	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/runner/qmp"
	"github.com/machineserver/machineserver/shared/model"
)

// nicSocket is the unix socket of a node's LAN9118 in its directory.
const nicSocket = "e.sock"

// enode is an mps2-an385 QEMU whose LAN9118 is on a stream netdev, paused
// until resumed, with its console watched.
//
// The runner's backend cannot launch one yet: emulator.Spec has no way to
// ask for the NIC on a socket (qemu.Config.Ethernet only isolates it with
// a restricted user network). So the command line is qemu.Config's, as the
// backend builds it, plus the netdev, and the test plays the backend's
// part: it listens on the QMP, console and NIC sockets before QEMU starts,
// as qemu.Start does for QMP and the console.
type enode struct {
	name    string
	mac     string
	console net.Conn
	out     *emulatortest.Output
	// nic is the switch's side of the NIC's socket; nil for a node
	// joined directly to another.
	nic    net.Conn
	qmp    *qmp.Monitor
	exited chan error
	cmd    *exec.Cmd
}

// netdevArgs attach the board's LAN9118 (its only NIC, nd_table[0]) to a
// stream netdev on the unix socket path, as client (server=false) or
// server. -nic cannot say it on QEMU 7.2: -nic takes no dotted addr.*
// keys, and the stream netdev has no other way to name its address. The
// MAC is the NIC's EEPROM address, which the firmware reads at reset;
// every mps2-an385 has 52:54:00:12:34:56 otherwise, and a learning switch
// cannot tell two such nodes apart.
func netdevArgs(path string, server bool, mac string) []string {
	s := "off"
	if server {
		s = "on"
	}
	return []string{
		"-netdev", "stream,id=n0,server=" + s + ",addr.type=unix,addr.path=" + path,
		"-net", "nic,netdev=n0,model=lan9118,macaddr=" + mac,
	}
}

// startEther launches elf with its NIC on a socket: the test's (the
// switch's port, accepted into enode.nic) when direct is "", else the
// path of a direct stream between two QEMUs, this one its server when
// server is set.
func startEther(t testing.TB, name, elf, mac, direct string, server bool) *enode {
	t.Helper()
	dir := shortDir(t)
	cfg := qemu.Config{Machine: "mps2-an385", Dir: dir, Firmware: qemu.Firmware{Path: elf, Format: model.FormatELF}}
	socks := []string{qemu.QMPSocket, qemu.ConsoleSocket}
	nicPath, nicServer := direct, server
	if direct == "" {
		nicPath, nicServer = filepath.Join(dir, nicSocket), false
		socks = append(socks, nicSocket)
	}
	var lns []*net.UnixListener
	for _, s := range socks {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, s), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	args := append(cfg.Args(), netdevArgs(nicPath, nicServer, mac)...)
	cmd := exec.Command("qemu-system-arm", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &enode{name: name, mac: mac, exited: make(chan error, 1), cmd: cmd}
	go func() { n.exited <- cmd.Wait() }()
	t.Cleanup(n.kill)
	conns := make([]net.Conn, len(lns))
	for i, ln := range lns {
		conns[i] = acceptFrom(t, ln, name+"'s "+socks[i], n.exited, &stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	// The handshake's reply comes from QEMU's main loop, which runs once
	// every backend (the netdev's listening socket too) is set up.
	m, err := qmp.New(ctx, conns[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	n.qmp, n.console, n.out = m, conns[1], emulatortest.Watch(conns[1])
	if len(conns) > 2 {
		n.nic = conns[2]
	}
	return n
}

func (n *enode) resume(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := n.qmp.Execute(ctx, "cont", nil); err != nil {
		t.Fatalf("%s: cont: %v", n.name, err)
	}
}

// waitPeer waits until n's stream netdev, a server, has a client. QEMU
// 7.2 crashes (a NULL channel in net_stream_receive) when the guest sends
// on a server netdev nobody has connected to yet, so a direct pair is
// resumed only once connected. The runner's nodes never are servers: the
// runner listens, as a client the netdev drops frames until connected.
func (n *enode) waitPeer(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for {
		// "info network" shows the peer's address once there is one.
		out, err := n.qmp.HumanCommand(ctx, "info network")
		if err != nil {
			t.Fatalf("%s: info network: %v", n.name, err)
		}
		if strings.Contains(out, "type=stream,unix:") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill ends the QEMU at once and waits for it.
func (n *enode) kill() {
	select {
	case err := <-n.exited:
		n.exited <- err
		return
	default:
	}
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	n.exited <- <-n.exited
}

// ecommand sends a console command and returns the first line it answers
// that starts with prefix.
func ecommand(t testing.TB, n *enode, cmd, prefix string) string {
	t.Helper()
	from := n.out.Len()
	if _, err := n.console.Write([]byte(cmd + "\r")); err != nil {
		t.Fatal(err)
	}
	return waitLines(t, n.out, from, prefix, 1)[0]
}

// erxQuiet asks n for its stats until its received count stops moving
// (twice the same, a while apart) and returns it: whatever the switch
// delivered has been taken by the guest.
func erxQuiet(t testing.TB, n *enode) uint64 {
	t.Helper()
	last := field(t, ecommand(t, n, "stats", "stats "), 2)
	for {
		time.Sleep(200 * time.Millisecond)
		rx := field(t, ecommand(t, n, "stats", "stats "), 2)
		if rx == last {
			return rx
		}
		last = rx
	}
}

// etherSystem is an ethping and two ethpongs on a switch, resumed, with
// the ping knowing both peers.
type etherSystem struct {
	sw    *link.Switch
	ping  *enode
	pongs []*enode
}

func nodeMAC(i int) string { return fmt.Sprintf("02:00:00:00:00:%02x", i) }

func newEtherSystem(t *testing.T, o link.SwitchOptions) *etherSystem {
	t.Helper()
	sw, err := link.NewSwitch(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sw.Close() })
	es := &etherSystem{sw: sw}
	es.ping = startEther(t, "ping", firmware(t, "ethping.elf"), nodeMAC(1), "", false)
	for i := range 2 {
		es.pongs = append(es.pongs, startEther(t, fmt.Sprintf("pong%d", i+1), firmware(t, "ethpong.elf"), nodeMAC(i+2), "", false))
	}
	for _, n := range es.nodes() {
		if err := sw.AddPort(n.name, n.nic); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range slices.Backward(es.nodes()) {
		n.resume(t)
	}
	es.ping.out.Wait(t, 0, "ethping mps2-an385 ready\r\n")
	for _, n := range es.pongs {
		n.out.Wait(t, 0, "ethpong mps2-an385 ready\r\n")
	}
	waitLines(t, es.ping.out, 0, "peer ", 2)
	return es
}

func (es *etherSystem) nodes() []*enode { return append([]*enode{es.ping}, es.pongs...) }

func (es *etherSystem) byMAC(t testing.TB, mac string) *enode {
	t.Helper()
	for _, n := range es.pongs {
		if n.mac == mac {
			return n
		}
	}
	t.Fatalf("no pong has MAC %s", mac)
	return nil
}

// pongSeqs are the numbers n answered from offset from on.
func pongSeqs(t testing.TB, n *enode, from int) []uint64 {
	var out []uint64
	for _, l := range lines(n.out, from, "pong ") {
		out = append(out, field(t, l, 1))
	}
	return out
}

// Three real mps2-an385 machines on a switch: the ping side's frames reach
// each pong by MAC (and only it), round trips are reported; a down switch
// makes the firmware's timeout path print and the answers stop; up again
// they resume; a pong whose machine restarts is attached again and
// answers; at loss 0.5 the share of frames the flooded pong receives is
// half, within a tolerance; and the capture read back with tshark shows
// the frames.
func TestEthernetSwitchQEMU(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Fatalf("tshark is needed to read the capture back (apt-get install tshark): %v", err)
	}
	es := newEtherSystem(t, link.SwitchOptions{Seed: 1})
	sw, ping := es.sw, es.ping

	// Round trips to both pongs; each answered only the pings for it.
	rtts := waitLines(t, ping.out, 0, "rtt ", 6)
	t.Logf("round trips: %q", rtts)
	for _, l := range rtts {
		n, mac := field(t, l, 1), strings.Fields(l)[3]
		es.byMAC(t, mac).out.Wait(t, 0, fmt.Sprintf("pong %d %s\r\n", n, ping.mac))
	}
	one, two := pongSeqs(t, es.pongs[0], 0), pongSeqs(t, es.pongs[1], 0)
	for _, s := range one {
		if slices.Contains(two, s) {
			t.Errorf("ping %d reached both pongs: %v and %v", s, one, two)
		}
	}
	if len(one) == 0 || len(two) == 0 {
		t.Errorf("a pong answered nothing: %v, %v", one, two)
	}
	// The switch learned the three and sent the pings to one port each.
	if st := sw.Stats(); st.MACs != 3 {
		t.Errorf("learned %d addresses: %+v", st.MACs, st)
	}
	unicast := map[string]int{}
	for _, r := range sw.Capture(0) {
		if r.From == "ping" && len(r.Data) >= 15 && r.Data[14] == 'P' {
			unicast[r.To]++
		}
	}
	if unicast["pong1"] == 0 || unicast["pong2"] == 0 || len(unicast) != 2 {
		t.Errorf("pings went to %v, want pong1 and pong2 each alone", unicast)
	}

	// Down: timeouts, and no pong hears anything. A ping in flight when
	// the switch went down may still be answered, so silence is checked
	// from the first timeout on.
	sw.SetFaults(link.Faults{Down: true})
	waitLines(t, ping.out, ping.out.Len(), "timeout ", 1)
	pingMark := ping.out.Len()
	marks := []int{es.pongs[0].out.Len(), es.pongs[1].out.Len()}
	timeouts := waitLines(t, ping.out, pingMark, "timeout ", 3)
	for i, n := range es.pongs {
		if s := pongSeqs(t, n, marks[i]); len(s) > 0 {
			t.Errorf("%s answered over a down switch: %v", n.name, s)
		}
	}
	if l := lines(ping.out, pingMark, "rtt "); len(l) > 0 {
		t.Errorf("round trips over a down switch: %q", l)
	}
	t.Logf("down: %q", timeouts)

	// Up: round trips resume.
	sw.SetFaults(link.Faults{})
	pingMark = ping.out.Len()
	resumed := waitLines(t, ping.out, pingMark, "rtt ", 2)
	if field(t, resumed[0], 1) <= field(t, timeouts[len(timeouts)-1], 1) {
		t.Errorf("numbering went back: %q after %q", resumed, timeouts)
	}
	t.Logf("up: %q", resumed)

	// pong2's machine restarts: its port ends by itself, pings to it time
	// out, and once the new machine is attached under the same name it
	// answers again.
	old := es.pongs[1]
	old.kill()
	for deadline := time.Now().Add(waitLimit); portStats(t, sw, "pong2").Err == "" && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("pong2 gone: %s", portStats(t, sw, "pong2").Err)
	waitLines(t, ping.out, ping.out.Len(), "timeout ", 1)
	again := startEther(t, "pong2", firmware(t, "ethpong.elf"), old.mac, "", false)
	if err := sw.AddPort("pong2", again.nic); err != nil {
		t.Fatal(err)
	}
	es.pongs[1] = again
	again.resume(t)
	waitLines(t, again.out, 0, "pong ", 2)

	// Loss 0.5. The window is bounded by the switch going down on both
	// sides, so the flooded pong's received count is exact: the frames
	// the switch took for it in the window against those its guest got.
	target := es.byMAC(t, strings.Fields(lines(ping.out, 0, "peer ")[0])[1])
	sw.SetFaults(link.Faults{Down: true})
	rx0 := erxQuiet(t, target)
	mark := sw.Stats().Records
	sw.SetFaults(link.Faults{Loss: 0.5})
	const floods = 2000
	ecommand(t, ping, fmt.Sprintf("flood %d", floods), "flood sent")
	// "flood sent" means the guest's NIC took the frames, not that the
	// switch read them all: the last are cut only once it has.
	window := func() []link.Record { return sw.Capture(mark) }
	count := func(recs []link.Record) (offered, lost, floodsSeen int) {
		for _, r := range recs {
			if r.From != "ping" || r.Down || !bytes.Equal(r.Data[:6], macBytes(t, target.mac)) {
				continue
			}
			offered++
			if r.Lost > 0 {
				lost++
			}
			if r.Data[14] == 'F' {
				floodsSeen++
			}
		}
		return offered, lost, floodsSeen
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, _, f := count(window()); f >= floods {
			break
		}
	}
	sw.SetFaults(link.Faults{Down: true})
	rx1 := erxQuiet(t, target)
	offered, lost, floodsSeen := count(window())
	got := int(rx1 - rx0)
	if got != offered-lost {
		t.Errorf("%s received %d frames, the switch delivered %d", target.name, got, offered-lost)
	}
	measured := 1 - float64(got)/float64(offered)
	t.Logf("loss 0.5: %d of %d frames received (%d floods), measured loss %.3f", got, offered, floodsSeen, measured)
	// Over 2000 frames the standard deviation is 0.011.
	if floodsSeen < floods || math.Abs(measured-0.5) > 0.05 {
		t.Errorf("measured loss %.3f over %d frames, want 0.5 +- 0.05", measured, offered)
	}
	for _, p := range sw.Stats().Ports {
		if p.Overflow > 0 {
			t.Errorf("%s: %d frames overflowed its queue", p.Name, p.Overflow)
		}
	}

	// The capture as pcap, read back by tshark.
	recs := sw.Capture(0)
	pcap := filepath.Join(t.TempDir(), "lan0.pcap")
	f, err := os.Create(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.WritePcap(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// tshark warns on stderr when run as root; only stdout is read.
	out, err := exec.Command(tshark, "-r", pcap, "-T", "fields", "-E", "separator=/t",
		"-e", "frame.number", "-e", "eth.src", "-e", "eth.dst", "-e", "eth.type", "-e", "frame.len").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	rows := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(rows) != len(recs) {
		t.Errorf("tshark read %d frames, the capture has %d", len(rows), len(recs))
	}
	for i, row := range rows[:min(len(rows), len(recs))] {
		r := recs[i]
		want := fmt.Sprintf("%d\t%s\t%s\t0x88b5\t%d", i+1, net.HardwareAddr(r.Data[6:12]), net.HardwareAddr(r.Data[:6]), len(r.Data))
		if row != want {
			t.Errorf("tshark frame %d: %q, want %q", i+1, row, want)
			break
		}
	}
	summary, err := exec.Command(tshark, "-r", pcap, "-c", "6").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	t.Logf("tshark -r: %d frames; the first:\n%s", len(rows), summary)

	if err := sw.Close(); err != nil {
		t.Error(err)
	}
	noLinkGoroutines(t)
}

func macBytes(t testing.TB, s string) []byte {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// noLinkGoroutines fails when goroutines of the link package are still
// there. A goroutine that has called its WaitGroup's Done may still be
// returning, so the check is repeated for a moment before it fails.
func noLinkGoroutines(t testing.TB) {
	t.Helper()
	var g []string
	for range 100 {
		if g = linkGoroutines(); len(g) == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
}

// acceptFrom waits for an emulator started with exited (its Wait's
// outcome, put back for others to see) to connect to ln, and closes the
// connection at the test's end; what the emulator printed to out says
// why it did not.
func acceptFrom(t testing.TB, ln net.Listener, what string, exited chan error, out fmt.Stringer) net.Conn {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	select {
	case c, ok := <-accepted:
		if !ok {
			t.Fatalf("%s: listener closed", what)
		}
		t.Cleanup(func() { c.Close() })
		return c
	case err := <-exited:
		exited <- err
		t.Fatalf("the emulator exited before connecting %s: %v: %s", what, err, out.String())
	case <-time.After(waitLimit):
		t.Fatalf("the emulator did not connect %s: %s", what, out.String())
	}
	return nil
}
