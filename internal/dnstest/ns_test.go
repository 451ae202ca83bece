package dnstest

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// askType sends one query of qtype with the given RD bit over UDP.
func askType(t *testing.T, s *Server, qname string, qtype uint16, rd bool) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(qname), qtype)
	q.RecursionDesired = rd
	q.SetEdns0(1232, false)
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(q, s.Addr)
	if err != nil {
		t.Fatalf("%s %s: %v", qname, dns.TypeToString[qtype], err)
	}
	return r
}

func rrTypes(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, dns.TypeToString[rr.Header().Rrtype])
	}
	return out
}

func TestZones(t *testing.T) {
	s := New(t)
	s.SetZone("example.com", "ns1.example.com", "ns2.example.net")
	s.SetZone("sub.example.com", "ns.sub.example.com")
	s.SetAddrs("ns1.example.com", "192.0.2.1", "2001:db8::1")
	s.SetTXT(name, "v=DKIM1; p=x")
	s.SetDelegation("away.example.com", "ns.elsewhere.example")
	s.SetCNAME("alias.example.com", "target.example.org")
	s.SetTXT("target.example.org", "x")

	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		rd        bool
		rcode     int
		answer    []string // RR types
		authority []string
		aa        bool
	}{
		{"NS at the apex", "example.com", dns.TypeNS, true, dns.RcodeSuccess, []string{"NS", "NS"}, nil, true},
		{"SOA of the child", "sub.example.com", dns.TypeSOA, true, dns.RcodeSuccess, []string{"SOA"}, nil, true},
		{"A", "ns1.example.com", dns.TypeA, true, dns.RcodeSuccess, []string{"A"}, nil, true},
		{"AAAA", "ns1.example.com", dns.TypeAAAA, true, dns.RcodeSuccess, []string{"AAAA"}, nil, true},
		{"NS below the apex: NODATA with the SOA", name, dns.TypeNS, true, dns.RcodeSuccess, nil, []string{"SOA"}, true},
		{"empty non-terminal: NODATA", "_domainkey.example.com", dns.TypeTXT, true, dns.RcodeSuccess, nil, []string{"SOA"}, true},
		{"missing name: NXDOMAIN with the SOA", "nope.example.com", dns.TypeTXT, true, dns.RcodeNameError, nil, []string{"SOA"}, true},
		{"TXT still answered", name, dns.TypeTXT, false, dns.RcodeSuccess, []string{"TXT"}, nil, true},
		{"outside the zones with RD=1: answered", "target.example.org", dns.TypeTXT, true, dns.RcodeSuccess, []string{"TXT"}, nil, false},
		{"outside the zones with RD=0: REFUSED", "target.example.org", dns.TypeTXT, false, dns.RcodeRefused, nil, nil, false},
		{"CNAME out of the zone with RD=0: not chased", "alias.example.com", dns.TypeTXT, false, dns.RcodeSuccess, []string{"CNAME"}, nil, true},
		{"CNAME out of the zone with RD=1: chased", "alias.example.com", dns.TypeTXT, true, dns.RcodeSuccess, []string{"CNAME", "TXT"}, nil, false},
		{"delegated name with RD=0: referral", "sel._domainkey.away.example.com", dns.TypeTXT, false, dns.RcodeSuccess, nil, []string{"NS"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := askType(t, s, tt.qname, tt.qtype, tt.rd)
			if r.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
			}
			if got := rrTypes(r.Answer); len(got)+len(tt.answer) > 0 && !equal(got, tt.answer) {
				t.Errorf("answer %v, want %v", got, tt.answer)
			}
			if got := rrTypes(r.Ns); len(got)+len(tt.authority) > 0 && !equal(got, tt.authority) {
				t.Errorf("authority %v, want %v", got, tt.authority)
			}
			if r.Authoritative != tt.aa {
				t.Errorf("AA %v, want %v", r.Authoritative, tt.aa)
			}
		})
	}

	soa := askType(t, s, "nope._domainkey.sub.example.com", dns.TypeTXT, true)
	if len(soa.Ns) != 1 || soa.Ns[0].Header().Name != "sub.example.com." {
		t.Errorf("the deepest zone's SOA: %v", soa.Ns)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
