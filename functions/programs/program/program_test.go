package program

import (
	"context"
	"errors"
	"github.com/machineserver/machineserver/shared/testenv"
	"log/slog"
	"testing"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/fail"
	"github.com/machineserver/machineserver/shared/state"
)

// The use cases know no transport: only the adapters in
// functions/programs/handler may speak HTTP.
func TestNoTransportImports(t *testing.T) { testenv.NoTransport(t) }

func TestParseWatches(t *testing.T) {
	ws, err := ParseWatches("fw, ci-uploads/acme/=acme ,")
	if err != nil || len(ws) != 2 || ws[0] != (Watch{Bucket: "fw", Tenant: "default"}) || ws[1] != (Watch{Bucket: "ci-uploads", Prefix: "acme/", Tenant: "acme"}) {
		t.Fatalf("%+v %v", ws, err)
	}
	if _, err := ParseWatches("/x"); err == nil {
		t.Fatal("an entry without a bucket was accepted")
	}
}

// Refusals are domain errors of the kind that says what went wrong, with
// no HTTP status attached.
func TestDomainErrors(t *testing.T) {
	st, err := state.OpenEmbedded(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	svc := New(Deps{State: st, Blobs: blobs, Publisher: events.Nop, MaxUpload: 8, Log: slog.New(slog.DiscardHandler)})
	acme := auth.WithPrincipal(t.Context(), auth.Principal{Tenant: "acme"})
	other := auth.WithPrincipal(t.Context(), auth.Principal{Tenant: "other"})
	p, err := svc.Store(acme, Upload{Name: "x", Format: "bin", Data: []byte{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	_, getErr := svc.Get(other, p.ID)
	_, listErr := svc.List(acme, 0, 10)
	_, notifyErr := svc.Notify(acme, []byte(`{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"fwb"},"object":{"key":"a.elf"}}}]}`))
	for _, tc := range []struct {
		name string
		err  error
		kind fail.Kind
	}{
		{"no name", storeErr(acme, svc, Upload{Format: "bin", Data: []byte{1}}), fail.KindInvalid},
		{"too large", storeErr(acme, svc, Upload{Name: "x", Format: "bin", Data: make([]byte, 9)}), fail.KindTooLarge},
		{"bad format", storeErr(acme, svc, Upload{Name: "x", Format: "srec", Data: []byte{1}}), fail.KindUnprocessable},
		{"another tenant's", getErr, fail.KindNotFound},
		{"page 0", listErr, fail.KindInvalid},
		{"unwatched bucket", notifyErr, fail.KindUnprocessable},
	} {
		var fe *fail.Error
		if !errors.As(tc.err, &fe) || fe.Kind != tc.kind {
			t.Errorf("%s: got %v, want a %s domain error", tc.name, tc.err, tc.kind)
		}
	}
}

func storeErr(ctx context.Context, svc *Service, in Upload) error {
	_, err := svc.Store(ctx, in)
	return err
}
