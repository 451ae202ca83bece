package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// postfix is a throwaway Postfix instance: its own config, queue and data
// directories under a temp dir, smtpd on a free loopback port, the
// dkimmilter socket in its queue directory (named the way the README
// says, relative to it), and relayhost pointing at smtp-sink, which
// stores every message it receives.
type postfix struct {
	t                      testing.TB
	dir, conf, queue, sink string
	smtpAddr, sinkAddr     string
	services               []string // smtpd listeners added with addSMTPD
	master, sinkCmd        *exec.Cmd
	log                    *syncWriter
}

// freePort returns a loopback address whose port nobody listens on, for
// a server the test starts that must be told its port (Postfix).
func freePort(t testing.TB) string {
	t.Helper()
	// Below the kernel's ephemeral range: the port is free when this
	// returns, and stays free until Postfix or smtp-sink binds it, because
	// no outgoing connection and no bind to port 0 (thousands of them in
	// the load tests, in this and other test processes) is ever given a
	// port from outside that range. A port from bind(":0") was, once in a
	// while, and Postfix's listener then failed to bind.
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if low > 11024 {
		for range 100 {
			port := low - 10000 + rand.IntN(10000)
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				ln.Close()
				return ln.Addr().String()
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// requirePostfix skips (or fails under CI=true) without Postfix or root:
// Postfix's master must start as root to drop to its own user.
func requirePostfix(t testing.TB) {
	_, err1 := exec.LookPath("postfix")
	_, err2 := exec.LookPath("smtp-sink")
	ok := err1 == nil && err2 == nil && os.Geteuid() == 0
	testkit.RequirePeer(t, "postfix (and running as root)", ok)
}

// listenFor points the fixture's daemon at the address Postfix's
// smtpd_milters names, and opens a unix socket to Postfix's smtpd, which
// runs as postfix (the systemd unit uses a setgid postfix directory
// instead).
func (f *fixture) listenFor(t testing.TB, listen string) {
	t.Helper()
	cfg, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(cfg), `listen = "unix:`+f.dir+`/milter.sock"`, `listen = "`+listen+`"`, 1)
	if text == string(cfg) {
		t.Fatal("fixture config has no listen line to replace")
	}
	text = strings.Replace(text, `socket_mode = "0660"`, `socket_mode = "0666"`, 1)
	if err := os.WriteFile(f.cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newPostfix writes the instance's configuration and directories; start
// runs it. In between, the milter can be started, so that Postfix never
// tries its socket before it exists.
func newPostfix(t testing.TB, milter string) *postfix {
	t.Helper()
	requirePostfix(t)
	dir, err := os.MkdirTemp("", "pf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	p := &postfix{t: t, dir: dir, conf: filepath.Join(dir, "conf"), queue: filepath.Join(dir, "queue"),
		sink: filepath.Join(dir, "sink"), smtpAddr: freePort(t), sinkAddr: freePort(t)}
	for _, d := range []string{p.conf, p.queue, p.sink, filepath.Join(dir, "data"), filepath.Join(p.queue, "dkimmilter")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, "chown", "postfix", filepath.Join(dir, "data"), p.sink)
	mainCF := `compatibility_level = 3.6
queue_directory = ` + p.queue + `
data_directory = ` + filepath.Join(dir, "data") + `
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.example.com
mydomain = example.com
myorigin = example.com
mydestination =
alias_maps =
alias_database =
relayhost = [127.0.0.1]:` + port(p.sinkAddr) + `
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_dns_support_level = disabled
disable_dns_lookups = yes
maillog_file = /dev/stdout
# As the README and contrib/postfix/main.cf say:
smtpd_milters = ` + milter + `
non_smtpd_milters = $smtpd_milters
milter_default_action = tempfail
`
	masterCF := p.smtpAddr + ` inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
	os.WriteFile(filepath.Join(p.conf, "main.cf"), []byte(mainCF), 0o644)
	os.WriteFile(filepath.Join(p.conf, "master.cf"), []byte(masterCF), 0o644)
	if out, err := exec.Command("postfix", "-c", p.conf, "check").CombinedOutput(); err != nil {
		t.Fatalf("postfix check: %v\n%s", err, out)
	}
	return p
}

// addSMTPD adds an smtpd listener on a free port, with master.cf's
// options (e.g. "-o smtpd_milters=inet:127.0.0.1:8891", "" for none), and
// returns its address; call it before start, which waits until it
// listens.
func (p *postfix) addSMTPD(options string) string {
	p.t.Helper()
	addr := freePort(p.t)
	f, err := os.OpenFile(filepath.Join(p.conf, "master.cf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "%s inet n - n - - smtpd %s\n", addr, options)
	p.services = append(p.services, addr)
	return addr
}

func (p *postfix) start() {
	t := p.t
	t.Helper()
	p.sinkCmd = exec.Command("smtp-sink", "-u", "postfix", "-d", p.sink+"/%M.", p.sinkAddr, "100")
	if err := p.sinkCmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.master = exec.Command("postfix", "-c", p.conf, "start-fg")
	log := &syncWriter{}
	p.log = log
	p.master.Stdout, p.master.Stderr = log, log
	if err := p.master.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("postfix", "-c", p.conf, "stop").Run()
		done := make(chan struct{})
		go func() { p.master.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.master.Process.Kill()
		}
		p.sinkCmd.Process.Kill()
		p.sinkCmd.Wait()
		if t.Failed() {
			t.Logf("postfix log:\n%s", log.String())
		}
	})
	for _, addr := range append([]string{p.smtpAddr}, p.services...) {
		waitListen(t, addr, log)
	}
}

// waitListen waits until something accepts connections on addr (Postfix's
// master binds its listeners one after the other).
func waitListen(t testing.TB, addr string, log *syncWriter) {
	t.Helper()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if i > 500 {
			t.Fatalf("postfix does not listen on %s:\n%s", addr, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func port(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// send submits msg over SMTP from the local address src.
func (p *postfix) send(src, from, to string, msg []byte) {
	p.t.Helper()
	p.sendTo(p.smtpAddr, src, from, to, msg)
}

// sendTo submits msg to the smtpd listening on addr.
func (p *postfix) sendTo(addr, src, from, to string, msg []byte) {
	p.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		p.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example.net"); err != nil {
		p.t.Fatal(err)
	}
	if err := c.Mail(from); err != nil {
		p.t.Fatal(err)
	}
	if err := c.Rcpt(to); err != nil {
		p.t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		p.t.Fatal(err)
	}
	w.Write(msg)
	if err := w.Close(); err != nil {
		p.t.Fatalf("DATA: %v", err)
	}
	c.Quit()
}

// sendmail submits msg with Postfix's sendmail(1), which goes through
// pickup and cleanup: the non_smtpd_milters path.
func (p *postfix) sendmail(from, to string, msg []byte) {
	p.t.Helper()
	cmd := exec.Command("sendmail", "-C", p.conf, "-f", from, to)
	cmd.Stdin = strings.NewReader(string(msg))
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("sendmail: %v\n%s", err, out)
	}
}

// delivered waits for the message whose Subject is subject at the sink.
func (p *postfix) delivered(subject string) []byte {
	p.t.Helper()
	for i := 0; i < 1500; i++ {
		files, _ := filepath.Glob(filepath.Join(p.sink, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, s := range testkit.Fields(b, "Subject") {
				if s == subject {
					return testkit.CRLF(b)
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, _ := exec.Command("postqueue", "-c", p.conf, "-p").CombinedOutput()
	p.t.Fatalf("%q never arrived at the sink; queue:\n%s", subject, out)
	return nil
}

// A real Postfix with smtpd_milters and non_smtpd_milters on dkimmilter,
// over a unix socket in Postfix's queue directory (named relative to it,
// as the README says) and over TCP: mail from an internal client and from
// sendmail arrives signed and verifies with dkimpy; mail from outside
// arrives with the right Authentication-Results and its forged one
// removed.
func TestPostfixEndToEnd(t *testing.T) {
	for _, kind := range []string{"unix", "inet"} {
		t.Run(kind, func(t *testing.T) { testPostfixEndToEnd(t, kind) })
	}
}

func testPostfixEndToEnd(t *testing.T, kind string) {
	requirePostfix(t)
	ok := false
	if _, found := testkit.Dkimpy(); found {
		ok = true
	}
	f := newFixture(t, "")
	var p *postfix
	var listen string
	switch kind {
	case "unix":
		p = newPostfix(t, "unix:dkimmilter/dkimmilter.sock")
		listen = "unix:" + filepath.Join(p.queue, "dkimmilter", "dkimmilter.sock")
	case "inet":
		addr := freePort(t)
		p = newPostfix(t, "inet:"+addr)
		listen = "inet:" + addr
	}
	f.listenFor(t, listen)
	d := startProc(t, "serve", "-config", f.cfg)
	p.start()

	remoteKey := testkit.RSAKey(2048)
	f.dns.SetTXT("r1._domainkey.sender.example", testkit.KeyRecord(remoteKey, ""))
	records := map[string]string{}
	for _, n := range []string{"rsa._domainkey.example.com", "r1._domainkey.sender.example"} {
		r, err := testkitLookup(f, n)
		if err != nil {
			t.Fatal(err)
		}
		records[n] = r
	}

	outbound := func(subject string) []byte {
		return testkit.CRLF([]byte("From: Alice <alice@example.com>\nTo: Bob <bob@example.net>\nSubject: " + subject +
			"\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.com>\n\nHello Bob,\n\nsee you.\n"))
	}
	p.send("127.0.0.1", "alice@example.com", "bob@example.net", outbound("outbound smtp"))
	p.sendmail("alice@example.com", "bob@example.net", outbound("outbound sendmail"))

	inbound := []byte("From: Dave <dave@sender.example>\nTo: Alice <alice@example.com>\nSubject:Invoice  42\nDate: Mon, 23 Nov 2026 09:00:00 +0000\nMessage-ID: <in1@sender.example>\n\nDear Alice,\n  here it is.\n")
	signed, err := testkit.SignRaw(testkit.CRLF(inbound), "v=1; a=rsa-sha256; c=simple/simple; d=sender.example; s=r1; h=from:to:subject:date:message-id", remoteKey)
	if err != nil {
		t.Fatal(err)
	}
	forged := []byte("Authentication-Results: mx.example.com; dkim=pass header.d=bank.example\r\n")
	p.send("127.0.0.2", "dave@sender.example", "alice@example.com", append(forged, signed...))
	tampered := strings.Replace(string(signed), "Subject:Invoice  42", "Subject:Invoice  43", 1)
	p.send("127.0.0.2", "dave@sender.example", "alice@example.com", append(forged, tampered...))

	for _, subject := range []string{"outbound smtp", "outbound sendmail"} {
		msg := p.delivered(subject)
		if len(testkit.Fields(msg, "DKIM-Signature")) != 1 {
			t.Errorf("%s: %d signatures", subject, len(testkit.Fields(msg, "DKIM-Signature")))
			continue
		}
		if ok {
			res, err := testkit.DkimpyVerify(msg, records)
			if err != nil || len(res) != 1 || res[0] != "pass" {
				t.Errorf("%s: dkimpy says %v %v\n%s", subject, res, err, msg)
			}
		} else {
			t.Logf("python3-dkim missing: %s not checked with dkimpy", subject)
		}
	}
	for subject, want := range map[string]string{
		"Invoice  42": "mx.example.com; dkim=pass (2048-bit rsa key) header.d=sender.example",
		"Invoice  43": `mx.example.com; dkim=fail reason="signature did not verify"`,
	} {
		msg := p.delivered(subject)
		ar := testkit.Fields(msg, "Authentication-Results")
		if len(ar) != 1 || !strings.HasPrefix(ar[0], want) {
			t.Errorf("%s: A-R %q, want one starting %q", subject, ar, want)
		}
	}
	// Postfix saw nothing wrong in the conversation (the no-reply flags
	// and header edits included).
	for _, l := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(l, "milter") && (strings.Contains(l, "warning") || strings.Contains(l, "error")) {
			t.Errorf("postfix: %s", l)
		}
	}
	for _, w := range []string{"decision=signed", "decision=verified", "removed 1 forged Authentication-Results"} {
		if !strings.Contains(d.stderr.String(), w) {
			t.Errorf("daemon log lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", d.stderr.String())
	}
}

// sign.daemon_names against a real Postfix: a second smtpd listener with
// -o milter_macro_daemon_name=ORIGINATING (the submission-service idiom)
// gets its mail signed, while the same client on the plain smtpd, from an
// address that is not internal, is verified. Postfix sends {daemon_name}
// at connect by default (milter_connect_macros): nothing else is set up.
func TestPostfixDaemonNames(t *testing.T) {
	requirePostfix(t)
	f := newFixture(t, "[sign]\ndaemon_names = [\"ORIGINATING\"]\n")
	addr := freePort(t)
	p := newPostfix(t, "inet:"+addr)
	submission := p.addSMTPD("-o milter_macro_daemon_name=ORIGINATING")
	f.listenFor(t, "inet:"+addr)
	d := startProc(t, "serve", "-config", f.cfg)
	p.start()

	msg := func(subject string) []byte {
		return testkit.CRLF([]byte("From: Alice <alice@example.com>\nTo: Bob <bob@example.net>\nSubject: " + subject +
			"\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.com>\n\nHello Bob.\n"))
	}
	// 127.0.0.2 is in Postfix's mynetworks (so it may relay) but not in
	// sign.internal_hosts, and it does not authenticate.
	p.sendTo(submission, "127.0.0.2", "alice@example.com", "bob@example.net", msg("via submission"))
	p.send("127.0.0.2", "alice@example.com", "bob@example.net", msg("via port 25"))

	sub := p.delivered("via submission")
	if n, ar := len(testkit.Fields(sub, "DKIM-Signature")), testkit.Fields(sub, "Authentication-Results"); n != 1 || len(ar) != 0 {
		t.Errorf("via submission: %d signatures, A-R %q; want signed", n, ar)
	}
	plain := p.delivered("via port 25")
	if n, ar := len(testkit.Fields(plain, "DKIM-Signature")), testkit.Fields(plain, "Authentication-Results"); n != 0 || len(ar) != 1 || !strings.Contains(ar[0], "dkim=none") {
		t.Errorf("via port 25: %d signatures, A-R %q; want verified, dkim=none", n, ar)
	}
	for _, w := range []string{
		`decision=signed keys="d=example.com s=rsa a=rsa-sha256" why="received through Postfix service ORIGINATING (sign.daemon_names)"`,
		`decision=verified dkim=none outcome=no_signature why="client`,
	} {
		if !strings.Contains(d.stderr.String(), w) {
			t.Errorf("daemon log lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", d.stderr.String())
	}
}

// testkitLookup reads a record back from the fixture's DNS server, as
// published.
func testkitLookup(f *fixture, name string) (string, error) {
	res, err := dns.NewClient([]string{f.dns.Addr}, 2*time.Second)
	if err != nil {
		return "", err
	}
	r, err := res.LookupTXT(context.Background(), name)
	if err != nil {
		return "", err
	}
	if len(r.Records) != 1 {
		return "", fmt.Errorf("%s: %d records", name, len(r.Records))
	}
	return r.Records[0], nil
}
