package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

// archBoard is a board of another architecture than ARM, as the REST API
// offers it.
type archBoard struct {
	board, processor, arch, debugger string
	// exits: the firmware can end its emulator with a status (semihosting).
	exits bool
	// snapshots: the probe finds the board restores truthfully.
	snapshots bool
}

var archBoards = []archBoard{
	{board: "sifive_e", processor: "rv32imac", arch: "riscv32", debugger: "gdb-multiarch", exits: true, snapshots: true},
	{board: "arduino-uno", processor: "atmega328p", arch: "avr", debugger: "avr-gdb"},
	{board: "arduino-mega", processor: "atmega1280", arch: "avr", debugger: "avr-gdb"},
}

// TestArchitectures runs the RISC-V and AVR boards through the REST API as
// a user would: upload (ELF, and HEX as Arduino users have it), create by
// board and by processor alone, console both ways, reset, GDB with the
// board's own debugger, a job with patterns, snapshots as the probe says,
// and an image of the wrong architecture refused with the boards it fits.
func TestArchitectures(t *testing.T) {
	pl := startStandalone(t, "MS_IDLE_TIMEOUT=0")
	var caps struct {
		Backends []struct {
			Boards []struct {
				Name, Arch, CPU, Debugger string
				Processors                []string
				Snapshots                 bool
				Features                  []string
				UARTs                     []struct{ Name string }
			}
		}
	}
	pl.must(t, 200, "GET", "/api/v1/capabilities", nil, &caps)
	armProg := uploadID(t, pl, "netduino2")
	for _, ab := range archBoards {
		t.Run(ab.board, func(t *testing.T) {
			found := false
			for _, b := range caps.Backends[0].Boards {
				if b.Name == ab.board {
					found = true
					if b.Arch != ab.arch || b.Debugger != ab.debugger || len(b.UARTs) == 0 {
						t.Errorf("capabilities of %s: %+v", ab.board, b)
					}
					if hasExit := strings.Contains(strings.Join(b.Features, ","), "semihosting-exit"); hasExit != ab.exits {
						t.Errorf("%s: semihosting-exit offered %v, want %v", ab.board, hasExit, ab.exits)
					}
				}
			}
			if !found {
				t.Fatalf("capabilities do not offer %s", ab.board)
			}
			archSession(t, pl, ab, armProg)
		})
	}
}

func archSession(t *testing.T, pl *platform, ab archBoard, armProg string) {
	prog := uploadID(t, pl, ab.board)
	var p map[string]any
	pl.must(t, 200, "GET", "/api/v1/programs/"+prog, nil, &p)
	if p["arch"] != ab.arch {
		t.Errorf("program arch %v, want %s", p["arch"], ab.arch)
	}

	// By processor alone: the MCU or ISA name picks the board.
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "by-cpu", "board_config": map[string]any{"processor": map[string]string{"model": ab.processor}}}, &s)
	if s["machine"] != ab.board && ab.board != "arduino-mega" {
		t.Errorf("processor %s resolved to %v, want %s", ab.processor, s["machine"], ab.board)
	}
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+s["id"].(string), nil, nil)

	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "arch", "board_config": map[string]string{"board": ab.board}}, &s)
	id := s["id"].(string)

	// An ARM image on this board is refused, naming the boards it fits.
	code, body := pl.call(t, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": armProg}, nil)
	if code != 422 || !strings.Contains(string(body), "is an ELF for arm") || !strings.Contains(string(body), "netduino2") {
		t.Errorf("ARM image on %s: %d %s", ab.board, code, body)
	}

	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	cs := pl.dialConsole(t, id, "")
	banner := "MS-TEST-FW " + ab.board + " ready"
	cs.waitFor(t, banner, 1)
	cs.send(t, "count\r")
	cs.waitFor(t, "count=", 1)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/reset", nil, nil)
	cs.waitFor(t, banner, 2)
	cs.c.CloseNow()

	// The board's own debugger: break, print, set a variable, continue.
	var info gdbInfo
	pl.must(t, 200, "GET", "/api/v1/sessions/"+id+"/gdb", nil, &info)
	if !strings.HasPrefix(info.Snippets.GDB, ab.debugger+" ") {
		t.Errorf("gdb snippet %q does not use %s", info.Snippets.GDB, ab.debugger)
	}
	gdbDone := make(chan string, 1)
	go func() {
		gdbDone <- archGDB(t, ab.debugger, firmware(t, ab.board, "fw.elf"), info.TCP,
			"break run_line", "continue", "print lines_seen", "set var lines_seen = 41", "finish", "print lines_seen", "delete", "detach")
	}()
	// run_line is reached once a line arrives: type one while gdb waits.
	time.Sleep(1500 * time.Millisecond)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("count\r"), nil)
	out := <-gdbDone
	if !strings.Contains(out, "Breakpoint 1, run_line") || !strings.Contains(out, "= 42") {
		t.Errorf("%s session over %s:\n%s", ab.board, ab.debugger, out)
	}
	pl.must(t, 200, "GET", "/api/v1/sessions/"+id, nil, &s)
	if s["state"] != "running" {
		t.Errorf("after detach the session is %v: %v", s["state"], s["reason"])
	}

	// Snapshots as the startup probe found them: a round trip, or a 422
	// that says why. sifive_e's 512 MiB flash window outgrows the default
	// memory limit when saved: refused with the limit to ask for, and a
	// session with that limit round-trips.
	code, body = pl.call(t, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "s"}, nil)
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	switch {
	case ab.snapshots && code == 422 && strings.Contains(string(body), "limits.memory_mb of at least"):
		pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "big", "board_config": map[string]string{"board": ab.board},
			"limits": map[string]int{"memory_mb": 1024}}, &s)
		id = s["id"].(string)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
		var snap map[string]any
		pl.must(t, 201, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "s"}, &snap)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/restore", map[string]string{"snapshot_id": snap["id"].(string)}, nil)
		_, _, next := pl.console(t, id, 0)
		pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("count\r"), nil)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if o, _, _ := pl.console(t, id, next); strings.Contains(o, "count=") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("restored %s does not answer on its console", ab.board)
			}
			time.Sleep(20 * time.Millisecond)
		}
		pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	case !ab.snapshots && code == 422 && strings.Contains(string(body), "cannot restore"):
	default:
		t.Errorf("snapshot of %s: %d %s", ab.board, code, body)
	}

	// A job decides from the console with patterns, like on ARM.
	var j model.Job
	pl.must(t, 201, "POST", "/api/v1/jobs", model.JobSpec{Name: "arch", ProgramID: prog, BoardConfig: model.BoardConfig{Board: ab.board},
		Timeout: "20s", UARTScript: []model.Step{{WaitFor: "ready"}, {Send: "count\r"}, {WaitFor: `count=\d+`}}}, &j)
	if j = pl.waitJob(t, j.ID); j.State != model.JobPassed {
		t.Errorf("job on %s: %s %s", ab.board, j.State, j.Reason)
	}
	if ab.exits {
		pl.must(t, 201, "POST", "/api/v1/jobs", model.JobSpec{Name: "exit", ProgramID: prog, BoardConfig: model.BoardConfig{Board: ab.board},
			Timeout: "20s", ExpectExitCode: intp(5), UARTScript: []model.Step{{WaitFor: "ready"}, {Send: "exit 5\r"}}}, &j)
		if j = pl.waitJob(t, j.ID); j.State != model.JobPassed || j.ExitCode == nil || *j.ExitCode != 5 {
			t.Errorf("exit job on %s: %s %s %v", ab.board, j.State, j.Reason, j.ExitCode)
		}
	}
	if ab.arch == "avr" {
		// Arduino users have HEX files: the same firmware as HEX boots too.
		code, body := pl.upload(t, "hex", "hex", firmware(t, ab.board, "fw.hex"), nil)
		if code != 201 {
			t.Fatalf("hex upload: %d %s", code, body)
		}
		pl.must(t, 201, "POST", "/api/v1/jobs", model.JobSpec{Name: "hex", ProgramID: decode(t, body)["id"].(string),
			BoardConfig: model.BoardConfig{Board: ab.board}, Timeout: "20s", PassPattern: "MS-TEST-FW " + ab.board + " ready"}, &j)
		if j = pl.waitJob(t, j.ID); j.State != model.JobPassed {
			t.Errorf("hex job on %s: %s %s", ab.board, j.State, j.Reason)
		}
	}
}

// archGDB runs debugger in batch mode on elf against addr.
func archGDB(t *testing.T, debugger, elf, addr string, cmds ...string) string {
	t.Helper()
	if _, err := exec.LookPath(debugger); err != nil {
		t.Fatalf("%s is not installed (make test installs it)", debugger)
	}
	args := []string{"-batch", "-nx", elf, "-ex", "set remotetimeout 20", "-ex", "target extended-remote " + addr}
	for _, c := range cmds {
		args = append(args, "-ex", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, debugger, args...).CombinedOutput()
	return string(out)
}
