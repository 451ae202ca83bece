package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// bindSocket listens on a unix socket as systemd does for a socket unit,
// and returns its descriptor, to be passed to the daemon. The test's own
// listener is closed without unlinking: the daemon holds the socket then.
func bindSocket(t *testing.T, path string, mode os.FileMode) *os.File {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, mode)
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	f, err := ul.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	t.Cleanup(func() { f.Close() })
	return f
}

// startActivated runs the daemon with the sockets socket activation
// passes (sd_listen_fds(3)): from descriptor 3 on, LISTEN_FDS of them,
// for the process whose PID is LISTEN_PID. The shell sets LISTEN_PID to
// its own PID and execs the daemon, which keeps it; pid overrides it (a
// PID that is not the daemon's).
func startActivated(t *testing.T, files []*os.File, pid string, args ...string) *proc {
	t.Helper()
	if pid == "" {
		pid = "$$"
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=` + pid + ` exec "$@"`, "sh", os.Args[0]}, args...)...)
	cmd.Env = append(os.Environ(), "DKIMMILTER_TEST_MAIN=1", "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES=dkimmilter.socket")
	cmd.ExtraFiles = files
	return startCmd(t, cmd, nil)
}

func waitExit(t *testing.T, p *proc, what string) {
	t.Helper()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("%s: exit %v", what, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no exit", what)
	}
}

// With socket activation the daemon serves on the socket it is passed,
// leaves its mode alone (the socket unit's SocketMode= set it), and
// leaves the socket file in place when it stops: systemd owns it, and
// queues connections in its backlog while the service restarts. An
// inherited socket that is not listen is served, with a warning; one
// meant for another process (LISTEN_PID) is ignored.
func TestSocketActivation(t *testing.T) {
	for _, tt := range []struct {
		name     string
		sock     string // socket passed, in the fixture's directory; "" = listen's
		pid      string // LISTEN_PID, "" = the daemon's
		serveOn  string // the socket the daemon must serve on
		warn     bool   // the mismatch warning
		leftMode os.FileMode
	}{
		{"the configuration's socket", "", "", "milter.sock", false, 0o600},
		{"another socket", "other.sock", "", "other.sock", true, 0o600},
		// sd_listen_fds(3): descriptors for another PID are not ours;
		// the daemon makes its own socket, with socket_mode.
		{"LISTEN_PID of another process", "other.sock", "1", "milter.sock", false, 0o660},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "")
			passed := filepath.Join(f.dir, "milter.sock")
			if tt.sock != "" {
				passed = filepath.Join(f.dir, tt.sock)
			}
			file := bindSocket(t, passed, 0o600)
			p := startActivated(t, []*os.File{file}, tt.pid, "serve", "-config", f.cfg)
			file.Close()
			on := filepath.Join(f.dir, tt.serveOn)
			p.waitLog(t, "listen=unix:"+on+" ")
			if got := strings.Contains(p.stderr.String(), "not the configuration's listen"); got != tt.warn {
				t.Errorf("mismatch warning %v, want %v", got, tt.warn)
			}
			c, err := testkit.Dial("unix", on)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Connect("localhost", "127.0.0.1"); err != nil {
				t.Fatal(err)
			}
			if s := selectorOf(t, c); s != "rsa" {
				t.Errorf("s=%s", s)
			}
			c.Close()
			if fi, err := os.Stat(on); err != nil || fi.Mode().Perm() != tt.leftMode {
				t.Errorf("socket %s: %v, want mode %04o", on, err, tt.leftMode)
			}
			p.cmd.Process.Signal(syscall.SIGTERM)
			waitExit(t, p, "SIGTERM")
			_, err = os.Stat(on)
			if owned := tt.serveOn == "milter.sock" && tt.pid != ""; owned != os.IsNotExist(err) {
				t.Errorf("after stop: %s: %v (a socket the daemon made is removed, systemd's stays)", on, err)
			}
		})
	}
}

// What socket activation passes that the daemon cannot serve is an
// error that says what to change in the socket unit.
func TestSocketActivationRefused(t *testing.T) {
	f := newFixture(t, "")
	two := []*os.File{
		bindSocket(t, filepath.Join(f.dir, "a.sock"), 0o600),
		bindSocket(t, filepath.Join(f.dir, "b.sock"), 0o600),
	}
	conn, err := net.Dial("unix", filepath.Join(f.dir, "a.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cf, _ := conn.(*net.UnixConn).File()
	defer cf.Close()
	for _, tt := range []struct {
		name  string
		files []*os.File
		want  string
	}{
		{"two sockets", two, "systemd passed 2 sockets"},
		{"a connection (Accept=yes)", []*os.File{cf}, "set Accept=no in dkimmilter.socket"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// A daemon that serves instead of refusing is stopped.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `LISTEN_PID=$$ exec "$@"`, "sh", os.Args[0], "serve", "-config", f.cfg)
			cmd.Env = append(os.Environ(), "DKIMMILTER_TEST_MAIN=1", "LISTEN_FDS="+strconv.Itoa(len(tt.files)))
			cmd.ExtraFiles = tt.files
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.want) {
				t.Errorf("exit %v, want an error saying %q:\n%s", err, tt.want, out)
			}
		})
	}
}

// systemd's own implementation of the contract: systemd-socket-activate
// binds the socket, and execs the daemon at the first connection.
func TestSystemdSocketActivate(t *testing.T) {
	bin, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-socket-activate not installed (Debian package systemd)")
		}
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	f := newFixture(t, "")
	sock := filepath.Join(f.dir, "milter.sock")
	cmd := exec.Command(bin, "-l", sock, "--fdname=dkimmilter.socket", "-E", "DKIMMILTER_TEST_MAIN=1",
		os.Args[0], "serve", "-config", f.cfg)
	var first *testkit.Client
	p := startCmd(t, cmd, func() {
		// The first connection starts the daemon; it waits in the
		// backlog meanwhile.
		for i := 0; i < 500; i++ {
			if first, err = testkit.Dial("unix", sock); err == nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("no socket: %v", err)
	})
	if first == nil {
		t.FailNow()
	}
	defer first.Close()
	if err := first.Connect("localhost", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if s := selectorOf(t, first); s != "rsa" {
		t.Errorf("s=%s", s)
	}
	first.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	waitExit(t, p, "SIGTERM")
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("the activated socket was removed: %v", err)
	}
}

// readPid waits until the pidfile names a process other than not, and
// returns it.
func readPid(t *testing.T, path string, not int) int {
	t.Helper()
	for i := 0; i < 2000; i++ {
		data, _ := os.ReadFile(path)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid != not {
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the pidfile %s never named a process other than %d", path, not)
	return 0
}

// SIGUSR2: the binary is started again on the same socket; once it is
// ready, the pidfile names it, systemd is told it is the main process,
// the old process stops accepting, finishes the message a client
// started before, and exits. New connections meanwhile go to the new
// process: no connection is refused at any moment.
func TestUpgrade(t *testing.T) {
	f := newFixture(t, "")
	sock := filepath.Join(f.dir, "milter.sock")
	pidfile := filepath.Join(f.dir, "dkimmilter.pid")
	notify := filepath.Join(f.dir, "notify")
	nl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	p := startProcEnv(t, []string{"NOTIFY_SOCKET=" + notify}, "serve", "-config", f.cfg, "-pidfile", pidfile)
	old := p.cmd.Process.Pid
	expectNotify(t, nl, "READY=1")
	if pid := readPid(t, pidfile, 0); pid != old {
		t.Fatalf("pidfile %d, want %d", pid, old)
	}

	// A message under way on the old process.
	s := f.dial(t).Session
	if _, err := s.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	h, body := testkit.Split(testMsg)
	for _, fl := range h {
		s.HeaderField(fl.Name, testkit.HeaderValue(fl, true))
	}
	s.HeaderEnd()

	p.cmd.Process.Signal(syscall.SIGUSR2)
	expectNotify(t, nl, fmt.Sprintf("MAINPID=%d\nREADY=1", readPid(t, pidfile, old)))
	neu := readPid(t, pidfile, old)
	t.Cleanup(func() { syscall.Kill(neu, syscall.SIGKILL) })
	p.waitLog(t, fmt.Sprintf("pid=%d", neu))
	p.waitLog(t, "upgraded: the new process serves")

	// The old process has stopped accepting: a new client is the new
	// process's, while the old one waits for its message.
	if sel := f.selectorOnce(t); sel != "rsa" {
		t.Errorf("new connection after the upgrade: s=%s", sel)
	}
	select {
	case err := <-p.done:
		t.Fatalf("the old process exited (%v) with a message in flight", err)
	default:
	}
	if _, err := s.BodyChunk(body); err != nil {
		t.Fatal(err)
	}
	mods, act, err := s.End()
	if err != nil || act.Code != gomilter.ActContinue || len(mods) != 1 || mods[0].HeaderName != "DKIM-Signature" {
		t.Fatalf("message in flight over the upgrade: %v %+v %+v", err, act, mods)
	}
	s.Abort()
	waitExit(t, p, "old process")
	log := p.stderr.String()
	if !strings.Contains(log, "old process exited after the upgrade") || strings.Contains(log, "level=ERROR") {
		t.Errorf("log:\n%s", log)
	}
	if sel := f.selectorOnce(t); sel != "rsa" {
		t.Errorf("after the old process exited: s=%s", sel)
	}

	// The new process is a daemon as any: SIGTERM stops it, and it
	// removes the socket (made by the first process) and the pidfile.
	syscall.Kill(neu, syscall.SIGTERM)
	for i := 0; syscall.Kill(neu, 0) == nil; i++ {
		if i == 3000 {
			t.Fatal("the new process does not stop on SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, gone := range []string{sock, pidfile} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s after the last stop: %v", gone, err)
		}
	}
}

// An upgrade whose new process cannot start (its configuration is broken
// now) leaves the old one serving, with an ERROR line that says so, and
// the pidfile naming it; a later upgrade with the configuration fixed
// succeeds.
func TestUpgradeFails(t *testing.T) {
	f := newFixture(t, "")
	pidfile := filepath.Join(f.dir, "dkimmilter.pid")
	p := startProc(t, "serve", "-config", f.cfg, "-pidfile", pidfile)
	old := p.cmd.Process.Pid
	good, _ := os.ReadFile(f.cfg)
	os.WriteFile(f.cfg, append(append([]byte{}, good...), "[verify]\nbogus = 1\n"...), 0o644)
	p.cmd.Process.Signal(syscall.SIGUSR2)
	p.waitLog(t, "upgrade failed: this process goes on serving")
	log := p.stderr.String()
	for _, want := range []string{"level=ERROR msg=\"upgrade failed: this process goes on serving\"", "verify.bogus", "exit status 78"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if sel := f.selectorOnce(t); sel != "rsa" {
		t.Errorf("after a failed upgrade: s=%s", sel)
	}
	if pid := readPid(t, pidfile, 0); pid != old {
		t.Errorf("pidfile %d after a failed upgrade, want %d", pid, old)
	}

	os.WriteFile(f.cfg, good, 0o644)
	p.cmd.Process.Signal(syscall.SIGUSR2)
	neu := readPid(t, pidfile, old)
	t.Cleanup(func() { syscall.Kill(neu, syscall.SIGKILL) })
	waitExit(t, p, "old process")
	if sel := f.selectorOnce(t); sel != "rsa" {
		t.Errorf("after the second upgrade: s=%s", sel)
	}
}

func TestSameListen(t *testing.T) {
	for _, tt := range []struct {
		listen, addr string
		want         bool
	}{
		{"unix:/run/a.sock", "unix:/run/a.sock", true},
		{"unix:/run/a.sock", "unix:/run/b.sock", false},
		{"inet:127.0.0.1:8891", "inet:127.0.0.1:8891", true},
		{"inet:localhost:8891", "inet:127.0.0.1:8891", true},
		{"inet::8891", "inet:127.0.0.1:8891", true},
		{"inet:0.0.0.0:8891", "inet:[::1]:8891", true},
		{"inet:127.0.0.1:8892", "inet:127.0.0.1:8891", false},
		{"inet:127.0.0.2:8891", "inet:127.0.0.1:8891", false},
		{"unix:/run/a.sock", "inet:127.0.0.1:8891", false},
	} {
		if got := sameListen(tt.listen, tt.addr); got != tt.want {
			t.Errorf("sameListen(%q, %q) = %v", tt.listen, tt.addr, got)
		}
	}
}

// listenFds follows sd_listen_fds(3): nothing without LISTEN_PID or for
// another PID, an error for a LISTEN_FDS that is not a count, and the
// variables are gone afterwards either way.
func TestListenFds(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	for _, tt := range []struct {
		pid, fds string
		n        int
		err      bool
	}{
		{"", "1", 0, false},
		{"1", "1", 0, false},
		{"x", "1", 0, false},
		{me, "0", 0, false},
		{me, "", 0, true},
		{me, "-1", 0, true},
	} {
		t.Setenv("LISTEN_PID", tt.pid)
		t.Setenv("LISTEN_FDS", tt.fds)
		files, _, err := listenFds()
		if len(files) != tt.n || (err != nil) != tt.err {
			t.Errorf("LISTEN_PID=%s LISTEN_FDS=%s: %d files, %v", tt.pid, tt.fds, len(files), err)
		}
		if os.Getenv("LISTEN_PID") != "" || os.Getenv("LISTEN_FDS") != "" {
			t.Errorf("LISTEN_PID=%s LISTEN_FDS=%s: the variables are left", tt.pid, tt.fds)
		}
	}
}

// Through a real Postfix (milter_default_action = tempfail): a stream of
// messages with a SIGUSR2 upgrade in the middle. Every message is
// accepted (a 451 fails send) and arrives signed, and Postfix logs no
// milter warning: at no moment was the socket closed to it.
func TestPostfixUpgrade(t *testing.T) {
	requirePostfix(t)
	f := newFixture(t, "")
	p := newPostfix(t, "unix:dkimmilter/dkimmilter.sock")
	f.listenFor(t, "unix:"+filepath.Join(p.queue, "dkimmilter", "dkimmilter.sock"))
	pidfile := filepath.Join(f.dir, "dkimmilter.pid")
	d := startProc(t, "serve", "-config", f.cfg, "-pidfile", pidfile)
	old := d.cmd.Process.Pid
	p.start()

	const n = 60
	neu := 0
	for i := 0; i < n; i++ {
		if i == n/3 {
			d.cmd.Process.Signal(syscall.SIGUSR2)
		}
		if i == 2*n/3 {
			// The rest of the stream goes to the new process.
			neu = readPid(t, pidfile, old)
			t.Cleanup(func() { syscall.Kill(neu, syscall.SIGKILL) })
		}
		msg := testkit.CRLF([]byte(fmt.Sprintf("From: Alice <alice@example.com>\nTo: Bob <bob@example.net>\nSubject: upgrade %d\nMessage-ID: <u%d@example.com>\n\nHello %d.\n", i, i, i)))
		p.send("127.0.0.1", "alice@example.com", "bob@example.net", msg)
	}
	for i := 0; i < n; i++ {
		if got := p.delivered(fmt.Sprintf("upgrade %d", i)); len(testkit.Fields(got, "DKIM-Signature")) != 1 {
			t.Errorf("message %d arrived without a signature:\n%s", i, got)
		}
	}
	waitExit(t, d, "old process")
	if !strings.Contains(d.stderr.String(), "old process exited after the upgrade") {
		t.Errorf("the upgrade did not happen:\n%s", d.stderr.String())
	}
	for _, l := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(l, "warning:") && strings.Contains(l, "milter") {
			t.Errorf("postfix: %s", l)
		}
	}
}

// A restart on an activated socket: while no daemon runs, the socket
// (held by systemd, here by the test) queues a new connection in its
// backlog instead of refusing it, and the next daemon serves it.
func TestActivatedRestart(t *testing.T) {
	f := newFixture(t, "")
	sock := filepath.Join(f.dir, "milter.sock")
	file := bindSocket(t, sock, 0o600)
	first := startActivated(t, []*os.File{file}, "", "serve", "-config", f.cfg)
	f.selectorOnce(t)
	first.cmd.Process.Signal(syscall.SIGTERM)
	waitExit(t, first, "first daemon")

	type dialed struct {
		c   *testkit.Client
		err error
	}
	queued := make(chan dialed, 1)
	go func() {
		c, err := testkit.Dial("unix", sock)
		if err == nil {
			err = c.Connect("localhost", "127.0.0.1")
		}
		queued <- dialed{c, err}
	}()
	time.Sleep(200 * time.Millisecond) // the connection waits in the backlog
	startActivated(t, []*os.File{file}, "", "serve", "-config", f.cfg)
	select {
	case d := <-queued:
		if d.err != nil {
			t.Fatalf("the connection made between the two daemons: %v", d.err)
		}
		defer d.c.Close()
		if s := selectorOf(t, d.c); s != "rsa" {
			t.Errorf("s=%s", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the connection made between the two daemons was never served")
	}
}
