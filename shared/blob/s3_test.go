package blob_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/testenv"
)

func newS3(t *testing.T) (*blob.S3, blob.S3Config) {
	t.Helper()
	cfg := testenv.S3(t)
	s, err := blob.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, cfg
}

func TestS3(t *testing.T) {
	s, cfg := newS3(t)
	if want := "s3://" + cfg.Endpoint + "/" + cfg.Bucket; s.Name() != want {
		t.Errorf("Name = %q, want %q", s.Name(), want)
	}
	testStore(t, s)
}

func TestS3CreatesBucket(t *testing.T) {
	_, cfg := newS3(t)
	cfg.Bucket = "machineserver-fresh"
	s, err := blob.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Connecting again to the now existing bucket is fine too.
	if _, err := blob.NewS3(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
}

func TestS3Unreachable(t *testing.T) {
	cfg := blob.S3Config{
		Endpoint: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)), AccessKey: "a", SecretKey: "b",
		Bucket: "nobody-home", Region: "us-east-1",
	}
	if _, err := blob.NewS3(t.Context(), cfg); err == nil {
		t.Fatal("NewS3 against a closed port succeeded")
	}
}

func TestS3Presigned(t *testing.T) {
	s, _ := newS3(t)
	ctx := t.Context()

	put, err := s.PresignedPut(ctx, "presigned/up", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, put.String(), bytes.NewReader([]byte("uploaded without keys")))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("presigned PUT: %s", resp.Status)
	}

	get, err := s.PresignedGet(ctx, "presigned/up", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(get.String())
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "uploaded without keys" {
		t.Fatalf("presigned GET: %s %q %v", resp.Status, body, err)
	}

	// Without the signature the same URL is refused.
	get.RawQuery = ""
	resp, err = http.Get(get.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Error("unsigned GET succeeded")
	}
}
