// Command runner is a long-lived runner pod: it hosts the emulator processes
// of the sessions placed on it and serves the internal API the functions use.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/runner/host"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/state"
)

// Config is read once from the environment.
type Config struct {
	config.Common
	config.S3
	Port         string        `envconfig:"PORT" default:"8081"`
	RedisURL     string        `envconfig:"MS_REDIS_URL" required:"true"`
	Token        string        `envconfig:"MS_RUNNER_TOKEN" required:"true"`
	ID           string        `envconfig:"MS_RUNNER_ID"`
	URL          string        `envconfig:"MS_RUNNER_URL"`
	Dir          string        `envconfig:"MS_RUNNER_DIR" default:"/var/lib/machineserver/runner"`
	SocketDir    string        `envconfig:"MS_RUNNER_SOCKET_DIR"`
	QEMU         string        `envconfig:"MS_QEMU_BINARY" default:"qemu-system-arm"`
	Capacity     int           `envconfig:"MS_RUNNER_CAPACITY" default:"16"`
	ConsoleBytes int           `envconfig:"MS_CONSOLE_BUFFER_BYTES" default:"1048576"`
	StopGrace    time.Duration `envconfig:"MS_STOP_GRACE" default:"2s"`
	Prelaunch    bool          `envconfig:"MS_PRELAUNCH" default:"true"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		slog.Error("runner", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if cfg.ID == "" {
		cfg.ID, _ = os.Hostname()
	}
	if cfg.URL == "" {
		cfg.URL = "http://127.0.0.1:" + cfg.Port
	}
	log := cfg.Logger().With("component", "runner")
	st, err := state.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer st.Close()
	blobs, err := cfg.S3.Blob(ctx)
	if err != nil {
		return err
	}
	pub, closePub, err := cfg.Publisher("runner/"+cfg.ID, log)
	if err != nil {
		return err
	}
	defer closePub(context.Background())

	ln, err := config.Listen(cfg.Port)
	if err != nil {
		return err
	}
	r, err := host.New(ctx, host.Config{
		ID: cfg.ID, URL: cfg.URL, Dir: cfg.Dir, SocketDir: cfg.SocketDir, QEMU: cfg.QEMU, Capacity: cfg.Capacity,
		ConsoleBytes: cfg.ConsoleBytes, Token: cfg.Token, StopGrace: cfg.StopGrace, Prelaunch: cfg.Prelaunch,
	}, st, blobs, pub, log)
	if err != nil {
		ln.Close()
		return err
	}
	// Emulators are stopped after the listener closes, in reverse order of start.
	defer r.Shutdown(context.Background())
	go r.Run(ctx)
	log.Info("serving", "addr", ln.Addr().String(), "id", cfg.ID)
	return config.Serve(ctx, config.Server(httpapi.Middleware(log, r.Handler())), ln)
}
