// Command machineserver runs the whole platform in one process with embedded
// defaults: both functions' handlers on one mux, an in-process runner, state
// in an embedded Redis-compatible server, blobs under the data directory.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	jobs "github.com/machineserver/machineserver/functions/jobs/handler"
	programs "github.com/machineserver/machineserver/functions/programs/handler"
	sessions "github.com/machineserver/machineserver/functions/sessions/handler"
	snapshots "github.com/machineserver/machineserver/functions/snapshots/handler"
	"github.com/machineserver/machineserver/runner/host"
	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/metrics"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/openapi"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/state"
	"github.com/machineserver/machineserver/ui"
)

// Config is read once from the environment.
type Config struct {
	config.Common
	config.Security
	host.Settings
	Port      string `envconfig:"PORT" default:"8080"`
	DataDir   string `envconfig:"MS_DATA_DIR" default:"./data"`
	MaxUpload int64  `envconfig:"MS_MAX_UPLOAD_BYTES" default:"16777216"`
	// ProgramsWatch is the bucket trigger: MS_PROGRAMS_BUCKET on the S3
	// endpoint MS_S3_ENDPOINT (blobs stay on disk; only the trigger reads S3).
	ProgramsWatch programs.WatchConfig
	// JobWorkers, JobLease and JobMaxAttempts are the jobs function's
	// (see functions/jobs).
	JobWorkers     int           `envconfig:"MS_JOB_WORKERS" default:"2"`
	JobLease       time.Duration `envconfig:"MS_JOB_LEASE" default:"30s"`
	JobMaxAttempts int           `envconfig:"MS_JOB_MAX_ATTEMPTS" default:"3"`
	// Quota is the per-tenant limits (MS_QUOTA_*).
	Quota quota.Config
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
	guard, err := cfg.Authenticator(ctx, st, false, log.With("component", "auth"))
	if err != nil {
		return err
	}
	if guard.Enabled() && cfg.BootstrapKey == "" {
		if err := devKey(ctx, guard, dataDir, cfg.Port, log); err != nil {
			return err
		}
	}
	pub, closePub, err := cfg.Publisher("standalone", st, log)
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
	// One Quota for every handler and the runner (which stores
	// recordings): the limits live in Redis, so it is shared state.
	quotas := st.Quota(cfg.Quota)
	r, err := host.New(ctx, host.Config{
		Settings: cfg.Settings, ID: "standalone", URL: "http://" + rln.Addr().String(),
		Dir: filepath.Join(dataDir, "runner"), Token: token, Quota: quotas,
		Backend: qemu.ForRunner(cfg.QEMU, cfg.Coverage, filepath.Join(dataDir, "runner"), log.With("component", "runner")),
	}, st, blobs, pub, log.With("component", "runner"))
	if err != nil {
		rln.Close()
		return err
	}
	defer r.Shutdown(context.Background())
	go r.Run(ctx)
	go config.Serve(ctx, config.Server(httpapi.Middleware(log, r.Handler())), rln)

	watches, err := cfg.ProgramsWatch.Open(ctx)
	if err != nil {
		return err
	}
	// Set once the jobs handler exists, before anything is served: stored
	// programs go straight to the job rules, as program.stored does through
	// the Broker in a cluster.
	var onStored func(context.Context, model.Program)
	ph := programs.New(programs.Deps{State: st, Blobs: blobs, Publisher: pub, MaxUpload: cfg.MaxUpload, Log: log.With("component", "programs"),
		Quota: quotas, Watches: watches, WebhookToken: cfg.ProgramsWatch.WebhookToken, OnStored: func(ctx context.Context, p model.Program) {
			if onStored != nil {
				onStored(ctx, p)
			}
		}})
	n, err := ph.Reindex(ctx)
	if err != nil {
		return fmt.Errorf("reindex programs: %w", err)
	}
	sh := sessions.New(sessions.Deps{State: st, Blobs: blobs, Publisher: pub, RunnerToken: token, Log: log.With("component", "sessions"), Quota: quotas})

	snh := snapshots.New(snapshots.Deps{State: st, Blobs: blobs, Sessions: sh.Service, Publisher: pub, Log: log.With("component", "snapshots"), Quota: quotas})
	if _, err := snh.Reindex(ctx); err != nil {
		return fmt.Errorf("reindex snapshots: %w", err)
	}

	jq, err := st.Queue(ctx, jobs.QueueConfig(cfg.JobLease, cfg.JobMaxAttempts))
	if err != nil {
		return err
	}
	jh := jobs.New(jobs.Deps{State: st, Blobs: blobs, Sessions: sh.Service, Queue: jq, Publisher: pub, Log: log.With("component", "jobs"), Quota: quotas})
	jh.Start(ctx, cfg.JobWorkers)
	onStored = func(ctx context.Context, p model.Program) {
		if _, err := jh.OnProgramStored(ctx, p, p.SourceKey); err != nil {
			log.Warn("jobs for stored program", "program", p.ID, "err", err)
		}
	}
	// Deferred after the runner's Shutdown, so it runs first: a job that
	// was running is handed back before its emulator goes.
	defer jh.Stop()

	rs, err := routes(ctx, ph, sh, snh, jh)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	httpapi.Mount(mux, rs...)
	ln, err := config.Listen(cfg.Port)
	if err != nil {
		return err
	}
	var backends []string
	for _, be := range r.Capabilities().Backends {
		backends = append(backends, be.Name+" "+be.Version)
	}
	log.Info("machineserver standalone", "addr", ln.Addr().String(), "data_dir", dataDir, "programs", n,
		"backends", strings.Join(backends, ", "))
	return config.Serve(ctx, config.Server(httpapi.Middleware(log, metrics.Middleware(mux)(config.Guard(guard, mux)))), ln)
}

// routes are what the standalone server serves besides the admin API
// (config.Guard adds it): every function's REST routes, each function's
// CloudEvents receiver at POST /events/<function> (authenticated, unlike a
// function's in-cluster POST /), /health, /metrics (one registry for
// the whole process: functions' and runner's metrics), the web UI and the
// OpenAPI document.
func routes(ctx context.Context, ph *programs.Handler, sh *sessions.Handler, snh *snapshots.Handler, jh *jobs.Handler) ([]httpapi.Route, error) {
	var rs []httpapi.Route
	for _, f := range []struct {
		name string
		fn   config.Function
	}{{"programs", ph}, {"sessions", sh}, {"snapshots", snh}, {"jobs", jh}} {
		ev, err := f.fn.Events(ctx)
		if err != nil {
			return nil, err
		}
		rs = append(rs, f.fn.Routes()...)
		rs = append(rs, httpapi.Route{Method: http.MethodPost, Pattern: "/events/" + f.name, Scope: httpapi.ScopeWrite, Handler: ev.ServeHTTP})
	}
	health := func(w http.ResponseWriter, req *http.Request) {
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
	}
	rs = append(rs, ui.Routes()...)
	return append(rs, httpapi.Route{Method: http.MethodGet, Pattern: "/health", Scope: httpapi.ScopePublic, Handler: health}, config.MetricsRoute(), openapi.Route()), nil
}

// devKey makes `make run` work with authentication on and no
// MS_BOOTSTRAP_API_KEY: an admin key of the default tenant is created at the
// first start and kept in <data dir>/dev-api-key (mode 0600), and installed
// again at every start (the embedded Redis forgets keys on restart). Only
// the file's path is printed, never the key.
func devKey(ctx context.Context, a *auth.Authenticator, dataDir, port string, log *slog.Logger) error {
	path := filepath.Join(dataDir, "dev-api-key")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		k, err := a.Keys().EnsureKey(ctx, strings.TrimSpace(string(b)), "dev", auth.DefaultTenant, []auth.Scope{auth.ScopeAdmin})
		if err != nil {
			return fmt.Errorf("%s: %w (delete the file to get a new key)", path, err)
		}
		log.Info("dev API key installed", "key_id", k.ID, "file", path)
	case errors.Is(err, fs.ErrNotExist):
		k, key, err := a.Keys().Create(ctx, "dev", auth.DefaultTenant, []auth.Scope{auth.ScopeAdmin})
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
			return err
		}
		log.Info("dev API key created", "key_id", k.ID, "file", path)
	default:
		return err
	}
	fmt.Fprintf(os.Stderr, "\nAuthentication is on. An admin API key for development (tenant %q) is in %s:\n\n"+
		"  export MS_API_KEY=$(cat %s)\n  curl -H \"Authorization: ApiKey $MS_API_KEY\" http://localhost:%s/api/v1/sessions\n\n"+
		"Set MS_BOOTSTRAP_API_KEY=ms_<id>_<secret> to choose the key, or MS_AUTH=off to run without authentication.\n\n",
		auth.DefaultTenant, path, path, port[strings.LastIndex(port, ":")+1:])
	return nil
}
