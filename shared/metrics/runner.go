package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// RunnerStats is what a runner reports at each scrape.
type RunnerStats struct {
	// ActiveSessions are sessions whose emulator runs (spares excluded).
	ActiveSessions int
	// Processes are live QEMU processes, prelaunched spares included.
	Processes int
	// Spares are the paused QEMUs kept ready for power on and restore
	// (part of Processes).
	Spares int
	// CPUSeconds is the user+system CPU time of every emulator this runner
	// started, exited ones included, so it only grows.
	CPUSeconds float64
	// MemoryBytes is the resident memory of the live emulators.
	MemoryBytes int64
}

var runners = &runnerCollector{srcs: map[*func() RunnerStats]bool{}}

var (
	activeDesc  = prometheus.NewDesc("simulation_active_sessions", "Sessions whose emulator is running.", nil, nil)
	procsDesc   = prometheus.NewDesc("runner_emulator_processes", "Live QEMU processes, prelaunched spares included.", nil, nil)
	cpuDesc     = prometheus.NewDesc("runner_emulator_cpu_seconds_total", "CPU time (user+system) used by emulators.", nil, nil)
	memDesc     = prometheus.NewDesc("runner_emulator_memory_bytes", "Resident memory of the live emulators.", nil, nil)
	sparesDesc  = prometheus.NewDesc("runner_emulator_spares", "Paused QEMU processes kept ready for power on and restore (part of runner_emulator_processes).", nil, nil)
	runnerDescs = []*prometheus.Desc{activeDesc, procsDesc, cpuDesc, memDesc, sparesDesc}
)

// runnerCollector sums the runners of this process (one in a pod or the
// standalone server; tests may start several).
type runnerCollector struct {
	mu   sync.Mutex
	srcs map[*func() RunnerStats]bool
}

// AddRunner makes the runner gauges include f's stats until the returned
// function is called.
func AddRunner(f func() RunnerStats) (remove func()) {
	runners.mu.Lock()
	defer runners.mu.Unlock()
	runners.srcs[&f] = true
	return func() {
		runners.mu.Lock()
		defer runners.mu.Unlock()
		delete(runners.srcs, &f)
	}
}

func (c *runnerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range runnerDescs {
		ch <- d
	}
}

func (c *runnerCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	var sum RunnerStats
	for f := range c.srcs {
		s := (*f)()
		sum.ActiveSessions += s.ActiveSessions
		sum.Processes += s.Processes
		sum.CPUSeconds += s.CPUSeconds
		sum.MemoryBytes += s.MemoryBytes
		sum.Spares += s.Spares
	}
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, float64(sum.ActiveSessions))
	ch <- prometheus.MustNewConstMetric(procsDesc, prometheus.GaugeValue, float64(sum.Processes))
	ch <- prometheus.MustNewConstMetric(cpuDesc, prometheus.CounterValue, sum.CPUSeconds)
	ch <- prometheus.MustNewConstMetric(memDesc, prometheus.GaugeValue, float64(sum.MemoryBytes))
	ch <- prometheus.MustNewConstMetric(sparesDesc, prometheus.GaugeValue, float64(sum.Spares))
}
