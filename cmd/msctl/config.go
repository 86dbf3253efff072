package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
)

const defaultServer = "http://localhost:8080"

const loginUsage = `usage: msctl login [--server URL] [--key KEY]

Checks the API key against the server (GET /api/v1/quota) and stores both in
the user's config directory (machineserver/config.json, mode 0600), so later
commands need neither. Without --key (or $MS_API_KEY) the key is asked for on a
terminal, or read from the first line of stdin.
`

// config is what msctl login stores.
type config struct {
	Server string `json:"server,omitempty"`
	APIKey string `json:"api_key,omitempty"`
}

func configPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("config directory: %w", err)
	}
	return filepath.Join(dir, "machineserver", "config.json"), nil
}

// loadConfig reads the stored config; none stored is an empty one.
func loadConfig() (config, error) {
	var c config
	p, err := configPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w (run msctl login again)", p, err)
	}
	return c, nil
}

// saveConfig writes c readable by the user alone: it holds a secret. It
// replaces the file in one rename, so a crash never leaves half of it.
func saveConfig(c config) (string, error) {
	p, err := configPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	f, err := os.CreateTemp(filepath.Dir(p), ".config-*.json")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return p, os.Rename(f.Name(), p)
}

// credentials resolves the server and key: flag, environment, stored
// config, default.
func (e *env) credentials() (server, key string, err error) {
	server = first(e.server, os.Getenv("MS_SERVER"))
	key = first(e.key, os.Getenv("MS_API_KEY"), os.Getenv("MS_TOKEN"))
	if server == "" || key == "" {
		c, err := loadConfig()
		if err != nil {
			return "", "", err
		}
		server, key = first(server, c.Server, defaultServer), first(key, c.APIKey)
	}
	return server, key, nil
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func runLogin(ctx context.Context, e *env, args []string) error {
	fs := e.flags("login")
	if _, err := e.parse(fs, args, loginUsage, 0, 0); err != nil {
		return err
	}
	server, key, err := e.credentials()
	if err != nil {
		return err
	}
	if e.key == "" && os.Getenv("MS_API_KEY") == "" {
		if key, err = e.askKey(); err != nil {
			return err
		}
	}
	c, err := client.New(server, key)
	if err != nil {
		return &usageError{err.Error(), loginUsage}
	}
	var q struct {
		Tenant string `json:"tenant"`
	}
	if err := c.Do(ctx, http.MethodGet, client.Path("quota"), nil, &q); err != nil {
		return fmt.Errorf("login to %s: %w", server, err)
	}
	p, err := saveConfig(config{Server: server, APIKey: key})
	if err != nil {
		return fmt.Errorf("store the credentials: %w", err)
	}
	return e.emit(map[string]string{"server": server, "tenant": q.Tenant, "config": p}, func(w io.Writer) {
		fmt.Fprintf(w, "logged in to %s as tenant %s; stored in %s\n", server, q.Tenant, p)
	})
}

// askKey reads the key from a terminal without echo, or from stdin's first line.
func (e *env) askKey() (string, error) {
	var key string
	if f, ok := e.in.(*os.File); ok && isTerminal(f) {
		fmt.Fprint(e.err, "API key: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.err)
		if err != nil {
			return "", err
		}
		key = string(b)
	} else {
		line, err := bufio.NewReader(e.in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		key = line
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return "", &usageError{"no API key: give --key, set $MS_API_KEY or type it", loginUsage}
	}
	return key, nil
}
