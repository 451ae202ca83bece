//go:build !race

package main

import (
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// A restart on an activated socket while an SMTP client holds its session
// open without sending anything (a client in its TLS handshake or AUTH, a
// slow one, a stalling bot): the old daemon keeps that session's milter
// connection for the whole limits.shutdown_timeout (closing it would cost
// the session's next message milter_default_action), and an SMTP session
// that starts meanwhile has its milter connection waiting in the socket's
// backlog. Postfix waits milter_command_timeout (30s by default) for the
// answer to the first packet it writes there; with the default
// shutdown_timeout the new daemon answers in time: the message is
// accepted, signed, and Postfix logs no milter warning. With a
// shutdown_timeout as long as Postfix's timeout, it times out and the
// message gets milter_default_action (here tempfail: a 451). Not under
// the race detector: it waits for the whole shutdown_timeout.
func TestPostfixRestartHeldSession(t *testing.T) {
	requirePostfix(t)
	f := newFixture(t, "")
	p := newPostfix(t, "unix:dkimmilter/dkimmilter.sock")
	sock := filepath.Join(p.queue, "dkimmilter", "dkimmilter.sock")
	f.listenFor(t, "unix:"+sock)
	file := bindSocket(t, sock, 0o666)
	d := startActivated(t, []*os.File{file}, "", "serve", "-config", f.cfg)
	d.waitLog(t, "dkimmilter ready")
	p.start()

	// The held session: connected, greeted, then silent.
	conn, err := net.Dial("tcp", p.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	held, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := held.Hello("slow.example.net"); err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	stop := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.waitLog(t, "stopping: letting messages in flight finish")
	// A new SMTP session at once: Postfix connects to the milter socket
	// (the kernel queues the connection) and waits for an answer.
	sent := make(chan error, 1)
	go func() {
		msg := testkit.CRLF([]byte("From: Alice <alice@example.com>\nTo: Bob <bob@example.net>\nSubject: during the stop\nMessage-ID: <held@example.com>\n\nSent while the old daemon waits for a silent session.\n"))
		sent <- smtp.SendMail(p.smtpAddr, nil, "alice@example.com", []string{"bob@example.net"}, msg)
	}()
	<-d.done
	stopped := time.Since(stop)
	second := startActivated(t, []*os.File{file}, "", "serve", "-config", f.cfg)
	second.waitLog(t, "dkimmilter ready")
	if err := <-sent; err != nil {
		t.Errorf("the message sent during the stop was refused: %v", err)
	} else if got := p.delivered("during the stop"); len(testkit.Fields(got, "DKIM-Signature")) != 1 {
		t.Errorf("the message sent during the stop arrived unsigned:\n%s", got)
	}
	waited := time.Since(stop)
	for _, l := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(l, "warning:") && strings.Contains(l, "milter") {
			t.Errorf("postfix: %s", l)
		}
	}
	t.Logf("the old daemon stopped after %v (the held session kept it to shutdown_timeout); the message sent during the stop was accepted and delivered %v after it began",
		stopped.Round(time.Millisecond), waited.Round(time.Millisecond))
	if !strings.Contains(d.stderr.String(), "stopped") {
		t.Errorf("the old daemon did not log its stop:\n%s", d.stderr.String())
	}
}
