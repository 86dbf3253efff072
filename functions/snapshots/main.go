// Command snapshots is the snapshots function: a Knative Service serving the
// snapshot REST API and the snapshot command CloudEvents (POST /).
package main

import (
	"context"
	"fmt"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/functions/snapshots/handler"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/quota"
)

// Config is read once from the environment.
type Config struct {
	config.Distributed
	config.Security
	Port        string `envconfig:"PORT" default:"8080"`
	RunnerToken string `envconfig:"MS_RUNNER_TOKEN" required:"true"`
	// Quota is the per-tenant limits (MS_QUOTA_*): forks count as
	// sessions, saved states as storage.
	Quota quota.Config
}

func main() { config.Run("snapshots", run) }

func run(ctx context.Context) error {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	svc, err := cfg.Open(ctx, "snapshots")
	if err != nil {
		return err
	}
	defer svc.Close()
	// Forks create sessions exactly as the sessions function does.
	quotas := svc.State.Quota(cfg.Quota)
	sh := session.New(session.Deps{State: svc.State, Blobs: svc.Blobs, Publisher: svc.Publisher, RunnerToken: cfg.RunnerToken, Log: svc.Log, Quota: quotas})
	h := handler.New(handler.Deps{State: svc.State, Blobs: svc.Blobs, Sessions: sh, Publisher: svc.Publisher, Log: svc.Log, Quota: quotas})
	n, err := h.Reindex(ctx)
	if err != nil {
		return fmt.Errorf("reindex snapshots: %w", err)
	}
	svc.Log.Info("snapshot index rebuilt", "snapshots", n)
	guard, err := cfg.Authenticator(ctx, svc.State, true, svc.Log)
	if err != nil {
		return err
	}
	return config.ServeFunction(ctx, cfg.Port, h, guard, svc.Log)
}
