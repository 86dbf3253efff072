package testenv

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// RawRedis is a connection of the test's own to the Redis at addr (a
// state.Store's Addr, embedded or not), for injecting faults under the
// state layer (a corrupted key, a lost index): the platform's own code is
// never handed a raw client.
func RawRedis(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(addr, "embedded:")})
	t.Cleanup(func() { c.Close() })
	return c
}
