package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
	"github.com/machineserver/machineserver/shared/model"
)

const programsUsage = `usage: msctl programs upload FILE [--name N] [--format elf|bin|hex] [--load-address A]
       msctl programs ls
       msctl programs rm ID...

upload validates and stores a firmware image and prints its id; the name
defaults to the file's, the format to the extension's (.elf/.axf, .hex/.ihex,
.bin; else the server detects it), a .bin loads at --load-address (default the
board's flash base). ls lists the programs, rm deletes them.
`

func programCommands() map[string]command {
	return map[string]command{
		"upload": runProgramUpload,
		"ls":     runProgramList,
		"rm":     runProgramRemove,
	}
}

// formatOf is the image format the file name says, or "" to let the
// server detect it.
func formatOf(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".elf", ".axf":
		return "elf"
	case ".hex", ".ihex":
		return "hex"
	case ".bin":
		return "bin"
	}
	return ""
}

// upload stores the image at path as a program.
func upload(ctx context.Context, c *client.Client, path, name, format, loadAddress string) (model.Program, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return model.Program{}, err
	}
	var p model.Program
	fields := map[string]string{"name": first(name, filepath.Base(path)), "format": first(format, formatOf(path)), "load_address": loadAddress}
	err = c.Upload(ctx, client.Path("programs"), fields, filepath.Base(path), data, &p)
	return p, err
}

func runProgramUpload(ctx context.Context, e *env, args []string) error {
	fs := e.flags("programs upload")
	name := fs.String("name", "", "")
	format := fs.String("format", "", "")
	load := fs.String("load-address", "", "")
	pos, c, err := e.connect(fs, args, programsUsage, 1, 1)
	if err != nil {
		return err
	}
	p, err := upload(ctx, c, pos[0], *name, *format, *load)
	if err != nil {
		return err
	}
	return e.emit(p, func(w io.Writer) { fmt.Fprintln(w, p.ID) })
}

func runProgramList(ctx context.Context, e *env, args []string) error {
	_, c, err := e.connect(e.flags("programs ls"), args, programsUsage, 0, 0)
	if err != nil {
		return err
	}
	ps, err := client.List[model.Program](ctx, c, client.Path("programs"), "programs")
	if err != nil {
		return err
	}
	return e.emit(nonNil(ps), func(w io.Writer) {
		rows := make([][]string, len(ps))
		for i, p := range ps {
			rows[i] = []string{p.ID, p.Name, string(p.Format), p.Arch, strconv.FormatInt(p.Size, 10), p.CreatedAt.Local().Format("2006-01-02 15:04:05")}
		}
		table(w, []string{"ID", "NAME", "FORMAT", "ARCH", "SIZE", "CREATED"}, rows)
	})
}

func runProgramRemove(ctx context.Context, e *env, args []string) error {
	return removeAll(ctx, e, args, "programs rm", programsUsage, func(id string) string { return client.Path("programs", id) })
}

// removeAll deletes each id's resource and prints the ids deleted.
func removeAll(ctx context.Context, e *env, args []string, name, usage string, path func(id string) string) error {
	ids, c, err := e.connect(e.flags(name), args, usage, 1, -1)
	if err != nil {
		return err
	}
	var done []string
	for _, id := range ids {
		if err := c.Do(ctx, http.MethodDelete, path(id), nil, nil); err != nil {
			if len(done) > 0 {
				e.emit(map[string][]string{"deleted": done}, nil)
			}
			return err
		}
		done = append(done, id)
		if !e.json() {
			fmt.Fprintln(e.out, "deleted", id)
		}
	}
	return e.emit(map[string][]string{"deleted": done}, nil)
}

// nonNil keeps an empty list a JSON [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
