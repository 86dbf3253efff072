package httpapi

import "context"

type drainKey struct{}

// WithDrain returns ctx carrying draining, a channel the server closes when
// it starts shutting down (config.Server does): use it as the server's base
// context.
func WithDrain(ctx context.Context, draining <-chan struct{}) context.Context {
	return context.WithValue(ctx, drainKey{}, draining)
}

// Draining is closed when the server serving the request whose context this
// is starts shutting down; nil (never ready) when the server did not say.
// A graceful shutdown waits for requests to end but never ends them, so
// streams that last (server-sent events) end themselves on it; hijacked
// WebSockets are not waited for, but may say goodbye.
func Draining(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(drainKey{}).(<-chan struct{})
	return ch
}
