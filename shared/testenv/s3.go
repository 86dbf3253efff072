package testenv

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/blob"
)

// S3Option adjusts the versitygw that S3 starts.
type S3Option func(*s3Options)

type s3Options struct {
	webhook string
}

// WithWebhook makes versitygw POST bucket notifications (S3 event JSON) for
// every object event to url. versitygw POSTs a test event to url as it starts
// and refuses to start if nothing listens there, so start the receiver first.
func WithWebhook(url string) S3Option {
	return func(o *s3Options) { o.webhook = url }
}

// S3 starts versitygw with its posix backend in a temp directory and returns
// the config of a fresh, already created bucket "machineserver-test-<random>".
// The gateway is stopped when the test ends.
func S3(t testing.TB, opts ...S3Option) blob.S3Config {
	t.Helper()
	bin := Binary(t, "versitygw")
	p, cfg, err := start(func() (*proc, blob.S3Config, error) { return startS3(bin, opts) })
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cleanup(t, p)
	return cfg
}

// StartS3 is S3 for TestMain: the caller runs stop when done.
func StartS3(opts ...S3Option) (blob.S3Config, func(), error) {
	bin, err := FindBinary("versitygw")
	if err != nil {
		return blob.S3Config{}, nil, err
	}
	p, cfg, err := start(func() (*proc, blob.S3Config, error) { return startS3(bin, opts) })
	if err != nil {
		return blob.S3Config{}, nil, err
	}
	return cfg, p.stop, nil
}

func startS3(bin string, opts []S3Option) (*proc, blob.S3Config, error) {
	var o s3Options
	for _, opt := range opts {
		opt(&o)
	}
	port, err := freePort()
	if err != nil {
		return nil, blob.S3Config{}, err
	}
	dir, err := os.MkdirTemp("", "testenv-versitygw-")
	if err != nil {
		return nil, blob.S3Config{}, err
	}
	root := filepath.Join(dir, "root") // the posix backend: one directory per bucket
	if err := os.Mkdir(root, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, blob.S3Config{}, err
	}
	cfg := blob.S3Config{
		Endpoint:  net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		AccessKey: "testenv",
		SecretKey: randomHex(16),
		Bucket:    "machineserver-test-" + randomHex(6),
		Region:    "us-east-1",
	}
	args := []string{
		"--access", cfg.AccessKey, "--secret", cfg.SecretKey,
		"--port", cfg.Endpoint, "--region", cfg.Region,
		"--quiet", // no per-request log lines on stdout
	}
	if o.webhook != "" {
		args = append(args, "--event-webhook-url", o.webhook)
	}
	args = append(args, "posix", root)
	p, err := startProc("versitygw", bin, args, gatewayEnv(), dir)
	if err != nil {
		return nil, blob.S3Config{}, err
	}
	// NewS3 doubles as the readiness probe: it succeeds once the gateway
	// answers, and creates the bucket on the way.
	err = p.waitReady(func(ctx context.Context) error {
		_, err := blob.NewS3(ctx, cfg)
		return err
	})
	if err != nil {
		p.stop()
		return nil, blob.S3Config{}, err
	}
	return p, cfg, nil
}

// gatewayEnv is our environment without the variables versitygw reads as
// settings (VGW_*, ROOT_*, WEBHOOK, LOGFILE), so a developer's shell cannot
// change the gateway under test.
func gatewayEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "VGW_") || strings.HasPrefix(name, "ROOT_") || name == "WEBHOOK" || name == "LOGFILE" {
			continue
		}
		env = append(env, kv)
	}
	return env
}
