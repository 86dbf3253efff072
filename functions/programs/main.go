// Command programs is the programs function: a Knative Service serving the
// programs REST API and the program command CloudEvents (POST /).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/functions/programs/handler"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/httpapi"
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		slog.Error("programs", "err", err)
		os.Exit(1)
	}
}

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
	mux := http.NewServeMux()
	h.Routes(mux)
	ev, err := h.Events(ctx)
	if err != nil {
		return err
	}
	mux.Handle("POST /{$}", ev)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		v, err := h.Health(r.Context())
		if err != nil {
			httpapi.WriteError(w, r, httpapi.Unavailable("%v", err))
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, v)
	})
	ln, err := config.Listen(cfg.Port)
	if err != nil {
		return err
	}
	log.Info("serving", "addr", ln.Addr().String())
	return config.Serve(ctx, config.Server(httpapi.Middleware(log, mux)), ln)
}
