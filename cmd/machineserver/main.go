// Command machineserver runs the whole platform in one process with embedded
// defaults: both functions' handlers on one mux, an in-process runner, state
// in an embedded Redis-compatible server, blobs under the data directory.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"path/filepath"

	"github.com/kelseyhightower/envconfig"

	programs "github.com/machineserver/machineserver/functions/programs/handler"
	sessions "github.com/machineserver/machineserver/functions/sessions/handler"
	snapshots "github.com/machineserver/machineserver/functions/snapshots/handler"
	"github.com/machineserver/machineserver/runner/host"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/state"
)

// Config is read once from the environment.
type Config struct {
	config.Common
	host.Settings
	Port      string `envconfig:"PORT" default:"8080"`
	DataDir   string `envconfig:"MS_DATA_DIR" default:"./data"`
	MaxUpload int64  `envconfig:"MS_MAX_UPLOAD_BYTES" default:"16777216"`
}

func main() { config.Run("machineserver", run) }

func run(ctx context.Context) error {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger()
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	st, err := state.OpenEmbedded(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	blobs, err := blob.NewFS(filepath.Join(dataDir, "blobs"))
	if err != nil {
		return err
	}
	pub, closePub, err := cfg.Publisher("standalone", log)
	if err != nil {
		return err
	}
	defer closePub(context.Background())

	// The runner keeps its internal API on a loopback port of its own, with a
	// fresh token, so the functions reach it exactly as they do in a cluster.
	var tok [16]byte
	rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	r, err := host.New(ctx, host.Config{
		Settings: cfg.Settings, ID: "standalone", URL: "http://" + rln.Addr().String(),
		Dir: filepath.Join(dataDir, "runner"), Token: token,
	}, st, blobs, pub, log.With("component", "runner"))
	if err != nil {
		rln.Close()
		return err
	}
	defer r.Shutdown(context.Background())
	go r.Run(ctx)
	go config.Serve(ctx, config.Server(httpapi.Middleware(log, r.Handler())), rln)

	ph := programs.New(programs.Deps{State: st, Blobs: blobs, Publisher: pub, MaxUpload: cfg.MaxUpload, Log: log.With("component", "programs")})
	n, err := ph.Reindex(ctx)
	if err != nil {
		return fmt.Errorf("reindex programs: %w", err)
	}
	sh := sessions.New(sessions.Deps{State: st, Blobs: blobs, Publisher: pub, RunnerToken: token, Log: log.With("component", "sessions")})

	snh := snapshots.New(snapshots.Deps{State: st, Blobs: blobs, Sessions: sh, Publisher: pub, Log: log.With("component", "snapshots")})
	if _, err := snh.Reindex(ctx); err != nil {
		return fmt.Errorf("reindex snapshots: %w", err)
	}

	mux := http.NewServeMux()
	ph.Routes(mux)
	sh.Routes(mux)
	snh.Routes(mux)
	for path, h := range map[string]interface {
		Events(context.Context) (http.Handler, error)
	}{"/events/sessions": sh, "/events/programs": ph, "/events/snapshots": snh} {
		ev, err := h.Events(ctx)
		if err != nil {
			return err
		}
		mux.Handle("POST "+path, ev)
	}
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, req *http.Request) {
		v, err := sh.Health(req.Context())
		if err == nil {
			var pv map[string]any
			if pv, err = ph.Health(req.Context()); err == nil {
				v["blobs"] = pv["blobs"]
			}
		}
		if err != nil {
			httpapi.WriteError(w, req, httpapi.Unavailable("%v", err))
			return
		}
		v["mode"] = "standalone"
		httpapi.WriteJSON(w, http.StatusOK, v)
	})
	ln, err := config.Listen(cfg.Port)
	if err != nil {
		return err
	}
	log.Info("machineserver standalone", "addr", ln.Addr().String(), "data_dir", dataDir, "programs", n,
		"qemu", r.Capabilities().Backends[0].Version)
	return config.Serve(ctx, config.Server(httpapi.Middleware(log, mux)), ln)
}
