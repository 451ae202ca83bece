package main

import (
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkPostfix is what a real Postfix pays per message for a milter:
// one SMTP session sends b.N messages of about 2 KB, each answered by
// smtpd once cleanup and the milter are done, through an smtpd with no
// milter, with dkimmilter on a unix socket, with dkimmilter on inet:, and
// (when Debian's opendkim is installed) with OpenDKIM on inet:, all in one
// Postfix. "sign" sends from an internal client (the message is signed
// with an RSA-2048 key), "verify" from outside (an unsigned message:
// stamped dkim=none, the milter's cost without any cryptography). The cost
// of a milter is its figure less that of "none". As root, with postfix:
//
//	go test -run '^$' -bench Postfix -benchtime 200x ./cmd/dkimmilter
func BenchmarkPostfix(b *testing.B) {
	requirePostfix(b)
	f := newFixture(b, "")
	p := newPostfix(b, "")
	listeners := []struct{ name, milter, addr string }{{name: "none"}}

	cfg, _ := os.ReadFile(f.cfg)
	for _, kind := range []string{"unix", "inet"} {
		listen := "unix:" + filepath.Join(p.queue, "dkimmilter", "dkimmilter.sock")
		milter := "unix:dkimmilter/dkimmilter.sock"
		if kind == "inet" {
			a := freePort(b)
			listen, milter = "inet:"+a, "inet:"+a
		}
		text := strings.Replace(string(cfg), `listen = "unix:`+f.dir+`/milter.sock"`, `listen = "`+listen+`"`, 1)
		text = strings.Replace(text, `socket_mode = "0660"`, `socket_mode = "0666"`, 1)
		path := filepath.Join(f.dir, kind+".toml")
		os.WriteFile(path, []byte(text), 0o644)
		startProc(b, "serve", "-config", path)
		listeners = append(listeners, struct{ name, milter, addr string }{name: "dkimmilter-" + kind, milter: milter})
	}
	if od, err := exec.LookPath("opendkim"); err == nil {
		a := freePort(b)
		startOpenDKIM(b, od, f, "inet:"+port(a)+"@127.0.0.1")
		listeners = append(listeners, struct{ name, milter, addr string }{name: "opendkim-inet", milter: "inet:" + a})
	} else {
		b.Log("opendkim is not installed: no OpenDKIM figure")
	}
	for i := range listeners {
		listeners[i].addr = p.addSMTPD("-o smtpd_milters=" + listeners[i].milter)
	}
	p.start() // waits for every listener

	msg := []byte(strings.ReplaceAll("From: Alice <alice@example.com>\nTo: Bob <bob@example.net>\nSubject: cost\n"+
		"Date: Mon, 07 Dec 2026 10:00:00 +0000\nMessage-ID: <cost@example.com>\n\n"+
		strings.Repeat("A line of text of about fifty bytes, for the body.\n", 36), "\n", "\r\n"))
	for _, dir := range []struct{ name, src string }{{"sign", "127.0.0.1"}, {"verify", "127.0.0.2"}} {
		for _, l := range listeners {
			b.Run(dir.name+"/"+l.name, func(b *testing.B) {
				benchSession(b, l.addr, dir.src, msg)
			})
		}
	}
}

// benchSession sends b.N messages in one SMTP session from src.
func benchSession(b *testing.B, addr, src string, msg []byte) {
	c := smtpSession(b, addr, src)
	defer c.Quit()
	sendOne(b, c, msg) // the milter's connection and key: not measured
	b.ResetTimer()
	for range b.N {
		sendOne(b, c, msg)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/msg")
}

func smtpSession(b *testing.B, addr, src string) *smtp.Client {
	b.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Hello("client.example.net"); err != nil {
		b.Fatal(err)
	}
	return c
}

// sendOne sends msg and waits for smtpd's answer to it, which comes once
// cleanup and the milter have accepted it.
func sendOne(b *testing.B, c *smtp.Client, msg []byte) {
	if err := c.Mail("alice@example.com"); err != nil {
		b.Fatal(err)
	}
	if err := c.Rcpt("bob@example.net"); err != nil {
		b.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		b.Fatal(err)
	}
	w.Write(msg)
	if err := w.Close(); err != nil {
		b.Fatalf("DATA: %v", err)
	}
}

// startOpenDKIM runs Debian's OpenDKIM, signing with the fixture's key as
// dkimmilter does (relaxed/relaxed, the same InternalHosts), on socket.
func startOpenDKIM(b *testing.B, bin string, f *fixture, socket string) {
	b.Helper()
	dir := f.dir
	os.WriteFile(filepath.Join(dir, "od.keytable"), []byte("rsa example.com:rsa:"+filepath.Join(dir, "keys/rsa.pem")+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "od.signingtable"), []byte("*@example.com rsa\n"), 0o644)
	conf := fmt.Sprintf(`Syslog no
Mode sv
Socket %s
KeyTable file:%s/od.keytable
SigningTable refile:%s/od.signingtable
InternalHosts 127.0.0.1,::1
Canonicalization relaxed/relaxed
RequireSafeKeys false
AuthservID mx.example.com
`, socket, dir, dir)
	path := filepath.Join(dir, "opendkim.conf")
	os.WriteFile(path, []byte(conf), 0o644)
	cmd := exec.Command(bin, "-f", "-x", path)
	log := &syncWriter{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := strings.TrimPrefix(socket, "inet:")
	hp := addr[strings.IndexByte(addr, '@')+1:] + ":" + addr[:strings.IndexByte(addr, '@')]
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", hp); err == nil {
			c.Close()
			return
		}
		if i > 200 {
			b.Fatalf("opendkim does not listen on %s:\n%s", hp, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
