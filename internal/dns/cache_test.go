package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dnstest"
)

// cacheTestClock is the cache's clock seam: time moves only when a test says so.
type cacheTestClock struct {
	mu sync.Mutex
	t  time.Time
}

func newCacheTestClock() *cacheTestClock {
	return &cacheTestClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *cacheTestClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *cacheTestClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func cacheTestAnswer(ttl time.Duration, records ...string) func(context.Context, string) (*TXTResult, error) {
	return func(context.Context, string) (*TXTResult, error) {
		return &TXTResult{Records: records, TTL: ttl}, nil
	}
}

// cacheWaitFor polls cond; it is a synchronisation point, not a timing assertion.
func cacheWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 10000 {
		if cond() {
			return
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

func cacheMustLookup(t *testing.T, r Resolver, name string) *TXTResult {
	t.Helper()
	res, err := r.LookupTXT(context.Background(), name)
	if err != nil {
		t.Fatalf("LookupTXT(%q): %v", name, err)
	}
	return res
}

func TestCacheHitWithinTTLAndExpiry(t *testing.T) {
	s := dnstest.New(t)
	s.SetTXT(dnsTestName, "v=DKIM1; p=x")
	s.SetTTL(dnsTestName, 300)
	clock := newCacheTestClock()
	c := NewCache(newTestClient(t, 0, s), CacheOptions{Now: clock.Now})

	cacheMustLookup(t, c, dnsTestName)
	clock.Advance(100 * time.Second)
	res := cacheMustLookup(t, c, "SEL._domainkey.EXAMPLE.com.") // same key: case and dot do not matter
	if got := s.Queries(dnsTestName); got != 1 {
		t.Errorf("within TTL: %d queries, want 1", got)
	}
	if res.TTL != 200*time.Second {
		t.Errorf("cached TTL = %v, want the 200s left", res.TTL)
	}
	if st := c.Stats(); st != (CacheStats{Hits: 1, Misses: 1, Entries: 1}) {
		t.Errorf("Stats = %+v", st)
	}

	clock.Advance(200 * time.Second)
	cacheMustLookup(t, c, dnsTestName)
	if got := s.Queries(dnsTestName); got != 2 {
		t.Errorf("after TTL: %d queries, want 2", got)
	}
}

func TestCacheTTLRules(t *testing.T) {
	tests := []struct {
		name      string
		ttl       time.Duration
		maxTTL    time.Duration
		advance   time.Duration
		wantCalls int // after two lookups separated by advance
	}{
		{"kept for its TTL", time.Hour, 0, 59 * time.Minute, 1},
		{"clamped to MaxTTL", time.Hour, 10 * time.Second, 11 * time.Second, 2},
		{"within MaxTTL", time.Hour, 10 * time.Second, 9 * time.Second, 1},
		{"default MaxTTL is 1h", 24 * time.Hour, 0, time.Hour, 2},
		{"TTL 0 is not cached", 0, 0, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newCacheTestClock()
			up := &Fake{Answer: cacheTestAnswer(tt.ttl, "v=DKIM1; p=x")}
			c := NewCache(up, CacheOptions{MaxTTL: tt.maxTTL, Now: clock.Now})
			cacheMustLookup(t, c, dnsTestName)
			clock.Advance(tt.advance)
			cacheMustLookup(t, c, dnsTestName)
			if got := up.Lookups(dnsTestName); got != tt.wantCalls {
				t.Errorf("upstream calls = %d, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestCacheNegative(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(s *dnstest.Server)
		negTTL time.Duration
	}{
		{"NXDOMAIN default 60s", func(s *dnstest.Server) {}, 0},
		{"NODATA", func(s *dnstest.Server) { s.SetNoData(dnsTestName) }, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dnstest.New(t)
			tt.setup(s)
			clock := newCacheTestClock()
			c := NewCache(newTestClient(t, 0, s), CacheOptions{NegativeTTL: tt.negTTL, Now: clock.Now})
			negTTL := tt.negTTL
			if negTTL == 0 {
				negTTL = time.Minute
			}
			for i := range 2 {
				_, err := c.LookupTXT(context.Background(), dnsTestName)
				var de *net.DNSError
				if !errors.As(err, &de) || !de.IsNotFound || de.Temporary() {
					t.Fatalf("lookup %d: err = %#v, want IsNotFound", i, err)
				}
				de.Err = "mutated by caller" // must not leak into the cache
			}
			if got := s.Queries(dnsTestName); got != 1 {
				t.Errorf("%d queries, want 1 (negative answer cached)", got)
			}
			clock.Advance(negTTL - time.Second)
			_, err := c.LookupTXT(context.Background(), dnsTestName)
			if de := new(net.DNSError); !errors.As(err, &de) || de.Err == "mutated by caller" {
				t.Errorf("cached error was mutated: %v", err)
			}
			clock.Advance(time.Second)
			c.LookupTXT(context.Background(), dnsTestName)
			if got := s.Queries(dnsTestName); got != 2 {
				t.Errorf("after NegativeTTL: %d queries, want 2", got)
			}
		})
	}
}

func TestCacheTemporaryErrorsNotCached(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"timeout", &net.DNSError{Err: "timeout", IsTimeout: true, IsTemporary: true}},
		{"SERVFAIL", &net.DNSError{Err: "SERVFAIL", IsTemporary: true}},
		{"not found but temporary", &net.DNSError{Err: "odd", IsNotFound: true, IsTemporary: true}},
		{"plain error", errors.New("boom")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &Fake{Answer: func(context.Context, string) (*TXTResult, error) { return nil, tt.err }}
			c := NewCache(up, CacheOptions{Now: newCacheTestClock().Now})
			for range 2 {
				if _, err := c.LookupTXT(context.Background(), dnsTestName); err == nil || err.Error() != tt.err.Error() {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
			}
			if got := up.Lookups(dnsTestName); got != 2 {
				t.Errorf("upstream calls = %d, want 2", got)
			}
			if n := c.Stats().Entries; n != 0 {
				t.Errorf("Entries = %d, want 0", n)
			}
		})
	}
}

// cacheBlockingUpstream answers "v=DKIM1; p=<name>" once release is closed, or
// fails if its ctx ends first (as a real resolver would).
func cacheBlockingUpstream(release <-chan struct{}) *Fake {
	return &Fake{Answer: func(ctx context.Context, name string) (*TXTResult, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, &net.DNSError{Err: "timeout", Name: name, IsTimeout: true}
		}
		return &TXTResult{Records: []string{"v=DKIM1; p=" + name}, TTL: time.Minute}, nil
	}}
}

func TestCacheCoalescesConcurrentLookups(t *testing.T) {
	const n = 20
	release := make(chan struct{})
	up := cacheBlockingUpstream(release)
	c := NewCache(up, CacheOptions{})

	var wg sync.WaitGroup
	results := make([]*TXTResult, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = c.LookupTXT(context.Background(), dnsTestName) })
	}
	// Every caller has registered (and joined the flight) once all are misses.
	cacheWaitFor(t, "all callers to join", func() bool { return c.Stats().Misses == n })
	close(release)
	wg.Wait()

	if got := up.Lookups(dnsTestName); got != 1 {
		t.Errorf("upstream calls = %d, want 1", got)
	}
	for i := range n {
		if errs[i] != nil || !slices.Equal(results[i].Records, []string{"v=DKIM1; p=" + dnsTestName}) {
			t.Fatalf("caller %d: %v, %v", i, results[i], errs[i])
		}
	}
	results[0].Records[0] = "mutated" // each caller owns its copy
	if results[1].Records[0] == "mutated" || cacheMustLookup(t, c, dnsTestName).Records[0] == "mutated" {
		t.Error("callers share Records with each other or with the cache")
	}
}

func TestCacheCallerDeadlineDoesNotWaitForUpstream(t *testing.T) {
	release := make(chan struct{})
	up := cacheBlockingUpstream(release)
	c := NewCache(up, CacheOptions{})

	// The upstream is blocked until release: returning at all proves the
	// caller did not wait for it.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.LookupTXT(ctx, dnsTestName)
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTimeout || !de.Temporary() {
		t.Fatalf("err = %#v, want timeout *net.DNSError", err)
	}

	ctx, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := c.LookupTXT(ctx, dnsTestName); !errors.As(err, &de) || !de.Temporary() || de.IsNotFound {
		t.Fatalf("canceled: err = %#v, want temporary *net.DNSError", err)
	}

	// The shared lookup went on and fills the cache.
	close(release)
	cacheWaitFor(t, "the shared lookup to finish", func() bool { return c.Stats().Entries == 1 })
	cacheMustLookup(t, c, dnsTestName)
	if got := up.Lookups(dnsTestName); got != 1 {
		t.Errorf("upstream calls = %d, want 1", got)
	}
}

func TestCacheDifferentNamesDoNotSerialise(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := &Fake{Answer: func(_ context.Context, name string) (*TXTResult, error) {
		if name == "slow.example" {
			<-release
		}
		return &TXTResult{Records: []string{name}, TTL: time.Minute}, nil
	}}
	c := NewCache(up, CacheOptions{})
	go c.LookupTXT(context.Background(), "slow.example")
	cacheWaitFor(t, "the slow lookup to start", func() bool { return up.Lookups("slow.example") == 1 })
	// Would hang (and the test time out) if a lock were held across the slow query.
	cacheMustLookup(t, c, "fast.example")
}

func TestCacheSizeBound(t *testing.T) {
	clock := newCacheTestClock()
	ttls := map[string]time.Duration{"short.example": 10 * time.Second}
	up := &Fake{Answer: func(_ context.Context, name string) (*TXTResult, error) {
		ttl, ok := ttls[name]
		if !ok {
			ttl = time.Hour
		}
		return &TXTResult{Records: []string{name}, TTL: ttl}, nil
	}}
	c := NewCache(up, CacheOptions{MaxEntries: 3, Now: clock.Now})

	for _, n := range []string{"short.example", "a.example", "b.example"} {
		cacheMustLookup(t, c, n)
	}
	clock.Advance(11 * time.Second)
	// Full: the expired entry goes first, although a.example is older than c.
	cacheMustLookup(t, c, "c.example")
	cacheMustLookup(t, c, "a.example")
	if got := up.Lookups("a.example"); got != 1 {
		t.Errorf("a.example evicted (calls %d) while an expired entry existed", got)
	}
	// Full, nothing expired: the oldest insertion (a.example) goes.
	cacheMustLookup(t, c, "d.example")
	cacheMustLookup(t, c, "b.example")
	if got := up.Lookups("b.example"); got != 1 {
		t.Errorf("b.example evicted (calls %d), want a.example evicted first", got)
	}
	cacheMustLookup(t, c, "a.example")
	if got := up.Lookups("a.example"); got != 2 {
		t.Errorf("a.example calls = %d, want 2 (it was the oldest)", got)
	}

	for i := range 50 {
		cacheMustLookup(t, c, fmt.Sprintf("n%d.example", i))
		if n := c.Stats().Entries; n > 3 {
			t.Fatalf("Entries = %d, want ≤ 3", n)
		}
	}
}
