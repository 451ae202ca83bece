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
