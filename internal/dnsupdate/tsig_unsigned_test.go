package dnsupdate

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/miekg/dns"
)

// A failed prerequisite is an answer like any other: to a signed update,
// the server signs it (RFC 8945 §5.3); only a refusal of the key itself
// (a TSIG error) comes back unsigned. An unsigned NXRRSET is not the
// server's word, and must not lead to "already done": here the record
// read back is the revoked one (as an answer forged along with it would
// say), and the revocation would be taken as made when it was not.
// https://www.rfc-editor.org/rfc/rfc8945#section-5.3
func TestUnsignedPrereqFailure(t *testing.T) {
	name := "s1._domainkey.example.com."
	for _, rcode := range []int{dns.RcodeNXRrset, dns.RcodeYXRrset, dns.RcodeNameError, dns.RcodeYXDomain} {
		t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
			f := newFakePrimary(t, func(req *dns.Msg, _ bool) *dns.Msg {
				m := new(dns.Msg)
				m.SetReply(req)
				m.Extra = nil // unsigned
				if req.Opcode == dns.OpcodeUpdate {
					m.Rcode = rcode
					return m
				}
				m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"v=DKIM1; p="}}}
				return m
			})
			p, err := New(&config.Publisher{Name: "fake", Method: "rfc2136", Server: f.addr, Zone: "example.com",
				TSIGKey: "testdata/tsig-keygen.key", Timeout: time.Second}, nil, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.Apply(context.Background(), Change{Action: Revoke, Name: name, Value: "v=DKIM1; p=", Expect: "v=DKIM1; p=OURS"})
			if err == nil || !strings.Contains(err.Error(), "not signed") {
				t.Fatalf("Apply = %q, %v; want an error: the answer is not signed", out, err)
			}
		})
	}
}
