// Command sessions is the sessions function: a Knative Service serving the
// sessions REST API and the session command CloudEvents (POST /).
package main

import (
	"context"
	"fmt"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/functions/sessions/handler"
	"github.com/machineserver/machineserver/shared/config"
)

// Config is read once from the environment.
type Config struct {
	config.Distributed
	Port        string `envconfig:"PORT" default:"8080"`
	RunnerToken string `envconfig:"MS_RUNNER_TOKEN" required:"true"`
}

func main() { config.Run("sessions", run) }

func run(ctx context.Context) error {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	svc, err := cfg.Open(ctx, "sessions")
	if err != nil {
		return err
	}
	defer svc.Close()
	h := handler.New(handler.Deps{State: svc.State, Blobs: svc.Blobs, Publisher: svc.Publisher, RunnerToken: cfg.RunnerToken, Log: svc.Log})
	return config.ServeFunction(ctx, cfg.Port, h, svc.Log)
}
