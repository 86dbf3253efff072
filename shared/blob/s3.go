package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says how to reach the bucket.
type S3Config struct {
	Endpoint  string // host:port, no scheme
	AccessKey string
	SecretKey string
	Bucket    string
	Region    string
	Secure    bool // https
}

// S3 keeps objects in one bucket of an S3-compatible service.
type S3 struct {
	client *minio.Client
	bucket string
	name   string
}

var _ Store = (*S3)(nil)

// NewS3 connects and creates the bucket if it does not exist.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.Secure,
		Region: cfg.Region,
		// Path-style works with any endpoint (IPs, versitygw, in-cluster
		// service names); virtual-host style needs wildcard DNS.
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, fmt.Errorf("blob: s3 %s: %w", cfg.Endpoint, err)
	}
	s := &S3{client: client, bucket: cfg.Bucket, name: "s3://" + cfg.Endpoint + "/" + cfg.Bucket}
	exists, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("blob: %s: %w", s.name, err)
	}
	if exists {
		return s, nil
	}
	if err := client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
		// Another replica may have created it since we looked.
		code := minio.ToErrorResponse(err).Code
		if code != minio.BucketAlreadyOwnedByYou && code != minio.BucketAlreadyExists {
			return nil, fmt.Errorf("blob: create bucket %s: %w", s.name, err)
		}
	}
	return s, nil
}

// Name returns "s3://endpoint/bucket".
func (s *S3) Name() string { return s.name }

// Ping checks that the bucket answers.
func (s *S3) Ping(ctx context.Context) error {
	exists, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("blob: %s: %w", s.name, err)
	}
	if !exists {
		return fmt.Errorf("blob: %s: bucket is gone", s.name)
	}
	return nil
}

// Put uploads r; S3 makes a PUT visible only once complete. With size -1
// minio-go buffers parts in memory (multipart above its part size).
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	if contentType == "" {
		contentType = defaultContentType
	}
	if size < 0 {
		// minio-go turns an unknown size into a multipart upload with 16 MiB
		// part buffers (three requests); our artifacts are small enough to
		// buffer and send as one PUT.
		b, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("blob: put %s: %w", key, err)
		}
		r, size = bytes.NewReader(b), int64(len(b))
	}
	// Over plain HTTP minio-go would sign every 64 KiB chunk of the body
	// (about 1 ms per 300 KB, on both ends, in every snapshot save); over TLS
	// it never signs bodies, and this does the same over HTTP. Programs and
	// snapshot states are checked against their sha256 when read.
	_, err := s.client.PutObject(ctx, s.bucket, key, r, size, minio.PutObjectOptions{ContentType: contentType, DisableContentSha256: true})
	if err != nil {
		return fmt.Errorf("blob: put %s: %w", key, err)
	}
	return nil
}

// Get opens the object. minio-go opens lazily, so the Stat here is what
// turns a missing key into ErrNotFound before the caller starts reading.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, Info{}, s.err(key, err)
	}
	oi, err := obj.Stat()
	if err != nil {
		obj.Close()
		return nil, Info{}, s.err(key, err)
	}
	return obj, objectInfo(oi), nil
}

// Stat describes key.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	oi, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.err(key, err)
	}
	return objectInfo(oi), nil
}

// List lists recursively. Listings carry no content type or user metadata;
// Stat a key for those.
func (s *S3) List(ctx context.Context, prefix string) ([]Info, error) {
	var out []Info
	for oi := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			return nil, fmt.Errorf("blob: list %q: %w", prefix, oi.Err)
		}
		out = append(out, objectInfo(oi))
	}
	// S3 already sorts by UTF-8 bytes; sorting again costs little and does
	// not depend on every S3 implementation getting it right.
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Remove deletes key; a missing key is not an error.
func (s *S3) Remove(ctx context.Context, key string) error {
	err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err != nil && !errors.Is(s.err(key, err), ErrNotFound) {
		return fmt.Errorf("blob: remove %s: %w", key, err)
	}
	return nil
}

// PresignedGet returns a URL that lets its holder download key for ttl
// without credentials.
func (s *S3) PresignedGet(ctx context.Context, key string, ttl time.Duration) (*url.URL, error) {
	u, err := s.client.PresignedGetObject(ctx, s.bucket, key, ttl, nil)
	if err != nil {
		return nil, fmt.Errorf("blob: presign get %s: %w", key, err)
	}
	return u, nil
}

// PresignedPut returns a URL that lets its holder upload key (HTTP PUT) for
// ttl without credentials.
func (s *S3) PresignedPut(ctx context.Context, key string, ttl time.Duration) (*url.URL, error) {
	u, err := s.client.PresignedPutObject(ctx, s.bucket, key, ttl)
	if err != nil {
		return nil, fmt.Errorf("blob: presign put %s: %w", key, err)
	}
	return u, nil
}

// err maps minio's missing-object answers to ErrNotFound.
func (s *S3) err(key string, err error) error {
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return fmt.Errorf("%w: %s: %w", ErrNotFound, key, err)
	}
	return fmt.Errorf("blob: %s: %w", key, err)
}

func objectInfo(oi minio.ObjectInfo) Info {
	info := Info{
		Key:         oi.Key,
		Size:        oi.Size,
		ETag:        oi.ETag,
		ContentType: oi.ContentType,
		Modified:    oi.LastModified,
	}
	if len(oi.UserMetadata) > 0 {
		info.Metadata = map[string]string(oi.UserMetadata)
	}
	return info
}
