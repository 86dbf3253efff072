package config

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/httpapi"
)

// A request that lasts (an event stream) ends when Shutdown begins, so the
// shutdown stays graceful instead of waiting out its deadline.
func TestServerDrainsLongRequests(t *testing.T) {
	started, ended := make(chan struct{}), make(chan struct{})
	srv := Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		close(started)
		select {
		case <-httpapi.Draining(r.Context()):
		case <-r.Context().Done():
		}
		close(ended)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	resp, err := http.Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a long request open: %v", err)
	}
	<-ended
	if err := srv.Shutdown(ctx); err != nil { // a second one is harmless
		t.Fatal(err)
	}
}
