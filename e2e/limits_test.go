package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLimits runs firmware under cgroup CPU and memory caps on this
// machine's real hierarchy (v1 here; the runner runs as root).
func TestLimits(t *testing.T) {
	pl := startStandalone(t, "MS_IDLE_TIMEOUT=0")
	var caps struct {
		Features []string
		Limits   struct {
			CPU, Memory       bool
			Cgroup            string
			Reason            string
			DefaultCPUPercent int `json:"default_cpu_percent"`
		}
	}
	pl.must(t, 200, "GET", "/api/v1/capabilities", nil, &caps)
	if !caps.Limits.CPU || !caps.Limits.Memory || (caps.Limits.Cgroup != "v1" && caps.Limits.Cgroup != "v2") {
		t.Fatalf("this machine's cgroups must be writable (run as root): limits %+v", caps.Limits)
	}
	t.Logf("cgroup %s", caps.Limits.Cgroup)

	t.Run("bad-limits", func(t *testing.T) {
		for _, c := range []struct{ limits, want string }{
			{`{"cpu_percent":101}`, "1 to 100"},
			{`{"cpu_percent":-5}`, "1 to 100"},
			{`{"memory_mb":8}`, "16 to 4096"},
			{`{"memory_mb":5000}`, "16 to 4096"},
		} {
			code, body := pl.call(t, "POST", "/api/v1/sessions", `{"name":"l","board_config":{"board":"netduino2"},"limits":`+c.limits+`}`, nil)
			if code != 400 || !strings.Contains(string(body), c.want) {
				t.Errorf("limits %s: %d %s, want 400 saying %q", c.limits, code, body, c.want)
			}
		}
	})

	t.Run("cpu", func(t *testing.T) {
		prog := uploadID(t, pl, "netduino2")
		limited := spinning(t, pl, prog, "netduino2", `{"cpu_percent":20}`)
		if got := cgroupValue(t, limited, "cpu", "cpu.cfs_quota_us", "cpu.max"); got != "20000" && got != "20000 100000" {
			t.Errorf("cpu quota of the emulator's group: %q", got)
		}
		throttled0 := throttled(t, limited)
		used := cpuShare(t, limited)
		t.Logf("20%% limit: the spinning emulator used %.0f%% of a core", used*100)
		if used < 0.10 || used > 0.35 {
			t.Errorf("20%% limit: used %.0f%% of a core, want 10-35%%", used*100)
		}
		if throttled(t, limited) <= throttled0 {
			t.Errorf("the group was never throttled")
		}
		stopAll(t, pl)

		// The default is one whole core: the spin is never throttled, so it
		// is runnable all the time and takes what the machine gives it.
		free := spinning(t, pl, prog, "netduino2", "")
		used, runnable := cpuShare(t, free), runnableShare(t, free)
		t.Logf("no session limit: used %.0f%% of a core, runnable %.0f%% of the time", used*100, runnable*100)
		if used <= 0.35 && runnable <= 0.6 {
			t.Errorf("without a limit the spin used %.0f%% and was runnable %.0f%% of the time, want > 60%%", used*100, runnable*100)
		}
		stopAll(t, pl)
	})

	t.Run("memory", func(t *testing.T) {
		// mps2-an385 has 16 MiB of PSRAM that "fill" touches page by page.
		// The cap is what this emulator measurably needs to boot (its
		// group's peak with the default limit, coverage plugin and all)
		// plus a margin far below 16 MiB: booting fits, filling does not.
		prog := uploadID(t, pl, "mps2-an385")
		peak := bootPeakMB(t, pl, prog)
		capMB := max(peak+6, 16)
		t.Logf("booted to the banner at a peak of %d MB; capping at %d MB", peak, capMB)
		var s map[string]any
		pl.must(t, 201, "POST", "/api/v1/sessions", fmt.Sprintf(`{"name":"mem","board_config":{"board":"mps2-an385"},"limits":{"memory_mb":%d}}`, capMB), &s)
		id := s["id"].(string)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
		pid := emulatorOf(t, pl, id)
		if got := cgroupValue(t, pid, "memory", "memory.limit_in_bytes", "memory.max"); got != strconv.Itoa(capMB<<20) {
			t.Errorf("memory cap of the emulator's group: %q", got)
		}
		cs := pl.dialConsole(t, id, "")
		cs.waitFor(t, "ready", 1)
		cs.send(t, "fill\r")
		s = pl.waitState(t, id, "error")
		reason, _ := s["reason"].(string)
		if !strings.Contains(reason, "memory limit exceeded") || !strings.Contains(reason, fmt.Sprintf("%d MB", capMB)) {
			t.Fatalf("reason %q does not say the memory limit killed the emulator", reason)
		}
		t.Logf("reason: %s", reason)
		pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	})
}

// TestIdleTimeout powers off a session nobody uses, but not while a console
// is attached.
func TestIdleTimeout(t *testing.T) {
	pl := startStandalone(t, "MS_IDLE_TIMEOUT=1s")
	prog := uploadID(t, pl, "netduino2")
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", `{"name":"idle","board_config":{"board":"netduino2"}}`, &s)
	id := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)

	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	s = pl.waitState(t, id, "stopped")
	if s["reason"] != "idle timeout (1s) reached" {
		t.Fatalf("reason %q", s["reason"])
	}

	// An attached console is activity: the session outlives the timeout.
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	cs := pl.dialConsole(t, id, "?offset=end")
	time.Sleep(2500 * time.Millisecond)
	pl.must(t, 200, "GET", "/api/v1/sessions/"+id, nil, &s)
	if s["state"] != "running" {
		t.Fatalf("with a console attached the session went %v: %v", s["state"], s["reason"])
	}
	cs.c.CloseNow()
	s = pl.waitState(t, id, "stopped")
	if s["reason"] != "idle timeout (1s) reached" {
		t.Fatalf("reason after the console left: %q", s["reason"])
	}
}

func uploadID(t *testing.T, pl *platform, board string) string {
	t.Helper()
	code, body := pl.upload(t, "fw-"+board, "elf", firmware(t, board, "fw.elf"), nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	return decode(t, body)["id"].(string)
}

// spinning starts a session with the limits (JSON, "" for none) running the
// firmware's busy loop and returns its QEMU pid.
func spinning(t *testing.T, pl *platform, prog, board, limits string) int {
	t.Helper()
	req := `{"name":"spin","board_config":{"board":"` + board + `"}`
	if limits != "" {
		req += `,"limits":` + limits
	}
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", req+"}", &s)
	id := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	cs := pl.dialConsole(t, id, "")
	cs.waitFor(t, "ready", 1)
	cs.send(t, "spin\r")
	cs.waitFor(t, "spinning", 1)
	return emulatorOf(t, pl, id)
}

func stopAll(t *testing.T, pl *platform) {
	var list struct{ Sessions []map[string]any }
	pl.must(t, 200, "GET", "/api/v1/sessions?page_size=100", nil, &list)
	for _, s := range list.Sessions {
		pl.must(t, 204, "DELETE", "/api/v1/sessions/"+s["id"].(string), nil, nil)
	}
}

// bootPeakMB boots prog on mps2-an385 under the default limits and returns
// the peak memory (MB, rounded up) its emulator's group charged on the way
// to the banner.
func bootPeakMB(t *testing.T, pl *platform, prog string) int {
	t.Helper()
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", `{"name":"peak","board_config":{"board":"mps2-an385"}}`, &s)
	id := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	cs := pl.dialConsole(t, id, "")
	cs.waitFor(t, "ready", 1)
	v := cgroupValue(t, emulatorOf(t, pl, id), "memory", "memory.max_usage_in_bytes", "memory.peak")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		t.Fatalf("peak memory of the emulator's group: %q", v)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	return int((n + 1<<20 - 1) >> 20)
}

// emulatorOf finds the running QEMU of a session by its instance directory.
func emulatorOf(t *testing.T, pl *platform, id string) int {
	t.Helper()
	var found []int
	for _, pid := range emulators(pl.socketDir) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(b), "/"+id+"-") {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		t.Fatalf("session %s has %d emulators: %v", id, len(found), found)
	}
	return found[0]
}

// cgroupValue reads a control file of the group pid is in: v1 (file in the
// ctrl hierarchy) or v2 (file2 in the unified one).
func cgroupValue(t *testing.T, pid int, ctrl, file, file2 string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.Contains(parts[2], "machineserver/") {
			continue
		}
		path := filepath.Join("/sys/fs/cgroup", parts[2], file2)
		for _, c := range strings.Split(parts[1], ",") {
			if c == ctrl {
				path = filepath.Join("/sys/fs/cgroup", ctrl, parts[2], file)
			}
		}
		if parts[1] == "" || strings.Contains(path, "/"+ctrl+"/") {
			v, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(string(v))
		}
	}
	t.Fatalf("process %d is in no machineserver %s group:\n%s", pid, ctrl, b)
	return ""
}

func throttled(t *testing.T, pid int) int {
	t.Helper()
	for _, line := range strings.Split(cgroupValue(t, pid, "cpu", "cpu.stat", "cpu.stat"), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "nr_throttled" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no nr_throttled in cpu.stat")
	return 0
}

// cpuShare is the CPU time (user+system, all threads) QEMU uses per second
// of wall time, over 2 s.
func cpuShare(t *testing.T, pid int) float64 {
	t.Helper()
	c0, t0 := cpuSeconds(t, pid), time.Now()
	time.Sleep(2 * time.Second)
	return (cpuSeconds(t, pid) - c0) / time.Since(t0).Seconds()
}

// cpuSeconds is a process's CPU time (user+system, all threads) so far.
func cpuSeconds(t testing.TB, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100 // USER_HZ
}

// runnableShare is the fraction of 2 s QEMU's threads spent running or
// waiting for a CPU (schedstat): what it would use on an idle machine. A
// throttled group is neither, so this is about the cap, not the load.
func runnableShare(t *testing.T, pid int) float64 {
	t.Helper()
	sum := func() float64 {
		var ns float64
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
		for _, p := range tasks {
			b, _ := os.ReadFile(p)
			if f := strings.Fields(string(b)); len(f) >= 2 {
				run, _ := strconv.ParseFloat(f[0], 64)
				wait, _ := strconv.ParseFloat(f[1], 64)
				ns += run + wait
			}
		}
		return ns / 1e9
	}
	s0, t0 := sum(), time.Now()
	time.Sleep(2 * time.Second)
	return (sum() - s0) / time.Since(t0).Seconds()
}
