package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCrash runs a firmware built for another board, which crashes QEMU, on
// both forms of the platform.
func TestCrash(t *testing.T) {
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) { crashes(t, form.start(t)) })
	}
}

// crashView is what these tests read of a session.
type crashView struct {
	ID          string    `json:"id"`
	State       string    `json:"state"`
	Reason      string    `json:"reason"`
	EmulatorLog []string  `json:"emulator_log"`
	Warnings    []string  `json:"warnings"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// crashes: mps2-an385's image fits netduino2's memory map (its code at 0 is
// in the flash alias), so loading it only warns; booted, its stack is
// outside netduino2's RAM, the CPU locks up and QEMU aborts. Each power on
// answers with the session, which ends in error with QEMU's own words.
func crashes(t *testing.T, pl *platform) {
	good, wrong := uploadID(t, pl, "netduino2"), uploadID(t, pl, "mps2-an385")
	var created crashView
	pl.must(t, 201, "POST", "/api/v1/sessions", `{"name":"crash","board_config":{"board":"netduino2"}}`, &created)
	path := "/api/v1/sessions/" + created.ID
	// Each answer decodes into a fresh value: omitted fields are empty.
	call := func(method, sub string, body any) (s crashView) {
		t.Helper()
		pl.must(t, 200, method, path+sub, body, &s)
		return s
	}
	s := call("POST", "/program", map[string]string{"program_id": good})
	if s.Warnings != nil {
		t.Fatalf("netduino2's own image: warnings %q", s.Warnings)
	}
	s = call("POST", "/program", map[string]string{"program_id": wrong})
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "initial stack pointer 0x20400000 is outside netduino2's RAM") {
		t.Fatalf("mps2-an385's image on netduino2: warnings %q", s.Warnings)
	}

	// The first power on cold-starts or takes the spare prelaunched at
	// load, the second the spare prelaunched after the crash.
	for range 2 {
		s = call("POST", "/poweron", nil)
		t.Logf("power on answered %s", s.State)
		switch s.State {
		case "error":
		case "running":
			// QEMU answered cont before its CPU locked up: the session
			// turns to error when the emulator's end is recorded.
			pl.waitState(t, s.ID, "error")
			s = call("GET", "", nil)
		default:
			t.Fatalf("power on answered %+v", s)
		}
		if !strings.HasPrefix(s.Reason, "emulator killed by signal aborted: qemu: fatal: Lockup: can't escalate 3 to HardFault") ||
			len(s.EmulatorLog) < 2 || s.EmulatorLog[0] != strings.TrimPrefix(s.Reason, "emulator killed by signal aborted: ") ||
			!slices.ContainsFunc(s.EmulatorLog, func(l string) bool { return strings.Contains(l, "R15=") }) {
			t.Fatalf("crashed session: reason %q, emulator_log %q", s.Reason, s.EmulatorLog)
		}
	}

	// The halted power on snippet works pasted as it is, with the key in
	// MS_API_KEY; halted, the guest has not run, so nothing crashes.
	var info struct {
		Snippets struct {
			HaltedPowerOn string `json:"halted_poweron"`
		} `json:"snippets"`
	}
	pl.must(t, 200, "GET", path+"/gdb", nil, &info)
	cmd := exec.Command("bash", "-c", info.Snippets.HaltedPowerOn)
	cmd.Env = append(os.Environ(), "MS_API_KEY="+apiKey)
	out, err := cmd.Output()
	s = crashView{}
	if err != nil || json.Unmarshal(out, &s) != nil || s.State != "running" || s.Reason != "" || s.EmulatorLog != nil {
		t.Fatalf("%s: %v %s", info.Snippets.HaltedPowerOn, err, out)
	}

	before := s.UpdatedAt
	s = call("POST", "/reset", nil)
	if s.State != "running" || !s.UpdatedAt.After(before) {
		t.Fatalf("reset: %+v, updated_at before %v", s, before)
	}
	call("POST", "/poweroff", nil)
	if s = call("POST", "/program", map[string]string{"program_id": good}); s.Warnings != nil {
		t.Fatalf("warnings kept after loading netduino2's own image: %q", s.Warnings)
	}
	pl.must(t, 204, "DELETE", path, nil, nil)
	if pids := emulators(pl.socketDir + "/" + s.ID); len(pids) != 0 {
		t.Fatalf("emulators left after delete: %v", pids)
	}
}
