package config

import (
	"net/netip"
	"testing"
)

// TestHostsMatch: the entries and their precedence as OpenDKIM's
// dkimf_checkhost and dkimf_checkip: the most specific entry decides, an
// exclusion beats an inclusion of the same, and the name and the address
// are looked at apart, either one listed being enough.
func TestHostsMatch(t *testing.T) {
	list := func(entries ...string) Hosts {
		var hs Hosts
		for _, e := range entries {
			h, prob := parseHost(e)
			if prob != "" {
				t.Fatalf("%q %s", e, prob)
			}
			hs = append(hs, h)
		}
		return hs
	}
	tests := []struct {
		name    string
		hosts   Hosts
		client  string // Postfix's client name
		ip      string // "" for none
		want    bool
		decided string
	}{
		{"address", list("192.0.2.1"), "unknown", "192.0.2.1", true, "192.0.2.1"},
		{"other address", list("192.0.2.1"), "unknown", "192.0.2.2", false, ""},
		{"bracketed address", list("[192.0.2.1]"), "[192.0.2.1]", "192.0.2.1", true, "192.0.2.1"},
		{"bracketed v6 network", list("[2001:db8::]/32"), "", "2001:db8::5", true, "2001:db8::/32"},
		{"network", list("10.0.0.0/8"), "", "10.1.2.3", true, "10.0.0.0/8"},
		// Written with host bits: masked, as before host names existed
		// (OpenDKIM would never match it).
		{"network with host bits", list("10.0.0.1/24"), "", "10.0.0.200", true, "10.0.0.0/24"},
		{"v4-mapped client", list("10.0.0.0/8"), "", "::ffff:10.0.0.1", true, "10.0.0.0/8"},
		{"no address", list("10.0.0.0/8"), "", "", false, ""},
		{"excluded address in network", list("10.0.0.0/8", "!10.0.0.5"), "", "10.0.0.5", false, ""},
		{"neighbour of excluded address", list("10.0.0.0/8", "!10.0.0.5"), "", "10.0.0.6", true, "10.0.0.0/8"},
		{"excluded network, more specific included", list("!10.0.0.0/8", "10.1.0.0/16"), "", "10.1.0.9", true, "10.1.0.0/16"},
		{"excluded network wins in it", list("!10.0.0.0/8", "10.1.0.0/16"), "", "10.2.0.9", false, ""},
		{"order does not matter", list("!10.0.0.5", "10.0.0.0/8"), "", "10.0.0.5", false, ""},
		{"everything but", list("0.0.0.0/0", "!192.0.2.0/24"), "", "198.51.100.1", true, "0.0.0.0/0"},

		{"host name", list("mail.example.com"), "mail.example.com", "198.51.100.1", true, "mail.example.com"},
		{"host name, case", list("Mail.Example.COM"), "MAIL.example.com", "198.51.100.1", true, "mail.example.com"},
		{"host name with root dot", list("mail.example.com"), "mail.example.com.", "198.51.100.1", true, "mail.example.com"},
		{"host name is exact", list("example.com"), "mail.example.com", "198.51.100.1", false, ""},
		{"suffix", list(".example.com"), "a.b.example.com", "198.51.100.1", true, ".example.com"},
		{"suffix not the apex", list(".example.com"), "example.com", "198.51.100.1", false, ""},
		{"suffix on a label boundary", list(".example.com"), "badexample.com", "198.51.100.1", false, ""},
		{"excluded host under suffix", list(".example.com", "!mx.example.com"), "mx.example.com", "198.51.100.1", false, ""},
		{"sibling of excluded host", list(".example.com", "!mx.example.com"), "mail.example.com", "198.51.100.1", true, ".example.com"},
		{"excluded subtree, included host in it", list("!.lab.example.com", ".example.com", "ci.lab.example.com"), "ci.lab.example.com", "198.51.100.1", true, "ci.lab.example.com"},
		{"excluded subtree", list("!.lab.example.com", ".example.com"), "x.lab.example.com", "198.51.100.1", false, ""},
		// Postfix's names for a client it could not name: never a match.
		{"unknown", list(".example.com", "mail.example.com"), "unknown", "198.51.100.1", false, ""},
		{"bracketed ip as name", list("192.0.2.1"), "[198.51.100.1]", "198.51.100.1", false, ""},
		// Name and address apart: either one is enough, as OpenDKIM.
		{"name excluded, address listed", list("10.0.0.0/8", "!mx.example.com"), "mx.example.com", "10.0.0.1", true, "10.0.0.0/8"},
		{"address excluded, name listed", list("mx.example.com", "!10.0.0.1"), "mx.example.com", "10.0.0.1", true, "mx.example.com"},
		{"empty list", Hosts{}, "mail.example.com", "127.0.0.1", false, ""},
	}
	for _, tt := range tests {
		var ip netip.Addr
		if tt.ip != "" {
			ip = netip.MustParseAddr(tt.ip)
		}
		got, decided := tt.hosts.Match(tt.client, ip)
		if got != tt.want || decided != tt.decided {
			t.Errorf("%s: %v Match(%q, %s) = %v, %q; want %v, %q", tt.name, tt.hosts.Strings(), tt.client, tt.ip, got, decided, tt.want, tt.decided)
		}
		if ok, _ := tt.hosts.matchIP(ip); tt.client == "" && ok != tt.want {
			t.Errorf("%s: matchIP(%s) != %v", tt.name, tt.ip, tt.want)
		}
	}
}

// Entries print as the file writes them, so that logs and a config
// written back read the same.
func TestHostString(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1": "192.0.2.1", "10.0.0.1/8": "10.0.0.0/8", "!2001:DB8::1": "!2001:db8::1",
		"::ffff:10.0.0.0/104": "10.0.0.0/8", "[192.0.2.1]": "192.0.2.1",
		"Mail.Example.com": "mail.example.com", "!.Example.com": "!.example.com",
	} {
		h, prob := parseHost(in)
		if prob != "" || h.String() != want {
			t.Errorf("parseHost(%q) = %q %s, want %q", in, h.String(), prob, want)
		}
	}
}
