package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dnstest"
)

// switchUpstream answers with whatever the test last set.
type switchUpstream struct {
	mu    sync.Mutex
	res   *TXTResult
	err   error
	calls int
}

func (u *switchUpstream) set(res *TXTResult, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.res, u.err = res, err
}

func (u *switchUpstream) LookupTXT(context.Context, string) (*TXTResult, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls++
	if u.err != nil {
		return nil, u.err
	}
	return copyTXTResult(u.res), nil
}

var (
	staleTimeout  = &net.DNSError{Err: "timeout", Name: dnsTestName, Server: "127.0.0.1:53", IsTimeout: true, IsTemporary: true}
	staleServfail = &net.DNSError{Err: "SERVFAIL", Name: dnsTestName, Server: "127.0.0.1:53", IsTemporary: true}
	staleRefused  = &net.DNSError{Err: "read udp: connection refused", Name: dnsTestName, Server: "127.0.0.1:53", IsTemporary: true}
	staleNX       = &net.DNSError{Err: "NXDOMAIN", Name: dnsTestName, Server: "127.0.0.1:53", IsNotFound: true}
	staleNoData   = &net.DNSError{Err: "no TXT record", Name: dnsTestName, Server: "127.0.0.1:53", IsNotFound: true}
)

// TestCacheServeStale walks a record through its TTL and then a DNS
// failure: what the cache answers, and whether an answer from DNS (new
// key, revocation, NXDOMAIN) always beats the stale copy.
func TestCacheServeStale(t *testing.T) {
	const ttl = 300 * time.Second
	old := &TXTResult{Records: []string{"v=DKIM1; p=OLD"}, TTL: ttl}
	tests := []struct {
		name     string
		maxStale time.Duration
		after    time.Duration // past the TTL when DNS fails
		fail     error
		want     string // record served, or "" for the failure
		wantErr  error
	}{
		{"timeout within max_stale", 24 * time.Hour, time.Hour, staleTimeout, "v=DKIM1; p=OLD", nil},
		{"SERVFAIL within max_stale", 24 * time.Hour, time.Hour, staleServfail, "v=DKIM1; p=OLD", nil},
		{"resolver unreachable", 24 * time.Hour, time.Hour, staleRefused, "v=DKIM1; p=OLD", nil},
		{"just before max_stale ends", 24 * time.Hour, 24*time.Hour - time.Second, staleTimeout, "v=DKIM1; p=OLD", nil},
		{"max_stale over", 24 * time.Hour, 24 * time.Hour, staleTimeout, "", staleTimeout},
		{"serve-stale off", 0, time.Second, staleTimeout, "", staleTimeout},
		{"NXDOMAIN is an answer", 24 * time.Hour, time.Hour, staleNX, "", staleNX},
		{"NODATA is an answer", 24 * time.Hour, time.Hour, staleNoData, "", staleNoData},
		{"a plain error is not a DNS failure", 24 * time.Hour, time.Hour, errors.New("boom"), "", errors.New("boom")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newCacheTestClock()
			up := &switchUpstream{res: old}
			c := NewCache(up, CacheOptions{Now: clock.Now, MaxStale: tt.maxStale})
			if res := cacheMustLookup(t, c, dnsTestName); res.Stale {
				t.Fatal("a fresh answer is marked stale")
			}
			clock.Advance(ttl + tt.after)
			up.set(nil, tt.fail)
			res, err := c.LookupTXT(context.Background(), dnsTestName)
			if tt.wantErr != nil {
				if err == nil || err.Error() != tt.wantErr.Error() {
					t.Fatalf("got %+v, %v; want error %v", res, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want the stale record", err)
			}
			if !res.Stale || len(res.Records) != 1 || res.Records[0] != tt.want || res.TTL != 0 || res.StaleFor != tt.after {
				t.Errorf("got %+v; want %q, Stale, StaleFor %v, TTL 0", res, tt.want, tt.after)
			}
		})
	}
}

// TestCacheFreshAnswerBeatsStale: once DNS answers again, whatever it
// says replaces the stale record, and a later failure cannot bring the
// old record back.
func TestCacheFreshAnswerBeatsStale(t *testing.T) {
	const ttl = 60 * time.Second
	old := &TXTResult{Records: []string{"v=DKIM1; p=OLD"}, TTL: ttl}
	tests := []struct {
		name    string
		res     *TXTResult
		err     error
		want    string // record after the next failure, "" for an error
		wantErr error
	}{
		{"revoked", &TXTResult{Records: []string{"v=DKIM1; p="}, TTL: ttl}, nil, "v=DKIM1; p=", nil},
		{"changed", &TXTResult{Records: []string{"v=DKIM1; p=NEW"}, TTL: ttl}, nil, "v=DKIM1; p=NEW", nil},
		{"NXDOMAIN", nil, staleNX, "", staleTimeout},
		{"NODATA", nil, staleNoData, "", staleTimeout},
		{"TTL 0", &TXTResult{Records: []string{"v=DKIM1; p=NEW"}}, nil, "", staleTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newCacheTestClock()
			up := &switchUpstream{res: old}
			c := NewCache(up, CacheOptions{Now: clock.Now, MaxStale: 24 * time.Hour, NegativeTTL: 10 * time.Second})
			cacheMustLookup(t, c, dnsTestName)

			// An outage: the old record is served stale.
			clock.Advance(ttl + time.Minute)
			up.set(nil, staleTimeout)
			if res := cacheMustLookup(t, c, dnsTestName); !res.Stale {
				t.Fatalf("during the outage: %+v, want stale", res)
			}
			// DNS answers again, after the failure recheck timer.
			clock.Advance(staleRetry)
			up.set(tt.res, tt.err)
			res, err := c.LookupTXT(context.Background(), dnsTestName)
			if tt.err != nil {
				if err == nil || err.Error() != tt.err.Error() {
					t.Fatalf("recovery: %+v, %v; want %v", res, err, tt.err)
				}
			} else if err != nil || res.Stale || res.Records[0] != tt.res.Records[0] {
				t.Fatalf("recovery: %+v, %v; want %q fresh", res, err, tt.res.Records[0])
			}
			// The next outage, past every TTL: the old record never comes back.
			clock.Advance(2 * ttl)
			up.set(nil, staleTimeout)
			res, err = c.LookupTXT(context.Background(), dnsTestName)
			if tt.wantErr != nil {
				if err == nil || err.Error() != tt.wantErr.Error() {
					t.Fatalf("second outage: %+v, %v; want %v", res, err, tt.wantErr)
				}
				return
			}
			if err != nil || !res.Stale || res.Records[0] != tt.want {
				t.Fatalf("second outage: %+v, %v; want %q stale", res, err, tt.want)
			}
		})
	}
}

// TestCacheStaleRetry: after a failed refresh the stale record answers
// alone for staleRetry (RFC 8767 §5), then DNS is asked again.
func TestCacheStaleRetry(t *testing.T) {
	clock := newCacheTestClock()
	up := &switchUpstream{res: &TXTResult{Records: []string{"v=DKIM1; p=OLD"}, TTL: time.Minute}}
	c := NewCache(up, CacheOptions{Now: clock.Now, MaxStale: time.Hour})
	cacheMustLookup(t, c, dnsTestName)
	clock.Advance(2 * time.Minute)
	up.set(nil, staleServfail)
	for range 5 {
		if res := cacheMustLookup(t, c, dnsTestName); !res.Stale {
			t.Fatalf("%+v, want stale", res)
		}
		clock.Advance(staleRetry/5 - time.Second)
	}
	if up.calls != 2 {
		t.Errorf("upstream asked %d times within staleRetry, want 2 (the fill and one refresh)", up.calls)
	}
	clock.Advance(5 * time.Second)
	cacheMustLookup(t, c, dnsTestName)
	if up.calls != 3 {
		t.Errorf("upstream asked %d times after staleRetry, want 3", up.calls)
	}
}

// TestCacheStaleCallerDeadline: a caller whose deadline ends before the
// refresh does gets the stale record, not a timeout.
func TestCacheStaleCallerDeadline(t *testing.T) {
	clock := newCacheTestClock()
	release := make(chan struct{})
	defer close(release)
	first := true
	up := &Fake{Answer: func(ctx context.Context, name string) (*TXTResult, error) {
		if first {
			first = false
			return &TXTResult{Records: []string{"v=DKIM1; p=OLD"}, TTL: time.Minute}, nil
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, staleTimeout
	}}
	c := NewCache(up, CacheOptions{Now: clock.Now, MaxStale: time.Hour})
	cacheMustLookup(t, c, dnsTestName)
	clock.Advance(2 * time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	res, err := c.LookupTXT(ctx, dnsTestName)
	if err != nil || !res.Stale {
		t.Fatalf("got %+v, %v; want the stale record", res, err)
	}
}

// TestCacheStaleBounded: stale records count against MaxEntries, and
// those past TTL+MaxStale are the first to go.
func TestCacheStaleBounded(t *testing.T) {
	clock := newCacheTestClock()
	up := &Fake{Answer: cacheTestAnswer(time.Minute, "v=DKIM1; p=x")}
	c := NewCache(up, CacheOptions{Now: clock.Now, MaxStale: time.Hour, MaxEntries: 3})
	for i := range 3 {
		cacheMustLookup(t, c, fmt.Sprintf("s%d._domainkey.example.com", i))
	}
	clock.Advance(time.Minute + time.Hour) // s0..s2 are dead now
	for i := 3; i < 10; i++ {
		cacheMustLookup(t, c, fmt.Sprintf("s%d._domainkey.example.com", i))
		if n := c.Stats().Entries; n > 3 {
			t.Fatalf("%d entries, want at most 3", n)
		}
	}
	// A stale record still within MaxStale is not served once evicted:
	// the bound wins over serve-stale.
	up2 := &switchUpstream{res: &TXTResult{Records: []string{"r"}, TTL: time.Minute}}
	c2 := NewCache(up2, CacheOptions{Now: clock.Now, MaxStale: time.Hour, MaxEntries: 1})
	cacheMustLookup(t, c2, "a._domainkey.example.com")
	cacheMustLookup(t, c2, "b._domainkey.example.com")
	if n := c2.Stats().Entries; n != 1 {
		t.Errorf("%d entries, want 1", n)
	}
	clock.Advance(2 * time.Minute)
	up2.set(nil, staleTimeout)
	if res, err := c2.LookupTXT(context.Background(), "a._domainkey.example.com"); err == nil {
		t.Errorf("an evicted record was served: %+v", res)
	}
	if res := cacheMustLookup(t, c2, "b._domainkey.example.com"); !res.Stale {
		t.Errorf("the record kept was not served stale: %+v", res)
	}
}

// TestCacheServeStaleThroughClient: a real resolver that answers, then
// stops answering the name, through the Client.
func TestCacheServeStaleThroughClient(t *testing.T) {
	s := dnstest.New(t)
	s.SetTXT(dnsTestName, "v=DKIM1; p=x")
	s.SetTTL(dnsTestName, 60)
	clock := newCacheTestClock()
	c := NewCache(newTestClient(t, 300*time.Millisecond, s), CacheOptions{Now: clock.Now, MaxStale: time.Hour})
	cacheMustLookup(t, c, dnsTestName)
	clock.Advance(2 * time.Minute)
	for _, fail := range []func(){func() { s.SetRcode(dnsTestName, 2) }, func() { s.SetTimeout(dnsTestName) }} {
		fail()
		clock.Advance(staleRetry)
		res := cacheMustLookup(t, c, dnsTestName)
		if !res.Stale || res.Records[0] != "v=DKIM1; p=x" {
			t.Errorf("got %+v, want the stale record", res)
		}
	}
	s.SetRcode(dnsTestName, 3) // NXDOMAIN
	clock.Advance(staleRetry)
	if res, err := c.LookupTXT(context.Background(), dnsTestName); err == nil {
		t.Errorf("after NXDOMAIN: %+v, want not found", res)
	}
}

// Adopt carries the entries of an old cache into a new one (a reload):
// live and stale records, negative answers until their TTL, newest kept
// when the new cache is smaller; dead entries are not carried.
func TestCacheAdopt(t *testing.T) {
	clock := newCacheTestClock()
	up := &switchUpstream{res: &TXTResult{Records: []string{"v=DKIM1; p=OLD"}, TTL: time.Minute}}
	old := NewCache(up, CacheOptions{Now: clock.Now, MaxStale: time.Hour})
	for i := range 4 {
		cacheMustLookup(t, old, fmt.Sprintf("s%d._domainkey.example.com", i))
		clock.Advance(20 * time.Minute) // s0 ends up dead (TTL+MaxStale over), s1..s3 stale
	}
	up.set(nil, staleNX)
	old.LookupTXT(context.Background(), "gone._domainkey.example.com") // a negative answer, still fresh

	fresh := func(max int) *Cache {
		return NewCache(&switchUpstream{err: staleTimeout}, CacheOptions{Now: clock.Now, MaxStale: time.Hour, MaxEntries: max})
	}
	c := fresh(0)
	c.Adopt(old)
	if n := c.Stats().Entries; n != 4 {
		t.Errorf("%d entries adopted, want 4 (s1..s3 and gone)", n)
	}
	for i, want := range []bool{false, true, true, true} {
		res, err := c.LookupTXT(context.Background(), fmt.Sprintf("s%d._domainkey.example.com", i))
		if got := err == nil && res.Stale; got != want {
			t.Errorf("s%d: %+v, %v; want stale %v", i, res, err, want)
		}
	}
	if _, err := c.LookupTXT(context.Background(), "gone._domainkey.example.com"); err == nil || err.Error() != staleNX.Error() {
		t.Errorf("the negative answer was not adopted: %v", err)
	}

	small := fresh(2)
	small.Adopt(old)
	if n := small.Stats().Entries; n != 2 {
		t.Errorf("%d entries in a cache of 2", n)
	}
	if _, err := small.LookupTXT(context.Background(), "s3._domainkey.example.com"); err != nil {
		t.Errorf("the newest record was not kept: %v", err)
	}
	c.Adopt(nil)
	c.Adopt(c)
}
