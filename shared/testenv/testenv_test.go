package testenv_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/testenv"
)

func TestRedis(t *testing.T) {
	var url string
	t.Run("running", func(t *testing.T) {
		url = testenv.Redis(t)
		if !strings.HasPrefix(url, "redis://127.0.0.1:") || !strings.HasSuffix(url, "/0") {
			t.Fatalf("url = %q", url)
		}
		opts, err := redis.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(opts)
		defer c.Close()
		if err := c.Set(t.Context(), "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(t.Context(), "k").Result(); err != nil || v != "v" {
			t.Fatalf("GET k = %q, %v", v, err)
		}
	})
	// The subtest's cleanup has stopped the server.
	opts, _ := redis.ParseURL(url)
	if _, err := net.Dial("tcp", opts.Addr); err == nil {
		t.Errorf("redis at %s still answers after its test ended", opts.Addr)
	}
}

func TestStartRedis(t *testing.T) {
	url, stop, err := testenv.StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	stop()
	stop() // twice is harmless
	if _, err := net.Dial("tcp", opts.Addr); err == nil {
		t.Errorf("redis at %s still answers after stop", opts.Addr)
	}
}

func TestS3(t *testing.T) {
	var cfg blob.S3Config
	t.Run("running", func(t *testing.T) {
		cfg = testenv.S3(t)
		if !strings.HasPrefix(cfg.Bucket, "machineserver-test-") {
			t.Errorf("bucket = %q", cfg.Bucket)
		}
		s, err := blob.NewS3(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := blob.PutBytes(t.Context(), s, "a/b", []byte("x"), ""); err != nil {
			t.Fatal(err)
		}
		if b, err := blob.GetBytes(t.Context(), s, "a/b"); err != nil || string(b) != "x" {
			t.Fatalf("GetBytes = %q, %v", b, err)
		}
	})
	if _, err := net.Dial("tcp", cfg.Endpoint); err == nil {
		t.Errorf("versitygw at %s still answers after its test ended", cfg.Endpoint)
	}
}

func TestStartS3(t *testing.T) {
	cfg, stop, err := testenv.StartS3()
	if err != nil {
		t.Fatal(err)
	}
	s, err := blob.NewS3(t.Context(), cfg)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err != nil {
		stop()
		t.Fatal(err)
	}
	stop()
	if _, err := net.Dial("tcp", cfg.Endpoint); err == nil {
		t.Errorf("versitygw at %s still answers after stop", cfg.Endpoint)
	}
}

// TestS3Webhook checks that versitygw posts an object-created notification
// for an upload, which is what later upload-trigger tests build on.
func TestS3Webhook(t *testing.T) {
	keys := make(chan string, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			Records []struct {
				EventName string
				S3        struct {
					Object struct{ Key string }
				}
			}
		}
		if json.Unmarshal(body, &ev) == nil {
			for _, rec := range ev.Records {
				if strings.HasPrefix(rec.EventName, "s3:ObjectCreated:") {
					select {
					case keys <- rec.S3.Object.Key:
					default:
					}
				}
			}
		}
	}))
	t.Cleanup(hook.Close)

	cfg := testenv.S3(t, testenv.WithWebhook(hook.URL))
	s, err := blob.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := blob.PutBytes(t.Context(), s, "programs/p1/image", []byte("elf"), ""); err != nil {
		t.Fatal(err)
	}
	if k := <-keys; k != "programs/p1/image" {
		t.Errorf("notified key %q", k)
	}
}

func TestFreePort(t *testing.T) {
	port := testenv.FreePort(t)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("port %d is not free: %v", port, err)
	}
	l.Close()
}

func TestBinary(t *testing.T) {
	for _, name := range []string{"redis-server", "versitygw"} {
		p := testenv.Binary(t, name)
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			t.Errorf("Binary(%q) = %q: %v", name, p, err)
		}
	}
	_, err := testenv.FindBinary("machineserver-no-such-tool")
	if err == nil || !strings.Contains(err.Error(), "make test") {
		t.Errorf("missing binary: %v, want an error naming make test", err)
	}
	// versitygw is found in GOPATH/bin even when that is not on PATH.
	t.Setenv("PATH", filepath.Dir(mustLook(t, "go")))
	if p, err := testenv.FindBinary("versitygw"); err != nil {
		t.Errorf("versitygw without GOPATH/bin on PATH: %v", err)
	} else if filepath.Base(p) != "versitygw" {
		t.Errorf("FindBinary gave %q", p)
	}
}

func mustLook(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
