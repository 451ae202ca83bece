package milter

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// env is a running milter with its own keys, config and in-process DNS
// server on 127.0.0.1, driven through go-milter's client as Postfix does.
type env struct {
	t       *testing.T
	dir     string
	dns     *dnstest.Server
	rt      *Runtime
	srv     *Server
	metrics *Metrics
	addr    string
	logs    *syncBuffer
	rsa     crypto.Signer
	ed      ed25519.PrivateKey
}

const baseConfig = `
authserv_id = "mx.example.com"
[sign]
internal_hosts = ["127.0.0.1", "::1", "10.0.0.0/8", "2001:db8:1::/48"]
[dns]
nameservers = ["{{dns}}"]
timeout = "1s"
[keys.rsa]
domain = "example.com"
selector = "rsa"
file = "{{dir}}/rsa.pem"
[keys.ed]
domain = "example.com"
selector = "ed"
file = "{{dir}}/ed.pem"
[[signing]]
from = "*@example.com"
keys = ["rsa"]
`

// newEnv starts a milter on loopback with cfg (baseConfig when empty);
// "{{dir}}" and "{{dns}}" are replaced. The keys rsa.pem and ed.pem exist
// and their records are published.
func newEnv(t *testing.T, cfg string) *env {
	t.Helper()
	if cfg == "" {
		cfg = baseConfig
	}
	e := &env{t: t, dir: t.TempDir(), dns: dnstest.New(t), logs: &syncBuffer{}, rsa: testkit.RSAKey(2048)}
	_, e.ed, _ = ed25519.GenerateKey(rand.Reader)
	testkit.WriteKey(e.dir, "rsa.pem", e.rsa, true)
	testkit.WriteKey(e.dir, "ed.pem", e.ed, false)
	e.dns.SetTXT("rsa._domainkey.example.com", testkit.KeyRecord(e.rsa, ""))
	e.dns.SetTXT("ed._domainkey.example.com", testkit.KeyRecord(e.ed, ""))

	cfg = strings.NewReplacer("{{dir}}", e.dir, "{{dns}}", e.dns.Addr).Replace(cfg)
	path := filepath.Join(e.dir, "dkimmilter.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	e.start(c)
	return e
}

func (e *env) start(c *config.Config) {
	t := e.t
	rt, _, err := LoadRuntime(c, nil, slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	if err != nil {
		t.Fatalf("runtime: %v", err)
	}
	e.rt = rt
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.metrics = NewMetrics()
	e.srv = NewServer(ServerOptions{Runtime: e.rt, Log: log, Metrics: e.metrics})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		e.srv.Close()
		<-done
		if t.Failed() {
			t.Logf("milter log:\n%s", e.logs.String())
		}
	})
}

// setVerifier changes the runtime's verifier options (its clock, its
// resolver) before the test sends mail.
func (e *env) setVerifier(change func(*verifier.Options)) {
	o := e.rt.Verifier.Options()
	change(&o)
	e.rt.Verifier = verifier.New(o)
}

// on returns the env for a subtest, so that failures are reported on the
// subtest's t.
func (e *env) on(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// dial opens a milter connection for an SMTP client at ip.
func (e *env) dial(ip string) *testkit.Client {
	e.t.Helper()
	c, err := testkit.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.Connect("client.example.net", ip); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// send runs msg (LF or CRLF) from a client at ip and returns the result
// and the message as Postfix would deliver it.
func (e *env) send(ip string, env testkit.Envelope, msg string, chunk int) (*testkit.Result, []byte) {
	e.t.Helper()
	return e.sendOn(e.dial(ip), env, msg, chunk)
}

func (e *env) sendOn(c *testkit.Client, env testkit.Envelope, msg string, chunk int) (*testkit.Result, []byte) {
	e.t.Helper()
	raw := testkit.CRLF([]byte(msg))
	r, err := c.Send(env, raw, chunk)
	if err != nil {
		e.t.Fatalf("send: %v", err)
	}
	return r, testkit.Apply(raw, r.Mods, c.Session.ProtocolOption(gomilter.OptHeaderLeadingSpace))
}

// verify checks a delivered message with our verifier over the real DNS
// client, and with go-msgauth as an independent second verifier.
func (e *env) verify(msg []byte) []*verifier.Verification {
	e.t.Helper()
	v := e.rt.Verifier
	h, body := testkit.Split(msg)
	m := v.Begin(context.Background(), h)
	m.Write(body)
	res := m.Finish()

	lookup := func(name string) ([]string, error) {
		r, err := e.rt.Verifier.Options().Resolver.LookupTXT(context.Background(), name)
		if err != nil {
			return nil, err
		}
		return r.Records, nil
	}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		e.t.Fatal(err)
	}
	if len(vs) != len(res) {
		e.t.Fatalf("go-msgauth sees %d signatures, we see %d", len(vs), len(res))
	}
	for i, v := range vs {
		if (v.Err == nil) != (res[i].Result == verifier.Pass) {
			e.t.Errorf("signature %d: go-msgauth says %v, we say %s %v", i, v.Err, res[i].Result, res[i].Err)
		}
	}
	return res
}

// syncBuffer is a bytes.Buffer safe for the concurrent sessions' logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lastLog returns the last "message" log line.
func (e *env) lastLog() string {
	var last string
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, "msg=message") {
			last = l
		}
	}
	return last
}

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }
