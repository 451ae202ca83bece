package dns

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dnstest"
)

func TestFindSOA(t *testing.T) {
	s, _ := zoneServer(t)
	s.SetTimeout("slow.example.com")
	s.SetZone("example.org") // no NS: its SOA names ns.example.org
	s.SetCNAME("alias._domainkey.example.com", "a.b.c.example.org")
	res, err := NewClient([]string{s.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		query, wantApex, wantMName string
		wantErr                    string // substring
	}{
		{query: "sel._domainkey.example.com", wantApex: "example.com", wantMName: "ns1.example.com"},
		{query: "new._domainkey.example.com", wantApex: "example.com", wantMName: "ns1.example.com"}, // NXDOMAIN: the authority SOA
		{query: "example.com", wantApex: "example.com", wantMName: "ns1.example.com"},
		{query: "sel._domainkey.sub.example.com", wantApex: "sub.example.com", wantMName: "ns.sub.example.com"},
		{query: "a.b.c.example.org", wantApex: "example.org", wantMName: "ns.example.org"},
		{query: "alias._domainkey.example.com", wantApex: "example.com", wantMName: "ns1.example.com"}, // not the target's zone
		{query: "x.nowhere.test", wantErr: "no SOA record found"},
		{query: "slow.example.com", wantErr: "timeout"},
		{query: "bad..name", wantErr: "invalid domain name"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			soa, err := FindSOA(context.Background(), res, tt.query)
			if tt.wantErr != "" {
				var de *net.DNSError
				if err == nil || !errors.As(err, &de) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FindSOA(%q) = %+v, %v; want a *net.DNSError with %q", tt.query, soa, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("FindSOA(%q): %v", tt.query, err)
			}
			if soa.Apex != tt.wantApex || soa.MName != tt.wantMName {
				t.Errorf("FindSOA(%q) = %+v, want apex %s, mname %s", tt.query, soa, tt.wantApex, tt.wantMName)
			}
			if want := time.Duration(dnstest.DefaultTTL) * time.Second; soa.NegativeTTL != want {
				t.Errorf("FindSOA(%q).NegativeTTL = %v, want the SOA's %v", tt.query, soa.NegativeTTL, want)
			}
		})
	}
}

func TestHostAddrs(t *testing.T) {
	s := dnstest.New(t)
	s.SetZone("example.com", "ns1.example.com")
	s.SetAddrs("ns1.example.com", "127.0.0.9", "127.0.0.2")
	s.SetZone("example.net", "ns1.example.net")
	res, err := NewClient([]string{s.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := HostAddrs(context.Background(), res, "ns1.example.com")
	if err != nil {
		t.Fatal(err)
	}
	var strs []string
	for _, a := range got {
		strs = append(strs, a.String())
	}
	if want := []string{"127.0.0.2", "127.0.0.9"}; !slices.Equal(strs, want) {
		t.Errorf("HostAddrs = %q, want %q", strs, want)
	}
	for _, host := range []string{"ns1.example.net", "none.example.net"} {
		if a, err := HostAddrs(context.Background(), res, host); err == nil {
			t.Errorf("HostAddrs(%s) = %v, want an error", host, a)
		} else if !strings.Contains(err.Error(), host) {
			t.Errorf("HostAddrs(%s): error %q does not name the host", host, err)
		}
	}
}
