package board

import (
	"errors"
	"testing"

	"github.com/machineserver/machineserver/shared/httpapi"
	"github.com/machineserver/machineserver/shared/model"
)

// FuzzBoardConfig feeds arbitrary JSON through the board_config decoder and
// the resolver: it must answer with a board or an error the API turns into
// a 4xx, never panic.
func FuzzBoardConfig(f *testing.F) {
	for _, s := range []string{
		`{"processor":{"model":"cortex-m3","frequency":72000000},"memory":{"flash":{"base":134217728,"size":131072},"ram":{"base":536870912,"size":20480}}}`,
		`{"board":"netduino2"}`,
		`{"board":"mps2-an385","peripherals":["uart"]}`,
		`{"processor":{"model":"cortex-m4"},"memory":{"flash":{"base":0,"size":18446744073709551615},"ram":{"base":18446744073709551615,"size":1}}}`,
		`{"processor":{"model":""},"memory":null}`,
		`{"board":"x","processor":{"model":"cortex-m3"}}`,
		`[]`, `null`, `{"memory":{"flash":{}}}`,
	} {
		f.Add([]byte(s))
	}
	names := make([]string, 0, len(Known))
	cpus := []string{"cortex-m0", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-a9"}
	for _, k := range Known {
		names = append(names, k.Name)
	}
	be := Build("7.2.0", "qemu-system-arm", names, cpus, nil).Backends[0]
	f.Fuzz(func(t *testing.T, data []byte) {
		var cfg model.BoardConfig
		if err := httpapi.DecodeBytes(data, &cfg); err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) || he.Status >= 500 {
				t.Fatalf("decode error is not a 4xx: %v", err)
			}
			return
		}
		b, err := be.Resolve(cfg)
		if err == nil && b.Name == "" {
			t.Fatalf("resolved %s to a board without a name", data)
		}
	})
}
