package coverage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	report "github.com/machineserver/machineserver/shared/coverage"
)

// Names inside a session's instance directory.
const (
	CountsFile    = "cov.dat"
	ControlSocket = "cov.sock"
)

// PluginEnv overrides where the plugin is found.
const PluginEnv = "MS_COVERAGE_PLUGIN"

// ErrPluginMissing means the plugin .so was not found.
var ErrPluginMissing = errors.New("coverage: plugin libmscov.so not found: run make plugin, or set " + PluginEnv)

// Options tune collection.
type Options struct {
	// Interval makes the plugin also write the counts this often, so a
	// killed QEMU loses at most that much. 0 writes only on request and at
	// exit.
	Interval time.Duration
	// ExactEdges records every conditional branch outcome instead of
	// deriving them from block counts: exact even where derivation gives
	// up, but QEMU runs about 1.3-1.5x slower on branchy code.
	ExactEdges bool
}

// Locate finds the plugin: $MS_COVERAGE_PLUGIN, else build/plugin/libmscov.so
// under the Go module root above the working directory (tests, make run).
func Locate() (string, error) {
	if p := os.Getenv(PluginEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrPluginMissing, PluginEnv, err)
		}
		return filepath.Abs(p)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("coverage: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "build", "plugin", "libmscov.so")
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("%w (looked for %s)", ErrPluginMissing, p)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrPluginMissing
		}
		dir = parent
	}
}

// PluginArgs are the plugin's arguments (name=value) for an instance whose
// directory is dir: counts go to dir/cov.dat and the control socket is
// dir/cov.sock (dir is short already, for QEMU's own sockets). They go into
// a qemu.Plugin with the path Locate found; this package does not import
// runner/qemu, whose backend reads counts through it.
func PluginArgs(dir string, o Options) []string {
	args := []string{
		"out=" + filepath.Join(dir, CountsFile),
		"ctl=" + filepath.Join(dir, ControlSocket),
	}
	if o.Interval > 0 {
		args = append(args, "interval_ms="+strconv.FormatInt(max(o.Interval.Milliseconds(), 1), 10))
	}
	if o.ExactEdges {
		args = append(args, "edges=exact")
	}
	return args
}

// Read parses the counts in dir. While QEMU runs they are the last snapshot
// (see Flush); after it exited normally they are final.
func Read(dir string) (report.Counts, error) {
	f, err := os.Open(filepath.Join(dir, CountsFile))
	if err != nil {
		return report.Counts{}, fmt.Errorf("coverage: %w", err)
	}
	defer f.Close()
	return report.Parse(f)
}

// Flush asks the plugin of the QEMU running in dir to write its counts now,
// and returns once the file holds them. It fails if no QEMU with the plugin
// runs there.
func Flush(ctx context.Context, dir string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", filepath.Join(dir, ControlSocket))
	if err != nil {
		return fmt.Errorf("coverage: flush: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write([]byte("flush\n")); err != nil {
		return fmt.Errorf("coverage: flush: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("coverage: flush: %w", err)
	}
	if !strings.HasPrefix(line, "ok ") {
		return fmt.Errorf("coverage: flush: plugin says %q", strings.TrimSpace(line))
	}
	return nil
}
