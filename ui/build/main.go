// Command build bundles the web UI into ui/dist for package ui to embed:
// `npm ci` (only when package-lock.json changed since the last install),
// then esbuild's Go API bundles src/main.js with its CSS, and index.html
// and the npm packages' licenses are copied beside them. Run from the
// repository root (the Makefile does, before building binaries); files are
// rewritten only when their content changes, so a second run is a no-op.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/evanw/esbuild/pkg/api"
)

func main() {
	dir := flag.String("dir", "ui", "the ui package directory")
	flag.Parse()
	if err := build(*dir); err != nil {
		slog.Error("ui build", "err", err)
		os.Exit(1)
	}
}

func build(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := npmCI(dir); err != nil {
		return err
	}
	res := api.Build(api.BuildOptions{
		AbsWorkingDir:       dir,
		EntryPointsAdvanced: []api.EntryPoint{{InputPath: "src/main.js", OutputPath: "app"}},
		Bundle:              true,
		Outdir:              "dist",
		Format:              api.FormatESModule,
		Target:              api.ES2022,
		MinifyWhitespace:    true,
		MinifyIdentifiers:   true,
		MinifySyntax:        true,
		LegalComments:       api.LegalCommentsEndOfFile,
		LogLevel:            api.LogLevelWarning,
	})
	if len(res.Errors) > 0 {
		var b strings.Builder
		for _, m := range api.FormatMessages(res.Errors, api.FormatMessagesOptions{Kind: api.ErrorMessage}) {
			b.WriteString(m)
		}
		return fmt.Errorf("esbuild:\n%s", b.String())
	}
	want := map[string][]byte{}
	for _, f := range res.OutputFiles {
		rel, err := filepath.Rel(filepath.Join(dir, "dist"), f.Path)
		if err != nil {
			return err
		}
		want[rel] = f.Contents
	}
	if want["index.html"], err = os.ReadFile(filepath.Join(dir, "src", "index.html")); err != nil {
		return err
	}
	if want["licenses.txt"], err = licenses(dir); err != nil {
		return err
	}
	return sync(filepath.Join(dir, "dist"), want)
}

// npmCI installs node_modules from package-lock.json unless the lockfile
// is the one installed last (its hash is kept in node_modules).
func npmCI(dir string) error {
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(lock)
	stamp := filepath.Join(dir, "node_modules", ".machineserver-lock-sha256")
	if b, err := os.ReadFile(stamp); err == nil && string(b) == hex.EncodeToString(sum[:]) {
		return nil
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return errors.New("npm is needed to fetch the UI's packages (Debian: apt-get install npm; make installs it)")
	}
	cmd := exec.Command("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm ci in %s: %w", dir, err)
	}
	return os.WriteFile(stamp, []byte(hex.EncodeToString(sum[:])), 0o644)
}

// licenses gathers the LICENSE of every package the lockfile installs, as
// their notices must travel with the bundled code.
func licenses(dir string) ([]byte, error) {
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
			License string `json:"license"`
		} `json:"packages"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return nil, fmt.Errorf("package-lock.json: %w", err)
	}
	var out bytes.Buffer
	out.WriteString("Third-party packages bundled into the Machine Server web UI.\n")
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for k := range lock.Packages {
			if k != "" && !yield(k) {
				return
			}
		}
	}) {
		text, err := os.ReadFile(filepath.Join(dir, p, "LICENSE"))
		if err != nil {
			return nil, fmt.Errorf("license of %s: %w", p, err)
		}
		fmt.Fprintf(&out, "\n== %s %s (%s) ==\n\n%s", strings.TrimPrefix(p, "node_modules/"), lock.Packages[p].Version, lock.Packages[p].License, text)
	}
	return out.Bytes(), nil
}

// sync makes dist hold exactly want (and its .keep), writing only files
// whose content differs.
func sync(dist string, want map[string][]byte) error {
	err := filepath.WalkDir(dist, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ".keep" {
			return err
		}
		rel, _ := filepath.Rel(dist, p)
		if _, ok := want[rel]; !ok {
			return os.Remove(p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for rel, b := range want {
		p := filepath.Join(dist, rel)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, b) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
