package blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/machineserver/machineserver/shared/blob"
)

// testStore is the conformance suite every Store must pass. Each subtest uses
// its own key prefix, so they share one store.
func testStore(t *testing.T, s blob.Store) {
	ctx := t.Context()

	t.Run("PutGetStat", func(t *testing.T) {
		data := []byte("hello, firmware")
		if err := s.Put(ctx, "pgs/a/b", bytes.NewReader(data), int64(len(data)), "text/plain"); err != nil {
			t.Fatal(err)
		}
		rc, info, err := s.Get(ctx, "pgs/a/b")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("Get = %q, want %q", got, data)
		}
		checkInfo(t, info, "pgs/a/b", int64(len(data)), "text/plain")
		st, err := s.Stat(ctx, "pgs/a/b")
		if err != nil {
			t.Fatal(err)
		}
		checkInfo(t, st, "pgs/a/b", int64(len(data)), "text/plain")
		if st.ETag != info.ETag {
			t.Errorf("Stat ETag %q, Get ETag %q", st.ETag, info.ETag)
		}
	})

	t.Run("DefaultContentType", func(t *testing.T) {
		if err := blob.PutBytes(ctx, s, "dct/x", []byte("x"), ""); err != nil {
			t.Fatal(err)
		}
		st, err := s.Stat(ctx, "dct/x")
		if err != nil {
			t.Fatal(err)
		}
		if st.ContentType != "application/octet-stream" {
			t.Errorf("ContentType = %q, want application/octet-stream", st.ContentType)
		}
	})

	t.Run("Empty", func(t *testing.T) {
		if err := blob.PutBytes(ctx, s, "empty/x", nil, "application/octet-stream"); err != nil {
			t.Fatal(err)
		}
		got, err := blob.GetBytes(ctx, s, "empty/x")
		if err != nil || len(got) != 0 {
			t.Fatalf("GetBytes = %q, %v; want empty", got, err)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		if _, _, err := s.Get(ctx, "nf/missing"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Get missing: %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ctx, "nf/missing"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat missing: %v, want ErrNotFound", err)
		}
		if _, err := blob.GetBytes(ctx, s, "nf/missing"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("GetBytes missing: %v, want ErrNotFound", err)
		}
		// A key prefix is not an object.
		if err := blob.PutBytes(ctx, s, "nf/dir/x", []byte("x"), ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, "nf/dir"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat of a prefix: %v, want ErrNotFound", err)
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		if err := blob.PutBytes(ctx, s, "ow/k", []byte("one"), "text/plain"); err != nil {
			t.Fatal(err)
		}
		first, err := s.Stat(ctx, "ow/k")
		if err != nil {
			t.Fatal(err)
		}
		if err := blob.PutBytes(ctx, s, "ow/k", []byte("two"), "application/json"); err != nil {
			t.Fatal(err)
		}
		rc, info, err := s.Get(ctx, "ow/k")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if string(got) != "two" {
			t.Errorf("after overwrite Get = %q, want two", got)
		}
		checkInfo(t, info, "ow/k", 3, "application/json")
		if info.ETag == first.ETag {
			t.Errorf("ETag %q did not change on overwrite", info.ETag)
		}
		list, err := s.List(ctx, "ow/")
		if err != nil {
			t.Fatal(err)
		}
		if keys := keysOf(list); !slices.Equal(keys, []string{"ow/k"}) {
			t.Errorf("List after overwrite = %v", keys)
		}
	})

	t.Run("List", func(t *testing.T) {
		for _, k := range []string{"ls/b/1", "ls/a/2", "ls/ab/1", "ls/a/1", "ls/a/sub/deep", "lsx/1"} {
			if err := blob.PutBytes(ctx, s, k, []byte(k), "text/plain"); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			prefix string
			want   []string
		}{
			{"ls/a/", []string{"ls/a/1", "ls/a/2", "ls/a/sub/deep"}},
			{"ls/a", []string{"ls/a/1", "ls/a/2", "ls/a/sub/deep", "ls/ab/1"}},
			{"ls/", []string{"ls/a/1", "ls/a/2", "ls/a/sub/deep", "ls/ab/1", "ls/b/1"}},
			{"ls", []string{"ls/a/1", "ls/a/2", "ls/a/sub/deep", "ls/ab/1", "ls/b/1", "lsx/1"}},
			{"ls/a/1", []string{"ls/a/1"}},
			{"ls/zzz/", nil},
			{"ls/zzz", nil},
			{"ls/a/1/", nil}, // through an object, as if it were a directory
		} {
			list, err := s.List(ctx, tc.prefix)
			if err != nil {
				t.Fatalf("List(%q): %v", tc.prefix, err)
			}
			if keys := keysOf(list); !slices.Equal(keys, tc.want) {
				t.Errorf("List(%q) = %v, want %v", tc.prefix, keys, tc.want)
			}
			for _, info := range list {
				if info.Size != int64(len(info.Key)) || info.ETag == "" || info.Modified.IsZero() {
					t.Errorf("List(%q): %+v", tc.prefix, info)
				}
			}
		}
		all, err := s.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.IsSortedFunc(all, func(a, b blob.Info) int { return strings.Compare(a.Key, b.Key) }) {
			t.Errorf("List(\"\") not sorted: %v", keysOf(all))
		}
		if !slices.Contains(keysOf(all), "ls/a/sub/deep") {
			t.Errorf("List(\"\") misses ls/a/sub/deep: %v", keysOf(all))
		}
	})

	t.Run("Remove", func(t *testing.T) {
		for _, k := range []string{"rm/a/x", "rm/a/y"} {
			if err := blob.PutBytes(ctx, s, k, []byte("x"), ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Remove(ctx, "rm/a/x"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, "rm/a/x"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat after Remove: %v, want ErrNotFound", err)
		}
		list, err := s.List(ctx, "rm/")
		if err != nil {
			t.Fatal(err)
		}
		if keys := keysOf(list); !slices.Equal(keys, []string{"rm/a/y"}) {
			t.Errorf("List after Remove = %v", keys)
		}
		for _, k := range []string{"rm/a/x", "rm/never", "rm/a/y", "rm/a/y"} {
			if err := s.Remove(ctx, k); err != nil {
				t.Errorf("Remove(%q): %v", k, err)
			}
		}
		list, err = s.List(ctx, "rm/")
		if err != nil || len(list) != 0 {
			t.Errorf("List after removing all = %v, %v", keysOf(list), err)
		}
		// The key's place is free again.
		if err := blob.PutBytes(ctx, s, "rm/a/x", []byte("again"), ""); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Large", func(t *testing.T) {
		data := make([]byte, 5<<20+123)
		rand.Read(data)
		for _, size := range []int64{int64(len(data)), -1} {
			key := fmt.Sprintf("large/size%d", size)
			if err := s.Put(ctx, key, bytes.NewReader(data), size, "application/octet-stream"); err != nil {
				t.Fatalf("Put size %d: %v", size, err)
			}
			got, err := blob.GetBytes(ctx, s, key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("size %d: got %d bytes back, want the %d put", size, len(got), len(data))
			}
			st, err := s.Stat(ctx, key)
			if err != nil || st.Size != int64(len(data)) {
				t.Fatalf("Stat = %+v, %v", st, err)
			}
		}
	})

	t.Run("ShortReader", func(t *testing.T) {
		// The reader ends before the promised size: the Put fails and no
		// partial object appears.
		err := s.Put(ctx, "short/x", strings.NewReader("12345"), 10, "text/plain")
		if err == nil {
			t.Fatal("Put with a short reader succeeded")
		}
		if _, err := s.Stat(ctx, "short/x"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat after failed Put: %v, want ErrNotFound", err)
		}
	})

	t.Run("ConcurrentPuts", func(t *testing.T) {
		const n = 16
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				key := fmt.Sprintf("conc/%02d/obj", i)
				data := bytes.Repeat([]byte{byte(i)}, 64<<10)
				errs <- s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), "")
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		list, err := s.List(ctx, "conc/")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != n {
			t.Fatalf("List = %v, want %d objects", keysOf(list), n)
		}
		for i, info := range list {
			got, err := blob.GetBytes(ctx, s, info.Key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 64<<10)) {
				t.Errorf("%s has the wrong content", info.Key)
			}
		}
	})

	t.Run("Ping", func(t *testing.T) {
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if s.Name() == "" {
			t.Error("empty Name")
		}
	})

	t.Run("Canceled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := blob.PutBytes(cctx, s, "cancel/x", []byte("x"), ""); !errors.Is(err, context.Canceled) {
			t.Errorf("Put with canceled ctx: %v, want context.Canceled", err)
		}
	})
}

func checkInfo(t *testing.T, info blob.Info, key string, size int64, contentType string) {
	t.Helper()
	if info.Key != key || info.Size != size || info.ContentType != contentType {
		t.Errorf("Info = %+v, want key %q size %d type %q", info, key, size, contentType)
	}
	if info.ETag == "" || info.Modified.IsZero() {
		t.Errorf("Info %+v lacks ETag or Modified", info)
	}
}

func keysOf(list []blob.Info) []string {
	var keys []string
	for _, i := range list {
		keys = append(keys, i.Key)
	}
	return keys
}
