package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func scrape(t *testing.T) string {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func has(t *testing.T, body, line string) {
	t.Helper()
	for _, l := range strings.Split(body, "\n") {
		if l == line {
			return
		}
	}
	t.Errorf("no line %q in:\n%s", line, body)
}

// The route label is the pattern even when middleware between this one and
// the mux copies the request (as WithContext does), so r.Pattern of the
// outer request stays empty.
func TestMiddlewareRoutes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /things/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "missing" {
			http.Error(w, "no", http.StatusNotFound)
		}
	})
	copying := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(r.Context()))
	})
	h := Middleware(mux)(copying)
	for _, p := range []string{"/things/a", "/things/b", "/things/missing", "/elsewhere"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	body := scrape(t)
	has(t, body, `http_requests_total{code="200",method="GET",route="GET /things/{id}"} 2`)
	has(t, body, `http_requests_total{code="404",method="GET",route="GET /things/{id}"} 1`)
	has(t, body, `http_requests_total{code="404",method="GET",route="unmatched"} 1`)
	has(t, body, `http_request_duration_seconds_count{method="GET",route="GET /things/{id}"} 3`)
	if strings.Contains(body, "/things/a") {
		t.Error("raw path in a label")
	}
}

func TestGauges(t *testing.T) {
	SetJobsQueued(4)
	has(t, scrape(t), "simulation_jobs_queued 4")
	JobsQueuedFrom(func() int { return 7 })
	has(t, scrape(t), "simulation_jobs_queued 7")
	JobsQueuedFrom(nil)
	has(t, scrape(t), "simulation_jobs_queued 4")

	r1 := AddRunner(func() RunnerStats {
		return RunnerStats{ActiveSessions: 2, Processes: 3, CPUSeconds: 1.5, MemoryBytes: 100, Spares: 1}
	})
	r2 := AddRunner(func() RunnerStats {
		return RunnerStats{ActiveSessions: 1, Processes: 1, CPUSeconds: 0.5, MemoryBytes: 50}
	})
	body := scrape(t)
	has(t, body, "simulation_active_sessions 3")
	has(t, body, "runner_emulator_processes 4")
	has(t, body, "runner_emulator_cpu_seconds_total 2")
	has(t, body, "runner_emulator_memory_bytes 150")
	has(t, body, "runner_emulator_spares 1")
	r1()
	has(t, scrape(t), "simulation_active_sessions 1")
	r2()
	has(t, scrape(t), "simulation_active_sessions 0")

	ProgramUploaded()
	ProgramUploaded()
	EventPublished("io.example.v1", "sent")
	body = scrape(t)
	has(t, body, "simulation_programs_uploaded_total 2")
	has(t, body, `events_published_total{result="sent",type="io.example.v1"} 1`)
}

func TestJobsOldestAge(t *testing.T) {
	has(t, scrape(t), "simulation_jobs_oldest_age_seconds 0")
	JobsOldestAgeFrom(func() float64 { return 2.5 })
	has(t, scrape(t), "simulation_jobs_oldest_age_seconds 2.5")
	JobsOldestAgeFrom(nil)
	has(t, scrape(t), "simulation_jobs_oldest_age_seconds 0")
}

// Any token is an HTTP method; the label must not grow a series per one.
func TestMethodLabelIsBounded(t *testing.T) {
	for in, want := range map[string]string{"GET": "GET", "DELETE": "DELETE", "FOO1": "OTHER", "get": "OTHER", "": "OTHER"} {
		if got := method(in); got != want {
			t.Errorf("method(%q) = %q, want %q", in, got, want)
		}
	}
}
