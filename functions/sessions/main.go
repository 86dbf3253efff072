// Command sessions is the sessions function: a Knative Service serving the
// sessions REST API and the session command CloudEvents (POST /).
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/functions/sessions/handler"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/openapi"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/ui"
)

// Config is read once from the environment.
type Config struct {
	config.Distributed
	config.Security
	Port        string `envconfig:"PORT" default:"8080"`
	RunnerToken string `envconfig:"MS_RUNNER_TOKEN" required:"true"`
	// Quota is the per-tenant limits (MS_QUOTA_*).
	Quota quota.Config
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
	h := handler.New(handler.Deps{State: svc.State, Blobs: svc.Blobs, Publisher: svc.Publisher, RunnerToken: cfg.RunnerToken, Log: svc.Log,
		Quota: svc.State.Quota(cfg.Quota)})
	// Another instance may be creating a session right now: slots younger
	// than a minute are kept even if their session is not stored yet.
	if err := h.Reconcile(ctx, time.Minute); err != nil {
		svc.Log.Warn("reconcile sessions and quotas", "err", err)
	}
	guard, err := cfg.Authenticator(ctx, svc.State, true, svc.Log)
	if err != nil {
		return err
	}
	return config.ServeFunction(ctx, cfg.Port, withUI{h}, guard, svc.Log)
}

// withUI adds the web UI and the OpenAPI document to the sessions
// function's routes: in a cluster the ingress sends /ui/ and
// /api/v1/openapi.json here, beside the API the UI calls.
type withUI struct{ *handler.Handler }

func (f withUI) Routes() []httpapi.Route {
	return append(append(f.Handler.Routes(), ui.Routes()...), openapi.Route())
}
