package dns

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dnstest"
)

// healthLog records the hooks' calls.
type healthLog struct {
	mu     sync.Mutex
	events []string
	last   Outage
}

func (l *healthLog) hooks(clock *cacheTestClock) HealthHooks {
	add := func(what string) func(Outage) {
		return func(o Outage) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.events = append(l.events, fmt.Sprintf("%s %s", what, o.Kind))
			l.last = o
		}
	}
	h := HealthHooks{OnOutage: add("outage"), OnStill: add("still"), OnRecover: add("recover")}
	if clock != nil {
		h.Now = clock.Now
	}
	return h
}

func (l *healthLog) got() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

// closedPort returns a loopback address nobody listens on (UDP and TCP):
// a resolver that is down.
func closedPort(t *testing.T) string {
	t.Helper()
	// A port free for UDP and TCP alike (the test brings a server back
	// on it, which binds both), closed again.
	s := dnstest.New(t)
	s.Stop()
	return s.Addr
}

// The done-when of an outage: a resolver that goes down and comes back,
// with many lookups in between, makes one outage call and one recovery
// call, and the recovery counts the failed lookups.
func TestHealthResolverDownAndBack(t *testing.T) {
	addr := closedPort(t)
	c, err := NewClient([]string{addr}, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var log healthLog
	h := NewHealth(c, log.hooks(nil))
	const lookups = 20
	for i := range lookups {
		_, err := h.LookupTXT(context.Background(), fmt.Sprintf("s%d._domainkey.example%d.com", i, i%4))
		if kind, failing := FailureKind(err); !failing || kind != "unreachable" {
			t.Fatalf("lookup %d against a closed port: %v (kind %q)", i, err, kind)
		}
	}
	if got := log.got(); len(got) != 1 || got[0] != "outage unreachable" {
		t.Fatalf("after %d failed lookups: %q, want one outage", lookups, got)
	}
	s := dnstest.NewAt(t, addr)
	s.SetTXT(dnsTestName, "v=DKIM1; p=x")
	for range 3 {
		if _, err := h.LookupTXT(context.Background(), dnsTestName); err != nil {
			t.Fatal(err)
		}
	}
	if got := log.got(); len(got) != 2 || got[1] != "recover " {
		t.Fatalf("after recovery: %q, want outage then one recover", got)
	}
	if log.last.Failed != lookups || log.last.Lasted <= 0 {
		t.Errorf("recovery says %d failed over %v, want %d and a duration", log.last.Failed, log.last.Lasted, lookups)
	}
}

// Which runs of failures are an outage, and which are one broken zone.
func TestHealthOutageOrBrokenZone(t *testing.T) {
	servfail := &net.DNSError{Err: "SERVFAIL", Server: "127.0.0.1:53", IsTemporary: true}
	refused := &net.DNSError{Err: "REFUSED", Server: "127.0.0.1:53", IsTemporary: true}
	timeout := &net.DNSError{Err: "timeout after 5s", Server: "127.0.0.1:53", IsTimeout: true, IsTemporary: true}
	nx := &net.DNSError{Err: "NXDOMAIN", Server: "127.0.0.1:53", IsNotFound: true}
	type step struct {
		name string
		err  error // nil: an answer
	}
	fail := func(err error, names ...string) []step {
		var s []step
		for _, n := range names {
			s = append(s, step{n, err})
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	tests := []struct {
		name  string
		steps []step
		want  []string
	}{
		{"one broken zone, many selectors and messages",
			fail(servfail, "a._domainkey.broken.example", "b._domainkey.broken.example", "a._domainkey.BROKEN.example.", "c._domainkey.broken.example", "a._domainkey.broken.example"),
			nil},
		{"two broken zones", fail(servfail, "a._domainkey.one.example", "a._domainkey.two.example", "b._domainkey.one.example"), nil},
		{"broken zones between answers",
			cat(fail(servfail, "a._domainkey.one.example", "a._domainkey.two.example"), []step{{"s._domainkey.good.example", nil}},
				fail(servfail, "a._domainkey.three.example", "a._domainkey.four.example"), []step{{"s._domainkey.none.example", nx}}),
			nil},
		{"SERVFAIL for three domains", fail(servfail, "a._domainkey.one.example", "a._domainkey.two.example", "a._domainkey.three.example", "a._domainkey.four.example"),
			[]string{"outage SERVFAIL"}},
		{"REFUSED for three domains", fail(refused, "a._domainkey.one.example", "a._domainkey.two.example", "a._domainkey.three.example"),
			[]string{"outage REFUSED"}},
		{"timeouts for three domains, then NXDOMAIN", cat(fail(timeout, "a._domainkey.one.example", "a._domainkey.two.example", "a._domainkey.three.example"), []step{{"x._domainkey.none.example", nx}}),
			[]string{"outage timeout", "recover "}},
		{"two outages", cat(fail(timeout, "a._domainkey.one.example", "a._domainkey.two.example", "a._domainkey.three.example"), []step{{"s._domainkey.good.example", nil}},
			fail(servfail, "a._domainkey.one.example", "a._domainkey.two.example", "a._domainkey.three.example"), []step{{"s._domainkey.good.example", nil}}),
			[]string{"outage timeout", "recover ", "outage SERVFAIL", "recover "}},
		{"a cancelled lookup says nothing", cat(fail(timeout, "a._domainkey.one.example", "a._domainkey.two.example"), fail(context.Canceled, "a._domainkey.three.example")),
			nil},
		{"an answer with no outage says nothing", []step{{"s._domainkey.good.example", nil}, {"s._domainkey.none.example", nx}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			errs := map[string]error{}
			up := &Fake{Answer: func(_ context.Context, name string) (*TXTResult, error) {
				mu.Lock()
				defer mu.Unlock()
				if err := errs[name]; err != nil {
					return nil, err
				}
				return &TXTResult{Records: []string{"v=DKIM1; p=x"}, TTL: time.Minute}, nil
			}}
			var log healthLog
			h := NewHealth(up, log.hooks(nil))
			for _, s := range tt.steps {
				mu.Lock()
				errs[s.name] = s.err
				mu.Unlock()
				h.LookupTXT(context.Background(), s.name)
			}
			if got := log.got(); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// An outage that goes on is reported again every Reminder, no more.
func TestHealthReminder(t *testing.T) {
	clock := newCacheTestClock()
	up := &Fake{Answer: func(context.Context, string) (*TXTResult, error) {
		return nil, &net.DNSError{Err: "SERVFAIL", IsTemporary: true}
	}}
	var log healthLog
	h := NewHealth(up, log.hooks(clock))
	for i := range 100 { // 100 lookups over 16.5 minutes
		h.LookupTXT(context.Background(), fmt.Sprintf("s._domainkey.d%d.example", i))
		clock.Advance(10 * time.Second)
	}
	want := []string{"outage SERVFAIL", "still SERVFAIL", "still SERVFAIL", "still SERVFAIL"}
	if got := log.got(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if log.last.Failed != 93 || log.last.Since != newCacheTestClock().Now() {
		t.Errorf("last reminder: %+v", log.last)
	}
}

func TestFailureKind(t *testing.T) {
	tests := []struct {
		err     error
		kind    string
		failing bool
	}{
		{nil, "", false},
		{&net.DNSError{Err: "NXDOMAIN", IsNotFound: true}, "", false},
		{&net.DNSError{Err: "no TXT record", IsNotFound: true}, "", false},
		{&net.DNSError{Err: "odd", IsNotFound: true, IsTemporary: true}, "error", true},
		{&net.DNSError{Err: "timeout", IsTimeout: true, IsTemporary: true}, "timeout", true},
		{&net.DNSError{Err: "SERVFAIL", IsTemporary: true}, "SERVFAIL", true},
		{&net.DNSError{Err: "read udp: connection refused", IsTemporary: true, UnwrapErr: fmt.Errorf("connection refused")}, "unreachable", true},
		{&net.DNSError{Err: "lookup canceled", IsTemporary: true, UnwrapErr: context.Canceled}, "", false},
		{fmt.Errorf("boom"), "error", true},
	}
	for _, tt := range tests {
		kind, failing := FailureKind(tt.err)
		if kind != tt.kind || failing != tt.failing {
			t.Errorf("FailureKind(%v) = %q, %v; want %q, %v", tt.err, kind, failing, tt.kind, tt.failing)
		}
	}
}
