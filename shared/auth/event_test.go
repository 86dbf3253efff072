package auth

import (
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
)

func eventWith(t *testing.T, ext map[string]any) event.Event {
	e := event.New()
	e.SetID("1")
	e.SetSource("test")
	e.SetType("io.machineserver.session.create.v1")
	for k, v := range ext {
		e.SetExtension(k, v)
	}
	return e
}
