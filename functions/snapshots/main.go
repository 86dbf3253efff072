// Command snapshots is the snapshots function: a Knative Service serving the
// snapshot REST API and the snapshot command CloudEvents (POST /).
package main

import (
	"context"
	"fmt"

	"github.com/kelseyhightower/envconfig"

	sessions "github.com/machineserver/machineserver/functions/sessions/handler"
	"github.com/machineserver/machineserver/functions/snapshots/handler"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/state"
)

// Config is read once from the environment.
type Config struct {
	config.Common
	config.S3
	Port        string `envconfig:"PORT" default:"8080"`
	RedisURL    string `envconfig:"MS_REDIS_URL" required:"true"`
	RunnerToken string `envconfig:"MS_RUNNER_TOKEN" required:"true"`
}

func main() { config.Run("snapshots", run) }

func run(ctx context.Context) error {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger().With("component", "snapshots")
	st, err := state.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer st.Close()
	blobs, err := cfg.S3.Blob(ctx)
	if err != nil {
		return err
	}
	pub, closePub, err := cfg.Publisher("snapshots", log)
	if err != nil {
		return err
	}
	defer closePub(context.Background())

	// Forks create sessions exactly as the sessions function does.
	sh := sessions.New(sessions.Deps{State: st, Blobs: blobs, Publisher: pub, RunnerToken: cfg.RunnerToken, Log: log})
	h := handler.New(handler.Deps{State: st, Blobs: blobs, Sessions: sh, Publisher: pub, Log: log})
	n, err := h.Reindex(ctx)
	if err != nil {
		return fmt.Errorf("reindex snapshots: %w", err)
	}
	log.Info("snapshot index rebuilt", "snapshots", n)
	return config.ServeFunction(ctx, cfg.Port, h, log)
}
