// Command programs is the programs function: a Knative Service serving the
// programs REST API and the program command CloudEvents (POST /).
package main

import (
	"context"
	"fmt"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/functions/programs/handler"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/quota"
)

// Config is read once from the environment.
type Config struct {
	config.Distributed
	config.Security
	Port      string `envconfig:"PORT" default:"8080"`
	MaxUpload int64  `envconfig:"MS_MAX_UPLOAD_BYTES" default:"16777216"`
	// Watch is the bucket trigger (MS_PROGRAMS_BUCKET on the same endpoint).
	Watch handler.WatchConfig
	// Quota is the per-tenant limits (MS_QUOTA_*); programs count storage.
	Quota quota.Config
}

func main() { config.Run("programs", run) }

func run(ctx context.Context) error {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	svc, err := cfg.Open(ctx, "programs")
	if err != nil {
		return err
	}
	defer svc.Close()
	watches, err := cfg.Watch.Open(ctx)
	if err != nil {
		return err
	}
	// Jobs for stored programs are queued by the jobs function, which gets
	// program.stored through the Broker; no OnStored here.
	h := handler.New(handler.Deps{State: svc.State, Blobs: svc.Blobs, Publisher: svc.Publisher, MaxUpload: cfg.MaxUpload, Log: svc.Log, Watches: watches, WebhookToken: cfg.Watch.WebhookToken,
		Quota: svc.State.Quota(cfg.Quota)})
	// Redis holds only an index: rebuild it from the manifests in the bucket.
	n, err := h.Reindex(ctx)
	if err != nil {
		return fmt.Errorf("reindex programs: %w", err)
	}
	svc.Log.Info("program index rebuilt", "programs", n)
	guard, err := cfg.Authenticator(ctx, svc.State, true, svc.Log)
	if err != nil {
		return err
	}
	return config.ServeFunction(ctx, cfg.Port, h, guard, svc.Log)
}
