// Command programs is the programs function: a Knative Service serving the
// programs REST API and the program command CloudEvents (POST /).
package main

import (
	"context"
	"fmt"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/functions/programs/handler"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/state"
)

// Config is read once from the environment.
type Config struct {
	config.Common
	config.S3
	Port      string `envconfig:"PORT" default:"8080"`
	RedisURL  string `envconfig:"MS_REDIS_URL" required:"true"`
	MaxUpload int64  `envconfig:"MS_MAX_UPLOAD_BYTES" default:"16777216"`
}

func main() { config.Run("programs", run) }

func run(ctx context.Context) error {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger().With("component", "programs")
	st, err := state.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer st.Close()
	blobs, err := cfg.S3.Blob(ctx)
	if err != nil {
		return err
	}
	pub, closePub, err := cfg.Publisher("programs", log)
	if err != nil {
		return err
	}
	defer closePub(context.Background())

	h := handler.New(handler.Deps{State: st, Blobs: blobs, Publisher: pub, MaxUpload: cfg.MaxUpload, Log: log})
	// Redis holds only an index: rebuild it from the manifests in the bucket.
	n, err := h.Reindex(ctx)
	if err != nil {
		return fmt.Errorf("reindex programs: %w", err)
	}
	log.Info("program index rebuilt", "programs", n)
	return config.ServeFunction(ctx, cfg.Port, h, log)
}
