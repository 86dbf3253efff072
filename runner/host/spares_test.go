package host

import "testing"

// reserveAll reserves room for n spares of id under limit, and returns the
// victims named when there was none.
func reserveAll(b *spareBudget, id string, n, limit int) (got int, victims []string) {
	for range n {
		ok, v := b.reserve(id, limit)
		if ok {
			got++
		} else {
			victims = append(victims, v)
		}
	}
	return got, victims
}

func TestSpareBudgetLRU(t *testing.T) {
	b := newSpareBudget()
	for _, id := range []string{"a", "b", "c"} {
		b.use(id)
	}
	// Room for four: a and b take two each.
	if got, v := reserveAll(b, "a", 2, 4); got != 2 || v != nil {
		t.Fatalf("a: %d reserved, victims %v", got, v)
	}
	if got, v := reserveAll(b, "b", 2, 4); got != 2 || v != nil {
		t.Fatalf("b: %d reserved, victims %v", got, v)
	}
	// c is full: a, used first, is the one to make room.
	if ok, v := b.reserve("c", 4); ok || v != "a" {
		t.Fatalf("c on a full budget: ok %v victim %q, want a", ok, v)
	}
	// Using a again makes b the least recently used.
	b.use("a")
	if ok, v := b.reserve("c", 4); ok || v != "b" {
		t.Fatalf("after a was used: ok %v victim %q, want b", ok, v)
	}
	// b's spares go (the caller drops them): c gets their room.
	b.release("b")
	b.release("b")
	if got, v := reserveAll(b, "c", 2, 4); got != 2 || v != nil {
		t.Fatalf("c after b's spares went: %d reserved, victims %v", got, v)
	}
	// The least recently used session never evicts a newer one: b, used
	// before a and c, gets no room and no victim.
	if ok, v := b.reserve("b", 4); ok || v != "" {
		t.Fatalf("b, least recently used: ok %v victim %q, want no room and no victim", ok, v)
	}
	// A smaller limit (running sessions take room) is full sooner; c, last
	// used before a was used again, goes first.
	b.use("b")
	if ok, v := b.reserve("b", 5); !ok || v != "" {
		t.Fatalf("limit 5: ok %v victim %q, want room", ok, v)
	}
	if ok, v := b.reserve("b", 3); ok || v != "c" {
		t.Fatalf("limit 3: ok %v victim %q, want c", ok, v)
	}
}

func TestSpareBudgetRelease(t *testing.T) {
	b := newSpareBudget()
	b.use("a")
	b.use("b")
	if got, _ := reserveAll(b, "a", 1, 1); got != 1 {
		t.Fatal("a: no room in an empty budget")
	}
	// Releasing more than was held does not make room out of nothing.
	b.release("b")
	if ok, v := b.reserve("b", 1); ok || v != "a" {
		t.Fatalf("b: ok %v victim %q, want a", ok, v)
	}
	// A deleted session is forgotten, and its room comes back when its
	// spares go; until then it is the first victim (never used).
	b.forget("a")
	b.use("c")
	if ok, v := b.reserve("c", 1); ok || v != "a" {
		t.Fatalf("c: ok %v victim %q, want the forgotten a", ok, v)
	}
	b.release("a")
	if ok, _ := b.reserve("c", 1); !ok {
		t.Fatal("c: no room after a's spare went")
	}
	if len(b.held) != 1 || b.held["c"] != 1 || b.n != 1 {
		t.Fatalf("held %v, n %d", b.held, b.n)
	}
}
