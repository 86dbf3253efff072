package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/machineserver/machineserver/shared/fail"
)

func TestAsErrorMapsDomainErrors(t *testing.T) {
	board := fail.Unprocessable("no board fits")
	board.Code, board.Details = "no_matching_board", []string{"netduino2"}
	for _, tc := range []struct {
		err           error
		status        int
		code, msg     string
		isNotFound    bool
		isUnavailable bool
	}{
		{fail.Invalid("name is required"), 400, "invalid_argument", "name is required", false, false},
		{fmt.Errorf("load: %w", fail.NotFound("session %s not found", "s1")), 404, "not_found", "session s1 not found", true, false},
		{fail.Conflict("busy"), 409, "conflict", "busy", false, false},
		{board, 422, "no_matching_board", "no board fits", false, false},
		{fail.Unavailable("no runner"), 503, "unavailable", "no runner", false, true},
		{fail.TooLarge("big"), 413, "too_large", "big", false, false},
		{fail.Forbidden("no"), 403, "forbidden", "no", false, false},
		{NotFound("already HTTP"), 404, "not_found", "already HTTP", false, false},
	} {
		e := AsError(tc.err)
		if e == nil || e.Status != tc.status || e.Code != tc.code || e.Message != tc.msg {
			t.Errorf("%v: %+v, want %d %s %q", tc.err, e, tc.status, tc.code, tc.msg)
		}
		if errors.Is(tc.err, fail.ErrNotFound) != tc.isNotFound || errors.Is(tc.err, fail.ErrUnavailable) != tc.isUnavailable {
			t.Errorf("%v: errors.Is with the sentinels is wrong", tc.err)
		}
	}
	if e := AsError(errors.New("disk on fire")); e != nil {
		t.Errorf("an internal error mapped to %+v", e)
	}
}

func TestMountRefusesRouteWithoutScope(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a route without a scope was mounted")
		}
	}()
	Mount(http.NewServeMux(), Route{Method: http.MethodGet, Pattern: "/x", Handler: func(http.ResponseWriter, *http.Request) {}})
}
