package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/blob"
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
}

// Logger returns a JSON slog logger at the configured level.
func (c Common) Logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// Publisher returns the event publisher for component and its closer.
func (c Common) Publisher(component string, log *slog.Logger) (events.Publisher, func(context.Context), error) {
	if c.Sink == "" {
		return events.Nop, func(context.Context) {}, nil
	}
	s, err := events.NewSink(c.Sink, events.Source(component), log)
	if err != nil {
		return nil, nil, fmt.Errorf("event sink %q: %w", c.Sink, err)
	}
	return s, func(ctx context.Context) { _ = s.Close(ctx) }, nil
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
// streams are long-lived).
func Server(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
}
