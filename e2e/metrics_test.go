package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMetrics runs a scripted sequence and checks /metrics against it.
func TestMetrics(t *testing.T) {
	var delivered atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		delivered.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(sink.Close)
	// No job workers: the jobs queued below stay queued for the gauges.
	pl := startStandalone(t, "K_SINK="+sink.URL, "MS_IDLE_TIMEOUT=0", "MS_JOB_WORKERS=0")

	const uploads, sessions, gets = 3, 2, 5
	var prog string
	for i := 0; i < uploads; i++ {
		prog = uploadID(t, pl, "netduino2")
	}
	var ids []string
	for i := 0; i < sessions; i++ {
		var s map[string]any
		pl.must(t, 201, "POST", "/api/v1/sessions", `{"name":"m","board_config":{"board":"netduino2"}}`, &s)
		id := s["id"].(string)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
		ids = append(ids, id)
	}
	for i := 0; i < gets; i++ {
		pl.must(t, 200, "GET", "/api/v1/sessions/"+ids[0], nil, nil)
	}
	pl.call(t, "GET", "/no/such/route", nil, nil)

	m := scrape(t, pl.base)
	want := map[string]float64{
		`simulation_programs_uploaded_total`: uploads,
		`simulation_active_sessions`:         sessions,
		`runner_emulator_processes`:          float64(len(emulators(pl.socketDir))),
		`simulation_jobs_queued`:             0,
		series("http_requests_total", "route", "POST /api/v1/programs", "method", "POST", "code", "201"):              uploads,
		series("http_requests_total", "route", "POST /api/v1/sessions", "method", "POST", "code", "201"):              sessions,
		series("http_requests_total", "route", "POST /api/v1/sessions/{id}/poweron", "method", "POST", "code", "200"): sessions,
		series("http_requests_total", "route", "GET /api/v1/sessions/{id}", "method", "GET", "code", "200"):           gets,
		series("http_request_duration_seconds_count", "route", "GET /api/v1/sessions/{id}", "method", "GET"):          gets,
		// Standalone is one process: the runner's internal API is in it too.
		series("http_requests_total", "route", "POST /internal/v1/sessions/{id}/start", "method", "POST", "code", "200"): sessions,
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if want["runner_emulator_processes"] != sessions {
		t.Errorf("%v QEMU processes run for %d sessions", want["runner_emulator_processes"], sessions)
	}
	var unmatched float64
	for k, v := range m {
		if strings.HasPrefix(k, "http_requests_total{") && strings.Contains(k, `route="unmatched"`) {
			unmatched += v
		}
		if strings.Contains(k, ids[0]) || strings.Contains(k, "/no/such/route") {
			t.Errorf("raw path in a label: %s", k)
		}
	}
	if unmatched != 1 {
		t.Errorf("unmatched requests: %v, want 1", unmatched)
	}
	var rss float64
	for _, pid := range emulators(pl.socketDir) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseFloat(f[1], 64)
			rss += pages * float64(os.Getpagesize())
		}
	}
	if mem := m["runner_emulator_memory_bytes"]; mem < rss/2 || mem > rss*2 {
		t.Errorf("runner_emulator_memory_bytes %v, the emulators' RSS is %v", mem, rss)
	}
	cpu0 := m["runner_emulator_cpu_seconds_total"]
	if cpu0 <= 0 {
		t.Errorf("runner_emulator_cpu_seconds_total %v", cpu0)
	}

	// Jobs queued with no worker to take them: the queue gauges say so.
	const queued = 3
	for range queued {
		pl.must(t, 201, "POST", "/api/v1/jobs", map[string]any{"program_id": prog, "board_config": map[string]string{"board": "netduino2"}, "pass_pattern": "ready"}, nil)
	}
	m = scrape(t, pl.base)
	if got := m["simulation_jobs_queued"]; got != queued {
		t.Errorf("simulation_jobs_queued = %v after queueing %d jobs with no worker", got, queued)
	}
	if got, ok := m["simulation_jobs_oldest_age_seconds"]; !ok || got <= 0 {
		t.Errorf("simulation_jobs_oldest_age_seconds = %v (present %v) with %d jobs waiting", got, ok, queued)
	}

	// Powering one off: one active session, and the CPU counter keeps the
	// time of the emulator that is gone.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+ids[1]+"/poweroff", nil, nil)
	m = scrape(t, pl.base)
	if got := m["simulation_active_sessions"]; got != sessions-1 {
		t.Errorf("simulation_active_sessions after a poweroff = %v, want %d", got, sessions-1)
	}
	if got := m["runner_emulator_cpu_seconds_total"]; got < cpu0 {
		t.Errorf("runner_emulator_cpu_seconds_total went down: %v -> %v", cpu0, got)
	}

	// Events: each upload's program.stored reaches the sink, counted as
	// sent, and every event the sink received is counted once delivery
	// has settled (the counter moves when the sink's reply is back).
	stored := series("events_published_total", "type", "io.machineserver.program.stored.v1", "result", "sent")
	sent := func() float64 {
		var n float64
		for k, v := range m {
			if strings.HasPrefix(k, "events_published_total{") && strings.Contains(k, `result="sent"`) {
				n += v
			}
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for (m[stored] != uploads || sent() != float64(delivered.Load())) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		m = scrape(t, pl.base)
	}
	if m[stored] != uploads {
		t.Errorf("%s = %v, want %d", stored, m[stored], uploads)
	}
	if got := float64(delivered.Load()); sent() != got {
		t.Errorf("events_published_total sent %v, the sink received %v", sent(), got)
	}
}

// TestMetricsDistributed checks /metrics of a function and of the runner.
func TestMetricsDistributed(t *testing.T) {
	pl := startDistributed(t, "MS_IDLE_TIMEOUT=0")
	prog := uploadID(t, pl, "netduino2")
	uploadID(t, pl, "netduino2")
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", `{"name":"m","board_config":{"board":"netduino2"}}`, &s)
	id := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)

	fn := scrape(t, pl.fnURLs["programs"])
	if got := fn["simulation_programs_uploaded_total"]; got != 2 {
		t.Errorf("programs function: simulation_programs_uploaded_total = %v, want 2", got)
	}
	if got := fn[series("http_requests_total", "route", "POST /api/v1/programs", "method", "POST", "code", "201")]; got != 2 {
		t.Errorf("programs function: POST /api/v1/programs 201 = %v, want 2", got)
	}
	sf := scrape(t, pl.fnURLs["sessions"])
	if got := sf[series("http_requests_total", "route", "POST /api/v1/sessions/{id}/poweron", "method", "POST", "code", "200")]; got != 1 {
		t.Errorf("sessions function: poweron = %v, want 1", got)
	}
	var rt map[string]float64
	for _, p := range pl.procs {
		if p.name == "runner" {
			rt = scrape(t, "http://127.0.0.1:"+envOf(p, "PORT"))
		}
	}
	if rt["simulation_active_sessions"] != 1 || rt["runner_emulator_processes"] != 1 {
		t.Errorf("runner: active %v processes %v, want 1 and 1", rt["simulation_active_sessions"], rt["runner_emulator_processes"])
	}
	if got := rt[series("http_requests_total", "route", "POST /internal/v1/sessions/{id}/start", "method", "POST", "code", "200")]; got != 1 {
		t.Errorf("runner: start requests = %v, want 1", got)
	}
}

func envOf(p *proc, name string) string {
	for _, kv := range p.cmd.Env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// series is a metric's key as the text format writes it: labels sorted.
func series(name string, kv ...string) string {
	var labels []string
	for i := 0; i < len(kv); i += 2 {
		labels = append(labels, fmt.Sprintf("%s=%q", kv[i], kv[i+1]))
	}
	sort.Strings(labels)
	return name + "{" + strings.Join(labels, ",") + "}"
}

// scrape reads base/metrics into series -> value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", base, err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if resp.StatusCode != 200 {
		t.Fatalf("scrape %s: %d %s", base, resp.StatusCode, sb.String())
	}
	out := map[string]float64{}
	for _, line := range strings.Split(sb.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}
