package qemu

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Probe is what an installed QEMU binary says it offers.
type Probe struct {
	Binary   string
	Version  string
	Machines []string
	CPUs     []string
}

// Discover asks the binary for its version, machines and CPUs.
func Discover(ctx context.Context, binary string) (Probe, error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		return Probe{}, fmt.Errorf("qemu: %s not found (install qemu-system-arm): %w", binary, err)
	}
	p := Probe{Binary: path}
	run := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, path, args...).Output()
		if err != nil {
			return "", fmt.Errorf("qemu: %s %s: %w", path, strings.Join(args, " "), err)
		}
		return string(out), nil
	}
	v, err := run("--version")
	if err != nil {
		return p, err
	}
	p.Version = parseVersion(v)
	m, err := run("-machine", "help")
	if err != nil {
		return p, err
	}
	p.Machines = parseList(m, "Supported machines")
	c, err := run("-cpu", "help")
	if err != nil {
		return p, err
	}
	for _, cpu := range parseList(c, "Available CPUs") {
		p.CPUs = append(p.CPUs, cpuName(cpu))
	}
	return p, nil
}

// parseVersion takes "QEMU emulator version 7.2.22 (Debian ...)" to "7.2.22".
func parseVersion(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	for i, w := range f {
		if w == "version" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return strings.TrimSpace(line)
}

// parseList takes the first word of every line after the header line.
func parseList(s, header string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, header) || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		out = append(out, f[0])
	}
	return out
}

// cpuName takes a CPU as -cpu help lists it to the name the board catalog
// uses: qemu-system-avr lists QOM type names ("avr5-avr-cpu") where the
// others list bare names.
func cpuName(s string) string {
	if base, ok := strings.CutSuffix(s, "-avr-cpu"); ok {
		return base
	}
	return s
}
