package dmarc

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	mdns "github.com/miekg/dns"
)

func TestTreeWalkTargets(t *testing.T) {
	tests := []struct {
		domain string
		want   []string
	}{
		{"com", []string{"com"}},
		{"example.com", []string{"example.com", "com"}},
		{"a.mail.example.com", []string{"a.mail.example.com", "mail.example.com", "example.com", "com"}},
		// RFC 9989 §4.10's own example: eight queries, the second one
		// jumping to the 7-label suffix.
		{"a.b.c.d.e.f.g.h.i.j.mail.example.com", []string{
			"a.b.c.d.e.f.g.h.i.j.mail.example.com", "g.h.i.j.mail.example.com", "h.i.j.mail.example.com",
			"i.j.mail.example.com", "j.mail.example.com", "mail.example.com", "example.com", "com"}},
		{"1.2.3.4.5.6.7.com", []string{"1.2.3.4.5.6.7.com", "2.3.4.5.6.7.com", "3.4.5.6.7.com", "4.5.6.7.com", "5.6.7.com", "6.7.com", "7.com", "com"}},
	}
	for _, tc := range tests {
		got := treeWalkTargets(tc.domain)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("treeWalkTargets(%s) =\n %v, want\n %v", tc.domain, got, tc.want)
		}
		if len(got) > maxTreeWalkQueries {
			t.Errorf("%s: %d queries", tc.domain, len(got))
		}
	}
}

// The examples of RFC 9989 §4.10.2 and a few more, each against a real
// DNS client and an in-process server.
func TestOrganizationalDomain(t *testing.T) {
	tests := []struct {
		name     string
		records  map[string][]string // under _dmarc.
		servfail string
		domain   string
		org      string
		method   OrgMethod
		why      string
		found    bool
	}{
		{name: "records at mail.example.com and example.com", domain: "a.mail.example.com",
			records: map[string][]string{"mail.example.com": {"v=DMARC1; p=none"}, "example.com": {"v=DMARC1; p=reject"}},
			org:     "example.com", method: OrgByTreeWalk, why: "fewest labels", found: true},
		{name: "psd=n", domain: "a.mail.example.com",
			records: map[string][]string{"mail.example.com": {"v=DMARC1; p=none; psd=n"}, "example.com": {"v=DMARC1; p=reject"}},
			org:     "mail.example.com", method: OrgByTreeWalk, why: "psd=n", found: true},
		{name: "psd=y at the TLD", domain: "a.mail.example.com",
			records: map[string][]string{"com": {"v=DMARC1; p=none; psd=y"}},
			org:     "example.com", method: OrgByTreeWalk, why: "psd=y", found: true},
		{name: "psd=y at the start counts as fewest labels", domain: "example.com",
			records: map[string][]string{"example.com": {"v=DMARC1; p=none; psd=y"}},
			org:     "example.com", method: OrgByTreeWalk, found: true},
		{name: "psd=u does not stop the walk", domain: "a.example.com",
			records: map[string][]string{"a.example.com": {"v=DMARC1; p=none; psd=u"}, "example.com": {"v=DMARC1; p=none"}},
			org:     "example.com", method: OrgByTreeWalk, found: true},
		{name: "no record: the domain itself", domain: "mail.example.com",
			org: "mail.example.com", method: OrgByTreeWalk, why: "no DMARC record"},
		{name: "two DMARC records are ignored", domain: "mail.example.com",
			records: map[string][]string{"mail.example.com": {"v=DMARC1; p=none"}, "example.com": {"v=DMARC1; p=none", "v=DMARC1; p=reject"}},
			org:     "mail.example.com", method: OrgByTreeWalk, found: true},
		{name: "other TXT records are not DMARC", domain: "mail.example.com",
			records: map[string][]string{"example.com": {"v=spf1 -all", "p=reject; v=DMARC1"}},
			org:     "mail.example.com", method: OrgByTreeWalk},
		{name: "SERVFAIL: heuristic", domain: "a.mail.example.co.uk", servfail: "example.co.uk",
			org: "co.uk", method: OrgByHeuristic, why: "SERVFAIL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := dnstest.New(t)
			for name, recs := range tc.records {
				srv.SetTXT("_dmarc."+name, recs...)
			}
			if tc.servfail != "" {
				srv.SetRcode("_dmarc."+tc.servfail, mdns.RcodeServerFailure)
			}
			r := testClient(t, srv)
			o := OrganizationalDomain(context.Background(), r, tc.domain)
			if o.Org != tc.org || o.Method != tc.method || !strings.Contains(o.Why, tc.why) || o.Found != tc.found {
				t.Errorf("got %s by %s (%s) found=%v, want %s by %s (%q) found=%v", o.Org, o.Method, o.Why, o.Found, tc.org, tc.method, tc.why, tc.found)
			}
			if len(o.Queries) == 0 || o.Queries[0].Name != "_dmarc."+tc.domain {
				t.Errorf("queries %+v", o.Queries)
			}
		})
	}
}

// A walk stops at psd=, and never makes more than eight queries.
func TestTreeWalkQueries(t *testing.T) {
	srv := dnstest.New(t)
	srv.SetTXT("_dmarc.mail.example.com", "v=DMARC1; p=none; psd=n")
	r := testClient(t, srv)
	o := OrganizationalDomain(context.Background(), r, "a.b.c.d.e.f.g.h.i.j.mail.example.com")
	if o.Org != "mail.example.com" || len(o.Queries) != 6 {
		t.Errorf("org %s after %d queries", o.Org, len(o.Queries))
	}
	if n := srv.Queries("_dmarc.example.com"); n != 0 {
		t.Errorf("walked past psd=n: %d queries for _dmarc.example.com", n)
	}
	for _, skipped := range []string{"b.c.d.e.f.g.h.i.j.mail.example.com", "f.g.h.i.j.mail.example.com"} {
		if n := srv.Queries("_dmarc." + skipped); n != 0 {
			t.Errorf("queried _dmarc.%s", skipped)
		}
	}
}

func TestAlign(t *testing.T) {
	srv := dnstest.New(t)
	srv.SetTXT("_dmarc.example.com", "v=DMARC1; p=reject")
	srv.SetTXT("_dmarc.example.org", "v=DMARC1; p=none")
	srv.SetRcode("_dmarc.broken.example", mdns.RcodeServerFailure)
	r := testClient(t, srv)
	tests := []struct {
		author, sdid    string
		strict, relaxed bool
		method          OrgMethod
	}{
		{"example.com", "EXAMPLE.com.", true, true, ""},
		{"example.com", "mail.example.com", false, true, OrgByTreeWalk},
		{"news.example.com", "mail.example.com", false, true, OrgByTreeWalk},
		{"example.com", "example.org", false, false, OrgByTreeWalk},
		{"example.com", "lists.example.org", false, false, OrgByTreeWalk},
		// No DMARC record anywhere: each domain is its own.
		{"a.example.net", "b.example.net", false, false, OrgByTreeWalk},
		// One walk fails: both sides are judged by the heuristic.
		{"example.com", "x.broken.example", false, false, OrgByHeuristic},
		{"a.broken.example", "b.broken.example", false, true, OrgByHeuristic},
	}
	for _, tc := range tests {
		a := NewAligner(r).Align(context.Background(), tc.author, tc.sdid)
		if a.Strict != tc.strict || a.Relaxed != tc.relaxed || a.Method() != tc.method {
			t.Errorf("Align(%s, %s) = strict %v relaxed %v by %q, want %v %v by %q", tc.author, tc.sdid, a.Strict, a.Relaxed, a.Method(), tc.strict, tc.relaxed, tc.method)
		}
	}
}

// Once the DNS has failed, later walks of the same message do not wait for
// it again.
func TestAlignMemoHeuristic(t *testing.T) {
	srv := dnstest.New(t)
	srv.SetRcode("_dmarc.a.example.com", mdns.RcodeServerFailure)
	r := testClient(t, srv)
	al := NewAligner(r)
	al.Align(context.Background(), "a.example.com", "b.example.com")
	a := al.Align(context.Background(), "a.example.com", "c.example.com")
	if n := srv.Queries("_dmarc.c.example.com"); n != 0 || a.Method() != OrgByHeuristic || !a.Relaxed {
		t.Errorf("%d queries for c.example.com, method %s, relaxed %v", n, a.Method(), a.Relaxed)
	}
}

func TestAuthorDomain(t *testing.T) {
	tests := []struct {
		from []string
		want string
		err  string
	}{
		{[]string{" Alice <alice@Example.COM>"}, "example.com", ""},
		{[]string{" alice@example.com"}, "example.com", ""},
		{[]string{" \"Doe, Jane\" <jane@example.com>,\r\n bob@example.com"}, "example.com", ""},
		{[]string{" Jane Doe <jane@example.com>, bob@example.org"}, "", "several domains"},
		{[]string{" broken <<jane@example.com>"}, "example.com", ""},
		{[]string{" undisclosed"}, "", "no domain"},
		// Malformed fields are read as the signer reads them
		// (dkim.FromAddresses): the address, not the text around it.
		{[]string{" joe@example.com (unclosed"}, "example.com", ""},
		{[]string{" Joe <joe@example.com> <>"}, "example.com", ""},
		{[]string{" Joe <joe@>"}, "", "no domain"},
		{nil, "", "no From"},
		{[]string{" a@example.com", " b@example.com"}, "", "2 From"},
	}
	for _, tc := range tests {
		h := dkim.Header{dkim.ParseField("To: x@example.net")}
		for _, f := range tc.from {
			h = append(h, dkim.ParseField("From:"+f))
		}
		got, err := AuthorDomain(h)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("AuthorDomain(%q) = %q, %v; want %q, %q", tc.from, got, err, tc.want, tc.err)
		}
	}
}

// testClient is a DNS client that asks srv.
func testClient(t *testing.T, srv *dnstest.Server) *dns.Client {
	t.Helper()
	c, err := dns.NewClient([]string{srv.Addr}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
