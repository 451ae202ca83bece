package dkim

import (
	"strings"
	"testing"
)

func TestNameProblem(t *testing.T) {
	for _, ok := range []string{"example.com", "s202611", "mail_dkim.sub-1.example.co.uk", "EXAMPLE.com"} {
		if p := NameProblem(ok); p != "" {
			t.Errorf("%q: %s", ok, p)
		}
	}
	for name, want := range map[string]string{
		"":                        "empty",
		"../etc":                  "empty label",
		"a/b":                     `'/' is not allowed`,
		"%":                       `'%' is not allowed`,
		"-a.com":                  "starts or ends with '-'",
		"a..com":                  "empty label",
		strings.Repeat("a", 64):   "longer than 63",
		strings.Repeat("a.", 127): "longer than the 253",
		"café.example":            "is not allowed",
	} {
		if p := NameProblem(name); !strings.Contains(p, want) {
			t.Errorf("%q: %q, want %q", name, p, want)
		}
	}
}

// The key's DNS name, with or without the domain's final dot.
func TestDNSName(t *testing.T) {
	for _, d := range []string{"example.com", "example.com."} {
		if got := DNSName("s202611", d); got != "s202611._domainkey.example.com" {
			t.Errorf("DNSName(s202611, %s) = %s", d, got)
		}
	}
	s := ParseSignature(NewField("DKIM-Signature", " v=1; a=rsa-sha256; d=Example.COM.; s=sel; h=from; bh=AA==; b=AA=="))
	if got := s.DNSName(); got != "sel._domainkey.example.com" {
		t.Errorf("signature's DNS name %q (%v)", got, s.Err)
	}
}

// d= and s= as the DNS knows them (RFC 8616 §4): U-labels are looked up
// as A-labels; a byte that is not UTF-8, or UTF-8 that IDNA refuses, names
// nothing that can exist and is a permanent error without any lookup.
func TestSignatureLookupNames(t *testing.T) {
	for _, tt := range []struct {
		d, s, dns, err string
	}{
		{d: "example.com", s: "sel", dns: "sel._domainkey.example.com"},
		{d: "Mail_1.Example.com", s: "s_1.a", dns: "s_1.a._domainkey.mail_1.example.com"},
		{d: "bücher.example", s: "sel", dns: "sel._domainkey.xn--bcher-kva.example"},
		{d: "xn--bcher-kva.example", s: "sélection", dns: "xn--slection-b1a._domainkey.xn--bcher-kva.example"},
		{d: "example.com\xe9", s: "sel", err: "is not a domain name"},
		{d: "caf\xe9.example", s: "sel", err: "is not a domain name"},
		{d: "example.com", s: "s\xe9l", err: "is not a valid selector"},
		{d: "a\u00a0b.example", s: "sel", err: "is not a domain name"},
		{d: "exa mple.com", s: "sel", err: "is not a domain name"},
		{d: "example", s: "sel", err: "is not a domain name"},
	} {
		s := ParseSignature(NewField("DKIM-Signature", " v=1; a=rsa-sha256; d="+tt.d+"; s="+tt.s+"; h=from; bh=AA==; b=AA=="))
		switch {
		case tt.err != "" && (s.Err == nil || !strings.Contains(s.Err.Error(), tt.err)):
			t.Errorf("d=%q s=%q: %v, want %q", tt.d, tt.s, s.Err, tt.err)
		case tt.err == "" && (s.Err != nil || s.DNSName() != tt.dns):
			t.Errorf("d=%q s=%q: %q (%v), want %q", tt.d, tt.s, s.DNSName(), s.Err, tt.dns)
		}
	}
}
