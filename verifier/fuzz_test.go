package verifier

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// Fuzz targets for what the verifier reads from a message. Run one with
//
//	go test -run '^$' -fuzz '^FuzzVerifyChunking$' -fuzztime 30s ./verifier

// FuzzVerifyChunking: a whole message through the verifier gives the same
// results however its body is cut into chunks, and never panics. The seeds
// are signed with the RFC 8463 keys, so they verify and stay the same from
// run to run; the body cuts come from the fuzzer.
func FuzzVerifyChunking(f *testing.F) {
	rk, ek := testkit.RFC8463Keys()
	txt := map[string][]string{}
	for n, r := range testkit.DNSRecords("rfc8463.dns") {
		txt[n] = []string{r}
	}
	f.Add(testkit.File("rfc8463.eml"), []byte{1})
	std := "v=1; a=rsa-sha256; c=relaxed/relaxed; d=football.example.com; s=test; h=from:to:subject"
	// rsa-sha1 hashes the body with a hasher of its own.
	for _, tags := range []string{std, std + "; l=20", strings.Replace(std, "relaxed/relaxed", "simple/simple", 1), strings.Replace(std, "rsa-sha256", "rsa-sha1", 1)} {
		m, err := testkit.SignRaw(testkit.CRLF([]byte(baseMsg)), tags, rk)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m, []byte{2, 0, 7})
		f.Add(append(m, "appended\r\n \r\n"...), []byte{0})
	}
	m, err := testkit.SignRaw(testkit.CRLF([]byte(baseMsg)), strings.NewReplacer("rsa-sha256", "ed25519-sha256", "s=test", "s=brisbane").Replace(std), ek)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m, []byte{3, 1})
	v := New(Options{Resolver: &dns.Fake{TXT: txt}, Now: func() time.Time { return time.Unix(1528637909, 0) }})
	f.Fuzz(func(t *testing.T, msg, cuts []byte) {
		h, body := testkit.Split(msg)
		whole := v.Begin(context.Background(), h)
		whole.Write(body)
		want := whole.Finish()
		parts := v.Begin(context.Background(), h)
		for i, p := 0, body; len(p) > 0; i++ {
			n := len(p)
			if len(cuts) > 0 {
				n = min(n, 1+int(cuts[i%len(cuts)]))
			}
			parts.Write(p[:n])
			p = p[n:]
		}
		got := parts.Finish()
		if len(got) != len(want) {
			t.Fatalf("%d results in chunks, %d whole", len(got), len(want))
		}
		for i := range got {
			if got[i].Result != want[i].Result || got[i].Reason() != want[i].Reason() {
				t.Fatalf("signature %d: %s %q in chunks (cuts %v), %s %q whole", i, got[i].Result, got[i].Reason(), cuts, want[i].Result, want[i].Reason())
			}
		}
	})
}
