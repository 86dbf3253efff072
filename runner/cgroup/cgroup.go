package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Version is the cgroup hierarchy the runner writes.
type Version string

const (
	V1   Version = "v1"
	V2   Version = "v2"
	None Version = "none"
)

// Filesystem magic numbers (statfs f_type) of the two hierarchies.
const (
	cgroup1Magic = 0x27e0eb
	cgroup2Magic = 0x63677270
)

// Period is the CPU accounting period; a quota of N% of one core is N% of it.
const Period = 100 * time.Millisecond

// ErrUnsupported is returned for a limit this machine cannot enforce.
var ErrUnsupported = errors.New("cgroup: limit not enforceable on this machine")

// Limits are one emulator's caps; zero means unlimited.
type Limits struct {
	// CPUPercent is the share of one core, 1-100.
	CPUPercent int
	// MemoryBytes caps resident memory (and swap, where it can).
	MemoryBytes int64
}

// Manager is the runner's parent group. A Manager whose Version is None
// enforces nothing and says why in Reason.
type Manager struct {
	version Version
	cpu     bool
	memory  bool
	reason  string
	// v2 is the parent directory on a v2 hierarchy; cpuDir and memDir are
	// the parents in v1's cpu and memory hierarchies ("" when unusable).
	v2, cpuDir, memDir string
	// own, name and enable rebuild v2's parent chain if it disappears.
	own, name, enable string
}

// Open finds a writable hierarchy under /sys/fs/cgroup and creates the
// parent group name (e.g. "machineserver/<runner id>") below the runner's
// own group in it, so the emulators stay within whatever limits the runner
// itself runs under (a container's, a systemd unit's).
func Open(name string) *Manager {
	return open("/sys/fs/cgroup", "/proc/self/cgroup", name, true)
}

// open is Open with its inputs exposed, so tests can point it at a fake
// tree (checkFS off: a temp directory is no cgroup filesystem).
func open(root, self, name string, checkFS bool) *Manager {
	paths, err := ownPaths(self)
	if err != nil {
		return &Manager{version: None, reason: err.Error()}
	}
	var why []string
	if p, ok := paths[""]; ok && (!checkFS || fsType(root) == cgroup2Magic) {
		m, err := openV2(filepath.Join(root, p), name)
		if err == nil {
			return m
		}
		why = append(why, "v2: "+err.Error())
	}
	m := &Manager{version: V1}
	for _, c := range []struct {
		ctrl, file string
		dir        *string
		ok         *bool
	}{{"cpu", "cpu.cfs_quota_us", &m.cpuDir, &m.cpu}, {"memory", "memory.limit_in_bytes", &m.memDir, &m.memory}} {
		mount := filepath.Join(root, c.ctrl)
		own, ok := paths[c.ctrl]
		if !ok {
			why = append(why, fmt.Sprintf("v1 %s: no %s line in %s", c.ctrl, c.ctrl, self))
			continue
		}
		if checkFS && fsType(mount) != cgroup1Magic {
			why = append(why, fmt.Sprintf("v1 %s: %s is not a cgroup v1 mount", c.ctrl, mount))
			continue
		}
		dir := filepath.Join(mount, own, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			why = append(why, fmt.Sprintf("v1 %s: %v", c.ctrl, err))
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, c.file)); err != nil {
			why = append(why, fmt.Sprintf("v1 %s: %v", c.ctrl, err))
			continue
		}
		*c.dir, *c.ok = dir, true
		pruneChildren(dir)
	}
	if !m.cpu && !m.memory {
		return &Manager{version: None, reason: strings.Join(why, "; ")}
	}
	m.reason = strings.Join(why, "; ")
	return m
}

// openV2 enables the cpu and memory controllers down to the parent group.
// A group with processes cannot hand controllers to children (the "no
// internal processes" rule): if the runner's own group refuses, its
// processes move to a leaf group first, as container init systems do.
func openV2(own, name string) (*Manager, error) {
	b, err := os.ReadFile(filepath.Join(own, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	avail := strings.Fields(string(b))
	var want []string
	for _, c := range []string{"cpu", "memory"} {
		if slices.Contains(avail, c) {
			want = append(want, "+"+c)
		}
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("%s offers neither the cpu nor the memory controller", own)
	}
	enable := strings.Join(want, " ")
	if err := write(own, "cgroup.subtree_control", enable); err != nil {
		if !errors.Is(err, syscall.EBUSY) {
			return nil, err
		}
		if err := evacuate(own, filepath.Join(own, "runner")); err != nil {
			return nil, err
		}
		if err := write(own, "cgroup.subtree_control", enable); err != nil {
			return nil, err
		}
	}
	m := &Manager{version: V2, own: own, name: name, enable: enable,
		cpu: slices.Contains(want, "+cpu"), memory: slices.Contains(want, "+memory")}
	if err := m.chainV2(); err != nil {
		return nil, err
	}
	pruneChildren(m.v2)
	return m, nil
}

// chainV2 creates the parent group below the runner's own group, handing
// the controllers down at each level.
func (m *Manager) chainV2() error {
	dir := m.own
	for _, part := range strings.Split(m.name, "/") {
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := write(dir, "cgroup.subtree_control", m.enable); err != nil {
			return err
		}
	}
	m.v2 = dir
	return nil
}

// evacuate moves every process of group into leaf.
func evacuate(group, leaf string) error {
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	b, err := os.ReadFile(filepath.Join(group, "cgroup.procs"))
	if err != nil {
		return err
	}
	for _, pid := range strings.Fields(string(b)) {
		// A process that exited meanwhile is no obstacle.
		if err := write(leaf, "cgroup.procs", pid); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return nil
}

// pruneChildren removes the groups a crashed predecessor left (empty once
// its emulators are gone; non-empty ones stay).
func pruneChildren(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			_ = syscall.Rmdir(filepath.Join(dir, e.Name()))
		}
	}
}

// ownPaths reads /proc/self/cgroup: controller name to the process's group
// path; "" is the v2 unified hierarchy ("0::/path").
func ownPaths(self string) (map[string]string, error) {
	f, err := os.Open(self)
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out, sc.Err()
}

func fsType(path string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0
	}
	return int64(st.Type)
}

// PruneStale removes the groups of other runners on this machine that
// gone says have ended (a runner killed with SIGKILL cannot clean up; its
// emulators died with it, so their groups are empty). Groups that still
// hold a process are left alone: rmdir refuses them.
func (m *Manager) PruneStale(gone func(runner string) bool) {
	for _, parent := range []string{m.v2, m.cpuDir, m.memDir} {
		if parent == "" {
			continue
		}
		siblings, _ := os.ReadDir(filepath.Dir(parent))
		for _, e := range siblings {
			dir := filepath.Join(filepath.Dir(parent), e.Name())
			if !e.IsDir() || dir == parent || !gone(e.Name()) {
				continue
			}
			pruneChildren(dir)
			_ = syscall.Rmdir(dir)
		}
	}
}

// Version is the hierarchy in use.
func (m *Manager) Version() Version { return m.version }

// CPU and Memory say which limits are enforced.
func (m *Manager) CPU() bool    { return m.cpu }
func (m *Manager) Memory() bool { return m.memory }

// Reason says why a hierarchy or controller is not used ("" when all are).
func (m *Manager) Reason() string { return m.reason }

// Close removes the parent group (its emulators must be gone) and, if no
// other runner uses it, the level above.
func (m *Manager) Close() {
	for _, d := range []string{m.v2, m.cpuDir, m.memDir} {
		if d != "" {
			_ = syscall.Rmdir(d)
			_ = syscall.Rmdir(filepath.Dir(d))
		}
	}
}

// Group is one emulator's group (one directory per hierarchy on v1).
type Group struct {
	v2, cpuDir, memDir string
	// quota and period are the CPU cap as written ("" when uncapped), for
	// putting it back after a lift.
	quota, period string
}

// New creates the child group name with the limits. A limit the machine
// cannot enforce is ErrUnsupported; zero limits need no group and give nil.
func (m *Manager) New(name string, l Limits) (*Group, error) {
	if (l.CPUPercent > 0 && !m.cpu) || (l.MemoryBytes > 0 && !m.memory) {
		return nil, ErrUnsupported
	}
	if l.CPUPercent <= 0 && l.MemoryBytes <= 0 {
		return nil, nil
	}
	g := &Group{}
	quota := strconv.FormatInt(int64(Period/time.Microsecond)*int64(l.CPUPercent)/100, 10)
	period := strconv.FormatInt(int64(Period/time.Microsecond), 10)
	mem := strconv.FormatInt(l.MemoryBytes, 10)
	fail := func(err error) (*Group, error) {
		g.Remove()
		return nil, fmt.Errorf("cgroup %s: %w", name, err)
	}
	if m.version == V2 {
		g.v2 = filepath.Join(m.v2, name)
		err := mkdir(g.v2)
		if errors.Is(err, os.ErrNotExist) {
			// Pruned while empty (a runner sharing the machine thought us
			// gone): rebuild it.
			if err = m.chainV2(); err == nil {
				err = mkdir(g.v2)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("cgroup %s: %w", name, err)
		}
		if l.CPUPercent > 0 {
			if err := write(g.v2, "cpu.max", quota+" "+period); err != nil {
				return fail(err)
			}
			g.quota, g.period = quota, period
		}
		if l.MemoryBytes > 0 {
			if err := write(g.v2, "memory.max", mem); err != nil {
				return fail(err)
			}
			// Killed at the cap rather than swapped beyond it.
			_ = write(g.v2, "memory.swap.max", "0")
		}
		return g, nil
	}
	if l.CPUPercent > 0 {
		g.cpuDir = filepath.Join(m.cpuDir, name)
		if err := mkdirV1(g.cpuDir); err != nil {
			return fail(err)
		}
		if err := write(g.cpuDir, "cpu.cfs_period_us", period); err != nil {
			return fail(err)
		}
		if err := write(g.cpuDir, "cpu.cfs_quota_us", quota); err != nil {
			return fail(err)
		}
		g.quota, g.period = quota, period
	}
	if l.MemoryBytes > 0 {
		g.memDir = filepath.Join(m.memDir, name)
		if err := mkdirV1(g.memDir); err != nil {
			return fail(err)
		}
		if err := write(g.memDir, "memory.limit_in_bytes", mem); err != nil {
			return fail(err)
		}
		// Best effort, missing on some kernels: no swapping beyond the cap,
		// and pages QEMU touched before it was moved in are charged here
		// too, so the cap covers the whole process.
		_ = write(g.memDir, "memory.memsw.limit_in_bytes", mem)
		_ = write(g.memDir, "memory.move_charge_at_immigrate", "3")
	}
	return g, nil
}

// mkdirV1 creates a v1 group, and its parent if it was pruned while empty
// (v1 needs nothing handed down).
func mkdirV1(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	return mkdir(dir)
}

// mkdir creates a group; one that exists is a predecessor's leftover of the
// same name (its process is gone, or exiting) and is reused.
func mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// Add moves a process (all its threads) into the group.
func (g *Group) Add(pid int) error {
	if g == nil {
		return nil
	}
	for _, d := range g.dirs() {
		if err := write(d, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("cgroup: add %d to %s: %w", pid, d, err)
		}
	}
	return nil
}

// LiftCPU removes the group's CPU cap until the returned function puts it
// back (idempotent). It is for work QEMU does for the platform while the
// guest is paused (capturing its state): under the cap that work shares the
// guest's budget, and a guest that has spent its period's quota stalls it
// until the next period (a 20 % cap: up to 80 ms). Writing the quota also
// releases a group that is throttled right now.
func (g *Group) LiftCPU() (restore func() error) {
	if g == nil || g.quota == "" {
		return func() error { return nil }
	}
	dir, file, unlimited, capped := g.cpuDir, "cpu.cfs_quota_us", "-1", g.quota
	if g.v2 != "" {
		dir, file, unlimited, capped = g.v2, "cpu.max", "max "+g.period, g.quota+" "+g.period
	}
	if err := write(dir, file, unlimited); err != nil {
		return func() error { return nil } // still capped: nothing to undo
	}
	return sync.OnceValue(func() error {
		if err := write(dir, file, capped); err != nil {
			return fmt.Errorf("cgroup: restore CPU cap in %s: %w", dir, err)
		}
		return nil
	})
}

// OOMKilled reports whether the kernel's OOM killer killed a process of the
// group because of its memory cap: memory.events on v2; oom_kill in
// memory.oom_control on v1, or, on kernels without that line, failcnt
// (the cap was hit).
func (g *Group) OOMKilled() bool {
	if g == nil {
		return false
	}
	if g.v2 != "" {
		return field(filepath.Join(g.v2, "memory.events"), "oom_kill") > 0
	}
	if g.memDir == "" {
		return false
	}
	if n := field(filepath.Join(g.memDir, "memory.oom_control"), "oom_kill"); n >= 0 {
		return n > 0
	}
	b, _ := os.ReadFile(filepath.Join(g.memDir, "memory.failcnt"))
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n > 0
}

// Remove deletes the group once its processes are gone; the kernel may
// take a moment to let go of an exited process (longer for one the OOM
// killer is still tearing down on a loaded machine: 0.5 s was seen to be
// too short), hence the retries for up to 2 s.
func (g *Group) Remove() error {
	if g == nil {
		return nil
	}
	var err error
	for _, d := range g.dirs() {
		for i := 0; i < 200; i++ {
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			if !errors.Is(err, syscall.EBUSY) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err != nil {
		return fmt.Errorf("cgroup: remove: %w", err)
	}
	return nil
}

// Dirs are the group's directories, for diagnostics and tests.
func (g *Group) Dirs() []string { return g.dirs() }

func (g *Group) dirs() []string {
	var out []string
	for _, d := range []string{g.v2, g.cpuDir, g.memDir} {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// field returns the value of "name N" in a flat keyed file, -1 if absent.
func field(path, name string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return -1
}

// write sets a control file. Cgroup files take one value per write, and the
// kernel reports a refused value as the write's error.
func write(dir, file, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, file), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
