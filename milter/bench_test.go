package milter

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/loadgen"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// benchServer runs the milter on a unix socket with the production
// resolver stack (DNS client on an in-process server, key cache), an RSA
// key for example.com and an Ed25519 key for ed.example.com, logging to
// nowhere. It returns the socket's address for the load driver.
func benchServer(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	dns := dnstest.New(b)
	rsaKey := testkit.RSAKey(2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	testkit.WriteKey(dir, "rsa.pem", rsaKey, true)
	testkit.WriteKey(dir, "ed.pem", edKey, false)
	dns.SetTXT("rsa._domainkey.example.com", testkit.KeyRecord(rsaKey, ""))
	dns.SetTXT("ed._domainkey.ed.example.com", testkit.KeyRecord(edKey, ""))
	cfg := `
authserv_id = "mx.example.com"
[dns]
nameservers = ["` + dns.Addr + `"]
[keys.rsa]
domain = "example.com"
selector = "rsa"
file = "` + dir + `/rsa.pem"
[keys.ed]
domain = "ed.example.com"
selector = "ed"
file = "` + dir + `/ed.pem"
[[signing]]
from = "*@example.com"
keys = ["rsa"]
[[signing]]
from = "*@ed.example.com"
keys = ["ed"]
`
	path := filepath.Join(dir, "dkimmilter.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	rt, _, err := LoadRuntime(c, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(ServerOptions{Runtime: rt, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := Listen("unix:"+filepath.Join(dir, "milter.sock"), 0o600)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	b.Cleanup(func() { srv.Close(); <-done })
	return "unix:" + ln.Addr().String()
}

// A whole 2 KB message through the milter over a unix socket, driven as
// Postfix does (one milter connection per message, as smtpd with one
// message per SMTP session), by the same driver as bench/milterload. The
// figures include the driver's side of the protocol, which runs in this
// process: ns/op is wall time per message with c connections at once.
//
// For a profile of the milter alone, see bench/README.md (perf on the
// daemon); -cpuprofile here mixes in the client.
func BenchmarkMilter(b *testing.B) {
	addr := benchServer(b)
	msg := loadgen.GenerateMessage(2048, "alice@example.com", "bob@example.net")
	var signed []byte
	warm := loadgen.Config{Addr: addr, Mode: loadgen.Sign, Message: msg, Count: 1, Warmup: 1, Save: func(m []byte) { signed = m }}
	if _, err := loadgen.Run(context.Background(), warm); err != nil {
		b.Fatal(err)
	}
	inbound, err := loadgen.ParseMessage(signed, "", nil)
	if err != nil {
		b.Fatal(err)
	}
	edMsg := loadgen.GenerateMessage(2048, "alice@ed.example.com", "bob@example.net")
	cases := []struct {
		name   string
		mode   loadgen.Mode
		msg    *loadgen.Message
		expect string
		c      int
	}{
		{"sign-rsa/c=1", loadgen.Sign, msg, "", 1},
		{"sign-rsa/c=8", loadgen.Sign, msg, "", 8},
		{"sign-ed25519/c=8", loadgen.Sign, edMsg, "", 8},
		{"verify-rsa/c=1", loadgen.Verify, inbound, "pass", 1},
		{"verify-rsa/c=8", loadgen.Verify, inbound, "pass", 8},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			rep, err := loadgen.Run(context.Background(), loadgen.Config{
				Addr: addr, Mode: c.mode, Message: c.msg, Expect: c.expect,
				Concurrency: c.c, Count: b.N, Warmup: 2,
			})
			if err != nil {
				b.Fatal(err)
			}
			if rep.Failed > 0 {
				b.Fatalf("%d messages failed: %s", rep.Failed, rep.FirstError)
			}
			b.ReportMetric(rep.LatencyMS.P50, "p50-ms")
			b.ReportMetric(rep.LatencyMS.P99, "p99-ms")
		})
	}
}
