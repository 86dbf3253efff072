package events

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

var (
	// ErrUnknownType is returned for an event type the catalog lacks.
	ErrUnknownType = errors.New("unknown event type")
	// ErrClosed is returned by Publish after Close.
	ErrClosed = errors.New("event sink is closed")
)

// Publisher publishes notifications. Publish must not block on delivery:
// callers publish from request handlers and the emulator's exit watcher.
type Publisher interface {
	Publish(ctx context.Context, eventType, subject string, data any) error
}

// TenantExtension is the extension attribute that names the tenant an
// event belongs to; it is the same attribute auth.EventContext reads, so a
// function that receives the event through the Broker acts for that tenant.
const TenantExtension = "tenant"

type tenantKey struct{}

// WithTenant returns ctx for publishing events of a resource tenant owns:
// the sink sets the TenantExtension attribute on them. Publish events of
// tenant-owned resources this way, or receivers act for the default tenant.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// TenantOf is the tenant WithTenant put in ctx, "" if none.
func TenantOf(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}

// Nop discards events; it is the publisher when K_SINK is unset.
var Nop Publisher = nop{}

type nop struct{}

func (nop) Publish(context.Context, string, string, any) error { return nil }

// New builds an event with a random id, the current time and data as JSON.
// For a catalog type, data must be the catalog's payload type (or a pointer
// to it), so a producer cannot publish a payload its schema does not
// describe. Types outside the catalog are built as given.
func New(source, eventType, subject string, data any) (cloudevents.Event, error) {
	if s, ok := Lookup(eventType); ok && data != nil {
		want, got := reflect.TypeOf(s.Payload), reflect.TypeOf(data)
		if got.Kind() == reflect.Pointer {
			got = got.Elem()
		}
		if got != want {
			return cloudevents.Event{}, fmt.Errorf("events: %s carries %v, not %v", eventType, want, got)
		}
	}
	e := cloudevents.NewEvent()
	e.SetID(newID())
	e.SetSource(source)
	e.SetType(eventType)
	e.SetTime(time.Now().UTC())
	if subject != "" {
		e.SetSubject(subject)
	}
	if data != nil {
		if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
			return cloudevents.Event{}, fmt.Errorf("events: %s data: %w", eventType, err)
		}
	}
	if err := e.Validate(); err != nil {
		return cloudevents.Event{}, fmt.Errorf("events: %w", err)
	}
	return e, nil
}

// newID returns a random (version 4) UUID.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
