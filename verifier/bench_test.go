package verifier

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/loadgen"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/signer"
)

// signedBenchMessage signs the load driver's 2 KB message with keys as
// the milter does (default configuration) and returns its header block
// with the signatures on top, its body, and the key records.
func signedBenchMessage(b *testing.B, keys ...crypto.Signer) (dkim.Header, []byte, *dns.Fake) {
	msg := loadgen.GenerateMessage(2048, "alice@example.com", "bob@example.net")
	d := config.Default()
	res := &dns.Fake{TXT: map[string][]string{}, TTL: time.Hour}
	var params []signer.Params
	for i, k := range keys {
		sel := []string{"s1", "s2"}[i]
		params = append(params, signer.Params{
			Domain: "example.com", Selector: sel, Key: k,
			HeaderCanon: dkim.Relaxed, BodyCanon: dkim.Relaxed,
			Headers: d.Sign.Headers, Oversign: d.Sign.Oversign,
			Time: time.Now(), Expire: d.Sign.Expire,
		})
		res.TXT[sel+"._domainkey.example.com"] = []string{testkit.KeyRecord(k, "")}
	}
	s, err := signer.New(msg.Header, params)
	if err != nil {
		b.Fatal(err)
	}
	s.Write(msg.Body)
	vals, err := s.Sign()
	if err != nil {
		b.Fatal(err)
	}
	var h dkim.Header
	for _, v := range vals {
		h = append(h, dkim.NewField("DKIM-Signature", v))
	}
	return append(h, msg.Header...), msg.Body, res
}

// Verifying one message with its key in the cache, as the milter does
// from end of headers to end of message: Begin (parse the signatures,
// start the lookups), the body, Finish (hashes, key parse, signature
// check).
func BenchmarkVerify(b *testing.B) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct {
		name string
		keys []crypto.Signer
	}{
		{"rsa2048", []crypto.Signer{testkit.RSAKey(2048)}},
		{"ed25519", []crypto.Signer{ed}},
		{"dual", []crypto.Signer{testkit.RSAKey(2048), ed}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h, body, res := signedBenchMessage(b, c.keys...)
			v := New(Options{Resolver: dns.NewCache(res, dns.CacheOptions{})})
			b.ReportAllocs()
			for b.Loop() {
				m := v.Begin(context.Background(), h)
				m.Write(body)
				out := m.Finish()
				if len(out) != len(c.keys) || out[0].Result != Pass {
					b.Fatalf("%+v", out[0])
				}
			}
		})
	}
}
