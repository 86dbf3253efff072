package fwimage

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/shared/model"
)

func parseErr(f model.Format, data []byte) error {
	_, err := Parse(f, data, nil)
	return err
}

func isValidationError(err error) bool {
	var ve *Error
	return errors.As(err, &ve)
}

func containsAny(s string, subs ...string) bool {
	return slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(s, sub) })
}

// wantError checks that err is an *Error with exactly the message want.
func wantError(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want error %q", want)
	}
	if !isValidationError(err) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if err.Error() != want {
		t.Fatalf("error\n got %q\nwant %q", err.Error(), want)
	}
}

func wantSegments(t *testing.T, got, want []model.Segment) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("segments = %s, want %s", fmtSegments(got), fmtSegments(want))
	}
}

func fmtSegments(segs []model.Segment) string {
	parts := make([]string, len(segs))
	for i, s := range segs {
		parts[i] = fmt.Sprintf("0x%X+0x%X", s.Addr, s.Size)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
