package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
)

const coverageUsage = `usage: msctl coverage SESSION [--format lcov|json|html|counts] [--all] [-o FILE]
       msctl coverage --report REPORT_ID [--format ...] [--all] [-o FILE]
       msctl coverage start|stop SESSION

Writes the session's coverage report so far (or a stored report: a job's, a
stopped window's, a merge's) to FILE, or to stdout: lcov (the default) opens in
genhtml, html is a zip. --all keeps every source file, not just the program's
own. start and stop open and close the session's coverage window (sessions
create --coverage opens it from the first power on); stop stores the report
and prints its id.
`

var coverageFormats = map[string]bool{"lcov": true, "json": true, "html": true, "counts": true}

func runCoverage(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && (args[0] == "start" || args[0] == "stop") {
		return runCoverageWindow(ctx, e, args[0], args[1:])
	}
	fs := e.flags("coverage")
	format := fs.String("format", "lcov", "")
	all := fs.Bool("all", false, "")
	out := fs.String("o", "", "")
	report := fs.String("report", "", "")
	pos, err := e.parse(fs, args, coverageUsage, 0, 1)
	if err != nil {
		return err
	}
	if (len(pos) == 1) == (*report != "") {
		return &usageError{"coverage needs a SESSION or --report REPORT_ID (one of them)", coverageUsage}
	}
	if !coverageFormats[*format] {
		return &usageError{fmt.Sprintf("--format %q: want lcov, json, html or counts", *format), coverageUsage}
	}
	if *out == "" && *format == "html" && isTerminal(e.out) {
		return &usageError{"--format html is a zip: give -o FILE", coverageUsage}
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	var path string
	if *report != "" {
		path = client.Path("coverage", "reports", *report)
	} else {
		path = client.Path("sessions", pos[0], "coverage")
	}
	q := url.Values{"format": {*format}}
	if *all {
		q.Set("include", "all")
	}
	data, err := c.Get(ctx, client.Query(path, q))
	if err != nil {
		return err
	}
	if *out == "" {
		_, err := e.out.Write(data)
		return err
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		return err
	}
	return e.emit(map[string]any{"file": *out, "format": *format, "bytes": len(data)}, nil)
}

func runCoverageWindow(ctx context.Context, e *env, action string, args []string) error {
	pos, c, err := e.connect(e.flags("coverage "+action), args, coverageUsage, 1, 1)
	if err != nil {
		return err
	}
	var out map[string]any
	if err := c.Do(ctx, http.MethodPost, client.Path("sessions", pos[0], "coverage", action), nil, &out); err != nil {
		return err
	}
	return e.emit(out, func(w io.Writer) {
		if action == "stop" {
			fmt.Fprintln(w, out["id"])
		}
	})
}
