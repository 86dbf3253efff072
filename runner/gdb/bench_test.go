package gdb_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/gdb"
	"github.com/machineserver/machineserver/runner/gdb/gdbtest"
)

// BenchmarkRoundTrip measures, in one run, a single-step and a 4 KiB memory
// read as gdb issues them, three ways to the same QEMU: its stub directly
// (unix socket), through the Endpoint's TCP listener, and through the
// WebSocket tunnel as msctl does it (local TCP port -> WebSocket -> runner).
// The paths take turns in rounds so machine load hits them alike; each op is
// reported as its median in microseconds.
func BenchmarkRoundTrip(b *testing.B) {
	m := gdbtest.Start(b)
	e := gdb.New(slog.New(slog.DiscardHandler))
	e.SetStub(m.Stub)
	defer e.Close()
	tcpAddr, err := e.ListenTCP("127.0.0.1:0", nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.ServeWebSocket(w, r, "bench")
	}))
	defer srv.Close()
	local := forward(b, "ws"+strings.TrimPrefix(srv.URL, "http"))

	paths := []struct {
		name, network, addr string
		step, read          []time.Duration
	}{
		{name: "direct", network: "unix", addr: m.Stub},
		{name: "tcp", network: "tcp", addr: tcpAddr.String()},
		{name: "tunnel", network: "tcp", addr: local},
	}
	connect := func(network, addr string) *gdbtest.RSP {
		c, err := net.Dial(network, addr)
		if err != nil {
			b.Fatal(err)
		}
		p, err := gdbtest.Handshake(c)
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	release := func(p *gdbtest.RSP) {
		p.Close()
		for _, ok := e.Attached(); ok; _, ok = e.Attached() {
			time.Sleep(time.Millisecond)
		}
	}

	// Park the CPU on a "b ." in RAM so every step executes the same
	// instruction, however many there are (the firmware would reach WFI).
	p := connect("unix", m.Stub)
	for _, req := range []string{"M20010000,2:fee7", "Pf=00000120", "P19=00000001"} {
		if r, err := p.Do(req); err != nil || r != "OK" {
			b.Fatalf("%s: %q %v", req, r, err)
		}
	}
	release(p)

	const round = 100
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		for i := range paths {
			b.StopTimer()
			p := connect(paths[i].network, paths[i].addr)
			b.StartTimer()
			for range n {
				t0 := time.Now()
				if r, err := p.Do("s"); err != nil || !strings.HasPrefix(r, "T05") {
					b.Fatalf("%s step: %q %v", paths[i].name, r, err)
				}
				t1 := time.Now()
				if err := p.ReadMem(0x20000000, 4096); err != nil {
					b.Fatalf("%s read: %v", paths[i].name, err)
				}
				t2 := time.Now()
				paths[i].step = append(paths[i].step, t1.Sub(t0))
				paths[i].read = append(paths[i].read, t2.Sub(t1))
			}
			b.StopTimer()
			release(p)
			b.StartTimer()
		}
	}
	b.StopTimer()
	us := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Nanoseconds()) / 1e3
	}
	p50 := map[string][2]float64{}
	for _, p := range paths {
		p50[p.name] = [2]float64{us(p.step), us(p.read)}
		b.ReportMetric(p50[p.name][0], "step-"+p.name+"-us")
		b.ReportMetric(p50[p.name][1], "read4k-"+p.name+"-us")
	}
	for _, via := range []string{"tcp", "tunnel"} {
		b.ReportMetric(p50[via][0]-p50["direct"][0], "step-"+via+"-added-us")
		b.ReportMetric(p50[via][1]-p50["direct"][1], "read4k-"+via+"-added-us")
	}
}

// forward is msctl's half of the tunnel: a local port whose connections
// each open a WebSocket to url.
func forward(b *testing.B, url string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				r, err := gdb.DialTunnel(context.Background(), url, nil)
				if err != nil {
					c.Close()
					return
				}
				gdb.Pipe(c, r)
			}()
		}
	}()
	return ln.Addr().String()
}
