package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/shared/model"
)

// BenchmarkSystemPowerOn measures a system's power on of 2, 4 and 8
// mps2-an385 nodes (UART links between pairs) to the first console byte
// of the last node, against as many single sessions of the same program
// powered on one after another through the API, in one run of the
// distributed platform. The system starts every node paused, puts its
// links and resumes them together.
func BenchmarkSystemPowerOn(b *testing.B) {
	for _, n := range []int{2, 4, 8} {
		b.Run(fmt.Sprint(n, "-nodes"), func(b *testing.B) {
			pl := startDistributed(b, "MS_LOG_LEVEL=warn", fmt.Sprint("MS_QUOTA_SESSIONS=", 2*n), fmt.Sprint("MS_RUNNER_SPARES=", 4*n), fmt.Sprint("MS_RUNNER_CAPACITY=", 4*n))
			prog := uploadELF(b, pl, "mps2-an385", "uartpong.elf")
			var nodes, links []any
			for i := range n {
				nodes = append(nodes, systemNode(fmt.Sprint("n", i), prog))
				if i%2 == 1 {
					links = append(links, map[string]any{"type": "uart", "ends": []string{fmt.Sprintf("n%d:uart1", i-1), fmt.Sprintf("n%d:uart1", i)}})
				}
			}
			var sys model.System
			pl.must(b, 201, "POST", "/api/v1/systems", map[string]any{"name": "bench", "nodes": nodes, "links": links}, &sys)
			var inSystem, singles []string
			for _, nd := range sys.Nodes {
				inSystem = append(inSystem, nd.SessionID)
				var s model.Session
				pl.must(b, 201, "POST", "/api/v1/sessions", map[string]any{"name": "single", "board_config": map[string]string{"board": "mps2-an385"}}, &s)
				pl.must(b, 200, "POST", "/api/v1/sessions/"+s.ID+"/program", map[string]string{"program_id": prog}, nil)
				singles = append(singles, s.ID)
			}
			var system, one, call []time.Duration
			b.ResetTimer()
			for range b.N {
				system = append(system, lastFirstByte(b, pl, inSystem, func() {
					t0 := time.Now()
					pl.must(b, 200, "POST", "/api/v1/systems/"+sys.ID+"/poweron", nil, nil)
					call = append(call, time.Since(t0))
				}))
				pl.must(b, 200, "POST", "/api/v1/systems/"+sys.ID+"/poweroff", nil, nil)
				one = append(one, lastFirstByte(b, pl, singles, func() {
					for _, id := range singles {
						pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
					}
				}))
				for _, id := range singles {
					pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, nil)
				}
			}
			b.StopTimer()
			b.ReportMetric(ms(percentile(system, 0.5)), "system-p50-ms")
			b.ReportMetric(ms(percentile(call, 0.5)), "system-call-p50-ms")
			b.ReportMetric(ms(percentile(call, 0.5)), "system-call-p50-ms")
			b.ReportMetric(ms(percentile(one, 0.5)), "singles-p50-ms")
			b.ReportMetric(float64(percentile(system, 0.5))/float64(percentile(one, 0.5)), "ratio-p50")
			b.ReportMetric(0, "ns/op")
			pl.must(b, 204, "DELETE", "/api/v1/systems/"+sys.ID, nil, nil)
			for _, id := range singles {
				pl.must(b, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
			}
		})
	}
}

// lastFirstByte is the time from calling start until every session's
// console has printed its first new byte.
func lastFirstByte(b *testing.B, pl *platform, ids []string, start func()) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conns := make([]*websocket.Conn, len(ids))
	for i, id := range ids {
		u := strings.Replace(pl.base, "http", "ws", 1) + "/api/v1/sessions/" + id + "/stream/console?offset=end"
		c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"ApiKey " + apiKey}}})
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseNow()
		conns[i] = c
	}
	at := make([]time.Time, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, c := range conns {
		wg.Go(func() {
			_, _, errs[i] = c.Read(ctx)
			at[i] = time.Now()
		})
	}
	start()
	wg.Wait()
	last := t0
	for i, t := range at {
		if errs[i] != nil {
			b.Fatalf("console of %s: %v", ids[i], errs[i])
		}
		if t.After(last) {
			last = t
		}
	}
	return last.Sub(t0)
}
