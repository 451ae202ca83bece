package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/milter"
)

// waitLog waits until the daemon's log has s (the daemon is a real
// process: there is nothing to wait on but its output).
func (p *proc) waitLog(t *testing.T, s string) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if strings.Contains(p.stderr.String(), s) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("log never said %q:\n%s", s, p.stderr.String())
}

// waitLogN waits until the daemon's log has s n times, and returns the
// log after the nth.
func (p *proc) waitLogN(t *testing.T, s string, n int) string {
	t.Helper()
	for i := 0; i < 2000; i++ {
		log := p.stderr.String()
		if strings.Count(log, s) >= n {
			return strings.SplitN(log, s, n+1)[n]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("log never said %q %d times:\n%s", s, n, p.stderr.String())
	return ""
}

func (f *fixture) dial(t *testing.T) *testkit.Client {
	t.Helper()
	c, err := testkit.Dial("unix", filepath.Join(f.dir, "milter.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Connect("localhost", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	return c
}

var testMsg = testkit.CRLF([]byte("From: a@example.com\nTo: b@example.net\nSubject: hi\n\nhello\n"))

// selectorOf sends a message and returns the s= of the signature added.
// selectorOnce sends one message on a connection of its own and closes
// it, as an SMTP session that QUITs after one message: a stop does not
// wait for it (a connection Postfix still holds, it would).
func (f *fixture) selectorOnce(t *testing.T) string {
	t.Helper()
	c := f.dial(t)
	defer c.Close()
	return selectorOf(t, c)
}

func selectorOf(t *testing.T, c *testkit.Client) string {
	t.Helper()
	r, err := c.Send(testkit.Envelope{From: "a@example.com"}, testMsg, 0)
	if err != nil {
		t.Fatal(err)
	}
	ins := testkit.Mods(r, gomilter.ActInsertHeader)
	if len(ins) != 1 {
		t.Fatalf("mods %+v", r.Mods)
	}
	tags, err := dkim.ParseTagList(ins[0].HeaderValue)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := tags.Get("s")
	return s
}

// SIGHUP: a new key takes over for new connections; a connection opened
// before keeps its configuration; a broken configuration is refused with
// every error logged, and mail keeps being signed with the last good one.
func TestReload(t *testing.T) {
	f := newFixture(t, "")
	notify := filepath.Join(f.dir, "notify")
	nl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	p := startProcEnv(t, []string{"NOTIFY_SOCKET=" + notify}, "serve", "-config", f.cfg)
	expectNotify(t, nl, "READY=1")
	before := f.dial(t)
	if s := selectorOf(t, before); s != "rsa" {
		t.Fatalf("s=%s", s)
	}

	key := testkit.RSAKey(2048)
	testkit.WriteKey(f.dir, "keys/new.pem", key, false)
	f.dns.SetTXT("new._domainkey.example.com", testkit.KeyRecord(key, ""))
	cfg, _ := os.ReadFile(f.cfg)
	good := strings.Replace(string(cfg), `selector = "rsa"
file = "keys/rsa.pem"`, `selector = "new"
file = "keys/new.pem"`, 1)
	os.WriteFile(f.cfg, []byte(good), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	expectNotify(t, nl, "RELOADING=1")
	expectNotify(t, nl, "READY=1")
	p.waitLog(t, "configuration reloaded")
	if s := selectorOf(t, f.dial(t)); s != "new" {
		t.Errorf("after reload: s=%s, want new", s)
	}
	if s := selectorOf(t, before); s != "rsa" {
		t.Errorf("connection opened before the reload: s=%s, want rsa (its own configuration)", s)
	}

	os.WriteFile(f.cfg, []byte(good+"\n[verify]\nmax_signatures = 0\nbogus = 1\n"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "reload failed: the previous configuration stays in force")
	for _, want := range []string{"verify.max_signatures", "verify.bogus"} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("the failed reload does not log %s", want)
		}
	}
	if s := selectorOf(t, f.dial(t)); s != "new" {
		t.Errorf("after a failed reload: s=%s, want new", s)
	}
}

// A restart-only setting changed in the file is named at every reload
// while it is not in force, with the running and the new value, and no
// longer once the file is back to what runs; the ready line shows the
// socket actually listened on.
func TestReloadRestartOnly(t *testing.T) {
	f := newFixture(t, "")
	p := startProc(t, "serve", "-config", f.cfg)
	p.waitLog(t, "dkimmilter ready")
	orig, _ := os.ReadFile(f.cfg)
	running := "unix:" + f.dir + "/milter.sock"
	moved := strings.Replace(string(orig), "/milter.sock", "/other.sock", 1) + "[limits]\nmax_sessions = 7\n"
	os.WriteFile(f.cfg, []byte(moved), 0o644)

	for n := 1; n <= 2; n++ {
		p.cmd.Process.Signal(syscall.SIGHUP)
		p.waitLogN(t, "dkimmilter ready", n+1)
		log := p.waitLogN(t, "reloading", n)
		for _, want := range []string{
			"setting=listen running=" + running + " config=unix:" + f.dir + "/other.sock",
			"setting=limits.max_sessions running=500 config=7",
			"listen=" + running + " ",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("reload %d: the log lacks %q:\n%s", n, want, log)
			}
		}
		for _, not := range []string{"setting=socket_mode", "setting=metrics_listen", "setting=limits.idle_timeout", "other.sock mode="} {
			if strings.Contains(log, not) {
				t.Errorf("reload %d: the log has %q, which did not change:\n%s", n, not, log)
			}
		}
	}

	os.WriteFile(f.cfg, orig, 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLogN(t, "dkimmilter ready", 4)
	if log := p.waitLogN(t, "reloading", 3); strings.Contains(log, "not in force") {
		t.Errorf("a file back to the running values still warns:\n%s", log)
	}
	selectorOf(t, f.dial(t))
}

// -listen replaces the file's listen, at start and at every reload: the
// file's own value is not "a change waiting for a restart".
func TestServeListenFlag(t *testing.T) {
	f := newFixture(t, "")
	sock := filepath.Join(f.dir, "flag.sock")
	p := startProc(t, "serve", "-config", f.cfg, "-listen", "unix:"+sock)
	p.waitLog(t, "listen=unix:"+sock)
	c, err := testkit.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLogN(t, "dkimmilter ready", 2)
	if log := p.waitLogN(t, "reloading", 1); strings.Contains(log, "not in force") || !strings.Contains(log, "listen=unix:"+sock) {
		t.Errorf("reload with -listen:\n%s", p.stderr.String())
	}
	code, _, errs := runCmd("serve", "-listen", "127.0.0.1:8893")
	if code != exitUsage || !strings.Contains(errs, `write "inet:127.0.0.1:8893"`) {
		t.Errorf("-listen without inet: exit %d %s", code, errs)
	}
}

// A reload whose configuration parses but whose keys cannot be used (a key
// file others may read, a key too short to sign with) is refused as a
// whole: the error says what fixes it, and mail is signed with the keys
// of the last good configuration, by new connections too.
func TestReloadRefusesUnusableKeys(t *testing.T) {
	f := newFixture(t, "")
	p := startProc(t, "serve", "-config", f.cfg)
	if s := selectorOf(t, f.dial(t)); s != "rsa" {
		t.Fatalf("s=%s", s)
	}
	good, _ := os.ReadFile(f.cfg)
	for _, tt := range []struct {
		name, log string
		setup     func() string // writes the key, returns its file
	}{
		{"key file readable by others", "chmod 600", func() string {
			p := testkit.WriteKey(f.dir, "keys/open.pem", testkit.RSAKey(2048), false)
			os.Chmod(p, 0o644)
			return p
		}},
		{"512-bit key", "RSA key too short: 512 bits", func() string {
			p := filepath.Join(f.dir, "keys", "short.pem")
			os.WriteFile(p, testkit.File("rsa512.key"), 0o600)
			return p
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.setup()
			bad := strings.Replace(string(good), `file = "keys/rsa.pem"`, `file = "`+file+`"`, 1)
			if bad == string(good) {
				t.Fatal("the fixture's key line moved")
			}
			os.WriteFile(f.cfg, []byte(bad), 0o644)
			failures := strings.Count(p.stderr.String(), "reload failed")
			p.cmd.Process.Signal(syscall.SIGHUP)
			for i := 0; strings.Count(p.stderr.String(), "reload failed") == failures; i++ {
				if i == 2000 || strings.Count(p.stderr.String(), "configuration reloaded") > 0 {
					t.Fatalf("the reload was not refused:\n%s", p.stderr.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !strings.Contains(p.stderr.String(), tt.log) {
				t.Errorf("the refused reload does not say %q", tt.log)
			}
			if s := selectorOf(t, f.dial(t)); s != "rsa" {
				t.Errorf("after the refused reload: s=%s, want rsa (the last good keys)", s)
			}
		})
	}
}

func expectNotify(t *testing.T, c *net.UnixConn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 512)
	n, _, err := c.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("waiting for %s: %v", want, err)
	}
	if !strings.HasPrefix(string(buf[:n]), want) {
		t.Fatalf("notify %q, want %s", buf[:n], want)
	}
}

// SIGTERM with a message in flight and a connection between messages:
// the message finishes (signed), the idle connection's next message is
// signed too, and the daemon exits 0 once Postfix has closed both (QUIT).
func TestStopDrains(t *testing.T) {
	f := newFixture(t, "")
	p := startProc(t, "serve", "-config", f.cfg)
	idle := f.dial(t)
	if s := selectorOf(t, idle); s != "rsa" {
		t.Fatalf("s=%s", s)
	}
	c := f.dial(t)
	s := c.Session
	if _, err := s.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	h, body := testkit.Split(testMsg)
	for _, fl := range h {
		s.HeaderField(fl.Name, testkit.HeaderValue(fl, true))
	}
	s.HeaderEnd()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLog(t, "stopping: letting messages in flight finish")
	// New connections are refused now.
	if _, err := testkit.Dial("unix", filepath.Join(f.dir, "milter.sock")); err == nil {
		t.Error("a new connection was accepted while stopping")
	}
	if _, err := s.BodyChunk(body); err != nil {
		t.Fatal(err)
	}
	mods, act, err := s.End()
	if err != nil || act.Code != gomilter.ActContinue || len(mods) != 1 || mods[0].HeaderName != "DKIM-Signature" {
		t.Fatalf("message in flight: %v %+v %+v", err, act, mods)
	}
	// Longer than a stop used to keep a connection between messages.
	time.Sleep(300 * time.Millisecond)
	if s := selectorOf(t, idle); s != "rsa" {
		t.Errorf("next message on the connection idle at SIGTERM: s=%s", s)
	}
	select {
	case err := <-p.done:
		t.Fatalf("the daemon exited (%v) while Postfix still held its connections", err)
	default:
	}
	c.Close()
	idle.Close()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(milter.DefaultDrainGrace - time.Second):
		t.Fatal("no exit once Postfix closed its connections")
	}
	if !strings.Contains(p.stderr.String(), "msg=stopped") {
		t.Errorf("log:\n%s", p.stderr.String())
	}
}

// A message still open when limits.shutdown_timeout runs out is cut and
// named in the log by queue id; closing its connection is not reported
// as a fault (go-milter's "use of closed network connection" is debug).
func TestStopCutsNamed(t *testing.T) {
	f := newFixture(t, "[limits]\nshutdown_timeout = \"300ms\"\n")
	p := startProc(t, "serve", "-config", f.cfg)
	s := f.dial(t).Session
	if _, err := s.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	s.Macros(gomilter.CodeHeader, "i", "4XCUT0001")
	s.HeaderField("From", " a@example.com")
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after shutdown_timeout")
	}
	log := p.stderr.String()
	if !regexp.MustCompile(`msg="milter connection ended in the middle of a message" qid=4XCUT0001 stage=header .* cause=shutdown`).MatchString(log) {
		t.Errorf("the cut message is not named:\n%s", log)
	}
	if strings.Contains(log, "closed network connection") {
		t.Errorf("closing the cut connection is logged at info:\n%s", log)
	}
}

// metrics_listen serves the Prometheus text format, with message counts
// and the key-health gauges of the background keys check.
func TestMetricsEndpoint(t *testing.T) {
	addr := freePort(t)
	f := newFixture(t, "")
	cfg, _ := os.ReadFile(f.cfg)
	os.WriteFile(f.cfg, []byte(`metrics_listen = "`+addr+`"`+"\n"+string(cfg)), 0o644)
	p := startProc(t, "serve", "-config", f.cfg)
	selectorOf(t, f.dial(t))
	var body string
	for i := 0; i < 500; i++ {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if strings.Contains(body, "dkimmilter_key_matches") {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{
		`dkimmilter_messages_total{decision="signed"} 1`,
		`dkimmilter_key_published{key="rsa",domain="example.com"} 1`,
		`dkimmilter_key_matches{key="rsa",domain="example.com"} 1`,
		`dkimmilter_key_check_status{key="rsa",domain="example.com"} 0`,
		`dkimmilter_key_age_seconds{key="rsa",domain="example.com"}`,
		`dkimmilter_sessions 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s\nlog:\n%s", body, p.stderr.String())
	}
}

// Rotation's publishers come from the configuration's [publish.NAME]
// tables; one that is not there is an error naming it, and
// dnsupdate.New's own errors come through.
func TestRotationPublisher(t *testing.T) {
	cfg := config.Default()
	cfg.File = "/etc/dkimmilter/dkimmilter.toml"
	if _, err := rotationPublisher(cfg, "gone"); err == nil || !strings.Contains(err.Error(), "[publish.gone]") || !strings.Contains(err.Error(), cfg.File) {
		t.Errorf("missing table: %v", err)
	}
	cfg.Publishers = map[string]*config.Publisher{"p": {Name: "p", Method: "nonsense"}}
	if pub, err := rotationPublisher(cfg, "p"); err == nil && pub == nil {
		t.Errorf("no publisher and no error")
	}
}
