// Command runner is a long-lived runner pod: it hosts the emulator processes
// of the sessions placed on it and serves the internal API the functions use.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/runner/host"
	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/quota"
)

// Config is read once from the environment.
type Config struct {
	config.Distributed
	host.Settings
	Port  string `envconfig:"PORT" default:"8081"`
	Token string `envconfig:"MS_RUNNER_TOKEN" required:"true"`
	ID    string `envconfig:"MS_RUNNER_ID"`
	URL   string `envconfig:"MS_RUNNER_URL"`
	Dir   string `envconfig:"MS_RUNNER_DIR" default:"/var/lib/machineserver/runner"`
	// Quota is the per-tenant limits (MS_QUOTA_*): stored recordings count
	// against storage.
	Quota quota.Config
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
	// The component is the event source: runner/<id>.
	svc, err := cfg.Open(ctx, "runner/"+cfg.ID)
	if err != nil {
		return err
	}
	defer svc.Close()
	log := svc.Log

	ln, err := config.Listen(cfg.Port)
	if err != nil {
		return err
	}
	r, err := host.New(ctx, host.Config{
		Settings: cfg.Settings, ID: cfg.ID, URL: cfg.URL, Dir: cfg.Dir, Token: cfg.Token, Quota: svc.State.Quota(cfg.Quota),
		Backend: qemu.ForRunner(cfg.QEMU, cfg.Coverage, cfg.Dir, log),
	}, svc.State, svc.Blobs, svc.Publisher, log)
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
