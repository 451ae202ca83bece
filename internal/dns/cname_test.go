package dns

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/dkimmilter/dkimmilter/internal/dnstest"
)

func TestLookupCNAME(t *testing.T) {
	s := dnstest.New(t)
	s.SetCNAME("s1._domainkey.customer.example", "s1.customer-example._domainkey.provider.example")
	s.SetTXT("s1.customer-example._domainkey.provider.example", "v=DKIM1; p=")
	s.SetCNAME("s2._domainkey.customer.example", "s2.customer-example._domainkey.provider.example") // dangling
	s.SetTXT("s3._domainkey.customer.example", "v=DKIM1; p=")
	s.SetRcode("s4._domainkey.customer.example", mdns.RcodeServerFailure)
	c, err := NewClient([]string{s.Addr}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		notFound   bool
		fail       bool
	}{
		{name: "S1._domainkey.customer.example.", want: "s1.customer-example._domainkey.provider.example"},
		{name: "s2._domainkey.customer.example", want: "s2.customer-example._domainkey.provider.example"},
		{name: "s3._domainkey.customer.example", want: ""},
		{name: "s9._domainkey.customer.example", notFound: true},
		{name: "s4._domainkey.customer.example", fail: true},
	} {
		got, err := c.LookupCNAME(context.Background(), tc.name)
		var de *net.DNSError
		switch {
		case tc.notFound:
			if !errors.As(err, &de) || !de.IsNotFound {
				t.Errorf("%s: %q, %v; want NXDOMAIN", tc.name, got, err)
			}
		case tc.fail:
			if !errors.As(err, &de) || !de.IsTemporary {
				t.Errorf("%s: %q, %v; want a temporary error", tc.name, got, err)
			}
		case err != nil || got != tc.want:
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}
