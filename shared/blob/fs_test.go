package blob_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/blob"
)

func newFS(t *testing.T) (*blob.FS, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func TestFS(t *testing.T) {
	s, dir := newFS(t)
	if want := "fs:" + dir; s.Name() != want {
		t.Errorf("Name = %q, want %q", s.Name(), want)
	}
	testStore(t, s)
}

func TestFSKeysStayInside(t *testing.T) {
	s, dir := newFS(t)
	ctx := t.Context()
	for _, key := range []string{
		"", "/etc/passwd", "../escape", "a/../../escape", "a/./b", "a//b", "a/", "/",
		"..", ".", ".hidden", "a/.b", "a/.b.tmp-1", "a\\..\\b", "a\x00b",
	} {
		if err := blob.PutBytes(ctx, s, key, []byte("x"), ""); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Put(%q): %v, want ErrInvalidKey", key, err)
		}
		if _, _, err := s.Get(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Get(%q): %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Stat(%q): %v, want ErrInvalidKey", key, err)
		}
		if err := s.Remove(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Remove(%q): %v, want ErrInvalidKey", key, err)
		}
	}
	for _, prefix := range []string{"../", "../x", "/", "a//", "a/../"} {
		if _, err := s.List(ctx, prefix); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("List(%q): %v, want ErrInvalidKey", prefix, err)
		}
	}
	// Nothing was written next to the data directory either.
	entries, err := os.ReadDir(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "blobs" {
		t.Errorf("parent of the data dir holds %v", entries)
	}
}

func TestFSHiddenFilesNotListed(t *testing.T) {
	s, dir := newFS(t)
	ctx := t.Context()
	if err := blob.PutBytes(ctx, s, "programs/p1/image", []byte("elf"), "application/x-elf"); err != nil {
		t.Fatal(err)
	}
	// What a crash in the middle of a Put leaves behind.
	stray := filepath.Join(dir, "programs", "p1", ".image.tmp-123456")
	if err := os.WriteFile(stray, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if keys := keysOf(list); !slices.Equal(keys, []string{"programs/p1/image"}) {
		t.Errorf("List = %v, want only programs/p1/image", keys)
	}
}

func TestFSFilesAreTheObjects(t *testing.T) {
	s, dir := newFS(t)
	ctx := t.Context()
	if err := blob.PutBytes(ctx, s, "programs/p1/manifest.json", []byte(`{"id":"p1"}`), "application/json"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "programs", "p1", "manifest.json"))
	if err != nil || string(b) != `{"id":"p1"}` {
		t.Fatalf("file = %q, %v", b, err)
	}
	// A new FS on the same directory (a restart) sees the object and its type.
	again, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := again.Stat(ctx, "programs/p1/manifest.json")
	if err != nil || st.ContentType != "application/json" {
		t.Fatalf("after reopen Stat = %+v, %v", st, err)
	}
}

func TestFSReaderSurvivesOverwrite(t *testing.T) {
	s, _ := newFS(t)
	ctx := t.Context()
	if err := blob.PutBytes(ctx, s, "k", []byte("old contents"), ""); err != nil {
		t.Fatal(err)
	}
	rc, _, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := blob.PutBytes(ctx, s, "k", []byte("new"), ""); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || string(got) != "old contents" {
		t.Errorf("open reader read %q, %v; want the old contents whole", got, err)
	}
}

func TestFSRemovePrunesEmptyDirs(t *testing.T) {
	s, dir := newFS(t)
	ctx := t.Context()
	for _, k := range []string{"programs/p1/image", "programs/p1/manifest.json", "programs/p2/image"} {
		if err := blob.PutBytes(ctx, s, k, []byte("x"), "text/plain"); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"programs/p1/image", "programs/p1/manifest.json"} {
		if err := s.Remove(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "programs", "p1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("programs/p1 still there after its last object went: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "programs", "p2", "image")); err != nil {
		t.Errorf("programs/p2/image: %v", err)
	}
	// The data directory itself stays, even when empty.
	if err := s.Remove(ctx, "programs/p2/image"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after emptying the store: %v", err)
	}
}

func TestFSPingMissingDir(t *testing.T) {
	s, dir := newFS(t)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err == nil || !strings.Contains(err.Error(), "blobs") {
		t.Errorf("Ping with the directory gone: %v", err)
	}
}
