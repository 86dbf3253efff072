package blob

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when a key does not exist.
var ErrNotFound = errors.New("blob: not found")

// Info describes a stored object.
type Info struct {
	Key         string
	Size        int64
	ETag        string
	ContentType string
	Modified    time.Time
	// Metadata holds S3 user metadata (x-amz-meta-*) when the backend has
	// any; FS never sets it.
	Metadata map[string]string
}

// Store is an artifact store.
type Store interface {
	// Put stores r under key atomically: readers see the old object or the
	// whole new one, never a partial write. size -1 means unknown.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error
	// Get opens the object; the caller closes it. A missing key gives an
	// error wrapping ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	Stat(ctx context.Context, key string) (Info, error)
	// List returns every object whose key starts with prefix (a plain string
	// prefix, not only a directory), sorted by key.
	List(ctx context.Context, prefix string) ([]Info, error)
	// Remove deletes key; a missing key is not an error.
	Remove(ctx context.Context, key string) error
	// Ping checks that the store is reachable, for /health.
	Ping(ctx context.Context) error
	// Name says what backs the store, for /health: "fs:/path" or
	// "s3://endpoint/bucket".
	Name() string
}

// GetBytes reads a whole object into memory.
func GetBytes(ctx context.Context, s Store, key string) ([]byte, error) {
	rc, _, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("blob: read %s: %w", key, err)
	}
	return b, nil
}

// PutBytes stores b under key.
func PutBytes(ctx context.Context, s Store, key string, b []byte, contentType string) error {
	return s.Put(ctx, key, bytes.NewReader(b), int64(len(b)), contentType)
}

// Manifests decodes every "<prefix>.../manifest.json" object into a T and
// passes it to fn: how an index is rebuilt from the artifacts' own
// manifests. An undecodable manifest goes to bad instead (it is skipped);
// an error from the store or from fn stops the walk.
func Manifests[T any](ctx context.Context, s Store, prefix string, fn func(T) error, bad func(key string, err error)) error {
	objs, err := s.List(ctx, prefix)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/manifest.json") {
			continue
		}
		b, err := GetBytes(ctx, s, o.Key)
		if err != nil {
			return err
		}
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			bad(o.Key, err)
			continue
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}
