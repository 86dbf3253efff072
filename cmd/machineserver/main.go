// Command machineserver runs the whole platform in one process with embedded
// defaults: both functions' handlers on one mux, an in-process runner, state
// in an embedded Redis-compatible server, blobs under the data directory.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"

	programs "github.com/machineserver/machineserver/functions/programs/handler"
	sessions "github.com/machineserver/machineserver/functions/sessions/handler"
	"github.com/machineserver/machineserver/runner/host"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/state"
)

// Config is read once from the environment.
type Config struct {
	config.Common
	Port         string        `envconfig:"PORT" default:"8080"`
	DataDir      string        `envconfig:"MS_DATA_DIR" default:"./data"`
	QEMU         string        `envconfig:"MS_QEMU_BINARY" default:"qemu-system-arm"`
	SocketDir    string        `envconfig:"MS_RUNNER_SOCKET_DIR"`
	MaxUpload    int64         `envconfig:"MS_MAX_UPLOAD_BYTES" default:"16777216"`
	Capacity     int           `envconfig:"MS_RUNNER_CAPACITY" default:"16"`
	ConsoleBytes int           `envconfig:"MS_CONSOLE_BUFFER_BYTES" default:"1048576"`
	StopGrace    time.Duration `envconfig:"MS_STOP_GRACE" default:"2s"`
	Prelaunch    bool          `envconfig:"MS_PRELAUNCH" default:"true"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		slog.Error("machineserver", "err", err)
		os.Exit(1)
	}
}

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
	if cfg.SocketDir == "" {
		// Per data dir, so two standalone servers never reconcile each other's emulators.
		sum := sha256.Sum256([]byte(dataDir))
		cfg.SocketDir = filepath.Join(os.TempDir(), "ms-"+hex.EncodeToString(sum[:4]))
	}
	r, err := host.New(ctx, host.Config{
		ID: "standalone", SocketDir: cfg.SocketDir, URL: "http://" + rln.Addr().String(), Dir: filepath.Join(dataDir, "runner"),
		QEMU: cfg.QEMU, Capacity: cfg.Capacity, ConsoleBytes: cfg.ConsoleBytes, Token: token, StopGrace: cfg.StopGrace, Prelaunch: cfg.Prelaunch,
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
	sh := sessions.New(sessions.Deps{State: st, Publisher: pub, RunnerToken: token, Log: log.With("component", "sessions")})

	mux := http.NewServeMux()
	ph.Routes(mux)
	sh.Routes(mux)
	for path, h := range map[string]interface {
		Events(context.Context) (http.Handler, error)
	}{"/events/sessions": sh, "/events/programs": ph} {
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
