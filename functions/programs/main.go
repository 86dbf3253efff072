// Command programs is the programs function: a Knative Service serving the
// programs REST API and the program command CloudEvents (POST /).
package main

import (
	"context"
	"fmt"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/functions/programs/handler"
	"github.com/machineserver/machineserver/shared/config"
)

// Config is read once from the environment.
type Config struct {
	config.Distributed
	Port      string `envconfig:"PORT" default:"8080"`
	MaxUpload int64  `envconfig:"MS_MAX_UPLOAD_BYTES" default:"16777216"`
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
	h := handler.New(handler.Deps{State: svc.State, Blobs: svc.Blobs, Publisher: svc.Publisher, MaxUpload: cfg.MaxUpload, Log: svc.Log})
	// Redis holds only an index: rebuild it from the manifests in the bucket.
	n, err := h.Reindex(ctx)
	if err != nil {
		return fmt.Errorf("reindex programs: %w", err)
	}
	svc.Log.Info("program index rebuilt", "programs", n)
	return config.ServeFunction(ctx, cfg.Port, h, svc.Log)
}
