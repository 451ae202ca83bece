// Telling a resolver outage from a broken zone.
//
// A key lookup can fail because one domain's DNS is broken (its servers
// are down, its DNSSEC is bogus: the resolver answers SERVFAIL for that
// name only) or because the resolver itself is failing (down, unreachable,
// cut off from the Internet, refusing us). The first is that domain's
// problem and shows in the per-message lines; the second stamps
// dkim=temperror on every signed message and deserves one loud line.
//
// The rule: a failed lookup counts when a retry could fix it (timeout,
// SERVFAIL, REFUSED or another error rcode, no reply at all). The resolver
// is failing when such failures span outageDomains different signing
// domains with no answer in between, or at once when it could not be
// reached at all (connection refused, no route): no zone can cause that.
// Any answer, a record, NXDOMAIN or NODATA, shows the resolver working
// and ends the outage. So a broken zone, however many messages and
// selectors it sends, never raises the alarm on its own.

package dns

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// outageDomains is how many signing domains must fail in a row, with no
// answer between, before the resolver counts as failing.
const outageDomains = 3

// outageReminder is how often an outage that goes on is reported again.
const outageReminder = 5 * time.Minute

// Outage describes a resolver outage for the Health hooks.
type Outage struct {
	Kind    string        // "timeout", "unreachable", or the rcode: "SERVFAIL", "REFUSED", ...
	Err     error         // the latest failure; it names the server and the DNS name
	Since   time.Time     // the first failure of the run that became an outage
	Lasted  time.Duration // since Since (for OnRecover: until the first answer)
	Failed  int           // failed lookups since Since
	Domains int           // different signing domains among them
}

// HealthHooks are called, outside any lock, as the resolver's state
// changes. Any may be nil.
type HealthHooks struct {
	OnOutage   func(Outage) // the resolver started failing
	OnStill    func(Outage) // it still fails, at most every outageReminder
	OnRecover  func(Outage) // it answered again
	Now        func() time.Time
	Reminder   time.Duration // 0 ⇒ outageReminder
	MinDomains int           // 0 ⇒ outageDomains
}

// Health is a Resolver that watches the lookups of another one for a
// resolver outage (see the rule above). Put it under the Cache: cache
// hits say nothing about the resolver.
type Health struct {
	next  Resolver
	hooks HealthHooks

	mu       sync.Mutex
	down     bool
	since    time.Time
	failed   int
	domains  map[string]bool
	reminded time.Time
}

// NewHealth wraps next.
func NewHealth(next Resolver, hooks HealthHooks) *Health {
	if hooks.Now == nil {
		hooks.Now = time.Now
	}
	if hooks.Reminder <= 0 {
		hooks.Reminder = outageReminder
	}
	if hooks.MinDomains <= 0 {
		hooks.MinDomains = outageDomains
	}
	return &Health{next: next, hooks: hooks, domains: map[string]bool{}}
}

// LookupTXT asks next and records what its outcome says of the resolver.
func (h *Health) LookupTXT(ctx context.Context, name string) (*TXTResult, error) {
	res, err := h.next.LookupTXT(ctx, name)
	kind, failing := FailureKind(err)
	if err != nil && !failing {
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			return res, err // a cancelled lookup, say: nothing learnt
		}
	}
	h.mu.Lock()
	now := h.hooks.Now()
	var call func(Outage)
	var o Outage
	if !failing {
		if h.down {
			call, o = h.hooks.OnRecover, h.outage(now, "", nil)
		}
		h.down, h.failed, h.since = false, 0, time.Time{}
		clear(h.domains)
	} else {
		if h.failed == 0 {
			h.since = now
		}
		h.failed++
		if len(h.domains) < h.hooks.MinDomains {
			h.domains[signingDomain(name)] = true
		}
		switch {
		case !h.down && (len(h.domains) >= h.hooks.MinDomains || kind == "unreachable"):
			h.down, h.reminded = true, now
			call, o = h.hooks.OnOutage, h.outage(now, kind, err)
		case h.down && now.Sub(h.reminded) >= h.hooks.Reminder:
			h.reminded = now
			call, o = h.hooks.OnStill, h.outage(now, kind, err)
		}
	}
	h.mu.Unlock()
	if call != nil {
		call(o)
	}
	return res, err
}

// Adopt takes over old's state, so that an outage that goes on across a
// configuration reload is not reported again, and its end is. Call it
// only when both watch the same resolvers, before h is in use.
func (h *Health) Adopt(old *Health) {
	if old == nil || old == h {
		return
	}
	old.mu.Lock()
	down, since, failed, reminded := old.down, old.since, old.failed, old.reminded
	domains := make(map[string]bool, len(old.domains))
	for d := range old.domains {
		domains[d] = true
	}
	old.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down, h.since, h.failed, h.reminded, h.domains = down, since, failed, reminded, domains
}

// outage describes the current run of failures. Callers hold h.mu.
func (h *Health) outage(now time.Time, kind string, err error) Outage {
	return Outage{Kind: kind, Err: err, Since: h.since, Lasted: now.Sub(h.since), Failed: h.failed, Domains: len(h.domains)}
}

// FailureKind classifies a lookup error: failing is true for an error a
// retry could fix, the kind that may mean the resolver is failing, and
// kind names it: "timeout", "unreachable" (no reply could be had: refused
// connection, no route), or the rcode the resolver answered ("SERVFAIL",
// "REFUSED"). A nil error, NXDOMAIN and NODATA are answers: not failing.
func FailureKind(err error) (kind string, failing bool) {
	var de *net.DNSError
	switch {
	case err == nil:
		return "", false
	case errors.Is(err, context.Canceled):
		return "", false
	case !errors.As(err, &de):
		return "error", true
	case de.IsNotFound && !de.IsTemporary:
		return "", false
	case de.IsTimeout:
		return "timeout", true
	case de.UnwrapErr != nil:
		return "unreachable", true // the exchange itself failed: no reply
	case isRcode(de.Err):
		return de.Err, true // the resolver replied, with an error rcode
	}
	return "error", true
}

// isRcode reports whether s is an rcode's name, as exchange reports one.
func isRcode(s string) bool {
	for rc := range mdns.RcodeToString {
		if rcodeString(rc) == s {
			return true
		}
	}
	return strings.HasPrefix(s, "RCODE")
}

// signingDomain is the d= part of a key name (what follows
// "._domainkey."), or the name itself.
func signingDomain(name string) string {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if _, d, ok := strings.Cut(name, "._domainkey."); ok {
		return d
	}
	return name
}
