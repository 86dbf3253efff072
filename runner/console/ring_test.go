package console

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func TestRingReadResume(t *testing.T) {
	r := NewRing(8)
	r.Write([]byte("abc"))
	d, from, next := r.Read(0, 0)
	if string(d) != "abc" || from != 0 || next != 3 {
		t.Fatalf("got %q %d %d", d, from, next)
	}
	r.Write([]byte("defgh"))
	d, from, next = r.Read(next, 0)
	if string(d) != "defgh" || from != 3 || next != 8 {
		t.Fatalf("got %q %d %d", d, from, next)
	}
	// Wrap: the oldest bytes are overwritten and a reader at 0 is told so.
	r.Write([]byte("ijk"))
	d, from, next = r.Read(0, 0)
	if string(d) != "defghijk" || from != 3 || next != 11 {
		t.Fatalf("after wrap got %q %d %d", d, from, next)
	}
	d, _, _ = r.Read(9, 1)
	if string(d) != "j" {
		t.Fatalf("limited read got %q", d)
	}
	if d, from, next = r.Read(100, 0); len(d) != 0 || from != 11 || next != 11 {
		t.Fatalf("read past end got %q %d %d", d, from, next)
	}
}

func TestRingHugeWrite(t *testing.T) {
	r := NewRing(4)
	r.Write([]byte("0123456789"))
	d, from, next := r.Read(0, 0)
	if string(d) != "6789" || from != 6 || next != 10 {
		t.Fatalf("got %q %d %d", d, from, next)
	}
}

func TestRingManyWritesMatchTail(t *testing.T) {
	r := NewRing(100)
	var all bytes.Buffer
	for i := range 1000 {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, i%7+1)
		all.Write(p)
		r.Write(p)
	}
	d, from, next := r.Read(0, 0)
	want := all.Bytes()[all.Len()-100:]
	if !bytes.Equal(d, want) || next != int64(all.Len()) || from != next-100 {
		t.Fatalf("tail mismatch")
	}
}

func TestRingWait(t *testing.T) {
	r := NewRing(16)
	done := make(chan error, 1)
	go func() { done <- r.Wait(context.Background(), 0) }()
	time.Sleep(10 * time.Millisecond)
	r.Write([]byte("x"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := r.Wait(ctx, 1); err != context.DeadlineExceeded {
		t.Fatalf("want deadline, got %v", err)
	}
	go func() { done <- r.Wait(context.Background(), 1) }()
	r.Close()
	if err := <-done; err != ErrClosed {
		t.Fatalf("want ErrClosed, got %v", err)
	}
}
