package auth

import (
	"fmt"
	"log/slog"
	"strings"
)

// Secret is a configuration value that never prints: logging a Config, or
// formatting it with %v, shows only whether a secret is set.
type Secret string

// String redacts.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue redacts.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText redacts, so JSON dumps of a config do not leak either.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Config is the authentication and audit configuration every API-serving
// binary embeds in its envconfig Config.
type Config struct {
	// Mode is "on" (the default) or "off"; off serves everyone as an admin
	// of the default tenant and is logged as a warning at start.
	Mode          string   `envconfig:"MS_AUTH" default:"on"`
	JWTSecret     Secret   `envconfig:"MS_JWT_HS256_SECRET"`
	JWTPublicKeys []string `envconfig:"MS_JWT_PUBLIC_KEYS"`
	JWKSFile      string   `envconfig:"MS_JWT_JWKS_FILE"`
	JWTIssuer     string   `envconfig:"MS_JWT_ISSUER"`
	JWTAudience   string   `envconfig:"MS_JWT_AUDIENCE"`
	JWTAlgorithms []string `envconfig:"MS_JWT_ALGORITHMS"`
	TenantClaim   string   `envconfig:"MS_JWT_TENANT_CLAIM" default:"tenant"`
	// SessionTokenSecret signs session-scoped console and gdb tokens:
	// random per process when empty (standalone), required in the
	// distributed form so every replica accepts every replica's tokens.
	SessionTokenSecret Secret `envconfig:"MS_SESSION_TOKEN_SECRET"`
	// BootstrapKey (ms_<id>_<secret>) is installed as an admin key of the
	// default tenant at every start (idempotent).
	BootstrapKey Secret `envconfig:"MS_BOOTSTRAP_API_KEY"`
	// MetricsAuth protects /metrics (admin scope); it is open by default
	// for Prometheus scrapers inside the cluster.
	MetricsAuth     bool  `envconfig:"MS_METRICS_AUTH" default:"false"`
	AuditMaxEntries int64 `envconfig:"MS_AUDIT_MAX_ENTRIES" default:"100000"`
}

// Enabled reports whether requests are authenticated.
func (c Config) Enabled() bool { return c.Mode != "off" }

func (c Config) validate() error {
	switch c.Mode {
	case "on", "off", "":
	default:
		return fmt.Errorf("MS_AUTH must be on or off; got %q", c.Mode)
	}
	for _, a := range c.JWTAlgorithms {
		if strings.EqualFold(a, "none") {
			return fmt.Errorf("MS_JWT_ALGORITHMS: \"none\" is never allowed")
		}
	}
	return nil
}

// LogValue shows the configuration with secrets reduced to set/unset.
func (c Config) LogValue() slog.Value {
	set := func(s Secret) string {
		if s == "" {
			return "unset"
		}
		return "set"
	}
	return slog.GroupValue(
		slog.String("mode", c.Mode),
		slog.String("jwt_hs256_secret", set(c.JWTSecret)),
		slog.Any("jwt_public_keys", c.JWTPublicKeys),
		slog.String("jwt_jwks_file", c.JWKSFile),
		slog.String("jwt_issuer", c.JWTIssuer),
		slog.String("jwt_audience", c.JWTAudience),
		slog.Any("jwt_algorithms", c.JWTAlgorithms),
		slog.String("jwt_tenant_claim", c.TenantClaim),
		slog.String("session_token_secret", set(c.SessionTokenSecret)),
		slog.String("bootstrap_api_key", set(c.BootstrapKey)),
		slog.Bool("metrics_auth", c.MetricsAuth),
		slog.Int64("audit_max_entries", c.AuditMaxEntries),
	)
}

// String is LogValue for %v.
func (c Config) String() string { return c.LogValue().String() }
