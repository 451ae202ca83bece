package dns

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"
)

// ErrHang, as a Fake's error for a name, makes the lookup wait until its
// context ends and then fail with a timeout, as a server that never
// answers does.
var ErrHang = errors.New("no answer until the context ends")

// Fake is an in-memory Resolver for tests, in the shape of mox's
// dns/mock.go: records and failures by name, an AD bit, and a count of
// the lookups of each name. Names match without regard to case or a final
// dot. Set its fields before the first lookup; it is then safe for
// concurrent use.
type Fake struct {
	TXT map[string][]string // the records of each name; a name not here is NXDOMAIN
	Err map[string]error    // names whose lookup fails with this error (see ErrHang)
	TTL time.Duration       // of every answer
	AD  bool                // the AD bit of every answer
	// Answer, when set, answers every lookup in place of TXT and Err: a
	// lookup that blocks, fails in turn or asks another resolver.
	Answer func(ctx context.Context, name string) (*TXTResult, error)

	mu      sync.Mutex
	lookups map[string]int
}

// LookupTXT answers from the fields, and counts the lookup.
func (f *Fake) LookupTXT(ctx context.Context, name string) (*TXTResult, error) {
	key := fakeKey(name)
	f.mu.Lock()
	if f.lookups == nil {
		f.lookups = map[string]int{}
	}
	f.lookups[key]++
	f.mu.Unlock()
	if f.Answer != nil {
		return f.Answer(ctx, name)
	}
	if err, ok := fakeLookup(f.Err, key); ok {
		if errors.Is(err, ErrHang) {
			<-ctx.Done()
			return nil, &net.DNSError{Err: "timeout", Name: key, IsTimeout: true, IsTemporary: true, UnwrapErr: ctx.Err()}
		}
		return nil, err
	}
	if recs, ok := fakeLookup(f.TXT, key); ok {
		return &TXTResult{Records: append([]string(nil), recs...), TTL: f.TTL, Authenticated: f.AD}, nil
	}
	return nil, &net.DNSError{Err: "NXDOMAIN", Name: key, IsNotFound: true}
}

// Lookups returns how many times name was looked up.
func (f *Fake) Lookups(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups[fakeKey(name)]
}

// fakeLookup finds key in m, whose keys may be written in any case, with or
// without the final dot.
func fakeLookup[V any](m map[string]V, key string) (V, bool) {
	if v, ok := m[key]; ok {
		return v, true
	}
	for k, v := range m {
		if fakeKey(k) == key {
			return v, true
		}
	}
	var zero V
	return zero, false
}

func fakeKey(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }
