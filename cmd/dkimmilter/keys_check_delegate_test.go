package main

import (
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// A key delegated to a provider's zone: keys check follows the customer's
// CNAME to the provider's record, and fails a customer whose CNAME, for
// any of the key's selectors, is missing or points elsewhere, printing
// the line to publish.
func TestKeysCheckDelegated(t *testing.T) {
	const (
		cust1 = "s1._domainkey.customer.example"
		cust2 = "s2._domainkey.customer.example"
		prov1 = "s1.customer-example._domainkey.provider.example"
		prov2 = "s2.customer-example._domainkey.provider.example"
	)
	rec := testkit.KeyRecord(testkit.RSAKey(2048), "")
	tests := []struct {
		name  string
		setup func(f *fixture)
		code  int
		want  []string
		not   string
	}{
		{"both CNAMEs in place", func(f *fixture) {}, exitOK,
			[]string{"ok   customer " + cust1 + ": rsa 2048-bit key published and matching", "1 ok"}, "CNAME"},
		{"the CNAME of the next selector is missing", func(f *fixture) { f.dns.Remove(cust2) }, exitKeysFail,
			[]string{"FAIL customer " + cust1 + ": rsa 2048-bit key published and matching",
				"  fail: the customer's CNAME is missing: " + cust2 + " does not exist, so verifiers cannot reach " + prov2 + "\n",
				"     hint: the owner of customer.example publishes, once:\n       " + cust2 + ". IN CNAME " + prov2 + ".\n",
				"1 failing"}, ""},
		{"a CNAME elsewhere", func(f *fixture) { f.dns.SetCNAME(cust2, "s2.other.example") }, exitKeysFail,
			[]string{"  fail: " + cust2 + " is a CNAME to s2.other.example, not to " + prov2 + "\n",
				"     hint: change the CNAME: the owner of customer.example publishes, once:\n       " + cust2 + ". IN CNAME " + prov2 + ".\n"}, ""},
		{"a TXT record instead of the CNAME", func(f *fixture) { f.dns.SetTXT(cust1, rec) }, exitKeysFail,
			[]string{"FAIL customer " + cust1 + ": rsa 2048-bit key published and matching",
				"  fail: " + cust1 + " is not a CNAME: its own records are used, and the records rotation publishes at " + prov1 + " are not\n",
				"       " + cust1 + ". IN CNAME " + prov1 + ".\n"}, ""},
		{"the lookup fails: not checked", func(f *fixture) { f.dns.SetRcode(cust2, dns.RcodeServerFailure) }, exitKeysTemp,
			[]string{"TEMP customer ", "  temp: the customer's CNAME at " + cust2 + " could not be looked up: ", "SERVFAIL"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, `
[keys.customer]
domain    = "customer.example"
selector  = "s1"
file      = "keys/rsa.pem"
selectors = ["s1", "s2"]
delegate  = "provider.example"
`)
			f.dns.SetTXT(prov1, rec)
			f.dns.SetCNAME(cust1, prov1)
			f.dns.SetCNAME(cust2, prov2) // the next key's record is not there yet
			tt.setup(f)
			code, out, errs := runCmd("keys", "check", "-config", f.cfg, "customer")
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out, errs)
			}
			wantOutput(t, out, tt.want...)
			if tt.not != "" && strings.Contains(out, tt.not) {
				t.Errorf("output mentions %q:\n%s", tt.not, out)
			}
		})
	}
}
