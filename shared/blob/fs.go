package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ErrInvalidKey is returned (wrapped) by FS for a key that could escape the
// data directory or clash with the store's own hidden files.
var ErrInvalidKey = errors.New("blob: invalid key")

const defaultContentType = "application/octet-stream"

// FS keeps objects as files under a directory: key "a/b/c" is the file
// dir/a/b/c. Names starting with "." are the store's own: temp files being
// written and ".<name>.type" sidecars that hold an object's content type.
// Keys may therefore not have segments starting with ".".
type FS struct {
	dir string
}

var _ Store = (*FS)(nil)

// NewFS opens (creating it if needed) a store rooted at dir.
func NewFS(dir string) (*FS, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: data dir %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("blob: data dir: %w", err)
	}
	return &FS{dir: abs}, nil
}

// Name returns "fs:" and the absolute data directory.
func (f *FS) Name() string { return "fs:" + f.dir }

// Ping checks that the data directory is still there.
func (f *FS) Ping(ctx context.Context) error {
	st, err := os.Stat(f.dir)
	if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("blob: %s is not a directory", f.dir)
	}
	return nil
}

// Put writes to a temp file in the target directory and renames it into
// place, so readers see the old file or the whole new one. The content type
// sidecar is renamed in just before the data, so for an instant a reader can
// pair the new type with the old bytes; the bytes themselves are never torn.
func (f *FS) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	dir, base := filepath.Split(p)
	if size >= 0 {
		r = io.LimitReader(r, size)
	}
	data, n, err := writeTemp(dir, base, ctxReader{ctx, r}, true)
	if err != nil {
		return fmt.Errorf("blob: put %s: %w", key, err)
	}
	defer os.Remove(data) // fails harmlessly once renamed
	if size >= 0 && n != size {
		return fmt.Errorf("blob: put %s: got %d bytes, want %d: %w", key, n, size, io.ErrUnexpectedEOF)
	}
	if contentType == "" || contentType == defaultContentType {
		err = os.Remove(typePath(p))
		if isMissing(err) {
			err = nil
		}
	} else {
		var tp string
		// Not synced: after a crash the worst case is the default type,
		// and an fsync here would double the cost of every Put.
		tp, _, err = writeTemp(dir, base, strings.NewReader(contentType), false)
		if err == nil {
			if err = os.Rename(tp, typePath(p)); err != nil {
				os.Remove(tp)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("blob: put %s: content type: %w", key, err)
	}
	if err := os.Rename(data, p); err != nil {
		return fmt.Errorf("blob: put %s: %w", key, err)
	}
	return nil
}

// Get opens the file; an overwrite during the read does not disturb it,
// since the rename leaves the open file intact.
func (f *FS) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, Info{}, err
	}
	file, err := os.Open(p)
	if err != nil {
		return nil, Info{}, notFound(key, err)
	}
	st, err := file.Stat()
	if err == nil && st.IsDir() {
		err = fs.ErrNotExist
	}
	if err != nil {
		file.Close()
		return nil, Info{}, notFound(key, err)
	}
	return file, fileInfo(key, p, st), nil
}

// Stat describes key without opening it.
func (f *FS) Stat(ctx context.Context, key string) (Info, error) {
	p, err := f.path(key)
	if err != nil {
		return Info{}, err
	}
	st, err := os.Stat(p)
	if err == nil && st.IsDir() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return Info{}, notFound(key, err)
	}
	return fileInfo(key, p, st), nil
}

// List walks only the directory that holds the prefix's last segment, then
// filters by the string prefix.
func (f *FS) List(ctx context.Context, prefix string) ([]Info, error) {
	root := f.dir
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		if err := checkKey(prefix[:i]); err != nil {
			return nil, err
		}
		root = filepath.Join(f.dir, filepath.FromSlash(prefix[:i]))
	}
	var out []Info
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if isMissing(err) { // removed while we walked, or never there
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(f.dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if !strings.HasPrefix(key+"/", prefix) {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		st, err := d.Info()
		if isMissing(err) {
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, fileInfo(key, p, st))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blob: list %q: %w", prefix, err)
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Remove deletes the file and its sidecar, then the directories it leaves
// empty, so deleted programs do not pile up empty directories.
func (f *FS) Remove(ctx context.Context, key string) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	if st, err := os.Lstat(p); err == nil && st.IsDir() {
		return nil // a key prefix, not an object
	}
	if err := os.Remove(p); err != nil && !isMissing(err) {
		return fmt.Errorf("blob: remove %s: %w", key, err)
	}
	if err := os.Remove(typePath(p)); err != nil && !isMissing(err) {
		return fmt.Errorf("blob: remove %s: %w", key, err)
	}
	for dir := filepath.Dir(p); dir != f.dir; dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break // not empty, or someone is writing into it
		}
	}
	return nil
}

// path maps a key to its file.
func (f *FS) path(key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	return filepath.Join(f.dir, filepath.FromSlash(key)), nil
}

// checkKey refuses keys that could leave the directory ("..", absolute,
// empty segments) and segments starting with ".", which are the store's own.
func checkKey(key string) error {
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || strings.HasPrefix(seg, ".") || strings.ContainsAny(seg, "\\\x00") {
			return fmt.Errorf("%w: %q", ErrInvalidKey, key)
		}
	}
	return nil
}

func typePath(p string) string {
	dir, base := filepath.Split(p)
	return filepath.Join(dir, "."+base+".type")
}

// writeTemp copies r into a new temp file in dir (synced if sync) and
// returns its name.
// The directory is created if needed; a concurrent Remove may prune it
// between MkdirAll and CreateTemp, hence the retry.
func writeTemp(dir, base string, r io.Reader, sync bool) (string, int64, error) {
	var tmp *os.File
	var err error
	for range 3 {
		if err = os.MkdirAll(dir, 0o755); err != nil {
			return "", 0, err
		}
		tmp, err = os.CreateTemp(dir, "."+base+".tmp-*")
		if !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return "", 0, err
	}
	n, err := io.Copy(tmp, r)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		// The kernel stamps files with a coarse clock (a jiffy); an explicit
		// nanosecond mtime keeps the mtime-size ETag distinct across quick
		// overwrites of the same size.
		now := time.Now()
		err = os.Chtimes(tmp.Name(), now, now)
	}
	if err == nil && sync {
		err = tmp.Sync() // artifacts must survive a crash, not just a restart
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", 0, err
	}
	return tmp.Name(), n, nil
}

func fileInfo(key, p string, st fs.FileInfo) Info {
	ct := defaultContentType
	if b, err := os.ReadFile(typePath(p)); err == nil {
		ct = string(b)
	}
	return Info{
		Key:         key,
		Size:        st.Size(),
		ETag:        fmt.Sprintf("%x-%x", st.ModTime().UnixNano(), st.Size()),
		ContentType: ct,
		Modified:    st.ModTime(),
	}
}

// isMissing is true for a missing file and for a path through a regular
// file ("a/b" when "a" is a file), which is just as absent.
func isMissing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func notFound(key string, err error) error {
	if isMissing(err) {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return fmt.Errorf("blob: %s: %w", key, err)
}

// ctxReader stops a long copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
