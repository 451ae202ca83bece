package dnstest

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const name = "sel._domainkey.example.com."

// ask sends one TXT query over network; edns 0 means no OPT record.
func ask(t *testing.T, s *Server, network, qname string, edns uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(qname), dns.TypeTXT)
	if edns > 0 {
		q.SetEdns0(edns, true)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(q, s.Addr)
	if err != nil {
		t.Fatalf("%s query for %s: %v", network, qname, err)
	}
	return r
}

func txts(m *dns.Msg) [][]string {
	var out [][]string
	for _, rr := range m.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, t.Txt)
		}
	}
	return out
}

func TestAnswers(t *testing.T) {
	long := strings.Repeat("a", 600)
	tests := []struct {
		name      string
		setup     func(s *Server)
		query     string
		wantRcode int
		wantTXT   [][]string // presentation format, as miekg unpacks it
		wantTypes []uint16   // answer RR types, when set
		wantTTL   uint32     // of the first answer RR, when set
	}{
		{
			name:    "one record",
			setup:   func(s *Server) { s.SetTXT(name, "v=DKIM1; p=x") },
			wantTXT: [][]string{{"v=DKIM1; p=x"}}, wantTTL: DefaultTTL,
		},
		{
			name:    "long record split at 255 bytes",
			setup:   func(s *Server) { s.SetTXT(name, long) },
			wantTXT: [][]string{{long[:255], long[255:510], long[510:]}},
		},
		{
			name:    "raw bytes escaped for the packer",
			setup:   func(s *Server) { s.SetTXT(name, "a\"b\\c\td\xff") },
			wantTXT: [][]string{{`a\"b\\c\009d\255`}},
		},
		{
			name:    "exact character-strings",
			setup:   func(s *Server) { s.SetTXTStrings(name, []string{"v=DKIM1; ", "", "p=x"}) },
			wantTXT: [][]string{{"v=DKIM1; ", "", "p=x"}},
		},
		{
			name:    "several RRs and TTL",
			setup:   func(s *Server) { s.SetTXT(name, "one", "two"); s.SetTTL(name, 7) },
			wantTXT: [][]string{{"one"}, {"two"}}, wantTTL: 7,
		},
		{
			name:    "case-insensitive, without trailing dot",
			setup:   func(s *Server) { s.SetTXT("SEL._DOMAINKEY.Example.COM", "x") },
			wantTXT: [][]string{{"x"}},
		},
		{name: "unknown name", setup: func(s *Server) {}, wantRcode: dns.RcodeNameError},
		{name: "rcode", setup: func(s *Server) { s.SetRcode(name, dns.RcodeRefused) }, wantRcode: dns.RcodeRefused},
		{name: "NODATA", setup: func(s *Server) { s.SetNoData(name) }, wantTypes: []uint16{}},
		{name: "removed", setup: func(s *Server) { s.SetTXT(name, "x"); s.Remove(name) }, wantRcode: dns.RcodeNameError},
		{
			name: "CNAME chain",
			setup: func(s *Server) {
				s.SetCNAME(name, "a.example.net")
				s.SetCNAME("a.example.net", "b.example.org")
				s.SetTXT("b.example.org", "x")
			},
			wantTXT:   [][]string{{"x"}},
			wantTypes: []uint16{dns.TypeCNAME, dns.TypeCNAME, dns.TypeTXT},
		},
		{
			name:      "dangling CNAME",
			setup:     func(s *Server) { s.SetCNAME(name, "gone.example.net") },
			wantRcode: dns.RcodeNameError,
			wantTypes: []uint16{dns.TypeCNAME},
		},
		{
			name:    "delayed",
			setup:   func(s *Server) { s.SetTXT(name, "x"); s.SetDelay(name, 10*time.Millisecond) },
			wantTXT: [][]string{{"x"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(t)
			tt.setup(s)
			for _, network := range []string{"udp", "tcp"} {
				r := ask(t, s, network, name, 1232)
				if r.Rcode != tt.wantRcode {
					t.Errorf("%s: rcode %s, want %s", network, dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.wantRcode])
				}
				if got := txts(r); !slices.EqualFunc(got, tt.wantTXT, slices.Equal) {
					t.Errorf("%s: TXT %q, want %q", network, got, tt.wantTXT)
				}
				if tt.wantTypes != nil {
					var types []uint16
					for _, rr := range r.Answer {
						types = append(types, rr.Header().Rrtype)
					}
					if !slices.Equal(types, tt.wantTypes) && len(types)+len(tt.wantTypes) > 0 {
						t.Errorf("%s: answer types %v, want %v", network, types, tt.wantTypes)
					}
				}
				if tt.wantTTL != 0 && (len(r.Answer) == 0 || r.Answer[0].Header().Ttl != tt.wantTTL) {
					t.Errorf("%s: answer %v, want TTL %d", network, r.Answer, tt.wantTTL)
				}
				if r.IsEdns0() == nil {
					t.Errorf("%s: no OPT in the reply to an EDNS0 query", network)
				}
			}
			if got := s.Queries(name); got != 2 {
				t.Errorf("Queries = %d, want 2 (one UDP, one TCP)", got)
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	s := New(t)
	s.SetTXT(name, strings.Repeat("a", 400), strings.Repeat("b", 400))

	if r := ask(t, s, "udp", name, 0); !r.Truncated || len(r.Answer) == 2 {
		t.Errorf("UDP without EDNS0: TC=%v with %d answers, want truncated to 512 bytes", r.Truncated, len(r.Answer))
	}
	if r := ask(t, s, "udp", name, 1232); r.Truncated || len(r.Answer) != 2 {
		t.Errorf("UDP with EDNS0 1232: TC=%v with %d answers, want the full answer", r.Truncated, len(r.Answer))
	}

	s.SetTruncateUDP(true)
	if r := ask(t, s, "udp", name, 1232); !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("forced: TC=%v with %d answers, want TC and none", r.Truncated, len(r.Answer))
	}
	if r := ask(t, s, "tcp", name, 1232); r.Truncated || len(r.Answer) != 2 {
		t.Errorf("TCP: TC=%v with %d answers, want the full answer", r.Truncated, len(r.Answer))
	}
	s.SetTruncateUDP(false)
	if r := ask(t, s, "udp", name, 1232); r.Truncated {
		t.Error("still truncating after SetTruncateUDP(false)")
	}
}

func TestADBit(t *testing.T) {
	s := New(t)
	s.SetTXT(name, "x")
	if ask(t, s, "udp", name, 1232).AuthenticatedData {
		t.Error("AD set by default")
	}
	s.SetAD(true)
	if !ask(t, s, "udp", name, 1232).AuthenticatedData {
		t.Error("AD not set after SetAD(true)")
	}
}

func TestWrongID(t *testing.T) {
	s := New(t)
	s.SetTXT(name, "x")
	s.SetWrongID(name)

	conn, err := net.Dial("udp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	co := &dns.Conn{Conn: conn}
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeTXT)
	if err := co.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	co.SetReadDeadline(time.Now().Add(5 * time.Second))
	r, err := co.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	if r.Id == q.Id {
		t.Errorf("reply ID %d equals the query's", r.Id)
	}
}

func TestSilentName(t *testing.T) {
	s := New(t)
	s.SetTXT(name, "x")
	s.SetTimeout(name)
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeTXT)
	c := &dns.Client{Timeout: 100 * time.Millisecond}
	if r, _, err := c.Exchange(q, s.Addr); err == nil {
		t.Errorf("got reply %v, want none", r)
	}
	if got := s.Queries(name); got != 1 {
		t.Errorf("Queries = %d, want 1", got)
	}
}
