package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/testenv"
)

// TestPlacementByBoard runs two runners that offer different boards (one
// with only qemu-system-arm, one with qemu-system-avr too): an AVR board
// is refused while no runner offers it, then is placed on the runner that
// does, and an ARM board still runs.
func TestPlacementByBoard(t *testing.T) {
	pl := startDistributed(t, "MS_QEMU_BINARIES=qemu-system-arm")
	avr := uploadID(t, pl, "arduino-uno")
	code, body := pl.call(t, "POST", "/api/v1/sessions", map[string]any{"name": "avr", "board_config": map[string]string{"board": "arduino-uno"}}, nil)
	if code != 422 || !strings.Contains(string(body), "arduino-uno") {
		t.Fatalf("AVR board with only an ARM runner: %d %s", code, body)
	}

	env := addedEnv(pl.procs[len(pl.procs)-1])
	port := testenv.FreePort(t)
	for i, kv := range env {
		switch {
		case strings.HasPrefix(kv, "PORT="):
			env[i] = fmt.Sprintf("PORT=%d", port)
		case strings.HasPrefix(kv, "MS_RUNNER_ID="):
			env[i] = "MS_RUNNER_ID=runner-avr"
		case strings.HasPrefix(kv, "MS_RUNNER_DIR="):
			env[i] = "MS_RUNNER_DIR=" + shortDir(t, "msra")
		case strings.HasPrefix(kv, "MS_RUNNER_SOCKET_DIR="):
			// Its own: a runner reaps what it finds in its socket directory.
			env[i] = "MS_RUNNER_SOCKET_DIR=" + shortDir(t, "msrs")
		case strings.HasPrefix(kv, "MS_QEMU_BINARIES="):
			env[i] = "MS_QEMU_BINARIES=qemu-system-arm,qemu-system-avr"
		}
	}
	second := startProc(t, "runner", env)
	t.Cleanup(second.stop)
	waitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d", port), second)

	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "avr", "board_config": map[string]string{"board": "arduino-uno"}}, &s)
	if s["runner_id"] != "runner-avr" || s["backend"] != "qemu" {
		t.Fatalf("AVR session placed on %v (backend %v), want runner-avr", s["runner_id"], s["backend"])
	}
	id := s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": avr}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	cs := pl.dialConsole(t, id, "")
	cs.waitFor(t, "MS-TEST-FW arduino-uno ready", 1)
	cs.c.CloseNow()
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)

	arm := uploadID(t, pl, "netduino2")
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "arm", "board_config": map[string]string{"board": "netduino2"}}, &s)
	id = s["id"].(string)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": arm}, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
	cs = pl.dialConsole(t, id, "")
	cs.waitFor(t, "MS-TEST-FW netduino2 ready", 1)
	cs.c.CloseNow()
	pl.must(t, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
}
