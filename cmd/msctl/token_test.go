package main

import (
	"testing"

	"github.com/machineserver/machineserver/cmd/msctl/internal/client"
)

// API keys go with their own scheme; JWTs and session tokens as bearer.
func TestAuthorization(t *testing.T) {
	for tok, want := range map[string]string{
		"ms_abc_0123456789abcdef0123456789abcdef": "ApiKey ms_abc_0123456789abcdef0123456789abcdef",
		"eyJhbGciOiJIUzI1NiJ9.e30.sig":            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig",
		"secret":                                  "Bearer secret",
	} {
		if got := client.Authorization(tok); got != want {
			t.Errorf("%q: %q, want %q", tok, got, want)
		}
	}
}
