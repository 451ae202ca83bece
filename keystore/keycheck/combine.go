// Combining the answers of several resolvers into one report, and
// building the resolvers keys check asks.

package keycheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// Resolvers returns one resolver per server of nameservers (those of
// /etc/resolv.conf when empty), each asked on its own so that a resolver
// that serves an old answer shows by name.
func Resolvers(nameservers []string, timeout time.Duration) ([]Resolver, error) {
	all, err := dns.NewClient(nameservers, timeout)
	if err != nil {
		return nil, err
	}
	var out []Resolver
	for _, s := range all.Servers() {
		r, err := dns.NewClient([]string{s}, timeout)
		if err != nil {
			return nil, err
		}
		out = append(out, Resolver{Name: s, Resolver: r, TrustAD: dns.LocalServer(s)})
	}
	return out, nil
}

// CheckNameServers checks k against the authoritative servers of its
// zone, found through res, each asked directly with RD=0; CNAME targets
// outside the zone (a provider's key) are looked up through res. What
// keeps the servers from being found becomes the result's problem.
func CheckNameServers(ctx context.Context, k *keystore.Key, res *dns.Client, timeout time.Duration, port int, opts ...Option) *Result {
	name := dkim.DNSName(k.Selector, k.Domain)
	auth, err := dns.FindZone(ctx, res, name, port)
	if err != nil {
		p := Problem{Status: Temp, Text: "finding the zone's name servers: " + err.Error(),
			Hints: []string{"check that the domain " + k.Domain + " is delegated (dig " + k.Domain + " NS), or check without -authoritative"}}
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			p.Status = Fail
			p.Hints = []string{"the domain " + k.Domain + " does not exist in DNS: check domain = in keys." + k.Name + ", or register and delegate the domain"}
		}
		r := check(ctx, k, nil, p, opts)
		r.Summary = "name servers not found"
		return r
	}
	var rs []Resolver
	for _, srv := range auth.Servers {
		ar, err := dns.NewZoneResolver(srv.Addr, timeout, res)
		if err != nil {
			continue // FindZone only returns valid addresses
		}
		rs = append(rs, Resolver{Name: srv.String(), Resolver: ar, Authoritative: true})
	}
	r := Check(ctx, k, rs, opts...)
	r.Zone, r.NotAsked, r.Skipped = auth.Apex, auth.Unroutable, auth.Skipped
	for _, s := range auth.Skipped {
		r.Problems = append(r.Problems, Problem{Status: Warn,
			Text:  "a name server of " + auth.Apex + " could not be asked: " + s,
			Hints: []string{"resolvers that pick this server fail to look the key up: fix the zone's NS records or give the host an address"}})
		r.Status = max(r.Status, Warn)
	}
	return r
}

// combine merges the verdicts into the result: when every resolver sees
// the same, its problems; when they differ, a propagation problem that
// says which resolver sees what, then each group's problems.
func (c *keyChecker) combine(verdicts []*verdict) {
	r := c.r
	noun := "resolvers"
	if c.authoritative() {
		noun = "name servers"
	}
	type group struct {
		v         *verdict
		resolvers []string
		ttl       time.Duration
	}
	var groups []*group
	byKey := map[string]*group{}
	for i, a := range r.Answers {
		recs := slices.Clone(a.Records)
		slices.Sort(recs)
		key := verdicts[i].summary + "\x00" + strings.Join(recs, "\x00")
		g := byKey[key]
		if g == nil {
			g = &group{v: verdicts[i], ttl: a.TTL}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.resolvers = append(g.resolvers, a.Resolver)
	}
	if len(groups) == 0 {
		return // check reports why
	}
	if len(groups) == 1 {
		g := groups[0]
		r.Summary = c.headline(g.v, g.ttl)
		if n := len(g.resolvers); n > 1 && g.v.status != Temp {
			r.Summary += fmt.Sprintf(" (%d %s agree)", n, noun)
		}
		for _, p := range g.v.problems {
			if p.Status == Temp { // name the server that failed
				p.Text = strings.Join(g.resolvers, ", ") + ": " + p.Text
			}
			r.Problems = append(r.Problems, p)
		}
		return
	}

	total, seeing, answered := len(r.Answers), 0, 0
	var answeredGroups []*group
	var ttl time.Duration
	for _, g := range groups {
		if g.v.matching {
			seeing += len(g.resolvers)
			ttl = g.ttl
		}
		if g.v.status != Temp {
			answered += len(g.resolvers)
			answeredGroups = append(answeredGroups, g)
		}
	}
	switch {
	case len(answeredGroups) <= 1:
		// Only timeouts and failures differ: not a propagation matter.
		if len(answeredGroups) == 1 {
			r.Summary = c.headline(answeredGroups[0].v, answeredGroups[0].ttl)
		} else {
			r.Summary = "could not be checked"
		}
		r.Summary += fmt.Sprintf(" (%d of %d %s answered)", answered, total, noun)
	case seeing > 0:
		r.Summary = fmt.Sprintf("%d of %d %s see the record", seeing, total, noun)
	default:
		r.Summary = fmt.Sprintf("%s disagree (%d answers from %d %s)", noun, len(answeredGroups), total, noun)
	}
	if len(answeredGroups) > 1 {
		var parts []string
		status := Warn
		for _, g := range answeredGroups {
			parts = append(parts, strings.Join(g.resolvers, ", ")+": "+g.v.summary)
			status = max(status, g.v.status)
		}
		var hints []string
		if c.authoritative() {
			// Authoritative servers do not cache: a difference is a
			// secondary that has not transferred the current zone.
			hints = []string{"a name server that differs has not loaded the current zone: secondaries follow the primary after its NOTIFY or within the SOA refresh interval; compare their serials (dig @SERVER " + r.Domain + " SOA) and check the zone transfers if they stay behind"}
		} else {
			cached := "for its TTL"
			if ttl > 0 {
				cached = fmt.Sprintf("for its TTL (%s)", ttl)
			}
			hints = []string{
				"if the record changed recently, resolvers keep the old answer " + cached + ", and the absence of a record for the zone's negative TTL (the SOA minimum): check again after that",
				"if it does not settle, ask the zone's own servers: dkimmilter keys check -authoritative " + c.k.Name,
			}
		}
		r.Problems = append(r.Problems, Problem{Status: status,
			Text:  "answers differ between " + noun + ": " + strings.Join(parts, "; "),
			Hints: hints})
	}
	// When some resolvers see the right record, what the others see is
	// the old state of the zone, which the propagation problem covers:
	// their "publish this" hints would mislead.
	seen := map[string]bool{}
	for _, g := range groups {
		if seeing > 0 && !g.v.matching && g.v.status != Temp {
			continue
		}
		for _, p := range g.v.problems {
			if !seen[p.Text] {
				seen[p.Text] = true
				p.Text = strings.Join(g.resolvers, ", ") + ": " + p.Text
				r.Problems = append(r.Problems, p)
			}
		}
	}
}

// authoritative reports whether the answers come from the zone's servers.
func (c *keyChecker) authoritative() bool {
	return len(c.resolvers) > 0 && allAuthoritative(c.resolvers)
}

// headline is the summary of an answer most resolvers agree on.
func (c *keyChecker) headline(v *verdict, ttl time.Duration) string {
	if !v.matching {
		return v.summary
	}
	s := c.r.KeyType
	if c.r.KeyType == "rsa" {
		s = fmt.Sprintf("rsa %d-bit", c.r.Bits)
	}
	return fmt.Sprintf("%s key %s, TTL %s", s, v.summary, ttl)
}

// dnssecStatus says whether the answers that found a record were
// validated. Only the AD bit of a trusted (local) resolver counts, and
// the zone's own servers do not validate at all.
func dnssecStatus(resolvers []Resolver, answers []Answer) string {
	var trusted, validated, remote []string
	asked := 0
	for i, a := range answers {
		if a.Err != nil || resolvers[i].Authoritative {
			continue
		}
		asked++
		switch {
		case resolvers[i].TrustAD:
			trusted = append(trusted, a.Resolver)
			if a.AD {
				validated = append(validated, a.Resolver)
			}
		case a.AD:
			remote = append(remote, a.Resolver)
		}
	}
	switch {
	case asked == 0:
		return ""
	case len(validated) > 0 && len(validated) == len(trusted):
		return "validated"
	case len(validated) > 0:
		return "validated by " + strings.Join(validated, ", ") + " only"
	case len(remote) > 0:
		return "not known (AD set by " + strings.Join(remote, ", ") + ", a remote resolver: nothing protects its AD bit on the way here)"
	}
	return "not validated"
}

func allAuthoritative(rs []Resolver) bool {
	for _, r := range rs {
		if !r.Authoritative {
			return false
		}
	}
	return true
}

// quoteList quotes TXT records for a message, shortening long ones.
func quoteList(recs []string) string {
	q := make([]string, len(recs))
	for i, r := range recs {
		if len(r) > 60 {
			r = r[:57] + "..."
		}
		q[i] = fmt.Sprintf("%q", r)
	}
	return strings.Join(q, ", ")
}
