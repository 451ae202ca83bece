package main

import (
	"net"
	"net/smtp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/milter"
)

// A stop never cuts an SMTP session Postfix still holds. One SMTP session
// sends a message; the daemon gets SIGTERM; the same session, so the same
// milter connection, sends another message a while later, and it is
// signed: Postfix reads nothing from the milter connection between
// messages, and a stop that closed it would make this message meet the
// closed socket at its end ("can't read SMFIC_BODYEOB reply packet
// header") and get milter_default_action (tempfail here: a 451). The
// daemon stays until Postfix closes the connection at QUIT, then exits.
func TestPostfixStopKeepsSession(t *testing.T) {
	requirePostfix(t)
	f := newFixture(t, "")
	addr := freePort(t)
	p := newPostfix(t, "inet:"+addr)
	f.listenFor(t, "inet:"+addr)
	d := startProc(t, "serve", "-config", f.cfg)
	p.start()

	msg := func(subject string) []byte {
		return testkit.CRLF([]byte("From: Alice <alice@example.com>\nTo: Bob <bob@example.net>\nSubject: " + subject +
			"\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.com>\n\nHello Bob.\n"))
	}
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 10 * time.Second}
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
	if err := sendOn(c, "alice@example.com", "bob@example.net", msg("before the stop")); err != nil {
		t.Fatalf("first message: %v", err)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.waitLog(t, "stopping:")
	// The SMTP client pauses between its messages: longer than a stop
	// used to keep a milter connection between messages.
	time.Sleep(500 * time.Millisecond)
	if err := sendOn(c, "alice@example.com", "bob@example.net", msg("during the stop")); err != nil {
		t.Errorf("message sent on the same SMTP session after SIGTERM: %v", err)
	}
	select {
	case err := <-d.done:
		t.Fatalf("the daemon exited (%v) while Postfix held its milter connection", err)
	default:
	}
	quit := time.Now()
	if err := c.Quit(); err != nil {
		t.Error(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
		// Well within the grace, which began at the second message's
		// end: the QUIT, not the grace, ended it.
		if took := time.Since(quit); took >= milter.DefaultDrainGrace/2 {
			t.Errorf("the daemon exited %v after QUIT", took)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after Postfix closed the milter connection")
	}

	for _, subject := range []string{"before the stop", "during the stop"} {
		if n := len(testkit.Fields(p.delivered(subject), "DKIM-Signature")); n != 1 {
			t.Errorf("%s: %d signatures, want 1", subject, n)
		}
	}
	for _, l := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(l, "milter") && (strings.Contains(l, "warning") || strings.Contains(l, "error")) {
			t.Errorf("postfix: %s", l)
		}
	}
	if log := d.stderr.String(); strings.Contains(log, "ended in the middle of a message") || !strings.Contains(log, "msg=stopped") {
		t.Errorf("daemon log:\n%s", log)
	}
}
