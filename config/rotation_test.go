package config

import (
	"strings"
	"testing"
)

func TestUpdateServer(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"", "", ""},
		{"ns1.example.com", "ns1.example.com:53", ""},
		{"ns1.example.com:5353", "ns1.example.com:5353", ""},
		{"192.0.2.53", "192.0.2.53:53", ""},
		{"127.0.0.1:5300", "127.0.0.1:5300", ""},
		{"2001:db8::53", "[2001:db8::53]:53", ""},
		{"[2001:db8::53]:5353", "[2001:db8::53]:5353", ""},
		{"ns1.example.com:0", "", "the port must be a number from 1 to 65535"},
		{"ns1.example.com:dns", "", "the port must be a number from 1 to 65535"},
		{"ns_1.example.com", "", "is neither an IP address nor a host name"},
		{"[ns1]:53:53", "", "is not a server address"},
	} {
		doc := "[publish.p]\nmethod = \"rfc2136\"\nserver = \"" + tc.in + "\"\n"
		cfg, err := Parse("p.toml", []byte(doc))
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("server %q: error %v, want one with %q", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("server %q: %v", tc.in, err)
		case cfg.Publishers["p"].Server != tc.want:
			t.Errorf("server %q = %q, want %q", tc.in, cfg.Publishers["p"].Server, tc.want)
		}
	}
}

func TestRecordName(t *testing.T) {
	for _, tc := range []struct {
		k    Key
		sel  string
		want string
	}{
		{Key{Domain: "example.com"}, "s1", "s1._domainkey.example.com"},
		{Key{Domain: "customer.example", Delegate: "provider.example"}, "s1", "s1.customer-example._domainkey.provider.example"},
		{Key{Domain: "mail.customer.example", Delegate: "dkim.provider.example"}, "s2", "s2.mail-customer-example._domainkey.dkim.provider.example"},
	} {
		if got := tc.k.RecordName(tc.sel); got != tc.want {
			t.Errorf("%+v RecordName(%q) = %q, want %q", tc.k, tc.sel, got, tc.want)
		}
	}
}

// A delegated name too long for DNS is refused at load, not at the
// first rotation.
func TestDelegatedNameTooLong(t *testing.T) {
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + ".example"
	doc := "[keys.k]\ndomain = \"customer.example\"\nselector = \"s1\"\nfile = \"/k.pem\"\nselectors = [\"s1\", \"s2\"]\ndelegate = \"" + long + "." + strings.Repeat("d", 50) + "\"\n"
	_, err := Parse("d.toml", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "longer than the 253 characters") {
		t.Errorf("error %v, want one about 253 characters", err)
	}
}

// A key with a query and a list_query rotates each domain the list
// returns, with its own selectors and a provider's zone: the selectors
// need not list a configured selector (the rows hold them).
func TestQueryKeyRotates(t *testing.T) {
	doc := `[keys.db]
domain     = "%"
query      = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
list_query = "SELECT domain, selector, private_key FROM dkim_keys"
rotate     = "30d"
publish    = "provider"
selectors  = ["s1", "s2"]
delegate   = "provider.example"

[database]
dsn = "host=/run/postgresql"

[publish.provider]
method = "rfc2136"
`
	cfg, err := Parse("q.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if k := cfg.Keys["db"]; k.Rotate == 0 || k.Publish != "provider" || len(k.Selectors) != 2 || k.Delegate != "provider.example" {
		t.Errorf("keys.db = %+v", k)
	}
}
