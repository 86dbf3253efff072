package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// API keys look like ms_<id>_<secret>: the id finds the record, the secret
// proves possession. Only sha256(secret) is stored. A fast unsalted hash is
// enough here because generated secrets carry 256 random bits (and bootstrap
// secrets must be at least 32 characters), so there is nothing to brute-force
// or look up in a table; a password hash would only slow every request.
const keyPrefix = "ms_"

var (
	keyIDRe     = regexp.MustCompile(`^[a-z0-9]{1,32}$`)
	keySecretRe = regexp.MustCompile(`^[A-Za-z0-9]{32,128}$`)
	tenantRe    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// Errors of key verification and management.
var (
	ErrUnknownKey = errors.New("unknown key")
	ErrRevokedKey = errors.New("revoked key")
	ErrKeyFormat  = errors.New("malformed key")
	ErrNotFound   = errors.New("auth: key not found")
)

// keyErr carries the record of a key that exists but is refused, for the
// audit log.
type keyErr struct {
	k   Key
	err error
}

func (e keyErr) Error() string { return e.err.Error() }
func (e keyErr) Unwrap() error { return e.err }

// Key is an API key's record; the secret is never part of it.
type Key struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Tenant    string     `json:"tenant"`
	Scopes    []Scope    `json:"scopes"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
	// Hash is hex sha256 of the secret.
	Hash string `json:"hash,omitempty"`
}

// Principal is who the key makes a request.
func (k Key) Principal() Principal {
	return Principal{Actor: "key:" + k.ID, Tenant: k.Tenant, Scopes: k.Scopes}
}

// public drops the hash for API answers.
func (k Key) public() Key { k.Hash = ""; return k }

// ParseKey splits an API key into its id and secret.
func ParseKey(key string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(key, keyPrefix)
	if !ok {
		return "", "", fmt.Errorf("%w: an API key starts with %q", ErrKeyFormat, keyPrefix)
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || !keyIDRe.MatchString(id) || !keySecretRe.MatchString(secret) {
		return "", "", fmt.Errorf("%w: want ms_<id>_<secret>, id 1-32 lowercase letters or digits, secret 32-128 letters or digits", ErrKeyFormat)
	}
	return id, secret, nil
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// ValidTenant checks a tenant name.
func ValidTenant(t string) error {
	if !tenantRe.MatchString(t) {
		return fmt.Errorf("tenant %q must be 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit", t)
	}
	return nil
}

// ParseScopes checks scope names.
func ParseScopes(in []string) ([]Scope, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("at least one scope is required; scopes are %v", Scopes)
	}
	var out []Scope
	for _, s := range in {
		if !slices.Contains(Scopes, Scope(s)) {
			return nil, fmt.Errorf("unknown scope %q; scopes are %v", s, Scopes)
		}
		if !slices.Contains(out, Scope(s)) {
			out = append(out, Scope(s))
		}
	}
	return out, nil
}

// KeyStore keeps API keys in Redis.
type KeyStore struct {
	rdb redis.UniversalClient
	// touched is when this process last recorded each key's use, so a busy
	// key costs no Redis write, nor even a lock round trip, per request.
	touched sync.Map // id -> time.Time
}

// NewKeyStore returns a store on rdb (a real Redis or miniredis).
func NewKeyStore(rdb redis.UniversalClient) *KeyStore { return &KeyStore{rdb: rdb} }

// touchEvery is how often a key's last use is recorded.
const touchEvery = time.Minute

const (
	prefixKey     = "ms:apikey:"      // string: JSON Key
	prefixKeyUsed = "ms:apikey-used:" // string: RFC 3339 time of last use
	keyIndex      = "ms:apikeys"      // zset of ids by creation time
)

// Create makes a new key and returns its record and the key itself, which
// is shown once and never stored.
func (s *KeyStore) Create(ctx context.Context, name, tenant string, scopes []Scope) (Key, string, error) {
	var idb [8]byte
	var sec [32]byte
	rand.Read(idb[:])
	rand.Read(sec[:])
	id, secret := hex.EncodeToString(idb[:]), hex.EncodeToString(sec[:])
	k, err := s.put(ctx, id, secret, name, tenant, scopes)
	if err != nil {
		return Key{}, "", err
	}
	return k, keyPrefix + id + "_" + secret, nil
}

func (s *KeyStore) put(ctx context.Context, id, secret, name, tenant string, scopes []Scope) (Key, error) {
	k := Key{ID: id, Name: name, Tenant: tenant, Scopes: scopes, CreatedAt: time.Now().UTC(), Hash: hashSecret(secret)}
	b, err := json.Marshal(k)
	if err != nil {
		return Key{}, err
	}
	ok, err := s.rdb.SetNX(ctx, prefixKey+id, b, 0).Result()
	if err != nil {
		return Key{}, fmt.Errorf("auth: store key: %w", err)
	}
	if !ok {
		return Key{}, fmt.Errorf("auth: key id %s already exists", id)
	}
	if err := s.rdb.ZAdd(ctx, keyIndex, redis.Z{Score: float64(k.CreatedAt.UnixNano()), Member: id}).Err(); err != nil {
		return Key{}, fmt.Errorf("auth: index key: %w", err)
	}
	return k, nil
}

// EnsureKey stores key (ms_<id>_<secret>) as an admin key of tenant unless a
// key with its id exists; it is how MS_BOOTSTRAP_API_KEY is installed at
// every start. A stored key with the same id but another secret is an error,
// and a revoked one stays revoked (the returned record says so).
func (s *KeyStore) EnsureKey(ctx context.Context, key, name, tenant string, scopes []Scope) (Key, error) {
	id, secret, err := ParseKey(key)
	if err != nil {
		return Key{}, err
	}
	k, err := s.get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		k, err = s.put(ctx, id, secret, name, tenant, scopes)
		if err == nil {
			return k, nil
		}
		// Another replica may have stored it meanwhile.
		k, err = s.get(ctx, id)
	}
	if err != nil {
		return Key{}, err
	}
	if subtle.ConstantTimeCompare([]byte(k.Hash), []byte(hashSecret(secret))) != 1 {
		return Key{}, fmt.Errorf("auth: key id %s is already stored with another secret", id)
	}
	return k, nil
}

func (s *KeyStore) get(ctx context.Context, id string) (Key, error) {
	b, err := s.rdb.Get(ctx, prefixKey+id).Bytes()
	if errors.Is(err, redis.Nil) {
		return Key{}, ErrNotFound
	}
	if err != nil {
		return Key{}, fmt.Errorf("auth: read key: %w", err)
	}
	var k Key
	if err := json.Unmarshal(b, &k); err != nil {
		return Key{}, fmt.Errorf("auth: decode key %s: %w", id, err)
	}
	return k, nil
}

// Verify checks key and returns its record: ErrKeyFormat, ErrUnknownKey or
// ErrRevokedKey when it does not authenticate.
func (s *KeyStore) Verify(ctx context.Context, key string) (Key, error) {
	id, secret, err := ParseKey(key)
	if err != nil {
		return Key{}, err
	}
	k, err := s.get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Key{}, ErrUnknownKey
	}
	if err != nil {
		return Key{}, err
	}
	if subtle.ConstantTimeCompare([]byte(k.Hash), []byte(hashSecret(secret))) != 1 {
		return Key{}, ErrUnknownKey
	}
	if k.RevokedAt != nil {
		return Key{}, keyErr{k: k, err: ErrRevokedKey}
	}
	s.touch(ctx, id)
	return k, nil
}

// touch records the last use, at most once a minute per key and process,
// and once a minute per key across processes (the lock), so a busy key does
// not write on every request.
func (s *KeyStore) touch(ctx context.Context, id string) {
	now := time.Now().UTC()
	if last, ok := s.touched.Load(id); ok && now.Sub(last.(time.Time)) < touchEvery {
		return
	}
	s.touched.Store(id, now)
	if s.rdb.SetNX(ctx, prefixKeyUsed+id+":lock", 1, touchEvery).Val() {
		s.rdb.Set(ctx, prefixKeyUsed+id, now.Format(time.RFC3339Nano), 0)
	}
}

// List returns the keys of tenant (all keys when tenant is empty), oldest
// first, without hashes.
func (s *KeyStore) List(ctx context.Context, tenant string) ([]Key, error) {
	ids, err := s.rdb.ZRange(ctx, keyIndex, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("auth: list keys: %w", err)
	}
	out := []Key{}
	for _, id := range ids {
		k, err := s.get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if tenant != "" && k.Tenant != tenant {
			continue
		}
		if v, err := s.rdb.Get(ctx, prefixKeyUsed+id).Result(); err == nil {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				k.LastUsed = &t
			}
		}
		out = append(out, k.public())
	}
	return out, nil
}

// Revoke marks key id revoked (idempotent: the first revocation time stays).
func (s *KeyStore) Revoke(ctx context.Context, id string) (Key, error) {
	var out Key
	err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		b, err := tx.Get(ctx, prefixKey+id).Bytes()
		if errors.Is(err, redis.Nil) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &out); err != nil {
			return err
		}
		if out.RevokedAt != nil {
			return nil
		}
		now := time.Now().UTC()
		out.RevokedAt = &now
		nb, _ := json.Marshal(out)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, prefixKey+id, nb, 0)
			return nil
		})
		return err
	}, prefixKey+id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Key{}, err
		}
		return Key{}, fmt.Errorf("auth: revoke key %s: %w", id, err)
	}
	return out.public(), nil
}
