// The primary server of a zone, for dynamic updates (internal/dnsupdate):
// RFC 2136 §4 sends an update to the zone's primary, and the MNAME field
// of the zone's SOA names it (RFC 1035 §3.3.13).
// https://www.rfc-editor.org/rfc/rfc2136#section-4
// https://www.rfc-editor.org/rfc/rfc1035#section-3.3.13

package dns

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// SOA is what FindSOA learns about the zone that holds a name.
type SOA struct {
	Apex  string // without the final dot
	MName string // the primary server's host name, without the final dot
	// NegativeTTL is how long a resolver may keep "no such record" for a
	// name of the zone: the lesser of the SOA's TTL and its MINIMUM field
	// (RFC 2308 §5).
	// https://www.rfc-editor.org/rfc/rfc2308#section-5
	NegativeTTL time.Duration
}

// FindSOA finds the zone that holds name by asking res for SOA records,
// walking up from name: a zone apex answers with its SOA, and a name
// below it gets the zone's SOA in the authority section of a negative
// answer (RFC 2308 §3), which jumps straight to the apex. Errors are
// *net.DNSError for name.
// https://www.rfc-editor.org/rfc/rfc2308#section-3
func FindSOA(ctx context.Context, res *Client, name string) (*SOA, error) {
	qname, display, err := queryName(name)
	if err != nil {
		return nil, err
	}
	cand := qname
	for range 128 { // a DNS name has at most 127 labels
		resp, server, err := res.exchange(ctx, cand, mdns.TypeSOA)
		if err != nil {
			return nil, walkError(display, "SOA", cand, err)
		}
		// An alias's answer carries the SOA of its target's zone, while
		// the alias itself lives in a zone above cand: go up instead.
		aliased := false
		for _, rr := range resp.Answer {
			if c, ok := rr.(*mdns.CNAME); ok && strings.EqualFold(c.Hdr.Name, cand) {
				aliased = true
			}
		}
		for _, rr := range append(resp.Answer, resp.Ns...) {
			if aliased {
				break
			}
			soa, ok := rr.(*mdns.SOA)
			if !ok || !mdns.IsSubDomain(soa.Hdr.Name, cand) {
				continue
			}
			if soa.Hdr.Name == "." {
				return nil, &net.DNSError{Err: "no zone below the root holds it (does the domain exist?)", Name: display, Server: server, IsNotFound: true}
			}
			return &SOA{Apex: strings.ToLower(strings.TrimSuffix(soa.Hdr.Name, ".")), MName: strings.ToLower(strings.TrimSuffix(soa.Ns, ".")),
				NegativeTTL: time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second}, nil
		}
		if cand == "." {
			break
		}
		cand = parentName(cand)
	}
	return nil, &net.DNSError{Err: "no SOA record found for it or any name above it", Name: display, IsNotFound: true}
}

// HostAddrs looks up host's IPv4 and IPv6 addresses through res, sorted
// and without the ones this host has no route to. The error says why none
// was found.
func HostAddrs(ctx context.Context, res *Client, host string) ([]netip.Addr, error) {
	qname, display, err := queryName(host)
	if err != nil {
		return nil, err
	}
	addrs, skipped := hostAddrs(ctx, res, qname)
	var usable []netip.Addr
	for _, a := range addrs {
		if routable(netip.AddrPortFrom(a, 53).String()) {
			usable = append(usable, a)
		}
	}
	if len(usable) == 0 {
		why := "no address this host can reach"
		if len(skipped) > 0 {
			why = strings.TrimPrefix(skipped[0], display+": ")
		}
		return nil, &net.DNSError{Err: why, Name: display, IsNotFound: true}
	}
	return usable, nil
}
