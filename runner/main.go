// Command runner is a long-lived runner pod: it hosts the emulator processes
// of the sessions placed on it and serves the internal API the functions use.
package main

import (
	"context"
	"fmt"
	"os"

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
	host.Settings
	Port     string `envconfig:"PORT" default:"8081"`
	RedisURL string `envconfig:"MS_REDIS_URL" required:"true"`
	Token    string `envconfig:"MS_RUNNER_TOKEN" required:"true"`
	ID       string `envconfig:"MS_RUNNER_ID"`
	URL      string `envconfig:"MS_RUNNER_URL"`
	Dir      string `envconfig:"MS_RUNNER_DIR" default:"/var/lib/machineserver/runner"`
}

func main() { config.Run("runner", run) }

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
		Settings: cfg.Settings, ID: cfg.ID, URL: cfg.URL, Dir: cfg.Dir, Token: cfg.Token,
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
