package dns

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	mdns "github.com/miekg/dns"
)

const dnsTestName = "sel._domainkey.example.com"

func newTestClient(t *testing.T, timeout time.Duration, servers ...*dnstest.Server) *Client {
	t.Helper()
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.Addr)
	}
	r, err := NewClient(addrs, timeout)
	if err != nil {
		t.Fatalf("NewClient(%v): %v", addrs, err)
	}
	return r
}

// dnsTestKeyRecord returns a DKIM key record whose p= holds n bytes of base64-encoded
// data, about the size of a real RSA key of that many bytes of DER.
func dnsTestKeyRecord(n int) string {
	der := make([]byte, n)
	for i := range der {
		der[i] = byte(i * 7)
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
}

func TestDNSLookupTXT(t *testing.T) {
	rsa2048 := dnsTestKeyRecord(294)
	rsa4096 := dnsTestKeyRecord(550) // ~750 bytes: three character-strings
	var allBytes strings.Builder
	for b := range 256 {
		allBytes.WriteByte(byte(b))
	}
	tests := []struct {
		name        string
		query       string
		setup       func(s *dnstest.Server)
		want        []string
		wantTTL     time.Duration
		wantQueries int // 0: not checked
	}{
		{
			name:        "single record",
			setup:       func(s *dnstest.Server) { s.SetTXT(dnsTestName, rsa2048) },
			want:        []string{rsa2048},
			wantTTL:     dnstest.DefaultTTL * time.Second,
			wantQueries: 1,
		},
		{
			name:        "4096-bit key fits the EDNS0 buffer",
			setup:       func(s *dnstest.Server) { s.SetTXT(dnsTestName, rsa4096) },
			want:        []string{rsa4096},
			wantQueries: 1,
		},
		{
			name: "answer over the EDNS0 buffer falls back to TCP",
			setup: func(s *dnstest.Server) {
				s.SetTXT(dnsTestName, rsa4096, rsa4096+"x")
			},
			want:        []string{rsa4096, rsa4096 + "x"},
			wantQueries: 2,
		},
		{
			name: "forced truncation falls back to TCP",
			setup: func(s *dnstest.Server) {
				s.SetTXT(dnsTestName, rsa2048)
				s.SetTruncateUDP(true)
			},
			want:        []string{rsa2048},
			wantQueries: 2,
		},
		{
			name:  "character-strings joined without separator",
			setup: func(s *dnstest.Server) { s.SetTXTStrings(dnsTestName, []string{"v=DKIM1; p=ab", "cd", "", "ef"}) },
			want:  []string{"v=DKIM1; p=abcdef"},
		},
		{
			name:  "tab, quotes and backslashes come back as raw bytes",
			setup: func(s *dnstest.Server) { s.SetTXT(dnsTestName, "v=DKIM1;\tk=rsa; n=\"a\\b\"; p=abc") },
			want:  []string{"v=DKIM1;\tk=rsa; n=\"a\\b\"; p=abc"},
		},
		{
			name:  "every byte value round-trips",
			setup: func(s *dnstest.Server) { s.SetTXT(dnsTestName, allBytes.String()) },
			want:  []string{allBytes.String()},
		},
		{
			name: "two TXT RRs give two records",
			setup: func(s *dnstest.Server) {
				s.SetTXT(dnsTestName, "v=DKIM1; p=one", "v=spf1 -all")
			},
			want: []string{"v=DKIM1; p=one", "v=spf1 -all"},
		},
		{
			name: "CNAME chain of two hops",
			setup: func(s *dnstest.Server) {
				s.SetCNAME(dnsTestName, "sel.hop1.example.net")
				s.SetCNAME("sel.hop1.example.net", "sel.hop2.example.org")
				s.SetTXT("sel.hop2.example.org", rsa2048)
				s.SetTTL("sel.hop1.example.net", 30)
			},
			want:    []string{rsa2048},
			wantTTL: 30 * time.Second, // the smallest TTL along the chain
		},
		{
			name:  "TTL is the smallest of the TXT RRs",
			setup: func(s *dnstest.Server) { s.SetTXT(dnsTestName, "v=DKIM1; p=x"); s.SetTTL(dnsTestName, 42) },
			want:  []string{"v=DKIM1; p=x"}, wantTTL: 42 * time.Second,
		},
		{
			name:  "case-insensitive name with trailing dot",
			query: "SEL._DomainKey.Example.COM.",
			setup: func(s *dnstest.Server) { s.SetTXT(dnsTestName, "v=DKIM1; p=x") },
			want:  []string{"v=DKIM1; p=x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dnstest.New(t)
			tt.setup(s)
			r := newTestClient(t, 5*time.Second, s)
			q := tt.query
			if q == "" {
				q = dnsTestName
			}
			res, err := r.LookupTXT(context.Background(), q)
			if err != nil {
				t.Fatalf("LookupTXT: %v", err)
			}
			if !slices.Equal(res.Records, tt.want) {
				t.Errorf("Records = %q, want %q", res.Records, tt.want)
			}
			if tt.wantTTL != 0 && res.TTL != tt.wantTTL {
				t.Errorf("TTL = %v, want %v", res.TTL, tt.wantTTL)
			}
			if res.Authenticated {
				t.Errorf("Authenticated = true without AD")
			}
			if got := s.Queries(dnsTestName); tt.wantQueries != 0 && got != tt.wantQueries {
				t.Errorf("server saw %d queries, want %d", got, tt.wantQueries)
			}
		})
	}
}

// A name with bytes outside printable ASCII (a Latin-1 é from a hostile
// d=, "\233" in presentation form) is answered as any other: the reply is
// taken, not waited past until the timeout. Regression: the question came
// back as "\233" and was compared with the raw byte, and every such
// lookup took the whole dns.timeout and came out temperror.
func TestDNSNameWithHighBytes(t *testing.T) {
	s := dnstest.New(t)
	s.SetTXT(`sel._domainkey.caf\233.example`, "v=DKIM1; p=x")
	c := newTestClient(t, 3*time.Second, s)
	res, err := c.LookupTXT(context.Background(), "sel._domainkey.caf\xe9.example")
	if err != nil || len(res.Records) != 1 || res.Records[0] != "v=DKIM1; p=x" {
		t.Errorf("published name: %+v, %v", res, err)
	}
	_, err = c.LookupTXT(context.Background(), "sel._domainkey.example.com\xe9")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound || de.IsTimeout {
		t.Errorf("unpublished name: %v, want NXDOMAIN", err)
	}
}

func TestDNSAuthenticatedData(t *testing.T) {
	s := dnstest.New(t)
	s.SetTXT(dnsTestName, "v=DKIM1; p=x")
	s.SetAD(true)
	res, err := newTestClient(t, 0, s).LookupTXT(context.Background(), dnsTestName)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Authenticated {
		t.Error("Authenticated = false, want true (AD set)")
	}
}

func TestDNSErrors(t *testing.T) {
	tests := []struct {
		name      string
		query     string
		setup     func(s *dnstest.Server)
		timeout   time.Duration
		wantErr   string // prefix of Err
		notFound  bool
		temporary bool
		isTimeout bool
	}{
		{name: "NXDOMAIN", setup: func(s *dnstest.Server) {}, wantErr: "NXDOMAIN", notFound: true},
		{name: "NODATA", setup: func(s *dnstest.Server) { s.SetNoData(dnsTestName) }, wantErr: "no TXT record", notFound: true},
		{
			name:    "dangling CNAME",
			setup:   func(s *dnstest.Server) { s.SetCNAME(dnsTestName, "gone.example.net") },
			wantErr: "NXDOMAIN", notFound: true,
		},
		{
			name:    "CNAME to a name without TXT",
			setup:   func(s *dnstest.Server) { s.SetCNAME(dnsTestName, "x.example.net"); s.SetNoData("x.example.net") },
			wantErr: "no TXT record", notFound: true,
		},
		{
			name:    "SERVFAIL",
			setup:   func(s *dnstest.Server) { s.SetRcode(dnsTestName, mdns.RcodeServerFailure) },
			wantErr: "SERVFAIL", temporary: true,
		},
		{
			name:    "REFUSED",
			setup:   func(s *dnstest.Server) { s.SetRcode(dnsTestName, mdns.RcodeRefused) },
			wantErr: "REFUSED", temporary: true,
		},
		{
			name:    "timeout",
			setup:   func(s *dnstest.Server) { s.SetTimeout(dnsTestName) },
			timeout: 300 * time.Millisecond,
			wantErr: "timeout", temporary: true, isTimeout: true,
		},
		{
			name: "reply with the wrong ID is not accepted",
			setup: func(s *dnstest.Server) {
				s.SetTXT(dnsTestName, "v=DKIM1; p=spoofed")
				s.SetWrongID(dnsTestName)
			},
			timeout: 300 * time.Millisecond,
			wantErr: "timeout", temporary: true, isTimeout: true,
		},
		{
			name:    "invalid name is permanent",
			query:   strings.Repeat("a", 64) + "._domainkey.example.com",
			setup:   func(s *dnstest.Server) {},
			wantErr: "invalid domain name", notFound: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dnstest.New(t)
			tt.setup(s)
			q := tt.query
			if q == "" {
				q = dnsTestName
			}
			res, err := newTestClient(t, tt.timeout, s).LookupTXT(context.Background(), q)
			if err == nil {
				t.Fatalf("LookupTXT = %+v, want error", res)
			}
			var de *net.DNSError
			if !errors.As(err, &de) {
				t.Fatalf("error %T %v is not *net.DNSError", err, err)
			}
			if !strings.HasPrefix(de.Err, tt.wantErr) {
				t.Errorf("Err = %q, want prefix %q", de.Err, tt.wantErr)
			}
			if de.Name != strings.TrimSuffix(q, ".") {
				t.Errorf("Name = %q, want %q", de.Name, q)
			}
			if tt.query == "" && de.Server != s.Addr {
				t.Errorf("Server = %q, want %q", de.Server, s.Addr)
			}
			if de.IsNotFound != tt.notFound || de.Temporary() != tt.temporary || de.IsTimeout != tt.isTimeout {
				t.Errorf("IsNotFound=%v Temporary()=%v IsTimeout=%v, want %v %v %v",
					de.IsNotFound, de.Temporary(), de.IsTimeout, tt.notFound, tt.temporary, tt.isTimeout)
			}
		})
	}
}

func TestDNSContextEnds(t *testing.T) {
	s := dnstest.New(t)
	s.SetTimeout(dnsTestName)
	r := newTestClient(t, time.Hour, s)

	// The ctx deadline wins over the resolver's own (here: huge) bound.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := r.LookupTXT(ctx, dnsTestName)
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: err = %#v, want timeout *net.DNSError", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = r.LookupTXT(ctx, dnsTestName)
	if !errors.As(err, &de) || !de.Temporary() || de.IsNotFound || !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: err = %#v, want temporary *net.DNSError", err)
	}
}

func TestDNSFailover(t *testing.T) {
	tests := []struct {
		name   string
		break1 func(s *dnstest.Server)
	}{
		{"timeout", func(s *dnstest.Server) { s.SetTimeout(dnsTestName) }},
		{"SERVFAIL", func(s *dnstest.Server) { s.SetRcode(dnsTestName, mdns.RcodeServerFailure) }},
		{"REFUSED", func(s *dnstest.Server) { s.SetRcode(dnsTestName, mdns.RcodeRefused) }},
		{"wrong ID", func(s *dnstest.Server) { s.SetTXT(dnsTestName, "v=DKIM1; p=spoofed"); s.SetWrongID(dnsTestName) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, second := dnstest.New(t), dnstest.New(t)
			tt.break1(first)
			second.SetTXT(dnsTestName, "v=DKIM1; p=good")
			res, err := newTestClient(t, 3*time.Second, first, second).LookupTXT(context.Background(), dnsTestName)
			if err != nil {
				t.Fatalf("LookupTXT: %v", err)
			}
			if want := []string{"v=DKIM1; p=good"}; !slices.Equal(res.Records, want) {
				t.Errorf("Records = %q, want %q", res.Records, want)
			}
			if first.Queries(dnsTestName) == 0 {
				t.Error("first server was not asked")
			}
		})
	}
}

func TestNewClientNameservers(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" ⇒ error expected
	}{
		{"192.0.2.1", "192.0.2.1:53"},
		{" 192.0.2.1:5353 ", "192.0.2.1:5353"},
		{"::1", "[::1]:53"},
		{"[::1]", "[::1]:53"},
		{"[2001:db8::1]:5353", "[2001:db8::1]:5353"},
		{"dns.example.com", ""},
		{"192.0.2.1:abc", ""},
		{"192.0.2.1:0", ""},
		{"192.0.2.1:70000", ""},
		{"", ""},
	}
	for _, tt := range tests {
		r, err := NewClient([]string{tt.in}, 0)
		if tt.want == "" {
			if err == nil || !strings.Contains(err.Error(), tt.in) {
				t.Errorf("NewClient(%q): err = %v, want an error naming the entry", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("NewClient(%q): %v", tt.in, err)
			continue
		}
		if !slices.Equal(r.servers, []string{tt.want}) || r.timeout != defaultTimeout {
			t.Errorf("NewClient(%q) = %v %v, want [%s] %v", tt.in, r.servers, r.timeout, tt.want, defaultTimeout)
		}
	}
}

func TestServersFromResolvConf(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string // "-" ⇒ no file
		want    []string
	}{
		{
			name: "IPv4, IPv6 and zone",
			content: "# comment\nsearch example.com corp.example\noptions ndots:2 edns0\n" +
				"nameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver fe80::1%eth0\n",
			want: []string{"192.0.2.53:53", "[2001:db8::53]:53", "[fe80::1%eth0]:53"},
		},
		{name: "non-IP entries skipped", content: "nameserver dns.example\nnameserver 127.0.0.53\n", want: []string{"127.0.0.53:53"}},
		{name: "no nameserver", content: "search example.com\n"},
		{name: "missing file", content: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if tt.content != "-" {
				if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := serversFromResolvConf(path)
			if tt.want == nil {
				if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "[dns] nameservers") {
					t.Errorf("err = %v, want an error naming %s and [dns] nameservers", err, path)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestUnescapeTXT(t *testing.T) {
	tests := []struct{ in, want string }{
		{`plain`, `plain`},
		{`a\"b`, `a"b`},
		{`a\\b`, `a\b`},
		{`k=rsa;\009p=x`, "k=rsa;\tp=x"},
		{`\000\255`, "\x00\xff"},
		{`\256`, `256`}, // not a byte: read as \2 then "56"
		{`\X\;`, `X;`},
		{`\12`, `12`},
		{`end\`, `end\`},
	}
	for _, tt := range tests {
		if got := unescapeTXT(tt.in); got != tt.want {
			t.Errorf("unescapeTXT(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
