package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/metrics"
	"github.com/machineserver/machineserver/shared/state"
)

// S3 is the artifact bucket.
type S3 struct {
	Endpoint  string `envconfig:"MS_S3_ENDPOINT" required:"true"`
	AccessKey string `envconfig:"MS_S3_ACCESS_KEY" required:"true"`
	SecretKey string `envconfig:"MS_S3_SECRET_KEY" required:"true"`
	Bucket    string `envconfig:"MS_S3_BUCKET" default:"machineserver"`
	Region    string `envconfig:"MS_S3_REGION" default:"us-east-1"`
	Secure    bool   `envconfig:"MS_S3_SECURE" default:"false"`
}

// Blob connects to the bucket.
func (s S3) Blob(ctx context.Context) (*blob.S3, error) {
	return blob.NewS3(ctx, blob.S3Config{
		Endpoint: s.Endpoint, AccessKey: s.AccessKey, SecretKey: s.SecretKey,
		Bucket: s.Bucket, Region: s.Region, Secure: s.Secure,
	})
}

// Common is what every binary reads.
type Common struct {
	// Sink is set by Knative's SinkBinding; empty means events are dropped.
	Sink     string `envconfig:"K_SINK"`
	LogLevel string `envconfig:"MS_LOG_LEVEL" default:"info"`
	// EventStreamLen is about how many events each tenant's event stream
	// keeps for GET /api/v1/stream/events to replay.
	EventStreamLen int64 `envconfig:"MS_EVENT_STREAM_LEN" default:"10000"`
}

// Logger returns a JSON slog logger at the configured level.
func (c Common) Logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// Publisher returns the event publisher for component and its closer:
// every event goes to its tenant's event stream in st and, when K_SINK is
// set, to the sink.
func (c Common) Publisher(component string, st *state.Store, log *slog.Logger) (events.Publisher, func(context.Context), error) {
	if c.EventStreamLen < 1 {
		return nil, nil, fmt.Errorf("MS_EVENT_STREAM_LEN must be at least 1 (events kept per tenant); got %d", c.EventStreamLen)
	}
	var next events.Publisher = events.Nop
	closeNext := func(context.Context) {}
	source := events.Source(component)
	if c.Sink != "" {
		s, err := events.NewSink(c.Sink, source, log)
		if err != nil {
			return nil, nil, fmt.Errorf("event sink %q: %w", c.Sink, err)
		}
		next, closeNext = s, func(ctx context.Context) { _ = s.Close(ctx) }
	}
	tee := events.NewTee(next, source, func(ctx context.Context, tenant string, e []byte) error {
		_, err := st.AppendEvent(ctx, tenant, e, c.EventStreamLen)
		return err
	}, log)
	return tee, func(ctx context.Context) {
		_ = tee.Close(ctx)
		closeNext(ctx)
	}, nil
}

// Serve runs srv on ln until ctx ends, then shuts it down gracefully
// (in-flight requests get up to 10 s).
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Listen opens a TCP listener on ":port" or a full host:port.
func Listen(addr string) (net.Listener, error) {
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	return net.Listen("tcp", addr)
}

// Server is an http.Server with sane timeouts (no write timeout: console
// streams are long-lived). Its requests see httpapi.Draining closed when
// Shutdown begins, so long-lived streams end and the shutdown stays graceful.
func Server(h http.Handler) *http.Server {
	draining := make(chan struct{})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return httpapi.WithDrain(context.Background(), draining) }}
	var once sync.Once // a second Shutdown runs the hook again
	srv.RegisterOnShutdown(func() { once.Do(func() { close(draining) }) })
	return srv
}

// Run is every binary's main: it runs fn until SIGINT or SIGTERM, and exits
// with status 1 after logging fn's error.
func Run(name string, fn func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := fn(ctx); err != nil {
		stop()
		slog.Error(name, "err", err)
		os.Exit(1)
	}
}

// Function is what a function's handler package offers.
type Function interface {
	Routes() []httpapi.Route
	Events(ctx context.Context) (http.Handler, error)
	Health(ctx context.Context) (map[string]any, error)
}

// ServeFunction serves fn the way Knative runs it (FunctionRoutes) behind
// a's authentication and audit log (see Guard; POST / and /health are open).
func ServeFunction(ctx context.Context, port string, fn Function, a *auth.Authenticator, log *slog.Logger) error {
	routes, err := FunctionRoutes(ctx, fn)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	httpapi.Mount(mux, routes...)
	ln, err := Listen(port)
	if err != nil {
		return err
	}
	log.Info("serving", "addr", ln.Addr().String())
	return Serve(ctx, Server(httpapi.Middleware(log, metrics.Middleware(mux)(Guard(a, mux)))), ln)
}

// Security is the authentication and audit configuration (MS_AUTH,
// MS_JWT_*, MS_SESSION_TOKEN_SECRET, MS_BOOTSTRAP_API_KEY, MS_METRICS_AUTH,
// MS_AUDIT_MAX_ENTRIES) of every binary that serves the API.
type Security struct {
	auth.Config
}

// Authenticator builds the authenticator on rdb (API keys and the audit
// stream live there) and installs the bootstrap key. distributed requires a
// shared MS_SESSION_TOKEN_SECRET.
func (s Security) Authenticator(ctx context.Context, st *state.Store, distributed bool, log *slog.Logger) (*auth.Authenticator, error) {
	return st.Authenticator(ctx, auth.Options{Config: s.Config, Log: log, Distributed: distributed})
}

// FunctionRoutes are what a function serves in its own Service: its REST
// routes, the CloudEvents receiver at POST /, GET /health and GET /metrics.
func FunctionRoutes(ctx context.Context, fn Function) ([]httpapi.Route, error) {
	ev, err := fn.Events(ctx)
	if err != nil {
		return nil, err
	}
	return append(fn.Routes(),
		httpapi.Route{Method: http.MethodPost, Pattern: "/{$}", Scope: httpapi.ScopePublic, Handler: ev.ServeHTTP},
		httpapi.Route{Method: http.MethodGet, Pattern: "/health", Scope: httpapi.ScopePublic, Handler: func(w http.ResponseWriter, r *http.Request) {
			v, err := fn.Health(r.Context())
			if err != nil {
				err = httpapi.Unavailable("%v", err)
			}
			httpapi.Reply(w, r, http.StatusOK, v, err)
		}},
		MetricsRoute()), nil
}

// Guard mounts the admin API (keys) and GET /api/v1/audit on mux and
// returns mux behind a: every route but /health, an open /metrics and the
// in-cluster CloudEvents ingress (POST /) needs a credential with the
// route's scope, and mutating calls, stream attaches and refusals are
// audited. Every binary serving the API goes through it.
func Guard(a *auth.Authenticator, mux *http.ServeMux) http.Handler {
	httpapi.Mount(mux, a.Routes()...)
	return a.Middleware(mux)
}

// MetricsRoute is GET /metrics: admin, unless MS_METRICS_AUTH=false opens it
// (the authenticator decides).
func MetricsRoute() httpapi.Route {
	return httpapi.Route{Method: http.MethodGet, Pattern: "/metrics", Scope: httpapi.ScopeAdmin, Handler: metrics.Handler().ServeHTTP}
}

// Distributed is what every binary of the distributed form reads: logging,
// the event sink, Redis and the S3 bucket.
type Distributed struct {
	Common
	S3
	RedisURL string `envconfig:"MS_REDIS_URL" required:"true"`
}

// Services are the connected backing services of a distributed binary.
type Services struct {
	Log       *slog.Logger
	State     *state.Store
	Blobs     *blob.S3
	Publisher events.Publisher
	closePub  func(context.Context)
}

// Open connects Redis, the bucket and the event sink for component (also
// its log component and event source); Close releases them.
func (d Distributed) Open(ctx context.Context, component string) (*Services, error) {
	log := d.Logger().With("component", component)
	st, err := state.Open(ctx, d.RedisURL)
	if err != nil {
		return nil, err
	}
	blobs, err := d.S3.Blob(ctx)
	if err != nil {
		st.Close()
		return nil, err
	}
	pub, closePub, err := d.Publisher(component, st, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	return &Services{Log: log, State: st, Blobs: blobs, Publisher: pub, closePub: closePub}, nil
}

// Close drains the event sink and closes Redis.
func (s *Services) Close() {
	s.closePub(context.Background())
	s.State.Close()
}
