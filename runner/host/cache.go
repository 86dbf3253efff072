package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// fetch returns a local path of the program, downloading it into the cache
// (keyed by sha256, verified) on first use.
func (r *Runner) fetch(ctx context.Context, p runnerapi.Program) (string, error) {
	return r.fetchBlob(ctx, "program "+p.ID, p.BlobKey, p.SHA256, string(p.Format))
}

// fetchBlob returns a local copy of an artifact, cached by sha256. The
// checksum is verified before the file is used, so a corrupted blob never
// reaches the emulator.
func (r *Runner) fetchBlob(ctx context.Context, what, key, sum, ext string) (string, error) {
	if len(sum) != 64 || key == "" {
		return "", httpapi.BadRequest("%s needs a blob key and a sha256", what)
	}
	path := filepath.Join(r.cfg.Dir, "cache", sum+"."+ext)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	r.fetchMu.Lock()
	defer r.fetchMu.Unlock()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	rc, _, err := r.blobs.Get(ctx, key)
	if errors.Is(err, blob.ErrNotFound) {
		return "", httpapi.Unprocessable("%s is gone from the blob store", what)
	}
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", what, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fetch-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), rc); err != nil {
		tmp.Close()
		return "", fmt.Errorf("fetch %s: %w", what, err)
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return "", httpapi.Unprocessable("%s is corrupted: its sha256 is %s but its manifest says %s; refused before the emulator saw it", what, got, sum)
	}
	return path, os.Rename(tmp.Name(), path)
}

// cacheState keeps a saved state in the runner's cache under its sha256,
// so a restore on this runner needs no download, and returns its path ("" if
// it could not be written: the blob store still has it).
func (r *Runner) cacheState(b []byte, sum string) string {
	dir := filepath.Join(r.cfg.Dir, "cache")
	f, err := os.CreateTemp(dir, ".snap-*")
	if err != nil {
		return ""
	}
	defer os.Remove(f.Name())
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	path := filepath.Join(dir, sum+".state")
	if err != nil || os.Rename(f.Name(), path) != nil {
		return ""
	}
	return path
}
