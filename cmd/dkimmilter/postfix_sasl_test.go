package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// dovecotAuth is the server side of Dovecot's authentication protocol
// (version 1.2, as doc/wiki "Design/AuthProtocol" and Postfix's
// xsasl_dovecot_server.c speak it), as much of it as Postfix's smtpd
// uses with smtpd_sasl_type = dovecot: the handshake (VERSION, MECH,
// SPID, CUID, COOKIE, DONE), then AUTH with a PLAIN initial response,
// answered OK with user= (what Postfix passes to milters as
// {auth_authen}) or FAIL. It lets a real Postfix authenticate test users
// without a Dovecot.
type dovecotAuth struct {
	ln    net.Listener
	users map[string]string // login -> password
	wg    sync.WaitGroup
}

func startDovecotAuth(t testing.TB, path string, users map[string]string) *dovecotAuth {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// smtpd runs as postfix.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	a := &dovecotAuth{ln: ln, users: users}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				defer c.Close()
				a.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		a.wg.Wait()
	})
	return a
}

func (a *dovecotAuth) serve(c net.Conn) {
	fmt.Fprint(c, "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t4242\nCUID\t1\nCOOKIE\t0123456789abcdef0123456789abcdef\nDONE\n")
	r := bufio.NewScanner(c)
	for r.Scan() {
		f := strings.Split(r.Text(), "\t")
		if f[0] != "AUTH" || len(f) < 3 {
			continue // VERSION, CPID
		}
		id := f[1]
		var resp []byte
		for _, p := range f[3:] {
			if v, ok := strings.CutPrefix(p, "resp="); ok {
				resp, _ = base64.StdEncoding.DecodeString(v)
			}
		}
		// PLAIN: authzid NUL authcid NUL password (RFC 4616).
		parts := bytes.Split(resp, []byte{0})
		if f[2] != "PLAIN" || len(parts) != 3 || a.users[string(parts[1])] == "" || a.users[string(parts[1])] != string(parts[2]) {
			fmt.Fprintf(c, "FAIL\t%s\treason=bad credentials\n", id)
			continue
		}
		fmt.Fprintf(c, "OK\t%s\tuser=%s\n", id, parts[1])
	}
}

// sendAuth submits msg to addr after AUTH PLAIN as user, from the local
// address src, and returns the error DATA ended with (nil: accepted).
func (p *postfix) sendAuth(addr, src, user, pass, from, to string, msg []byte) error {
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
	if err := c.Auth(smtp.PlainAuth("", user, pass, "127.0.0.1")); err != nil {
		p.t.Fatalf("AUTH as %s: %v", user, err)
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
	err = w.Close()
	c.Quit()
	return err
}

// The sender binding through a real Postfix whose users authenticate
// with SASL (smtpd_sasl_type = dovecot, against dovecotAuth): on a host
// that signs for example.com and example.org, alice@example.com gets her
// own domain signed; From example.org she gets the reply of
// actions.sender_mismatch = "reject" in her SMTP session, as her mail
// program would show it; the login "bob", without a domain part, gets a
// mapped address signed and another refused; and sender_binding = "off"
// signs alice's example.org mail as before.
func TestPostfixSenderBinding(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("off=%v", off), func(t *testing.T) { testPostfixSenderBinding(t, off) })
	}
}

func testPostfixSenderBinding(t *testing.T, off bool) {
	requirePostfix(t)
	extra := `[keys.org]
domain = "example.org"
selector = "rsa"
file = "keys/rsa.pem"
[[signing]]
from = "*@example.org"
keys = ["org"]
[actions]
sender_mismatch = "reject"
[sign.senders]
bob = ["bob@example.com"]
`
	if off {
		extra += "[sign]\nsender_binding = \"off\"\n"
	}
	f := newFixture(t, extra)
	addr := freePort(t)
	p := newPostfix(t, "inet:"+addr)
	sock := filepath.Join(p.dir, "auth")
	startDovecotAuth(t, sock, map[string]string{"alice@example.com": "alice-pw", "bob": "bob-pw"})
	// The submission idiom without milter_macro_daemon_name: its users
	// are trusted because they authenticate, and so bound.
	submission := p.addSMTPD("-o smtpd_sasl_auth_enable=yes -o smtpd_sasl_type=dovecot -o smtpd_sasl_path=" + sock + " -o smtpd_client_restrictions=permit_sasl_authenticated,reject")
	f.listenFor(t, "inet:"+addr)
	d := startProc(t, "serve", "-config", f.cfg)
	p.start()
	key, err := testkitLookup(f, "rsa._domainkey.example.com")
	if err != nil {
		t.Fatal(err)
	}
	f.dns.SetTXT("rsa._domainkey.example.org", key)

	msg := func(from, subject string) []byte {
		return testkit.CRLF([]byte("From: " + from + "\nTo: Bob <bob@example.net>\nSubject: " + subject +
			"\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.com>\n\nHello.\n"))
	}
	tests := []struct {
		user, pass, from, subject string
		signedFor                 string // d=; "" refused
		reply                     string // the SMTP error alice's client sees
	}{
		{"alice@example.com", "alice-pw", "alice@example.com", "own domain", "example.com", ""},
		{"alice@example.com", "alice-pw", "ceo@example.org", "other domain", "example.org",
			"550 5.7.1 From domain not allowed for this login: example.org (login alice@example.com)"},
		{"bob", "bob-pw", "bob@example.com", "bare login mapped", "example.com", ""},
		{"bob", "bob-pw", "bob@example.org", "bare login not mapped", "example.org",
			"550 5.7.1 From domain not allowed for this login: example.org (login bob)"},
	}
	for _, tt := range tests {
		err := p.sendAuth(submission, "127.0.0.2", tt.user, tt.pass, tt.from, "bob@example.net", msg(tt.from, tt.subject))
		if tt.reply != "" && !off {
			// Refused: Postfix passes the milter's reply on.
			var te *textproto.Error
			if !errors.As(err, &te) || fmt.Sprint(te.Code, " ", te.Msg) != tt.reply {
				t.Errorf("%s: DATA answered %v, want %q", tt.subject, err, tt.reply)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: DATA answered %v", tt.subject, err)
			continue
		}
		got := p.delivered(tt.subject)
		res := verifyDelivered(t, f, got)
		if len(res) != 1 || res[0] != "pass d="+tt.signedFor {
			t.Errorf("%s: %v, want signed for %s", tt.subject, res, tt.signedFor)
		}
	}
	wants := []string{"login=alice@example.com decision=signed", "login=bob decision=signed"}
	if off {
		wants = append(wants, `why="authenticated as alice@example.com"`)
	} else {
		wants = append(wants, `from=ceo@example.org login=alice@example.com decision="sender mismatch" action=reject outcome=sender_mismatch`,
			`from=bob@example.org login=bob decision="sender mismatch" action=reject outcome=sender_mismatch why="login \"bob\" may have mail signed only for what [sign.senders] lists for it`)
	}
	// A message's log line is written once the milter has answered:
	// the last one may still be on its way when the SMTP client has the
	// reply.
	deadline := time.Now().Add(10 * time.Second)
	for _, w := range wants {
		for !strings.Contains(d.stderr.String(), w) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !strings.Contains(d.stderr.String(), w) {
			t.Errorf("daemon log lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", d.stderr.String())
	}
}

// verifyDelivered verifies each signature of msg against the fixture's
// DNS with our verifier: "pass d=DOMAIN", or the result and reason.
func verifyDelivered(t *testing.T, f *fixture, msg []byte) []string {
	t.Helper()
	var out []string
	for _, v := range verifyWithFixture(t, f, msg) {
		s := string(v.Result) + " d=" + v.Domain
		if v.Err != nil {
			s += " " + v.Err.Error()
		}
		out = append(out, s)
	}
	return out
}

// verifyWithFixture verifies msg with our verifier, keys from the
// fixture's DNS server.
func verifyWithFixture(t *testing.T, f *fixture, msg []byte) []*verifier.Verification {
	t.Helper()
	r, err := dns.NewClient([]string{f.dns.Addr}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h, body := testkit.Split(msg)
	m := verifier.New(verifier.Options{Resolver: r}).Begin(context.Background(), h)
	m.Write(body)
	return m.Finish()
}
