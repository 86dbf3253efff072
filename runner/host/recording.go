package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/quota"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// recordingDir is where, inside a machine's directory, a recording is
// written (Record) or fetched to (Replay).
const recordingDir = "recording"

// taping is what an instance records into: the recording to finish when
// the machine ends, where the emulator writes it, and the console offset
// and time it started at.
type taping struct {
	rec   model.Recording
	dir   string
	from  int64
	began time.Time
}

// special says whether a start request needs a machine of its own: no
// spare, launched for another run, can record or replay this one.
func special(req runnerapi.StartRequest) bool { return req.Record != nil || req.Replay != nil }

// recordingDirs prepares the directories a recording or replay needs in
// the machine's directory dir, fetching a replay's files; it returns the
// emulator.Spec's Record and Replay.
func (r *Runner) recordingDirs(ctx context.Context, req runnerapi.StartRequest, dir string) (record, replay string, err error) {
	if !special(req) {
		return "", "", nil
	}
	d := filepath.Join(dir, recordingDir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", "", err
	}
	if req.Record != nil {
		return d, "", nil
	}
	rec := req.Replay
	if v := r.offered.Version; rec.EmulatorVersion != "" && rec.EmulatorVersion != v {
		return "", "", httpapi.Unprocessable("recording %s was made with %s %s; this runner has %s %s, which cannot replay it", rec.ID, r.offered.Name, rec.EmulatorVersion, r.offered.Name, v)
	}
	for _, f := range rec.Files {
		if f.Name == model.RecordingConsole {
			continue
		}
		if err := r.fetchTo(ctx, model.RecordingFileKey(rec.ID, f.Name), filepath.Join(d, f.Name), f.SHA256); err != nil {
			return "", "", fmt.Errorf("recording %s: %w", rec.ID, err)
		}
	}
	return "", d, nil
}

// fetchTo copies a blob to path, checking its sha256.
func (r *Runner) fetchTo(ctx context.Context, key, path, sum string) error {
	rc, _, err := r.blobs.Get(ctx, key)
	if errors.Is(err, blob.ErrNotFound) {
		return httpapi.Unprocessable("%s is gone from the blob store", key)
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("%s: sha256 %s, want %s", key, got, sum)
	}
	return nil
}

// storeRecording stores what a recording machine wrote, once it has
// ended, with the console's text, and marks the recording ready (or
// failed, saying why). It runs before the machine's directory is removed.
func (r *Runner) storeRecording(s *session, in *instance) {
	t := in.tape
	<-in.pumped
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	console, _, _ := s.ring.Read(t.from, 0)
	files, size, err := r.putRecording(ctx, t, console)
	now := time.Now().UTC()
	rec, uerr := r.state.UpdateRecording(ctx, t.rec.ID, func(x *model.Recording) error {
		x.EndedAt, x.Duration = &now, now.Sub(t.began).Round(time.Millisecond).String()
		x.ConsoleBytes = int64(len(console))
		if err != nil {
			x.State, x.Reason = model.RecordingFailed, err.Error()
			return nil
		}
		x.State, x.Files, x.Size = model.RecordingReady, files, size
		x.EmulatorVersion = r.offered.Version
		return nil
	})
	if uerr != nil {
		r.log.Error("recording not stored", "session", s.id, "recording", t.rec.ID, "err", uerr)
		return
	}
	r.log.Info("recording stored", "session", s.id, "recording", rec.ID, "state", rec.State, "bytes", rec.Size, "reason", rec.Reason)
	typ := events.TypeRecordingReady
	if rec.State == model.RecordingFailed {
		typ = events.TypeRecordingFailed
	}
	if err := r.pub.Publish(events.WithTenant(ctx, model.TenantOr(rec.Tenant)), typ, rec.ID, rec); err != nil {
		r.log.Warn("publish", "type", typ, "err", err)
	}
}

// putRecording uploads the recording's files and the console text,
// counting them against the tenant's storage quota first.
func (r *Runner) putRecording(ctx context.Context, t *taping, console []byte) ([]model.RecordingFile, int64, error) {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return nil, 0, err
	}
	if len(entries) == 0 {
		return nil, 0, errors.New("the emulator wrote no recording")
	}
	size := int64(len(console))
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			return nil, 0, err
		}
		size += fi.Size()
	}
	tenant := model.TenantOr(t.rec.Tenant)
	if err := r.cfg.Quota.Acquire(ctx, tenant, quota.Storage, quota.RecordingKey(t.rec.ID), size); err != nil {
		return nil, 0, fmt.Errorf("not stored: %w", err)
	}
	var files []model.RecordingFile
	put := func(name string, rd io.Reader, n int64) error {
		h := sha256.New()
		if err := r.blobs.Put(ctx, model.RecordingFileKey(t.rec.ID, name), io.TeeReader(rd, h), n, "application/octet-stream"); err != nil {
			return fmt.Errorf("store %s: %w", name, err)
		}
		files = append(files, model.RecordingFile{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
		return nil
	}
	for _, e := range entries {
		f, err := os.Open(filepath.Join(t.dir, e.Name()))
		if err != nil {
			return nil, 0, err
		}
		fi, _ := f.Stat()
		err = put(e.Name(), f, fi.Size())
		f.Close()
		if err != nil {
			return nil, 0, err
		}
	}
	if err := put(model.RecordingConsole, bytes.NewReader(console), int64(len(console))); err != nil {
		return nil, 0, err
	}
	return files, size, nil
}

// pacedInput writes input to a recording machine a byte at a time. QEMU
// 7.2 hands a recorded guest its input only at checkpoints, all that came
// since at once: bytes closer together than the checkpoints overrun a
// UART without a FIFO and are lost (docs/design.md). So the next byte goes
// once the console's next output is the byte's echo (a shell's: the guest
// has taken it), or after RecordInputGap otherwise: other output (a log
// line) says nothing about the byte.
func (r *Runner) pacedInput(s *session, c net.Conn, data []byte) error {
	for i := range data {
		end := s.ring.End()
		if _, err := c.Write(data[i : i+1]); err != nil {
			return httpapi.Conflict("session %s: console write failed: %v", s.id, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.RecordInputGap)
		if s.ring.Wait(ctx, end) == nil {
			if b, _, _ := s.ring.Read(end, 1); len(b) != 1 || b[0] != data[i] {
				<-ctx.Done()
			}
		}
		cancel()
	}
	return nil
}
