// Command msctl is the Machine Server command line: sign in once, then
// manage programs, sessions, systems of linked boards (and their links'
// faults and captures), snapshots and recordings, attach to a console,
// tail the event stream, fetch coverage, run firmware to a verdict in CI
// (exit 0 passed, 1 failed, 42 timed out, as wokwi-cli), replay a recorded
// execution and tunnel gdb. It is a thin client of the REST and WebSocket
// API; every command can print its result as JSON for scripts.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
)

const usage = `usage: msctl [--server URL] [--key KEY] [--output text|json] COMMAND [ARGS]

Commands:
  login [--server URL] [--key KEY]     check the credentials and store them
  programs upload FILE [--name N] [--format elf|bin|hex] [--load-address A]
  programs ls | rm ID...
  sessions create --board B [--name N] [--program ID] [--coverage] [--record] [--poweron]
  sessions ls | get ID | rm ID... | poweron ID [--halted] | poweroff ID | reset ID
  console SESSION [--port uartN] [--linger DUR]
                                       the UART, two-way: a raw terminal (Ctrl-] leaves),
                                       or stdin to the UART and the UART to stdout in a pipe
  snapshots ls [SESSION] | create SESSION [--name N] [--description D]
  snapshots restore SESSION SNAPSHOT | fork SNAPSHOT [--count N] | rm SNAPSHOT...
  recordings ls | get RID | rm RID... | console RID
  systems create [FILE|-] [--poweron] | ls | get ID | rm ID...
  systems poweron ID | poweroff ID | reset ID
  systems link ID LINK [--down] [--loss P] [--corrupt P] [--delay DUR] [--clean]
  systems capture ID LINK [--after SEQ] [-o FILE]
                                       systems of linked boards; link shows or sets a
                                       link's faults, capture writes what crossed it
  replay RID|JOB_ID [--name N] [--halted] [--gdb ADDR]
                                       a session that re-runs a recording (or the one a
                                       job kept), powered on; --gdb then tunnels gdb to it
  coverage SESSION [--format lcov|json|html|counts] [--all] [-o FILE]
  events [--session ID] [--job ID] [--system ID] [--types PREFIX,...] [--after EVENT_ID]
  run FIRMWARE --board B [--expect TEXT] [--fail TEXT] [--timeout DUR] [--uart-script FILE]
      [--expect-exit-code N] [--coverage lcov.info] [--serial-log FILE]
  gdb SESSION [--listen ADDR]          a local port that tunnels gdb to the session

Credentials: the server is --server, else $MS_SERVER, else the one msctl login stored,
else http://localhost:8080; the key is --key (or --token), else $MS_API_KEY (or $MS_TOKEN),
else the stored one. msctl login stores both in the user's config directory
(machineserver/config.json, mode 0600).

--output json prints each result as JSON on stdout. Exit status: 0 success (run: passed),
1 an error or a failed run, 2 a usage error, 42 a run that timed out, 130 interrupted.
Run "msctl COMMAND --help" for a command's details.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	stop()
	os.Exit(code)
}

// stdio is the process's standard streams, replaced in tests.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// Exit statuses; a failed run is 1, like any error.
const (
	exitUsage       = 2
	exitTimeout     = 42
	exitInterrupted = 130
)

// usageError is a command line msctl cannot run: exit status 2, with the
// command's usage.
type usageError struct{ msg, usage string }

func (e *usageError) Error() string { return e.msg }

// exitError ends msctl with code after printing msg (when set); run uses
// it for its verdicts.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// errHelp is an asked-for usage: printed on stdout, exit status 0.
var errHelp = errors.New("help")

// run is msctl without the process: it returns the exit status.
func run(ctx context.Context, args []string, std stdio) int {
	e := &env{stdio: std}
	err := e.dispatch(ctx, args)
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(std.err, "msctl: %s\n\n%s", ue.msg, ue.usage)
		return exitUsage
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(std.err, "msctl:", ee.msg)
		}
		return ee.code
	case ctx.Err() != nil:
		fmt.Fprintln(std.err, "msctl: interrupted")
		return exitInterrupted
	}
	fmt.Fprintln(std.err, "msctl:", err)
	return 1
}

// env is what every command shares: the streams and the global flags.
type env struct {
	stdio
	server, key, output string
}

// command runs one command (or a group's subcommand) on its arguments.
type command func(ctx context.Context, e *env, args []string) error

func commands() map[string]command {
	return map[string]command{
		"login":      runLogin,
		"programs":   group(programsUsage, programCommands),
		"sessions":   group(sessionsUsage, sessionCommands),
		"snapshots":  group(snapshotsUsage, snapshotCommands),
		"recordings": group(recordingsUsage, recordingCommands),
		"systems":    group(systemsUsage, systemCommands),
		"replay":     runReplay,
		"console":    runConsole,
		"coverage":   runCoverage,
		"events":     runEvents,
		"run":        runRun,
		"gdb":        runGDB,
	}
}

func (e *env) dispatch(ctx context.Context, args []string) error {
	c, args, err := e.pick(args, usage, "command", commands)
	if err != nil {
		return err
	}
	return c(ctx, e, args)
}

// pick parses the global flags before a command word (a command, or a
// group's subcommand) and finds the command.
func (e *env) pick(args []string, usage, what string, cmds func() map[string]command) (command, []string, error) {
	fs := flag.NewFlagSet("msctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.globalFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, e.flagError(err, usage)
	}
	args = fs.Args()
	if len(args) == 0 {
		return nil, nil, &usageError{"missing " + what, usage}
	}
	if args[0] == "help" {
		fmt.Fprint(e.out, usage)
		return nil, nil, errHelp
	}
	c, ok := cmds()[args[0]]
	if !ok {
		return nil, nil, &usageError{fmt.Sprintf("unknown %s %q", what, args[0]), usage}
	}
	return c, args[1:], nil
}

// group dispatches a group's subcommands (programs ls, sessions create...).
func group(usage string, subs func() map[string]command) func(context.Context, *env, []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		c, args, err := e.pick(args, usage, "subcommand", subs)
		if err != nil {
			return err
		}
		return c(ctx, e, args)
	}
}

func (e *env) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&e.server, "server", e.server, "")
	fs.StringVar(&e.key, "key", e.key, "")
	fs.StringVar(&e.key, "token", e.key, "")
	fs.StringVar(&e.output, "output", e.output, "")
}

// flags is a command's flag set, with the global flags too, so they may
// come after the command.
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.globalFlags(fs)
	return fs
}

// parse parses flags placed before, between or after the positional
// arguments and checks their count: at least min, at most max (-1: any).
func (e *env) parse(fs *flag.FlagSet, args []string, usage string, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, e.flagError(err, usage)
		}
		if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if e.output != "" && e.output != "text" && e.output != "json" {
		return nil, &usageError{fmt.Sprintf("--output %q: want text or json", e.output), usage}
	}
	switch {
	case len(pos) < min:
		return nil, &usageError{fmt.Sprintf("%s needs %s", fs.Name(), argsWord(min, max)), usage}
	case max >= 0 && len(pos) > max:
		return nil, &usageError{fmt.Sprintf("%s takes %s, got %q", fs.Name(), argsWord(min, max), pos), usage}
	}
	return pos, nil
}

func argsWord(min, max int) string {
	switch {
	case max == 0:
		return "no arguments"
	case min == max && min == 1:
		return "exactly one argument"
	case min == max:
		return fmt.Sprintf("exactly %d arguments", min)
	case max < 0:
		return fmt.Sprintf("at least %d argument(s)", min)
	}
	return fmt.Sprintf("%d to %d arguments", min, max)
}

func (e *env) flagError(err error, usage string) error {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.out, usage)
		return errHelp
	}
	return &usageError{err.Error(), usage}
}

// connect is parse, then the API client, for the commands that need
// nothing else first.
func (e *env) connect(fs *flag.FlagSet, args []string, usage string, min, max int) ([]string, *client.Client, error) {
	pos, err := e.parse(fs, args, usage, min, max)
	if err != nil {
		return nil, nil, err
	}
	c, err := e.client()
	return pos, c, err
}

// client is the API client with the resolved server and credential.
func (e *env) client() (*client.Client, error) {
	server, key, err := e.credentials()
	if err != nil {
		return nil, err
	}
	return client.New(server, key)
}

func (e *env) json() bool { return e.output == "json" }

// emit prints v as JSON with --output json, else what text writes.
func (e *env) emit(v any, text func(w io.Writer)) error {
	if e.json() {
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	if text != nil {
		text(e.out)
	}
	return nil
}

// table prints rows under header, aligned.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// isTerminal says whether f is a terminal (os.Stdin and friends when not
// redirected); test streams never are.
func isTerminal(f any) bool {
	fd, ok := f.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(fd.Fd()))
}
