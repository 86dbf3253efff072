package state

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestEventStreams(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if o, n, err := s.EventBounds(ctx, "acme"); err != nil || o != "" || n != "" {
				t.Fatalf("empty stream: bounds %q %q %v", o, n, err)
			}
			var acme []string
			for i := range 3 {
				id, err := s.AppendEvent(ctx, "acme", []byte(fmt.Sprintf(`{"n":%d}`, i)), 100)
				if err != nil {
					t.Fatal(err)
				}
				acme = append(acme, id)
			}
			other, err := s.AppendEvent(ctx, "other", []byte(`{"n":"other"}`), 100)
			if err != nil {
				t.Fatal(err)
			}
			if o, n, err := s.EventBounds(ctx, "acme"); err != nil || o != acme[0] || n != acme[2] {
				t.Fatalf("bounds %q %q %v, want %q %q", o, n, err, acme[0], acme[2])
			}
			got, err := s.EventsAfter(ctx, "acme", acme[0], 10)
			if err != nil || len(got) != 2 || got[0].ID != acme[1] || string(got[1].Event) != `{"n":2}` {
				t.Fatalf("after %s: %+v %v", acme[0], got, err)
			}
			if got, _ := s.EventsAfter(ctx, "acme", "0-0", 1); len(got) != 1 || got[0].ID != acme[0] {
				t.Fatalf("first of all: %+v", got)
			}

			// Following both tenants: what is there comes at once, by tenant.
			byTenant, err := s.ReadEvents(ctx, map[string]string{"acme": acme[1], "other": "0-0"}, 10, time.Second)
			if err != nil || len(byTenant["acme"]) != 1 || byTenant["acme"][0].ID != acme[2] || len(byTenant["other"]) != 1 || byTenant["other"][0].ID != other {
				t.Fatalf("read: %+v %v", byTenant, err)
			}
			// Nothing new: the read waits, and an append wakes it.
			done := make(chan map[string][]StreamEvent, 1)
			go func() {
				m, err := s.ReadEvents(ctx, map[string]string{"acme": acme[2], "other": other}, 10, 10*time.Second)
				if err != nil {
					t.Error(err)
				}
				done <- m
			}()
			time.Sleep(50 * time.Millisecond)
			late, err := s.AppendEvent(ctx, "other", []byte(`{"n":"late"}`), 100)
			if err != nil {
				t.Fatal(err)
			}
			if m := <-done; len(m) != 1 || len(m["other"]) != 1 || m["other"][0].ID != late {
				t.Fatalf("woken read: %+v", m)
			}
			// Timing out is no error and nothing.
			if m, err := s.ReadEvents(ctx, map[string]string{"acme": acme[2]}, 10, 20*time.Millisecond); err != nil || len(m) != 0 {
				t.Fatalf("timed out read: %+v %v", m, err)
			}

			// The stream is capped: after many appends the oldest entries
			// are gone, and at least maxLen are kept.
			for i := range 300 {
				if _, err := s.AppendEvent(ctx, "capped", []byte(fmt.Sprint(i)), 10); err != nil {
					t.Fatal(err)
				}
			}
			kept, err := s.EventsAfter(ctx, "capped", "0-0", 1000)
			if err != nil || len(kept) < 10 || len(kept) >= 300 || string(kept[len(kept)-1].Event) != "299" {
				t.Fatalf("capped stream keeps %d entries (%v), want 10 to 299 ending with the newest", len(kept), err)
			}
		})
	}
}
