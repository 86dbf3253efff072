package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// badInput sends what users get wrong and checks each answer is a clear 4xx
// error JSON, that the server keeps serving, and that nothing stored changed.
func badInput(t *testing.T, pl *platform) {
	var before struct{ Total int }
	pl.must(t, 200, "GET", "/api/v1/programs", nil, &before)

	code, body := pl.upload(t, "good", "elf", firmware(t, "netduino2", "fw.elf"), nil)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	good := decode(t, body)["id"].(string)
	var s map[string]any
	pl.must(t, 201, "POST", "/api/v1/sessions", map[string]any{"name": "bad", "board_config": map[string]string{"board": "netduino2"}}, &s)
	sid := s["id"].(string)
	defer pl.must(t, 204, "DELETE", "/api/v1/sessions/"+sid, nil, nil)

	hex, _ := os.ReadFile(firmware(t, "netduino2", "fw.hex"))
	corruptHex := bytes.Replace(hex, []byte("\n:10"), []byte("\n:11"), 1)
	self, _ := os.ReadFile("/bin/true") // an x86-64 executable, small enough for the upload limit

	for _, c := range []struct {
		name     string
		do       func() (int, []byte)
		status   int
		contains string
	}{
		{"malformed json", func() (int, []byte) { return pl.call(t, "POST", "/api/v1/sessions", `{"name":`, nil) }, 400, "malformed JSON"},
		{"not json", func() (int, []byte) { return pl.call(t, "POST", "/api/v1/sessions", `hello`, nil) }, 400, "malformed JSON"},
		{"empty body", func() (int, []byte) { return pl.call(t, "POST", "/api/v1/sessions", ``, nil) }, 400, "empty"},
		{"unknown field", func() (int, []byte) {
			return pl.call(t, "POST", "/api/v1/sessions", `{"name":"x","board_config":{"board":"netduino2"},"colour":"red"}`, nil)
		}, 400, "colour"},
		{"wrong type", func() (int, []byte) {
			return pl.call(t, "POST", "/api/v1/sessions", `{"name":5,"board_config":{"board":"netduino2"}}`, nil)
		}, 400, "name"},
		{"unknown board", func() (int, []byte) {
			return pl.call(t, "POST", "/api/v1/sessions", `{"name":"x","board_config":{"board":"pdp11"}}`, nil)
		}, 422, "netduino2"},
		{"unknown backend", func() (int, []byte) {
			return pl.call(t, "POST", "/api/v1/sessions", `{"name":"x","backend":"bochs","board_config":{"board":"netduino2"}}`, nil)
		}, 422, "qemu"},
		{"no fitting board", func() (int, []byte) {
			return pl.call(t, "POST", "/api/v1/sessions", `{"name":"x","board_config":{"processor":{"model":"cortex-m3"},"memory":{"flash":{"base":134217728,"size":33554432},"ram":{"base":536870912,"size":20480}}}}`, nil)
		}, 422, "candidates"},
		{"unknown processor", func() (int, []byte) {
			return pl.call(t, "POST", "/api/v1/sessions", `{"name":"x","board_config":{"processor":{"model":"z80"},"memory":{"flash":{"base":0,"size":1024},"ram":{"base":536870912,"size":1024}}}}`, nil)
		}, 422, "z80"},
		{"missing name", func() (int, []byte) {
			return pl.call(t, "POST", "/api/v1/sessions", `{"board_config":{"board":"netduino2"}}`, nil)
		}, 400, "name"},
		{"bad page", func() (int, []byte) { return pl.call(t, "GET", "/api/v1/sessions?page=0", nil, nil) }, 400, "page"},
		{"bad page size", func() (int, []byte) { return pl.call(t, "GET", "/api/v1/sessions?page_size=1000", nil, nil) }, 400, "page_size"},
		{"huge upload", func() (int, []byte) {
			return pl.uploadBytes(t, "huge", "bin", "huge.bin", make([]byte, 17<<20), nil)
		}, 413, "limit"},
		{"non-ARM ELF", func() (int, []byte) { return pl.uploadBytes(t, "x86", "elf", "x86.elf", self, nil) }, 422, "ARM"},
		{"corrupt HEX", func() (int, []byte) { return pl.uploadBytes(t, "bad", "hex", "bad.hex", corruptHex, nil) }, 422, "line"},
		{"garbage as ELF", func() (int, []byte) {
			return pl.uploadBytes(t, "junk", "elf", "junk", []byte("not an elf at all"), nil)
		}, 422, "ELF"},
		{"unknown format", func() (int, []byte) { return pl.uploadBytes(t, "junk", "srec", "junk", []byte("S0"), nil) }, 422, "elf"},
		{"empty file", func() (int, []byte) { return pl.uploadBytes(t, "empty", "bin", "empty", nil, nil) }, 422, "empty"},
		{"bad load address", func() (int, []byte) {
			return pl.uploadBytes(t, "b", "bin", "b", []byte{1, 2, 3, 4}, map[string]string{"load_address": "nowhere"})
		}, 400, "load_address"},
		{"not multipart", func() (int, []byte) { return pl.call(t, "POST", "/api/v1/programs", `{"name":"x"}`, nil) }, 415, "multipart"},
		{"program into missing session", func() (int, []byte) {
			return pl.call(t, "POST", "/api/v1/sessions/0123456789abcdef/program", map[string]string{"program_id": good}, nil)
		}, 404, "not found"},
		{"missing program", func() (int, []byte) {
			return pl.call(t, "POST", "/api/v1/sessions/"+sid+"/program", map[string]string{"program_id": "0123456789abcdef"}, nil)
		}, 404, "not found"},
		{"bin outside memory", func() (int, []byte) {
			code, b := pl.uploadBytes(t, "far", "bin", "far.bin", make([]byte, 64), map[string]string{"load_address": "0x90000000"})
			if code != 201 {
				return code, b
			}
			return pl.call(t, "POST", "/api/v1/sessions/"+sid+"/program", map[string]string{"program_id": decode(t, b)["id"].(string)}, nil)
		}, 422, "outside"},
		{"poweron without program", func() (int, []byte) { return pl.call(t, "POST", "/api/v1/sessions/"+sid+"/poweron", nil, nil) }, 409, "no program"},
		{"reset when stopped", func() (int, []byte) { return pl.call(t, "POST", "/api/v1/sessions/"+sid+"/reset", nil, nil) }, 409, "not running"},
		{"poweroff when stopped", func() (int, []byte) { return pl.call(t, "POST", "/api/v1/sessions/"+sid+"/poweroff", nil, nil) }, 409, "not running"},
		{"double poweron", func() (int, []byte) {
			pl.must(t, 200, "POST", "/api/v1/sessions/"+sid+"/program", map[string]string{"program_id": good}, nil)
			pl.must(t, 200, "POST", "/api/v1/sessions/"+sid+"/poweron", nil, nil)
			return pl.call(t, "POST", "/api/v1/sessions/"+sid+"/poweron", nil, nil)
		}, 409, "already running"},
		{"bad halted", func() (int, []byte) {
			return pl.call(t, "POST", "/api/v1/sessions/"+sid+"/poweron?halted=maybe", nil, nil)
		}, 400, "halted"},
		{"bad console offset", func() (int, []byte) { return pl.call(t, "GET", "/api/v1/sessions/"+sid+"/console?offset=-5", nil, nil) }, 400, "offset"},
		{"delete program in use", func() (int, []byte) { return pl.call(t, "DELETE", "/api/v1/programs/"+good, nil, nil) }, 409, sid},
		{"missing program get", func() (int, []byte) { return pl.call(t, "GET", "/api/v1/programs/nope", nil, nil) }, 404, "not found"},
		{"console of missing session", func() (int, []byte) {
			return pl.call(t, "GET", "/api/v1/sessions/0123456789abcdef/stream/console", nil, nil)
		}, 404, "not found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := c.do()
			if code != c.status {
				t.Fatalf("status %d, want %d: %s", code, c.status, body)
			}
			var e apiError
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("not an error JSON: %s", body)
			}
			if !strings.Contains(e.Error.Message+string(e.Error.Details), c.contains) {
				t.Fatalf("message %q does not mention %q", e.Error.Message, c.contains)
			}
		})
	}

	// Still serving, and the store holds exactly what was accepted.
	var after struct{ Total int }
	pl.must(t, 200, "GET", "/api/v1/programs", nil, &after)
	if after.Total != before.Total+2 { // good, far
		t.Fatalf("programs before %d after %d", before.Total, after.Total)
	}
	pl.must(t, 200, "GET", "/api/v1/programs/"+good, nil, nil)
	pl.must(t, 200, "POST", "/api/v1/sessions/"+sid+"/poweroff", nil, nil)
}
