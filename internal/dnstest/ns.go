// Zones: NS, SOA, A and AAAA answers, so that a test can walk up to a
// zone's apex and find its name servers as `dkimmilter keys check
// -authoritative` does, with one Server playing the recursive resolver and
// the authoritative servers of a parent zone and its delegated child.
//
// Answers for names inside a zone set with SetZone carry AA=1, and negative
// answers (NXDOMAIN, NODATA) carry the zone's SOA in the authority section,
// as RFC 2308 §3 has authoritative servers do and recursive resolvers pass
// on: https://www.rfc-editor.org/rfc/rfc2308#section-3
//
// A query with RD=0 gets what an authoritative-only server would answer:
// REFUSED outside its zones, a referral for a name delegated away with
// SetDelegation, and no CNAME chasing out of its zones.
//
// Without SetZone, SetAddrs or SetDelegation the server answers exactly as
// before.

package dnstest

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// nsData is the zone data of a Server, guarded by Server.mu.
type nsData struct {
	zones map[string][]string     // apex FQDN -> NS host FQDNs
	addrs map[string][]netip.Addr // host FQDN -> addresses
	soa   map[string]*dns.SOA     // apex FQDN -> its SOA
	cuts  map[string][]string     // delegated child FQDN -> its NS hosts
}

// SetZone makes apex the apex of a zone served with the given name servers
// (host names; give them addresses with SetAddrs). NS and SOA queries for
// apex are answered, names below it get the SOA in negative answers, and
// every answer inside the zone is authoritative. The deepest zone wins, so
// SetZone("example.com", …) and SetZone("sub.example.com", …) model a
// parent with a delegated child, both served here.
func (s *Server) SetZone(apex string, nameservers ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initNS()
	k := key(apex)
	hosts := make([]string, 0, len(nameservers))
	for _, ns := range nameservers {
		hosts = append(hosts, key(ns))
	}
	s.ns.zones[k] = hosts
	sub := func(label string) string {
		if k == "." {
			return label + "."
		}
		return label + "." + k
	}
	primary := sub("ns")
	if len(hosts) > 0 {
		primary = hosts[0]
	}
	s.ns.soa[k] = &dns.SOA{
		Hdr:     dns.RR_Header{Name: k, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: DefaultTTL},
		Ns:      primary,
		Mbox:    sub("hostmaster"),
		Serial:  1,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: DefaultTTL,
	}
}

// SetAddrs gives host A and AAAA records (IP addresses as text; it reports
// a test error for anything else).
func (s *Server) SetAddrs(host string, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initNS()
	var as []netip.Addr
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			s.t.Errorf("dnstest: SetAddrs(%q): %v", host, err)
			return
		}
		as = append(as, ip)
	}
	s.ns.addrs[key(host)] = as
}

// SetDelegation makes child a zone delegated to other servers: RD=0
// queries for names at or below child get a referral to nameservers
// (NS RRs in the authority section, AA=0), as from a parent zone's server.
// Queries with RD=1 are answered as before.
func (s *Server) SetDelegation(child string, nameservers ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initNS()
	hosts := make([]string, 0, len(nameservers))
	for _, ns := range nameservers {
		hosts = append(hosts, key(ns))
	}
	s.ns.cuts[key(child)] = hosts
}

// initNS allocates the zone maps. Callers hold s.mu.
func (s *Server) initNS() {
	if s.ns.zones == nil {
		s.ns.zones = map[string][]string{}
		s.ns.addrs = map[string][]netip.Addr{}
		s.ns.soa = map[string]*dns.SOA{}
		s.ns.cuts = map[string][]string{}
	}
}

// hasZones reports whether SetZone or SetAddrs was called. Callers hold s.mu.
func (s *Server) hasZones() bool { return s.ns.zones != nil }

// answerZoneType answers the NS, SOA, A and AAAA questions, following
// CNAMEs set with SetCNAME as the TXT path does. It reports false for
// other types, which the TXT path answers. Callers hold s.mu.
func (s *Server) answerZoneType(m *dns.Msg, q dns.Question) bool {
	switch q.Qtype {
	case dns.TypeNS, dns.TypeSOA, dns.TypeA, dns.TypeAAAA:
	default:
		return false
	}
	cur := key(q.Name)
	for hop := 0; ; hop++ {
		e := s.names[cur]
		if e != nil && e.hasRcode {
			m.Rcode = e.rcode
			return true
		}
		if e == nil || e.cname == "" || hop == maxChain {
			break
		}
		m.Answer = append(m.Answer, &dns.CNAME{
			Hdr:    dns.RR_Header{Name: cur, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: e.ttl},
			Target: e.cname,
		})
		cur = e.cname
	}
	hdr := dns.RR_Header{Name: cur, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: DefaultTTL}
	switch q.Qtype {
	case dns.TypeNS:
		for _, h := range s.ns.zones[cur] {
			m.Answer = append(m.Answer, &dns.NS{Hdr: hdr, Ns: h})
		}
	case dns.TypeSOA:
		if soa := s.ns.soa[cur]; soa != nil {
			m.Answer = append(m.Answer, dns.Copy(soa))
		}
	case dns.TypeA, dns.TypeAAAA:
		for _, a := range s.ns.addrs[cur] {
			switch {
			case a.Is4() && q.Qtype == dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
			case a.Is6() && q.Qtype == dns.TypeAAAA:
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
	}
	if len(m.Answer) > 0 && m.Answer[len(m.Answer)-1].Header().Rrtype == q.Qtype {
		return true
	}
	if !s.exists(cur) {
		m.Rcode = dns.RcodeNameError
	}
	return true
}

// finishZone makes a reply authoritative inside a zone, turns NXDOMAIN
// into NODATA for names that exist only as zone data or as empty
// non-terminals (RFC 8020: a name with names below it exists), and puts
// the zone's SOA in the authority section of negative answers. Callers
// hold s.mu.
func (s *Server) finishZone(m *dns.Msg, q dns.Question) {
	if !m.RecursionDesired && !s.authoritativeOnly(m, q) {
		return
	}
	// The name whose zone counts is the last one of a CNAME chain.
	name := key(q.Name)
	for _, rr := range m.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			name = c.Target
		}
	}
	apex := s.zoneOf(name)
	if apex == "" {
		return
	}
	m.Authoritative = true
	if m.Rcode == dns.RcodeNameError && s.exists(name) {
		m.Rcode = dns.RcodeSuccess
	}
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return
	}
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == q.Qtype {
			return // a positive answer
		}
	}
	m.Ns = append(m.Ns, dns.Copy(s.ns.soa[apex]))
}

// authoritativeOnly turns the reply to an RD=0 query into what a server
// that only serves its zones would send, and reports whether the reply
// still needs finishZone's authority section. Callers hold s.mu.
func (s *Server) authoritativeOnly(m *dns.Msg, q dns.Question) bool {
	qn := key(q.Name)
	zone := s.zoneOf(qn)
	if cut := s.cutOf(qn); cut != "" && len(cut) > len(zone) {
		m.Rcode, m.Answer, m.Authoritative = dns.RcodeSuccess, nil, false
		for _, h := range s.ns.cuts[cut] {
			m.Ns = append(m.Ns, &dns.NS{Hdr: dns.RR_Header{Name: cut, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: DefaultTTL}, Ns: h})
		}
		return false
	}
	if zone == "" {
		m.Rcode, m.Answer = dns.RcodeRefused, nil
		return false
	}
	for i, rr := range m.Answer {
		if c, ok := rr.(*dns.CNAME); ok && s.zoneOf(c.Target) == "" {
			// The target is someone else's: the resolver chases it.
			m.Answer, m.Rcode, m.Authoritative = m.Answer[:i+1], dns.RcodeSuccess, true
			return false
		}
	}
	return true
}

// cutOf returns the deepest delegated child that contains name, or "".
func (s *Server) cutOf(name string) string {
	best := ""
	for cut := range s.ns.cuts {
		if (name == cut || strings.HasSuffix(name, "."+cut)) && len(cut) > len(best) {
			best = cut
		}
	}
	return best
}

// zoneOf returns the apex of the deepest zone that contains name, or "".
func (s *Server) zoneOf(name string) string {
	best := ""
	for apex := range s.ns.zones {
		if (name == apex || strings.HasSuffix(name, "."+apex) || apex == ".") && len(apex) > len(best) {
			best = apex
		}
	}
	return best
}

// exists reports whether name owns data or has names below it.
func (s *Server) exists(name string) bool {
	below := func(n string) bool { return n == name || strings.HasSuffix(n, "."+name) }
	for n := range s.names {
		if below(n) {
			return true
		}
	}
	for n := range s.ns.zones {
		if below(n) {
			return true
		}
	}
	for n := range s.ns.addrs {
		if below(n) {
			return true
		}
	}
	return false
}
