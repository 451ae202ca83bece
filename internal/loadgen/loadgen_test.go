package loadgen_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/loadgen"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/milter"
)

// startMilter runs dkimmilter in this process on a unix socket and on
// TCP, both on loopback, with an RSA key for example.com and an Ed25519
// key for ed.example.com published in an in-process DNS server.
func startMilter(t *testing.T) (unixAddr, inetAddr string) {
	t.Helper()
	dir := t.TempDir()
	dns := dnstest.New(t)
	rsaKey := testkit.RSAKey(2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	testkit.WriteKey(dir, "rsa.pem", rsaKey, true)
	testkit.WriteKey(dir, "ed.pem", edKey, false)
	dns.SetTXT("bench._domainkey.example.com", testkit.KeyRecord(rsaKey, ""))
	dns.SetTXT("benched._domainkey.ed.example.com", testkit.KeyRecord(edKey, ""))
	cfg := `
authserv_id = "mx.example.com"
[dns]
nameservers = ["` + dns.Addr + `"]
[keys.rsa]
domain = "example.com"
selector = "bench"
file = "` + dir + `/rsa.pem"
[keys.ed]
domain = "ed.example.com"
selector = "benched"
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
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rt, _, err := milter.LoadRuntime(c, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := milter.NewServer(milter.ServerOptions{Runtime: rt, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	sock := filepath.Join(dir, "milter.sock")
	for _, a := range []string{"unix:" + sock, "inet:127.0.0.1:0"} {
		ln, err := milter.Listen(a, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(a, "inet:") {
			inetAddr = "inet:" + ln.Addr().String()
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.Serve(ln)
		}()
		t.Cleanup(func() { ln.Close(); <-done })
	}
	return "unix:" + sock, inetAddr
}

// A small run of each mode against our own milter: every message is
// answered as expected, and the report's figures are filled in. Nothing
// here asserts a time.
func TestRunAgainstDkimmilter(t *testing.T) {
	unixAddr, inetAddr := startMilter(t)
	var signed []byte
	sign := loadgen.Config{
		Addr: unixAddr, Mode: loadgen.Sign, Message: loadgen.GenerateMessage(2048, "alice@example.com", "bob@example.net"),
		Concurrency: 3, Count: 20, Reuse: 3, Warmup: 2, PID: os.Getpid(),
		Save: func(b []byte) { signed = b },
	}
	rep := run(t, sign, 20)
	if rep.Protocol != "v6" {
		t.Errorf("protocol %q: dkimmilter answers version 6, as Postfix is answered", rep.Protocol)
	}
	if rep.MilterCPU < 0 || rep.PeakRSSKB == 0 || rep.MaxThreads == 0 {
		t.Errorf("process figures not measured: %+v", rep)
	}
	if sz := rep.MessageSize; sz < 2048 || sz > 2048+200 {
		t.Errorf("message size %d, want about 2048", sz)
	}
	if !bytes.Contains(signed, []byte("DKIM-Signature: v=1;")) {
		t.Fatalf("saved message is not signed:\n%s", signed)
	}

	// The signed message, verified over TCP by an external client.
	msg, err := loadgen.ParseMessage(signed, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	run(t, loadgen.Config{Addr: inetAddr, Mode: loadgen.Verify, Message: msg, Concurrency: 2, Count: 10, Expect: "pass"}, 10)

	// Ed25519, a 200 kB message (several body chunks), one per connection.
	run(t, loadgen.Config{Addr: unixAddr, Mode: loadgen.Sign, Message: loadgen.GenerateMessage(200_000, "alice@ed.example.com", "bob@example.net"),
		Concurrency: 2, Count: 4}, 4)
}

// Wrong answers are counted by kind, not hidden: the unsigned message
// does not verify as pass, and mail from a domain without a key is not
// signed.
func TestRunCountsErrors(t *testing.T) {
	unixAddr, _ := startMilter(t)
	unsigned := loadgen.GenerateMessage(1000, "alice@example.com", "bob@example.net")
	rep, err := loadgen.Run(context.Background(), loadgen.Config{Addr: unixAddr, Mode: loadgen.Verify, Message: unsigned, Count: 5, Expect: "pass"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Messages != 0 || rep.Failed != 5 || rep.Errors["result-none"] != 5 {
		t.Errorf("unsigned message verified as pass? %+v", rep)
	}
	other := loadgen.GenerateMessage(1000, "alice@example.org", "bob@example.net")
	rep, err = loadgen.Run(context.Background(), loadgen.Config{Addr: unixAddr, Mode: loadgen.Sign, Message: other, Count: 3, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 3 || rep.Errors["no-signature"] != 3 {
		t.Errorf("mail without a signing rule was signed? %+v", rep)
	}
	if _, err := loadgen.Run(context.Background(), loadgen.Config{Addr: "unix:" + t.TempDir() + "/none.sock", Mode: loadgen.Sign, Message: other, Count: 1, Warmup: 1}); err == nil {
		t.Error("a run against no milter started")
	}
}

func run(t *testing.T, cfg loadgen.Config, want int) *loadgen.Report {
	t.Helper()
	rep, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Messages != want || rep.Failed != 0 {
		t.Fatalf("%s: %d ok, %d failed (%v, first: %s), want %d ok", cfg.Mode, rep.Messages, rep.Failed, rep.Errors, rep.FirstError, want)
	}
	l := rep.LatencyMS
	if l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max || rep.MsgsPerSec <= 0 {
		t.Errorf("latency figures inconsistent: %+v, %.1f msgs/s", l, rep.MsgsPerSec)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "msgs/s") {
		t.Errorf("text report: %s", text.String())
	}
	return rep
}

// The comparison table puts the medians of two milters side by side.
func TestWriteTable(t *testing.T) {
	mk := func(m string, rate float64) *loadgen.Report {
		return &loadgen.Report{Label: "sign c=8", Milter: m, MsgsPerSec: rate, LatencyMS: loadgen.Latency{P50: 1}}
	}
	var b bytes.Buffer
	loadgen.WriteTable(&b, []*loadgen.Report{mk("a", 100), mk("b", 50), mk("a", 300), mk("b", 50), mk("a", 200)}, "a", "b")
	if !strings.Contains(b.String(), "| sign c=8 (3 runs) | 200 (100–300) | 50 (50–50) | 4.00× |") {
		t.Errorf("table:\n%s", b.String())
	}
}
