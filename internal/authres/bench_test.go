package authres

import "testing"

// Formatting the Authentication-Results value: one pass, and a pass with
// a failure beside it.
func BenchmarkFormat(b *testing.B) {
	pass := DKIM{Result: "pass", Comment: "2048-bit rsa key", Domain: "example.com", Identity: "@example.com", Selector: "s2026r",
		Algorithm: "rsa-sha256", B: "Zr5u1P8xQm2vK9aL"}
	fail := DKIM{Result: "fail", Reason: "body hash did not verify", Comment: "1024-bit rsa key", Domain: "lists.example.org", Selector: "k1",
		Algorithm: "rsa-sha256", B: "Yh7QpA2cYh7QpA2c"}
	for _, c := range []struct {
		name string
		vs   []DKIM
	}{{"pass", []DKIM{pass}}, {"pass+fail", []DKIM{pass, fail}}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Format("mx.example.com", c.vs)
			}
		})
	}
}
