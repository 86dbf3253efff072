package link_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/bits"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/machineserver/machineserver/runner/link"
)

// The unit tests run in synctest bubbles over net.Pipe: time is the
// bubble's (a delay is exact, nothing waits for real), synctest.Wait
// tells when every goroutine is stuck so "nothing arrived" is a fact and
// not a guess, and a goroutine the link leaves behind fails the test.

// rig is a link between two pipes: the test plays both machines on a and
// b, and collectors record what each machine receives.
type rig struct {
	u        *link.UART
	a, b     net.Conn // the machines' sides
	ports    [2]net.Conn
	atA, atB *collector
}

func newRig(t *testing.T, o link.Options) *rig {
	t.Helper()
	a1, a2 := net.Pipe()
	b1, b2 := net.Pipe()
	u, err := link.NewUART(a1, b1, o)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{u: u, a: a2, b: b2, ports: [2]net.Conn{a1, b1}, atA: collect(a2), atB: collect(b2)}
}

// end closes the link and every pipe, so the collectors return too.
func (r *rig) end(t *testing.T) {
	t.Helper()
	if err := r.u.Close(); err != nil {
		t.Error(err)
	}
	for _, c := range []net.Conn{r.a, r.b, r.ports[0], r.ports[1]} {
		c.Close()
	}
	// A goroutine past its wg.Done may not have returned yet.
	synctest.Wait()
	if g := linkGoroutines(); len(g) > 0 {
		t.Errorf("goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
	}
}

// arrival is one read by a machine.
type arrival struct {
	at   time.Time
	data []byte
}

type collector struct {
	mu  sync.Mutex
	got []arrival
}

func collect(c net.Conn) *collector {
	col := &collector{}
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				col.mu.Lock()
				col.got = append(col.got, arrival{time.Now(), append([]byte(nil), buf[:n]...)})
				col.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	return col
}

func (c *collector) arrivals() []arrival {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]arrival(nil), c.got...)
}

func (c *collector) bytes() []byte {
	var all []byte
	for _, a := range c.arrivals() {
		all = append(all, a.data...)
	}
	return all
}

func write(t *testing.T, c net.Conn, s []byte) {
	t.Helper()
	if _, err := c.Write(s); err != nil {
		t.Fatal(err)
	}
}

// linkGoroutines lists the stacks of goroutines running the link's code.
func linkGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "/runner/link.(") {
			out = append(out, g)
		}
	}
	return out
}

func TestForwardBothWays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, link.Options{Names: [2]string{"gw:uart1", "sensor:uart0"}})
		defer r.end(t)
		write(t, r.a, []byte("PING 1\n"))
		synctest.Wait() // recorded before the answer is read
		write(t, r.b, []byte("PONG 1\n"))
		synctest.Wait()
		if got := string(r.atB.bytes()); got != "PING 1\n" {
			t.Errorf("b got %q", got)
		}
		if got := string(r.atA.bytes()); got != "PONG 1\n" {
			t.Errorf("a got %q", got)
		}
		s := r.u.Stats()
		for i, d := range s.Directions {
			if d.Bytes != 7 || d.Chunks != 1 || d.Delivered != 7 || d.Dropped != 0 || d.Corrupted != 0 {
				t.Errorf("direction %d: %+v", i, d)
			}
		}
		if s.Directions[0].From != "gw:uart1" || s.Directions[0].To != "sensor:uart0" || s.Directions[1].From != "sensor:uart0" {
			t.Errorf("names: %+v", s.Directions)
		}
		recs := r.u.Capture(0)
		if len(recs) != 2 || recs[0].Seq != 1 || recs[1].Seq != 2 ||
			recs[0].From != "gw:uart1" || string(recs[0].Data) != "PING 1\n" ||
			recs[1].From != "sensor:uart0" || recs[1].To != "gw:uart1" || string(recs[1].Data) != "PONG 1\n" {
			t.Fatalf("capture: %+v", recs)
		}
		if !recs[0].Time.Equal(time.Now()) || recs[0].Delivered != nil || recs[0].Down {
			t.Errorf("record: %+v", recs[0])
		}
	})
}

// Down drops what arrives (the sender is not held back) and counts it;
// up again, bytes flow.
func TestDownDropsBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, link.Options{})
		defer r.end(t)
		if err := r.u.SetFaults(link.Faults{Down: true}); err != nil {
			t.Fatal(err)
		}
		write(t, r.a, bytes.Repeat([]byte("x"), 100))
		write(t, r.b, []byte("back"))
		synctest.Wait()
		if len(r.atB.bytes())+len(r.atA.bytes()) != 0 {
			t.Fatalf("bytes crossed a down link: %q %q", r.atB.bytes(), r.atA.bytes())
		}
		s := r.u.Stats().Directions
		if s[0].Bytes != 100 || s[0].Dropped != 100 || s[0].Lost != 0 || s[0].Delivered != 0 || s[1].Dropped != 4 {
			t.Errorf("stats: %+v", s)
		}
		recs := r.u.Capture(0)
		if len(recs) != 2 {
			t.Fatalf("capture: %+v", recs)
		}
		for _, rec := range recs {
			if !rec.Down || rec.Dropped != len(rec.Data) || rec.Delivered != nil {
				t.Errorf("record: %+v", rec)
			}
		}
		r.u.SetFaults(link.Faults{})
		write(t, r.a, []byte("up"))
		synctest.Wait()
		if got := string(r.atB.bytes()); got != "up" {
			t.Errorf("after up b got %q", got)
		}
	})
}

// lossy sends n bytes in chunks of size through a link with faults f and
// returns what arrived and the link's counters.
func lossy(t *testing.T, seed uint64, f link.Faults, sent []byte, size int) ([]byte, link.DirStats) {
	var got []byte
	var st link.DirStats
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, link.Options{Seed: seed, Faults: f})
		defer r.end(t)
		for s := sent; len(s) > 0; {
			k := min(size, len(s))
			write(t, r.a, s[:k])
			s = s[k:]
		}
		synctest.Wait()
		got, st = r.atB.bytes(), r.u.Stats().Directions[0]
	})
	return got, st
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// isSubsequence: loss only leaves bytes out, in order.
func isSubsequence(sub, of []byte) bool {
	i := 0
	for _, c := range of {
		if i < len(sub) && sub[i] == c {
			i++
		}
	}
	return i == len(sub)
}

func TestLossFraction(t *testing.T) {
	sent := pattern(20000)
	for _, p := range []float64{0.1, 0.5} {
		got, st := lossy(t, 7, link.Faults{Loss: p}, sent, 100)
		measured := 1 - float64(len(got))/float64(len(sent))
		// 20000 independent bytes: the standard deviation is below 0.004.
		if math.Abs(measured-p) > 0.02 {
			t.Errorf("loss %v: measured %.4f", p, measured)
		}
		if st.Bytes != uint64(len(sent)) || st.Lost != st.Dropped || st.Delivered+st.Lost != st.Bytes || st.Delivered != uint64(len(got)) {
			t.Errorf("loss %v: counters %+v for %d delivered", p, st, len(got))
		}
		if !isSubsequence(got, sent) {
			t.Errorf("loss %v: the delivered bytes are not the sent ones in order", p)
		}
	}
	if got, _ := lossy(t, 7, link.Faults{Loss: 1}, sent[:1000], 100); len(got) != 0 {
		t.Errorf("loss 1 delivered %d bytes", len(got))
	}
}

// The same seed drops the same bytes, however the stream was chunked (the
// reason faults act per byte); another seed drops others.
func TestLossDeterministic(t *testing.T) {
	sent := pattern(5000)
	f := link.Faults{Loss: 0.3, Corrupt: 0.05}
	one, _ := lossy(t, 42, f, sent, 1)
	big, _ := lossy(t, 42, f, sent, 4000)
	other, _ := lossy(t, 43, f, sent, 1)
	if !bytes.Equal(one, big) {
		t.Error("the same seed gave different results for other chunk sizes")
	}
	if bytes.Equal(one, other) {
		t.Error("two seeds gave the same result")
	}
}

// A corrupted byte differs from the sent one in exactly one bit; the
// record shows what was delivered.
func TestCorruptFlipsBits(t *testing.T) {
	sent := pattern(2000)
	got, st := lossy(t, 1, link.Faults{Corrupt: 1}, sent, 500)
	if len(got) != len(sent) || st.Corrupted != uint64(len(sent)) || st.Dropped != 0 {
		t.Fatalf("%d of %d delivered, %+v", len(got), len(sent), st)
	}
	for i := range sent {
		if n := bits.OnesCount8(sent[i] ^ got[i]); n != 1 {
			t.Fatalf("byte %d: sent %08b, got %08b (%d bits differ)", i, sent[i], got[i], n)
		}
	}
	got, st = lossy(t, 1, link.Faults{Corrupt: 0.2}, sent, 500)
	diff := 0
	for i := range sent {
		if sent[i] != got[i] {
			diff++
		}
	}
	if uint64(diff) != st.Corrupted || math.Abs(float64(diff)/float64(len(sent))-0.2) > 0.05 {
		t.Errorf("corrupt 0.2: %d bytes differ, %d counted", diff, st.Corrupted)
	}
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, link.Options{Faults: link.Faults{Corrupt: 1}})
		defer r.end(t)
		write(t, r.a, []byte("abc"))
		synctest.Wait()
		recs := r.u.Capture(0)
		if len(recs) != 1 || string(recs[0].Data) != "abc" || recs[0].Corrupted != 3 || !bytes.Equal(recs[0].Delivered, r.atB.bytes()) {
			t.Errorf("record %+v, delivered %q", recs, r.atB.bytes())
		}
	})
}

// Each chunk is held for the delay in force when it was read, and never
// overtakes the one before it, also when the delay shrinks; writes go on
// while chunks wait.
func TestDelayKeepsOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, link.Options{Faults: link.Faults{Delay: 10 * time.Millisecond}})
		defer r.end(t)
		t0 := time.Now()
		write(t, r.a, []byte("1"))
		time.Sleep(time.Millisecond)
		r.u.SetFaults(link.Faults{Delay: 2 * time.Millisecond})
		write(t, r.a, []byte("2")) // due at 3 ms, behind "1" due at 10 ms
		time.Sleep(19 * time.Millisecond)
		write(t, r.a, []byte("3")) // due at 22 ms
		r.u.SetFaults(link.Faults{})
		write(t, r.a, []byte("4")) // no delay, but behind "3"
		time.Sleep(time.Second)
		want := []struct {
			data string
			at   time.Duration
		}{{"1", 10 * time.Millisecond}, {"2", 10 * time.Millisecond}, {"3", 22 * time.Millisecond}, {"4", 22 * time.Millisecond}}
		got := r.atB.arrivals()
		if len(got) != len(want) {
			t.Fatalf("arrivals: %v", got)
		}
		for i, w := range want {
			if string(got[i].data) != w.data || got[i].at.Sub(t0) != w.at {
				t.Errorf("arrival %d: %q at %v, want %q at %v", i, got[i].data, got[i].at.Sub(t0), w.data, w.at)
			}
		}
		// Undelayed again, a chunk goes at once.
		t1 := time.Now()
		write(t, r.a, []byte("5"))
		synctest.Wait()
		if got := r.atB.arrivals(); len(got) != 5 || !got[4].at.Equal(t1) {
			t.Errorf("undelayed chunk: %v", got)
		}
	})
}

// The capture keeps the newest records within its byte bound and can be
// read from a sequence number on.
func TestCaptureBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 1000
		r := newRig(t, link.Options{CaptureBytes: limit})
		defer r.end(t)
		for i := range 100 {
			write(t, r.a, []byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9})
		}
		synctest.Wait()
		recs := r.u.Capture(0)
		size := 0
		for _, rec := range recs {
			size += 96 + len(rec.Data) + len(rec.Delivered)
		}
		if size > limit || len(recs) == 0 || recs[len(recs)-1].Seq != 100 || recs[len(recs)-1].Data[0] != 99 {
			t.Fatalf("%d records, %d bytes, last %+v", len(recs), size, recs[len(recs)-1])
		}
		for i := 1; i < len(recs); i++ {
			if recs[i].Seq != recs[i-1].Seq+1 {
				t.Fatalf("seqs not consecutive: %d then %d", recs[i-1].Seq, recs[i].Seq)
			}
		}
		s := r.u.Stats()
		if s.Records != 100 || s.Evicted != uint64(100-len(recs)) {
			t.Errorf("records %d, evicted %d, kept %d", s.Records, s.Evicted, len(recs))
		}
		if after := r.u.Capture(97); len(after) != 3 || after[0].Seq != 98 {
			t.Errorf("after 97: %+v", after)
		}
		if after := r.u.Capture(100); len(after) != 0 {
			t.Errorf("after the last: %+v", after)
		}
		if after := r.u.Capture(1); len(after) != len(recs) {
			t.Errorf("after an evicted seq: %d records, want all %d kept", len(after), len(recs))
		}
	})
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, link.Options{CaptureBytes: -1})
		defer r.end(t)
		sub := r.u.Subscribe(1)
		write(t, r.a, []byte("x"))
		synctest.Wait()
		if recs := r.u.Capture(0); len(recs) != 0 {
			t.Errorf("capture off kept %d records", len(recs))
		}
		if rec := <-sub.C; string(rec.Data) != "x" {
			t.Errorf("subscriber got %+v", rec)
		}
	})
}

// A subscriber gets records live; one that does not read misses records
// without holding the link back; Cancel and the link's end close C.
func TestSubscribe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, link.Options{})
		live := r.u.Subscribe(16)
		stuck := r.u.Subscribe(1)
		gone := r.u.Subscribe(1)
		gone.Cancel()
		gone.Cancel()
		for i := range 5 {
			write(t, r.a, []byte{'0' + byte(i)})
		}
		synctest.Wait() // "B" is read after a's chunks were recorded
		write(t, r.b, []byte("B"))
		synctest.Wait()
		if got := string(r.atB.bytes()); got != "01234" {
			t.Errorf("a stuck subscriber held the link: b got %q", got)
		}
		for i := range 6 {
			rec := <-live.C
			if rec.Seq != uint64(i+1) || (i < 5 && rec.From != "a") || (i == 5 && rec.From != "b") {
				t.Errorf("record %d: %+v", i, rec)
			}
		}
		if live.Missed() != 0 || stuck.Missed() != 5 {
			t.Errorf("missed: live %d, stuck %d", live.Missed(), stuck.Missed())
		}
		if _, ok := <-gone.C; ok {
			t.Error("a cancelled subscription got a record")
		}
		r.end(t)
		<-stuck.C // the one it buffered
		if _, ok := <-stuck.C; ok {
			t.Error("C open after the link ended")
		}
		if _, ok := <-live.C; ok {
			t.Error("C open after the link ended")
		}
		if _, ok := <-r.u.Subscribe(1).C; ok {
			t.Error("a subscription to an ended link is open")
		}
	})
}

// Close returns with every goroutine gone, whatever they were blocked on:
// a read, a write to a machine that takes nothing, a delay; the ports are
// left open and usable.
func TestCloseEndsEverything(t *testing.T) {
	for _, c := range []struct {
		name string
		f    link.Faults
		// stall: b reads nothing, so the link's write blocks.
		stall bool
	}{{"idle", link.Faults{}, false}, {"write blocked", link.Faults{}, true}, {"delay line", link.Faults{Delay: link.MaxDelay}, false}} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a1, a2 := net.Pipe()
				b1, b2 := net.Pipe()
				defer func() {
					for _, p := range []net.Conn{a1, a2, b1, b2} {
						p.Close()
					}
				}()
				u, err := link.NewUART(a1, b1, link.Options{Faults: c.f})
				if err != nil {
					t.Fatal(err)
				}
				sub := u.Subscribe(10)
				if c.name != "idle" {
					if !c.stall {
						collect(b2)
					}
					write(t, a2, []byte("held"))
				}
				synctest.Wait()
				u.Close()
				synctest.Wait()
				if g := linkGoroutines(); len(g) > 0 {
					t.Fatalf("goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
				}
				select {
				case <-u.Done():
				default:
					t.Error("Done open after Close")
				}
				if u.Err() != nil {
					t.Errorf("Err after Close: %v", u.Err())
				}
				if err := u.SetFaults(link.Faults{}); !errors.Is(err, link.ErrClosed) {
					t.Errorf("SetFaults after Close: %v", err)
				}
				for range sub.C {
				}
				u.Close()
				// The ports work without the link: no deadline left on them.
				go a2.Write([]byte("after"))
				buf := make([]byte, 5)
				if _, err := io.ReadFull(a1, buf); err != nil || string(buf) != "after" {
					t.Errorf("port after Close: %q, %v", buf, err)
				}
			})
		})
	}
}

// A machine that goes away ends the link by itself, with the reason.
func TestEndsWhenAPortEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, link.Options{})
		sub := r.u.Subscribe(1)
		r.a.Close()
		<-r.u.Done()
		if err := r.u.Err(); !errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "reading a") {
			t.Errorf("Err: %v", err)
		}
		if _, ok := <-sub.C; ok {
			t.Error("subscription open after the end")
		}
		r.end(t)
	})
}

func TestFaultsValidate(t *testing.T) {
	for _, f := range []link.Faults{{Loss: -0.1}, {Loss: 1.5}, {Corrupt: math.NaN()}, {Delay: -time.Millisecond}, {Delay: link.MaxDelay + 1}} {
		if f.Validate() == nil {
			t.Errorf("%+v accepted", f)
		}
	}
	if err := (link.Faults{Down: true, Loss: 1, Corrupt: 0, Delay: link.MaxDelay}).Validate(); err != nil {
		t.Error(err)
	}
	synctest.Test(t, func(t *testing.T) {
		a1, a2 := net.Pipe()
		b1, b2 := net.Pipe()
		defer func() {
			for _, p := range []net.Conn{a1, a2, b1, b2} {
				p.Close()
			}
		}()
		if _, err := link.NewUART(a1, b1, link.Options{Faults: link.Faults{Loss: 2}}); err == nil {
			t.Error("bad faults accepted at start")
		}
		if _, err := link.NewUART(a1, b1, link.Options{Names: [2]string{"x", "x"}}); err == nil {
			t.Error("two ends of one name accepted")
		}
		if _, err := link.NewUART(a1, nil, link.Options{}); err == nil {
			t.Error("a missing end accepted")
		}
		u, err := link.NewUART(a1, b1, link.Options{Faults: link.Faults{Loss: 0.25}})
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		if err := u.SetFaults(link.Faults{Corrupt: 7}); err == nil || u.Faults() != (link.Faults{Loss: 0.25}) {
			t.Errorf("bad change: %v, faults now %+v", err, u.Faults())
		}
	})
}

// Records and counters are plain JSON (bytes as base64).
func TestRecordJSON(t *testing.T) {
	rec := link.Record{Seq: 3, Time: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), From: "a", To: "b",
		Data: []byte("hi\n"), Delivered: []byte("h"), Dropped: 2, Lost: 2}
	j, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seq":3,"time":"2025-01-02T03:04:05.000000006Z","from":"a","to":"b","data":"aGkK","delivered":"aA==","dropped":2,"lost":2}`
	if string(j) != want {
		t.Errorf("got  %s\nwant %s", j, want)
	}
	var back link.Record
	if err := json.Unmarshal(j, &back); err != nil || string(back.Data) != "hi\n" || !back.Time.Equal(rec.Time) {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}
