package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/milter"
)

// The key-health gauges: a key published and matching stays healthy when
// one of the resolvers times out, and a name with only non-DKIM TXT
// records is not "published".
func TestKeyHealthGauges(t *testing.T) {
	f := newFixture(t, `[keys.other]
domain = "example.com"
selector = "other"
file = "keys/other.pem"
`)
	testkit.WriteKey(f.dir, "keys/other.pem", testkit.RSAKey(1024), false)
	f.dns.SetTXT("other._domainkey.example.com", "google-site-verification=abc")
	dead := dnstest.New(t)
	dead.SetTimeout("rsa._domainkey.example.com")
	dead.SetTimeout("other._domainkey.example.com")
	cfg, err := config.Load(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DNS.Nameservers = []string{f.dns.Addr, dead.Addr}
	cfg.DNS.Timeout = 300 * time.Millisecond
	scrape := checkedKeys(cfg)
	for _, want := range []string{
		`dkimmilter_key_published{key="rsa",domain="example.com"} 1`,
		`dkimmilter_key_matches{key="rsa",domain="example.com"} 1`,
		`dkimmilter_key_check_status{key="rsa",domain="example.com"} 2`, // one resolver could not answer
		`dkimmilter_key_published{key="other",domain="example.com"} 0`,
		`dkimmilter_key_matches{key="other",domain="example.com"} 0`,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("metrics lack %q:\n%s", want, scrape)
		}
	}
}

// A key whose file name has '%' has one series per domain, labelled with
// the key's name and the domain (not one mangled label).
func TestKeyHealthGaugesPercent(t *testing.T) {
	f := newFixture(t, "[keys.hosted]\ndomain = \"%\"\nselector = \"h1\"\nfile = \"keys/%/h1.pem\"\n")
	org := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	testkit.WriteKey(f.dir, "keys/example.org/h1.pem", org, false)
	testkit.WriteKey(f.dir, "keys/example.net/h1.pem", ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32)), false)
	f.dns.SetTXT("h1._domainkey.example.org", testkit.KeyRecord(org, ""))
	cfg, err := config.Load(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	scrape := checkedKeys(cfg)
	for _, want := range []string{
		`dkimmilter_key_matches{key="hosted",domain="example.org"} 1`,
		`dkimmilter_key_matches{key="hosted",domain="example.net"} 0`,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("metrics lack %q:\n%s", want, scrape)
		}
	}
}

// checkedKeys runs the background keys check once and returns the scrape.
func checkedKeys(cfg *config.Config) string {
	d := &daemon{log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: milter.NewMetrics()}
	d.checkKeys(context.Background(), cfg)
	var b bytes.Buffer
	d.metrics.WritePrometheus(&b)
	return b.String()
}

// With rotation, the key that signs is checked: the configured key's
// record may be revoked by then, and must not raise the alert.
func TestKeyHealthRotatedKey(t *testing.T) {
	f := newFixture(t, "")
	f.dns.SetTXT("rsa._domainkey.example.com", "v=DKIM1; k=rsa; p=")
	cfg, err := config.Load(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		publish bool
		want    string
	}{
		{"published", true, `dkimmilter_key_matches{key="rsa",domain="example.com"} 1`},
		{"not published", false, `dkimmilter_key_matches{key="rsa",domain="example.com"} 0`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			nk := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
			path := testkit.WriteKey(f.dir, "state/"+tt.name+".pem", nk, false)
			pk, err := keystore.ReadPrivateKey(path)
			if err != nil {
				t.Fatal(err)
			}
			f.dns.SetTXT("s2._domainkey.example.com")
			if tt.publish {
				f.dns.SetTXT("s2._domainkey.example.com", testkit.KeyRecord(nk, ""))
			}
			d := &daemon{log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: milter.NewMetrics(), rotated: &keystore.Rotated{}}
			d.rotated.Set("rsa", &keystore.Key{Name: "rsa", Domain: "example.com", Selector: "s2", File: path, PrivateKey: pk})
			d.checkKeys(context.Background(), cfg)
			var b bytes.Buffer
			d.metrics.WritePrometheus(&b)
			if !strings.Contains(b.String(), tt.want) {
				t.Errorf("metrics lack %q:\n%s", tt.want, b.String())
			}
		})
	}
}
