// Command sessions is the sessions function: a Knative Service serving the
// sessions REST API and the session command CloudEvents (POST /).
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

	"github.com/machineserver/machineserver/functions/sessions/handler"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/state"
)

// Config is read once from the environment.
type Config struct {
	config.Common
	Port        string `envconfig:"PORT" default:"8080"`
	RedisURL    string `envconfig:"MS_REDIS_URL" required:"true"`
	RunnerToken string `envconfig:"MS_RUNNER_TOKEN" required:"true"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		slog.Error("sessions", "err", err)
		os.Exit(1)
	}
}

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
	pub, closePub, err := cfg.Publisher("sessions", log)
	if err != nil {
		return err
	}
	defer closePub(context.Background())

	h := handler.New(handler.Deps{State: st, Publisher: pub, RunnerToken: cfg.RunnerToken, Log: log})
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
