// Command sessions is the sessions function: a Knative Service serving the
// sessions REST API and the session command CloudEvents (POST /).
package main

import (
	"context"
	"fmt"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/functions/sessions/handler"
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

func main() { config.Run("sessions", run) }

func run(ctx context.Context) error {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger().With("component", "sessions")
	st, err := state.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer st.Close()
	blobs, err := cfg.S3.Blob(ctx)
	if err != nil {
		return err
	}
	pub, closePub, err := cfg.Publisher("sessions", log)
	if err != nil {
		return err
	}
	defer closePub(context.Background())

	h := handler.New(handler.Deps{State: st, Blobs: blobs, Publisher: pub, RunnerToken: cfg.RunnerToken, Log: log})
	return config.ServeFunction(ctx, cfg.Port, h, log)
}
