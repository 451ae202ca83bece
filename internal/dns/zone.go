// DNS queries beyond key lookups, for `dkimmilter keys check`: ask each
// configured resolver on its own (so that answers can be compared), find
// the authoritative servers of a key's zone, and ask those directly.
//
// Why ask the authoritative servers: a recursive resolver answers from its
// cache, which keeps an old record, or the absence of one, for its TTL. The
// zone's own servers say what is published right now, and asking each of
// them shows a secondary that has not loaded the new zone yet.

package dns

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Servers returns the servers r asks, as "IP:port", in the order it asks
// them. keys check makes one single-server resolver of each, so that a
// resolver that still caches an old answer shows.
func (r *Client) Servers() []string { return slices.Clone(r.servers) }

// LocalServer reports whether addr ("IP:port") is on this host. Only then
// is a resolver's AD bit worth reporting: AD says the resolver validated
// the answer (RFC 4035 §3.2.3), but nothing protects the bit on its way
// from a remote resolver, so a stub trusts it only over a path it trusts
// (RFC 4035 §4.9.3, RFC 6840 §5.7).
// https://www.rfc-editor.org/rfc/rfc4035#section-3.2.3
// https://www.rfc-editor.org/rfc/rfc4035#section-4.9.3
// https://www.rfc-editor.org/rfc/rfc6840#section-5.7
func LocalServer(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// ZoneResolver asks one authoritative server about its own zone.
//
// Its queries have RD=0 (RFC 1035 §4.1.1): the server must answer from its
// zone data and never from a cache or by recursing, even when it also
// offers recursion. AD is never reported: an authoritative server does not
// validate. A CNAME to a name outside the server's zones (a DKIM provider's
// key) is looked up through follow, since the server cannot answer it.
// https://www.rfc-editor.org/rfc/rfc1035#section-4.1.1
type ZoneResolver struct {
	c      *Client
	follow Resolver
}

// NewZoneResolver returns a resolver that asks server ("IP:port") with
// RD=0, within timeout (0 means 5s). follow, if not nil, looks up CNAME
// targets the server does not answer.
func NewZoneResolver(server string, timeout time.Duration, follow Resolver) (*ZoneResolver, error) {
	r, err := NewClient([]string{server}, timeout)
	if err != nil {
		return nil, err
	}
	r.noRecurse = true
	return &ZoneResolver{c: r, follow: follow}, nil
}

// LookupTXT asks the server for name's TXT RRs. Errors are *net.DNSError
// as for Client; a referral (the server delegates the name and is not
// authoritative for it) is a temporary error naming the servers it refers to.
func (a *ZoneResolver) LookupTXT(ctx context.Context, name string) (*TXTResult, error) {
	qname, display, err := queryName(name)
	if err != nil {
		return nil, err
	}
	resp, server, err := a.c.exchange(ctx, qname, mdns.TypeTXT)
	if err != nil {
		return nil, err
	}
	if resp.Rcode == mdns.RcodeNameError {
		return nil, &net.DNSError{Err: "NXDOMAIN", Name: display, Server: server, IsNotFound: true}
	}
	if res := txtFromAnswer(qname, resp.Answer); len(res.Records) > 0 {
		return res, nil
	}
	if !resp.Authoritative {
		var to []string
		for _, rr := range resp.Ns {
			if ns, ok := rr.(*mdns.NS); ok {
				to = append(to, strings.TrimSuffix(ns.Ns, "."))
			}
		}
		if len(to) > 0 {
			return nil, &net.DNSError{Err: "not authoritative (referral to " + strings.Join(to, ", ") + ")",
				Name: display, Server: server, IsTemporary: true}
		}
	}
	if target := cnameTarget(qname, resp.Answer); target != "" && a.follow != nil {
		return a.follow.LookupTXT(ctx, target)
	}
	return nil, &net.DNSError{Err: "no TXT record", Name: display, Server: server, IsNotFound: true}
}

// cnameTarget returns the end of the CNAME chain from qname in answer, or "".
func cnameTarget(qname string, answer []mdns.RR) string {
	cur, seen := strings.ToLower(qname), map[string]bool{}
	for !seen[cur] {
		seen[cur] = true
		next := ""
		for _, rr := range answer {
			if c, ok := rr.(*mdns.CNAME); ok && strings.EqualFold(c.Hdr.Name, cur) {
				next = strings.ToLower(c.Target)
			}
		}
		if next == "" {
			break
		}
		cur = next
	}
	if cur == strings.ToLower(qname) {
		return ""
	}
	return cur
}

// Zone is the zone that holds a name, and where its name servers are.
type Zone struct {
	Apex    string       // without the final dot
	Servers []NameServer // one per address of each NS host, by host then address
	// Skipped lists the NS hosts whose addresses could not be found, with
	// why: a problem of the zone, or of DNS.
	Skipped []string
	// Unroutable lists the addresses this host has no route to (IPv6 on
	// an IPv4-only host): a limit of where the check runs, not of the zone.
	Unroutable []string
}

// NameServer is one address of one of a zone's name servers.
type NameServer struct {
	Host string // the NS host name, without the final dot
	Addr string // "IP:port"
}

// FindZone finds the zone that holds name and its name servers'
// addresses, asking res; the servers are to be asked on port (0: 53;
// tests point it at an in-process server). It walks up from name with NS
// queries until one is answered with NS RRs owned by the name asked (a
// zone apex, RFC 1034 §4.2.1); the SOA that negative answers carry (RFC
// 2308 §3) lets it jump straight to the apex. Errors are *net.DNSError
// for name.
// https://www.rfc-editor.org/rfc/rfc1034#section-4.2.1
// https://www.rfc-editor.org/rfc/rfc2308#section-3
func FindZone(ctx context.Context, res *Client, name string, port int) (*Zone, error) {
	qname, display, err := queryName(name)
	if err != nil {
		return nil, err
	}
	apex, hosts, err := findZone(ctx, res, qname)
	if err != nil {
		return nil, err
	}
	if apex == "." {
		return nil, &net.DNSError{Err: "no zone below the root holds it (does the domain exist?)", Name: display, IsNotFound: true}
	}
	if port == 0 {
		port = 53
	}
	zone := &Zone{Apex: strings.TrimSuffix(apex, ".")}
	type found struct {
		addrs   []netip.Addr
		skipped []string
	}
	results := make([]found, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			results[i].addrs, results[i].skipped = hostAddrs(ctx, res, h)
		})
	}
	wg.Wait()
	for i, h := range hosts {
		host := strings.TrimSuffix(h, ".")
		zone.Skipped = append(zone.Skipped, results[i].skipped...)
		for _, a := range results[i].addrs {
			addr := netip.AddrPortFrom(a, uint16(port)).String()
			if !routable(addr) {
				zone.Unroutable = append(zone.Unroutable, host+" ("+a.String()+")")
				continue
			}
			zone.Servers = append(zone.Servers, NameServer{Host: host, Addr: addr})
		}
	}
	if len(zone.Servers) == 0 {
		why := zone.Skipped
		if len(zone.Unroutable) > 0 {
			why = append(why, "no route to "+strings.Join(zone.Unroutable, ", "))
		}
		return nil, &net.DNSError{Err: "no name server of " + zone.Apex + " can be asked: " + strings.Join(why, "; "),
			Name: display, IsTemporary: true}
	}
	return zone, nil
}

// findZone walks up from qname to the apex of its zone and returns the
// apex and its NS hosts (FQDNs, sorted).
func findZone(ctx context.Context, res *Client, qname string) (string, []string, error) {
	display := strings.TrimSuffix(qname, ".")
	cand := qname
	for range 128 { // a DNS name has at most 127 labels
		resp, server, err := res.exchange(ctx, cand, mdns.TypeNS)
		if err != nil {
			return "", nil, walkError(display, "NS", cand, err)
		}
		var hosts []string
		aliased := false
		for _, rr := range resp.Answer {
			switch rr := rr.(type) {
			case *mdns.NS:
				if strings.EqualFold(rr.Hdr.Name, cand) {
					hosts = append(hosts, strings.ToLower(rr.Ns))
				}
			case *mdns.CNAME:
				aliased = aliased || strings.EqualFold(rr.Hdr.Name, cand)
			}
		}
		if len(hosts) > 0 {
			slices.Sort(hosts)
			return strings.ToLower(cand), slices.Compact(hosts), nil
		}
		if cand == "." {
			return "", nil, &net.DNSError{Err: "the root has no NS records", Name: display, Server: server, IsTemporary: true}
		}
		next := parentName(cand)
		// The SOA of a negative answer names the apex. Not for an alias:
		// that SOA is the zone of the CNAME's target, while the alias
		// itself lives in a zone above cand.
		if !aliased {
			for _, rr := range resp.Ns {
				if soa, ok := rr.(*mdns.SOA); ok && mdns.IsSubDomain(soa.Hdr.Name, cand) && !strings.EqualFold(soa.Hdr.Name, cand) {
					next = soa.Hdr.Name
				}
			}
		}
		cand = next
	}
	return "", nil, &net.DNSError{Err: "no zone apex found", Name: display, IsTemporary: true}
}

// walkError describes a failed NS query of the walk, keeping its class.
func walkError(name, qtype, cand string, err error) *net.DNSError {
	e := &net.DNSError{Err: fmt.Sprintf("finding its zone: %s query for %s: %v", qtype, strings.TrimSuffix(cand, "."), err), Name: name, IsTemporary: true, UnwrapErr: err}
	if de, ok := err.(*net.DNSError); ok {
		e.Err = fmt.Sprintf("finding its zone: %s query for %s: %s", qtype, strings.TrimSuffix(cand, "."), de.Err)
		e.Server, e.IsTimeout, e.IsTemporary = de.Server, de.IsTimeout, de.IsTemporary || de.IsTimeout
	}
	return e
}

// parentName returns the parent of a FQDN ("." for a TLD).
func parentName(fqdn string) string {
	if i := strings.IndexByte(fqdn, '.'); i >= 0 && i+1 < len(fqdn) {
		return fqdn[i+1:]
	}
	return "."
}

// hostAddrs looks up host's IPv4 and IPv6 addresses, sorted; what failed
// goes into skipped.
func hostAddrs(ctx context.Context, res *Client, host string) (addrs []netip.Addr, skipped []string) {
	display := strings.TrimSuffix(host, ".")
	var failed []string
	for _, qtype := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		resp, _, err := res.exchange(ctx, host, qtype)
		if err != nil {
			failed = append(failed, mdns.TypeToString[qtype]+" "+errText(err))
			continue
		}
		if resp.Rcode == mdns.RcodeNameError {
			return nil, []string{display + ": no such host (NXDOMAIN)"}
		}
		for _, rr := range resp.Answer {
			switch rr := rr.(type) {
			case *mdns.A:
				if a, ok := netip.AddrFromSlice(rr.A); ok {
					addrs = append(addrs, a.Unmap())
				}
			case *mdns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
					addrs = append(addrs, a)
				}
			}
		}
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return cmp.Compare(a.String(), b.String()) })
	addrs = slices.Compact(addrs)
	if len(addrs) == 0 {
		why := "no address"
		if len(failed) > 0 {
			why += ": " + strings.Join(failed, ", ")
		}
		return nil, []string{display + ": " + why}
	}
	return addrs, nil
}

func errText(err error) string {
	if de, ok := err.(*net.DNSError); ok {
		return de.Err
	}
	return err.Error()
}

// routable reports whether this host has a route to addr. Connecting a
// UDP socket sends nothing; it only picks a route, so a host without IPv6
// skips the servers' IPv6 addresses instead of reporting them as failures.
func routable(addr string) bool {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// String names an authoritative server in reports: "host (IP)", with
// the port only when it is not 53.
func (s NameServer) String() string {
	ap, err := netip.ParseAddrPort(s.Addr)
	if err != nil {
		return s.Host + " (" + s.Addr + ")"
	}
	if ap.Port() == 53 {
		return s.Host + " (" + ap.Addr().String() + ")"
	}
	return s.Host + " (" + ap.Addr().String() + " port " + strconv.Itoa(int(ap.Port())) + ")"
}
