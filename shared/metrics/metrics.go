package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/machineserver/machineserver/shared/httpapi"
)

// Registry holds every metric of this process. It is not the client
// library's global default, so nothing registers into it by accident.
var Registry = prometheus.NewRegistry()

var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total",
		Help: "HTTP requests served, by route pattern, method and status code.",
	}, []string{"route", "method", "code"})
	duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "Time to serve HTTP requests, by route pattern and method (streams count until they close).",
		Buckets: prometheus.DefBuckets,
	}, []string{"route", "method"})
	programsUploaded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "simulation_programs_uploaded_total",
		Help: "Firmware images validated and stored.",
	})
	eventsPublished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "events_published_total",
		Help: "CloudEvents handed to the sink, by type and result (sent, failed after retries, dropped).",
	}, []string{"type", "result"})
)

func init() {
	Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		requests, duration, programsUploaded, eventsPublished, jobs, jobsOldest, runners,
	)
}

// Handler serves the registry in the Prometheus text format.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry})
}

// ProgramUploaded counts one stored program.
func ProgramUploaded() { programsUploaded.Inc() }

// EventPublished counts one event's outcome at the sink: "sent", "failed"
// or "dropped".
func EventPublished(eventType, result string) {
	eventsPublished.WithLabelValues(eventType, result).Inc()
}

// Unmatched is the route label of requests no pattern matched.
const Unmatched = "unmatched"

// Middleware counts requests and their durations by the ServeMux pattern
// that routes them (e.g. "GET /api/v1/sessions/{id}"), never the raw path,
// so ids do not explode the label space. The pattern comes from
// routes.Handler before serving: r.Pattern is set only on the request the
// mux sees, and middleware between here and the mux (request logging, auth)
// may hand it a copy.
func Middleware(routes *http.ServeMux) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, route := routes.Handler(r)
			if route == "" {
				route = Unmatched
			}
			start := time.Now()
			sw := &httpapi.StatusWriter{ResponseWriter: w}
			defer func() {
				m := method(r.Method)
				requests.WithLabelValues(route, m, strconv.Itoa(sw.Status())).Inc()
				duration.WithLabelValues(route, m).Observe(time.Since(start).Seconds())
			}()
			next.ServeHTTP(sw, r)
		})
	}
}

// method bounds the method label: any token is a valid HTTP method, so an
// unknown one is "OTHER" rather than a new series per client whim.
func method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// jobs is simulation_jobs_queued: a value set by the jobs function, or read
// from a source function at scrape time when one is set.
var jobs = &jobsGauge{desc: prometheus.NewDesc("simulation_jobs_queued", "Simulation jobs waiting to run.", nil, nil)}

type jobsGauge struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	n    float64
	src  func() int
	srcF func() float64
}

func (j *jobsGauge) Describe(ch chan<- *prometheus.Desc) { ch <- j.desc }

func (j *jobsGauge) Collect(ch chan<- prometheus.Metric) {
	j.mu.Lock()
	n, src, srcF := j.n, j.src, j.srcF
	j.mu.Unlock()
	if src != nil {
		n = float64(src())
	}
	if srcF != nil {
		n = srcF()
	}
	ch <- prometheus.MustNewConstMetric(j.desc, prometheus.GaugeValue, n)
}

// SetJobsQueued sets simulation_jobs_queued.
func SetJobsQueued(n int) {
	jobs.mu.Lock()
	jobs.n = float64(n)
	jobs.mu.Unlock()
}

// JobsQueuedFrom makes simulation_jobs_queued read f at every scrape (e.g.
// the length of the queue in Redis); nil goes back to SetJobsQueued's value.
func JobsQueuedFrom(f func() int) {
	jobs.mu.Lock()
	jobs.src = f
	jobs.mu.Unlock()
}

// jobsOldest is simulation_jobs_oldest_age_seconds, read from a source
// function at scrape time (0 without one).
var jobsOldest = &jobsGauge{desc: prometheus.NewDesc("simulation_jobs_oldest_age_seconds", "Age of the oldest simulation job not yet finished (waiting or running).", nil, nil)}

// JobsOldestAgeFrom makes simulation_jobs_oldest_age_seconds read f at every
// scrape; nil reports 0.
func JobsOldestAgeFrom(f func() float64) {
	jobsOldest.mu.Lock()
	defer jobsOldest.mu.Unlock()
	jobsOldest.n = 0
	jobsOldest.srcF = f
}
