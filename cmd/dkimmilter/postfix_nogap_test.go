//go:build !race

package main

import (
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// A restart on an activated socket (SIGTERM, then a new daemon on the
// socket systemd holds) and an in-place upgrade (SIGUSR2), each in the
// middle of 2,000 messages from 20 concurrent SMTP clients through a real
// Postfix, each client starting a new SMTP session (and so a new milter
// connection) every 10 messages: with milter_default_action accept and
// tempfail alike, every message is accepted and arrives signed, and
// Postfix logs no milter warning. (Not under the race detector: 2,000
// messages there take minutes, and the drain and upgrade code has its
// own race-tested tests.)
func TestPostfixNoGap(t *testing.T) {
	requirePostfix(t)
	for _, mode := range []string{"restart", "usr2"} {
		for _, action := range []string{"accept", "tempfail"} {
			t.Run(mode+"/"+action, func(t *testing.T) { testPostfixNoGap(t, mode, action) })
		}
	}
}

func testPostfixNoGap(t *testing.T, mode, action string) {
	f := newFixture(t, "")
	p := newPostfix(t, "unix:dkimmilter/dkimmilter.sock")
	mc := filepath.Join(p.conf, "main.cf")
	b, _ := os.ReadFile(mc)
	os.WriteFile(mc, []byte(strings.Replace(string(b), "milter_default_action = tempfail", "milter_default_action = "+action, 1)), 0o644)
	sock := filepath.Join(p.queue, "dkimmilter", "dkimmilter.sock")
	f.listenFor(t, "unix:"+sock)
	pidfile := filepath.Join(f.dir, "dkimmilter.pid")
	var d *proc
	var file *os.File
	if mode == "restart" {
		file = bindSocket(t, sock, 0o666)
		d = startActivated(t, []*os.File{file}, "", "serve", "-config", f.cfg)
	} else {
		d = startProc(t, "serve", "-config", f.cfg, "-pidfile", pidfile)
	}
	p.start()

	const sessions, per = 20, 100
	var refused, sent atomic.Int64
	var wg sync.WaitGroup
	trigger := make(chan struct{})
	var once sync.Once
	start := time.Now()
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *smtp.Client
			for i := 0; i < per; i++ {
				// A new SMTP session (and milter connection) every 10
				// messages, so that sessions start during the restart.
				if i%10 == 0 {
					if c != nil {
						c.Quit()
					}
					conn, err := net.Dial("tcp", p.smtpAddr)
					if err != nil {
						t.Error(err)
						return
					}
					c, _ = smtp.NewClient(conn, "127.0.0.1")
					c.Hello("client.example.net")
				}
				if s == 0 && i == per/3 {
					once.Do(func() { close(trigger) })
				}
				subj := fmt.Sprintf("load %d-%d", s, i)
				msg := testkit.CRLF([]byte(fmt.Sprintf("From: Alice <alice@example.com>\nTo: Bob <bob@example.net>\nSubject: %s\nMessage-ID: <l%d.%d@example.com>\n\nHello %d.\n", subj, s, i, i)))
				err := c.Mail("alice@example.com")
				if err == nil {
					err = c.Rcpt("bob@example.net")
				}
				if err == nil {
					var w io.WriteCloser
					w, err = c.Data()
					if err == nil {
						w.Write(msg)
						err = w.Close()
					}
				}
				if err != nil {
					refused.Add(1)
					t.Logf("session %d message %d: %v", s, i, err)
					c.Reset()
					continue
				}
				sent.Add(1)
			}
			c.Quit()
		}()
	}
	var (
		mu     sync.Mutex
		second *proc
	)
	<-trigger
	switch mode {
	case "usr2":
		d.cmd.Process.Signal(syscall.SIGUSR2)
		// The new process is no child of the test: stop it at the end.
		neu := readPid(t, pidfile, d.cmd.Process.Pid)
		t.Cleanup(func() { syscall.Kill(neu, syscall.SIGKILL) })
	case "restart":
		d.cmd.Process.Signal(syscall.SIGTERM)
		go func() {
			<-d.done
			n := startActivated(t, []*os.File{file}, "", "serve", "-config", f.cfg)
			mu.Lock()
			second = n
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	// Count what arrived, signed or not.
	var signed, unsigned int
	for i := 0; i < 1500; i++ {
		signed, unsigned = 0, 0
		files, _ := filepath.Glob(filepath.Join(p.sink, "*"))
		for _, fn := range files {
			b, err := os.ReadFile(fn)
			if err != nil {
				continue
			}
			if len(testkit.Fields(b, "DKIM-Signature")) == 1 {
				signed++
			} else {
				unsigned++
			}
		}
		if int64(signed+unsigned) >= sent.Load() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	warnings := 0
	for _, l := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(l, "warning:") && strings.Contains(l, "milter") {
			warnings++
			if warnings < 5 {
				t.Logf("postfix: %s", l)
			}
		}
	}
	t.Logf("%d messages in %v: accepted %d, refused %d; arrived signed %d, unsigned %d; Postfix milter warnings %d",
		sessions*per, took.Round(time.Millisecond), sent.Load(), refused.Load(), signed, unsigned, warnings)
	if refused.Load() != 0 || unsigned != 0 || warnings != 0 || signed != sessions*per {
		t.Errorf("not every message was accepted and signed")
	}
	// The switch happened in the middle of the stream, not after it.
	switch mode {
	case "restart":
		mu.Lock()
		n := second
		mu.Unlock()
		if n == nil || strings.Count(n.stderr.String(), "decision=signed") == 0 || strings.Count(d.stderr.String(), "decision=signed") == 0 {
			t.Errorf("the restart did not split the stream between the two daemons")
		}
	case "usr2":
		if strings.Count(d.stderr.String(), "dkimmilter ready") != 2 || !strings.Contains(d.stderr.String(), "old process exited after the upgrade") {
			t.Errorf("the upgrade did not happen:\n%s", d.stderr.String())
		}
	}
}
