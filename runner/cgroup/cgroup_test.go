package cgroup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// clean removes the plain files a fake tree's groups got, so Remove's rmdir
// sees what it would on cgroupfs: an empty directory.
func clean(t *testing.T, dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !e.IsDir() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// TestV2Fake lays out a temp dir like a cgroup2 mount seen from a pod and
// checks what the manager writes into it.
func TestV2Fake(t *testing.T) {
	root := t.TempDir()
	self := filepath.Join(root, "self")
	mustWrite(t, self, "0::/kubepods/pod1\n")
	own := filepath.Join(root, "kubepods/pod1")
	mustWrite(t, filepath.Join(own, "cgroup.controllers"), "cpuset cpu io memory pids\n")

	m := open(root, self, "machineserver/r1", false)
	if m.Version() != V2 || !m.CPU() || !m.Memory() {
		t.Fatalf("version %s cpu %v memory %v reason %q", m.Version(), m.CPU(), m.Memory(), m.Reason())
	}
	for _, d := range []string{own, filepath.Join(own, "machineserver"), filepath.Join(own, "machineserver/r1")} {
		if got := read(t, filepath.Join(d, "cgroup.subtree_control")); got != "+cpu +memory" {
			t.Errorf("%s/cgroup.subtree_control = %q", d, got)
		}
	}
	g, err := m.New("s1-1", Limits{CPUPercent: 20, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(own, "machineserver/r1/s1-1")
	if got := read(t, filepath.Join(dir, "cpu.max")); got != "20000 100000" {
		t.Errorf("cpu.max = %q", got)
	}
	if got := read(t, filepath.Join(dir, "memory.max")); got != "33554432" {
		t.Errorf("memory.max = %q", got)
	}
	checkLift(t, g, filepath.Join(dir, "cpu.max"), "max 100000", "20000 100000")
	if err := g.Add(4242); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "cgroup.procs")); got != "4242" {
		t.Errorf("cgroup.procs = %q", got)
	}
	mustWrite(t, filepath.Join(dir, "memory.events"), "low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\n")
	if g.OOMKilled() {
		t.Error("oom_kill 0 reported as an OOM kill")
	}
	mustWrite(t, filepath.Join(dir, "memory.events"), "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
	if !g.OOMKilled() {
		t.Error("oom_kill 1 not reported")
	}
	clean(t, dir)
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("group dir still there: %v", err)
	}

	// Only the cpu controller: CPU limits work, memory limits are refused.
	root2 := t.TempDir()
	mustWrite(t, filepath.Join(root2, "self"), "0::/\n")
	mustWrite(t, filepath.Join(root2, "cgroup.controllers"), "cpu io\n")
	m2 := open(root2, filepath.Join(root2, "self"), "ms/r2", false)
	if m2.Version() != V2 || !m2.CPU() || m2.Memory() {
		t.Fatalf("cpu-only tree: version %s cpu %v memory %v", m2.Version(), m2.CPU(), m2.Memory())
	}
	if _, err := m2.New("x", Limits{MemoryBytes: 1 << 20}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("memory limit without the controller: %v", err)
	}
}

func TestV1Fake(t *testing.T) {
	root := t.TempDir()
	self := filepath.Join(root, "self")
	mustWrite(t, self, "4:memory:/outer\n2:cpu,cpuacct:/\n0::/\n")
	// cgroupfs fills new directories itself; the fake parents get the files.
	mustWrite(t, filepath.Join(root, "cpu/ms/r1/cpu.cfs_quota_us"), "-1\n")
	mustWrite(t, filepath.Join(root, "memory/outer/ms/r1/memory.limit_in_bytes"), "9223372036854771712\n")
	m := open(root, self, "ms/r1", false)
	if m.Version() != V1 || !m.CPU() || !m.Memory() {
		t.Fatalf("version %s cpu %v memory %v reason %q", m.Version(), m.CPU(), m.Memory(), m.Reason())
	}
	g, err := m.New("s-1", Limits{CPUPercent: 35, MemoryBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "cpu/ms/r1/s-1/cpu.cfs_quota_us")); got != "35000" {
		t.Errorf("cfs_quota_us = %q", got)
	}
	if got := read(t, filepath.Join(root, "cpu/ms/r1/s-1/cpu.cfs_period_us")); got != "100000" {
		t.Errorf("cfs_period_us = %q", got)
	}
	checkLift(t, g, filepath.Join(root, "cpu/ms/r1/s-1/cpu.cfs_quota_us"), "-1", "35000")
	// A group without a CPU cap, and no group at all, have nothing to lift.
	mg, err := m.New("s-2", Limits{MemoryBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.LiftCPU()(); err != nil {
		t.Errorf("lifting no cap: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "cpu/ms/r1/s-2")); !os.IsNotExist(err) {
		t.Errorf("a memory-only group got a cpu group: %v", err)
	}
	var none *Group
	if err := none.LiftCPU()(); err != nil {
		t.Errorf("lifting a nil group: %v", err)
	}
	if got := read(t, filepath.Join(root, "memory/outer/ms/r1/s-1/memory.limit_in_bytes")); got != "67108864" {
		t.Errorf("limit_in_bytes = %q", got)
	}
	mustWrite(t, filepath.Join(root, "memory/outer/ms/r1/s-1/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
	if !g.OOMKilled() {
		t.Error("oom_kill 2 not reported")
	}
}

func TestNone(t *testing.T) {
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "self"), "0::/\n")
	m := open(root, filepath.Join(root, "self"), "ms/r1", false)
	if m.Version() != None || m.CPU() || m.Memory() || m.Reason() == "" {
		t.Fatalf("version %s cpu %v memory %v reason %q", m.Version(), m.CPU(), m.Memory(), m.Reason())
	}
	if _, err := m.New("s", Limits{CPUPercent: 20}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("cpu limit without cgroups: %v", err)
	}
	if g, err := m.New("s", Limits{}); g != nil || err != nil {
		t.Fatalf("no limits: %v %v", g, err)
	}
}

// TestReal uses this machine's hierarchy: the runner's tests run as root on
// a cgroup v1 hybrid, where both controllers must be writable.
func TestReal(t *testing.T) {
	name := fmt.Sprintf("machineserver-test/%d", os.Getpid())
	m := Open(name)
	t.Cleanup(m.Close)
	if m.Version() == None || !m.CPU() || !m.Memory() {
		t.Fatalf("no writable cgroup hierarchy (the runner tests need root): version %s cpu %v memory %v: %s",
			m.Version(), m.CPU(), m.Memory(), m.Reason())
	}
	t.Logf("hierarchy %s", m.Version())

	g, err := m.New("limited", Limits{CPUPercent: 20, MemoryBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// The child allocates only once it is in the group: it waits for a line.
	cmd := exec.Command("sh", "-c", `read go; x=$(head -c 64000000 /dev/zero | tr '\0' a); echo survived`)
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	if !strings.Contains(string(cg), name+"/limited") {
		t.Errorf("process not in the group:\n%s", cg)
	}
	for _, d := range g.Dirs() {
		switch {
		case m.Version() == V2:
			if got := read(t, filepath.Join(d, "cpu.max")); got != "20000 100000" {
				t.Errorf("cpu.max = %q", got)
			}
		case strings.Contains(d, "/cpu/"):
			if got := read(t, filepath.Join(d, "cpu.cfs_quota_us")); got != "20000" {
				t.Errorf("cfs_quota_us = %q", got)
			}
		case strings.Contains(d, "/memory/"):
			if got := read(t, filepath.Join(d, "memory.limit_in_bytes")); got != "16777216" {
				t.Errorf("limit_in_bytes = %q", got)
			}
		}
	}
	// The kernel takes the lift and the cap back.
	cpuFile, unlimited, capped := filepath.Join(g.Dirs()[0], "cpu.max"), "max 100000", "20000 100000"
	if m.Version() == V1 {
		cpuFile, unlimited, capped = filepath.Join(g.Dirs()[0], "cpu.cfs_quota_us"), "-1", "20000"
	}
	restore := g.LiftCPU()
	if got := read(t, cpuFile); got != unlimited {
		t.Errorf("lifted: %s = %q, want %q", cpuFile, got, unlimited)
	}
	if err := restore(); err != nil || read(t, cpuFile) != capped {
		t.Errorf("restored: %v, %s = %q, want %q", err, cpuFile, read(t, cpuFile), capped)
	}
	if g.OOMKilled() {
		t.Fatal("OOM reported before anything was allocated")
	}
	io.WriteString(stdin, "go\n")
	stdin.Close()
	err = cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	// The shell's command substitution runs in a subshell: the OOM killer
	// may pick it or the pipeline, either way "survived" is never printed
	// with 64 MB held under a 16 MB cap.
	if err == nil {
		t.Fatal("64 MB allocated under a 16 MB cap")
	}
	if !g.OOMKilled() {
		t.Fatalf("exit %v (signaled %v) not reported as an OOM kill", err, ws.Signaled())
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, d := range g.Dirs() {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still there", d)
		}
	}
}

func TestPruneStale(t *testing.T) {
	root := t.TempDir()
	self := filepath.Join(root, "self")
	mustWrite(t, self, "2:cpu:/\n")
	mustWrite(t, filepath.Join(root, "cpu/ms/mine/cpu.cfs_quota_us"), "-1\n")
	for _, d := range []string{"ms/crashed/s-1", "ms/crashed/s-2", "ms/alive/s-1"} {
		if err := os.MkdirAll(filepath.Join(root, "cpu", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := open(root, self, "ms/mine", false)
	var asked []string
	m.PruneStale(func(runner string) bool {
		asked = append(asked, runner)
		return runner == "crashed"
	})
	if _, err := os.Stat(filepath.Join(root, "cpu/ms/crashed")); !os.IsNotExist(err) {
		t.Errorf("the crashed runner's groups are still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "cpu/ms/alive/s-1")); err != nil {
		t.Errorf("a live runner's group was pruned: %v", err)
	}
	if strings.Join(asked, ",") != "alive,crashed" {
		t.Errorf("asked about %v (never about itself)", asked)
	}
	// A parent pruned while empty comes back on the next group.
	os.RemoveAll(filepath.Join(root, "cpu/ms/mine"))
	if _, err := m.New("s-9", Limits{CPUPercent: 50}); err != nil {
		t.Fatal(err)
	}
}

// checkLift: LiftCPU writes the unlimited value to file, and its restore
// (once, however often called) writes the cap back.
func checkLift(t *testing.T, g *Group, file, unlimited, capped string) {
	t.Helper()
	restore := g.LiftCPU()
	if got := read(t, file); got != unlimited {
		t.Errorf("lifted: %s = %q, want %q", file, got, unlimited)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, file); got != capped {
		t.Errorf("restored: %s = %q, want %q", file, got, capped)
	}
	mustWrite(t, file, "changed since")
	if err := restore(); err != nil || read(t, file) != "changed since" {
		t.Errorf("a second restore wrote again: %v", err)
	}
	mustWrite(t, file, capped)
}
