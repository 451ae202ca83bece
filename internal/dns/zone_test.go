package dns

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	mdns "github.com/miekg/dns"
)

func TestServers(t *testing.T) {
	r, err := NewClient([]string{"127.0.0.1:5353", "::1", "192.0.2.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.1:5353", "[::1]:53", "192.0.2.1:53"}
	got := r.Servers()
	if !slices.Equal(got, want) {
		t.Errorf("Servers() = %q, want %q", got, want)
	}
	got[0] = "changed"
	if r.Servers()[0] != want[0] {
		t.Error("Servers() returned the resolver's own slice")
	}
}

func TestLocalServer(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:53": true, "127.0.0.53:53": true, "[::1]:53": true, "[::ffff:127.0.0.1]:53": true,
		"192.0.2.1:53": false, "[2001:db8::1]:53": false, "localhost:53": false, "": false,
	} {
		if got := LocalServer(addr); got != want {
			t.Errorf("LocalServer(%q) = %v, want %v", addr, got, want)
		}
	}
}

// zoneServer is one dnstest server that plays the recursive resolver and
// the authoritative servers of example.com and of its delegated child
// sub.example.com, with name servers that resolve to the server itself.
func zoneServer(t *testing.T) (*dnstest.Server, int) {
	s := dnstest.New(t)
	s.SetZone("example.com", "ns1.example.com", "ns2.example.net")
	s.SetZone("example.net", "ns1.example.com")
	s.SetZone("sub.example.com", "ns.sub.example.com")
	s.SetAddrs("ns1.example.com", "127.0.0.1")
	s.SetAddrs("ns2.example.net", "127.0.0.1")
	s.SetAddrs("ns.sub.example.com", "127.0.0.1")
	s.SetTXT("sel._domainkey.example.com", "v=DKIM1; p=parent")
	s.SetTXT("sel._domainkey.sub.example.com", "v=DKIM1; p=child")
	port, err := strconv.Atoi(s.Addr[strings.LastIndexByte(s.Addr, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	return s, port
}

func TestFindZone(t *testing.T) {
	tests := []struct {
		name, query string
		setup       func(s *dnstest.Server)
		wantZone    string
		wantHosts   []string
		wantSkipped []string
	}{
		{name: "record in the parent zone", query: "sel._domainkey.example.com",
			wantZone: "example.com", wantHosts: []string{"ns1.example.com", "ns2.example.net"}},
		{name: "record in the delegated child", query: "sel._domainkey.sub.example.com",
			wantZone: "sub.example.com", wantHosts: []string{"ns.sub.example.com"}},
		{name: "missing record: the walk still finds the zone", query: "nope._domainkey.sub.example.com",
			wantZone: "sub.example.com", wantHosts: []string{"ns.sub.example.com"}},
		{name: "the apex itself", query: "example.com",
			wantZone: "example.com", wantHosts: []string{"ns1.example.com", "ns2.example.net"}},
		{
			name: "CNAME to a provider: the zone of the alias, not of its target", query: "sel._domainkey.example.com",
			setup: func(s *dnstest.Server) {
				s.SetZone("provider.example.org", "ns.provider.example.org")
				s.SetCNAME("sel._domainkey.example.com", "sel.provider.example.org")
			},
			wantZone: "example.com", wantHosts: []string{"ns1.example.com", "ns2.example.net"},
		},
		{
			name: "a name server without address is skipped", query: "sel._domainkey.example.com",
			setup:    func(s *dnstest.Server) { s.SetAddrs("ns2.example.net") },
			wantZone: "example.com", wantHosts: []string{"ns1.example.com"},
			wantSkipped: []string{"ns2.example.net: no address"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, port := zoneServer(t)
			if tt.setup != nil {
				tt.setup(s)
			}
			res := newTestClient(t, 5*time.Second, s)
			auth, err := FindZone(context.Background(), res, tt.query, port)
			if err != nil {
				t.Fatal(err)
			}
			if auth.Apex != tt.wantZone {
				t.Errorf("zone %q, want %q", auth.Apex, tt.wantZone)
			}
			var hosts []string
			for _, srv := range auth.Servers {
				hosts = append(hosts, srv.Host)
				if srv.Addr != s.Addr {
					t.Errorf("%s: address %s, want %s", srv.Host, srv.Addr, s.Addr)
				}
			}
			if !slices.Equal(hosts, tt.wantHosts) {
				t.Errorf("hosts %q, want %q", hosts, tt.wantHosts)
			}
			if !slices.Equal(auth.Skipped, tt.wantSkipped) {
				t.Errorf("skipped %q, want %q", auth.Skipped, tt.wantSkipped)
			}
		})
	}
}

func TestFindZoneErrors(t *testing.T) {
	t.Run("no name server has an address", func(t *testing.T) {
		s, port := zoneServer(t)
		s.SetAddrs("ns.sub.example.com")
		_, err := FindZone(context.Background(), newTestClient(t, 5*time.Second, s), "sel._domainkey.sub.example.com", port)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.Temporary() || !strings.Contains(de.Err, "ns.sub.example.com: no address") {
			t.Errorf("err %#v, want a temporary DNSError naming the host", err)
		}
	})
	t.Run("domain under no zone", func(t *testing.T) {
		s, port := zoneServer(t)
		s.SetZone(".", "a.root-servers.example")
		_, err := FindZone(context.Background(), newTestClient(t, 5*time.Second, s), "sel._domainkey.nowhere.test", port)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound || de.Name != "sel._domainkey.nowhere.test" {
			t.Errorf("err %#v, want IsNotFound for the name", err)
		}
	})
	t.Run("the resolver times out", func(t *testing.T) {
		s, port := zoneServer(t)
		s.SetTimeout("sel._domainkey.example.com")
		_, err := FindZone(context.Background(), newTestClient(t, 200*time.Millisecond, s), "sel._domainkey.example.com", port)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsTimeout || !strings.Contains(de.Err, "NS query for sel._domainkey.example.com") {
			t.Errorf("err %#v, want a timeout of the NS query", err)
		}
	})
}

func TestZoneResolver(t *testing.T) {
	s, _ := zoneServer(t)
	s.SetAD(true) // an authoritative answer's AD bit means nothing
	s.SetDelegation("away.example.com", "ns.elsewhere.example")
	s.SetCNAME("alias._domainkey.example.com", "sel.provider.example.org")
	provider := dnstest.New(t)
	provider.SetTXT("sel.provider.example.org", "v=DKIM1; p=provider")

	auth, err := NewZoneResolver(s.Addr, 2*time.Second, newTestClient(t, 2*time.Second, provider))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	res, err := auth.LookupTXT(ctx, "sel._domainkey.example.com")
	if err != nil || !slices.Equal(res.Records, []string{"v=DKIM1; p=parent"}) || res.Authenticated {
		t.Errorf("in zone: %+v %v", res, err)
	}
	res, err = auth.LookupTXT(ctx, "alias._domainkey.example.com")
	if err != nil || !slices.Equal(res.Records, []string{"v=DKIM1; p=provider"}) {
		t.Errorf("CNAME out of the zone, followed through the resolver: %+v %v", res, err)
	}
	_, err = auth.LookupTXT(ctx, "gone._domainkey.example.com")
	if de, ok := err.(*net.DNSError); !ok || !de.IsNotFound || de.Err != "NXDOMAIN" {
		t.Errorf("missing: %#v", err)
	}
	_, err = auth.LookupTXT(ctx, "sel._domainkey.away.example.com")
	if de, ok := err.(*net.DNSError); !ok || !de.Temporary() || !strings.Contains(de.Err, "referral to ns.elsewhere.example") {
		t.Errorf("delegated away: %#v", err)
	}

	// RD=0 shows: the server would recurse for an RD=1 query, but an
	// authoritative-only answer outside its zones is REFUSED.
	provider2 := "sel.provider.example.org"
	s.SetTXT(provider2, "v=DKIM1; p=cached")
	if res, err := newTestClient(t, 2*time.Second, s).LookupTXT(ctx, provider2); err != nil || len(res.Records) != 1 {
		t.Fatalf("RD=1: %+v %v", res, err)
	}
	_, err = auth.LookupTXT(ctx, provider2)
	if de, ok := err.(*net.DNSError); !ok || !de.IsTemporary || de.Err != mdns.RcodeToString[mdns.RcodeRefused] {
		t.Errorf("RD=0 outside the zones: %#v, want REFUSED", err)
	}
}

func TestNameServerString(t *testing.T) {
	for _, tt := range []struct {
		s    NameServer
		want string
	}{
		{NameServer{"ns1.example.com", "192.0.2.1:53"}, "ns1.example.com (192.0.2.1)"},
		{NameServer{"ns1.example.com", "[2001:db8::1]:53"}, "ns1.example.com (2001:db8::1)"},
		{NameServer{"ns1.example.com", "127.0.0.1:5353"}, "ns1.example.com (127.0.0.1 port 5353)"},
	} {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.s, got, tt.want)
		}
	}
}
