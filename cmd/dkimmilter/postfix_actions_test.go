package main

import (
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// [actions] through a real Postfix, several messages on one SMTP session
// (so one milter connection): a discard is accepted and dropped, a
// signature whose key is not published is delivered when only
// bad_signature rejects, a broken signature is rejected with its reason,
// and the session goes on to deliver the next message.
func TestPostfixActions(t *testing.T) {
	requirePostfix(t)
	f := newFixture(t, "[actions]\nno_signature = \"discard\"\nbad_signature = \"reject\"\nkey_not_found = \"accept\"\n")
	addr := freePort(t)
	p := newPostfix(t, "inet:"+addr)
	f.listenFor(t, "inet:"+addr)
	d := startProc(t, "serve", "-config", f.cfg)
	p.start()

	k := testkit.RSAKey(2048)
	f.dns.SetTXT("r1._domainkey.sender.example", testkit.KeyRecord(k, ""))
	msg := func(subject, sel string) []byte {
		m := testkit.CRLF([]byte("From: Dave <dave@sender.example>\nTo: Alice <alice@example.com>\nSubject: " + subject +
			"\nDate: Mon, 23 Nov 2026 09:00:00 +0000\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@sender.example>\n\nDear Alice,\n  here it is.\n"))
		if sel == "" {
			return m
		}
		s, err := testkit.SignRaw(m, "v=1; a=rsa-sha256; d=sender.example; s="+sel+"; h=from:to:subject:date:message-id", k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tampered := []byte(strings.Replace(string(msg("tampered", "r1")), "Dear Alice", "Dear Bob", 1))

	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 10 * time.Second}
	conn, err := dl.Dial("tcp", p.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example.net"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		subject string
		msg     []byte
		err     string // the SMTP error at end of DATA; "" for 250
	}{
		{"unsigned", msg("unsigned", ""), ""},
		{"no key", msg("no key", "nokey"), ""},
		{"tampered", tampered, "550 5.7.20 No passing DKIM signature: body hash did not verify"},
		{"good", msg("good", "r1"), ""},
	}
	for _, tt := range tests {
		err := sendOn(c, "dave@sender.example", "alice@example.com", tt.msg)
		got := ""
		var te *textproto.Error
		if errors.As(err, &te) {
			got = fmt.Sprint(te.Code, " ", te.Msg)
		} else if err != nil {
			got = err.Error()
		}
		if got != tt.err {
			t.Errorf("%s: end of DATA says %q, want %q", tt.subject, got, tt.err)
		}
		if err := c.Reset(); err != nil {
			t.Fatal(err)
		}
	}
	c.Quit()

	for subject, want := range map[string]string{
		"no key": `mx.example.com; dkim=permerror reason="no key for signature"`,
		"good":   "mx.example.com; dkim=pass (2048-bit rsa key) header.d=sender.example",
	} {
		ar := testkit.Fields(p.delivered(subject), "Authentication-Results")
		if len(ar) != 1 || !strings.HasPrefix(ar[0], want) {
			t.Errorf("%s: A-R %q, want one starting %q", subject, ar, want)
		}
	}
	files, _ := filepath.Glob(filepath.Join(p.sink, "*"))
	for _, file := range files {
		b, _ := os.ReadFile(file)
		if s := testkit.Fields(b, "Subject"); len(s) > 0 && (s[0] == "unsigned" || s[0] == "tampered") {
			t.Errorf("%q was delivered", s[0])
		}
	}
	if !strings.Contains(p.log.String(), "milter-discard") {
		t.Errorf("postfix did not log the discard")
	}
	for _, l := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(l, "milter") && (strings.Contains(l, "warning") || strings.Contains(l, "error")) {
			t.Errorf("postfix: %s", l)
		}
	}
	// The milter session outlived the discard and the reject: it still
	// knows the client Postfix connected it for.
	n := 0
	for _, l := range strings.Split(d.stderr.String(), "\n") {
		if strings.Contains(l, "msg=message") {
			n++
			if !strings.Contains(l, "client=[127.0.0.2]") {
				t.Errorf("the session lost its client: %s", l)
			}
		}
	}
	if n != len(tests) {
		t.Errorf("%d message lines, want %d", n, len(tests))
	}
	for _, w := range []string{"action=discard outcome=no_signature", "outcome=key_not_found", "action=reject outcome=bad_signature"} {
		if !strings.Contains(d.stderr.String(), w) {
			t.Errorf("daemon log lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", d.stderr.String())
	}
}

// sendOn sends one message on an open SMTP session and returns the error
// of the first command that failed.
func sendOn(c *smtp.Client, from, to string, msg []byte) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	w.Write(msg)
	return w.Close()
}
