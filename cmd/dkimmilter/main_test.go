package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// The test binary doubles as the daemon: with DKIMMILTER_TEST_MAIN set it
// runs main, so the end-to-end tests exercise the real process (signals,
// exit codes, stderr) without a separate go build.
func TestMain(m *testing.M) {
	if os.Getenv("DKIMMILTER_TEST_MAIN") == "1" {
		// Rotation asks the zones' servers on this port: the test
		// servers (BIND on loopback) do not listen on 53.
		if p := os.Getenv("DKIMMILTER_TEST_AUTH_PORT"); p != "" {
			rotationAuthPort, _ = strconv.Atoi(p)
		}
		main()
		return
	}
	// The database tests share one throwaway PostgreSQL, stopped here.
	pgtest.Main(m)
}

type fixture struct {
	dir, cfg string
	dns      *dnstest.Server
}

// newFixture writes a config with one RSA key and a unix socket in a
// temp dir; extra is appended to the config.
func newFixture(t testing.TB, extra string) *fixture {
	t.Helper()
	// Unix socket paths are limited to ~100 bytes: keep the dir short.
	dir, err := os.MkdirTemp("", "dkm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fixture{dir: dir, dns: dnstest.New(t)}
	key := testkit.RSAKey(2048)
	testkit.WriteKey(dir, "keys/rsa.pem", key, true)
	f.dns.SetTXT("rsa._domainkey.example.com", testkit.KeyRecord(key, ""))
	f.cfg = filepath.Join(dir, "dkimmilter.toml")
	cfg := `listen = "unix:` + dir + `/milter.sock"
socket_mode = "0660"
authserv_id = "mx.example.com"
[dns]
nameservers = ["` + f.dns.Addr + `"]
[keys.rsa]
domain = "example.com"
selector = "rsa"
file = "keys/rsa.pem"
[[signing]]
from = "*@example.com"
keys = ["rsa"]
` + extra
	if err := os.WriteFile(f.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// me is the user running the tests: check -user me judges the fixture's
// files, made by this user in its own temporary directories, as its own.
var me = keystore.ProcessAccount().Name

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckOK(t *testing.T) {
	f := newFixture(t, "")
	code, out, errs := runCmd("check", "-config", f.cfg, "-user", me)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"key rsa: d=example.com s=rsa, rsa 2048 bits", "signing[1]: *@example.com -> rsa", f.cfg + ": OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// check exits 78 (EX_CONFIG) and lists every problem, each with the file
// and line where it can, and a hint.
func TestCheckErrors(t *testing.T) {
	tests := []struct {
		name, extra string
		mode        os.FileMode // applied to keys/rsa.pem
		want        []string
	}{
		{"unknown key and dangling reference", "[verify]\nmax_signature = 3\n[[signing]]\nfrom = \"*@example.org\"\nkeys = [\"nope\"]\n", 0o600,
			[]string{"dkimmilter.toml:14: verify.max_signature: unknown key", `did you mean "max_signatures"`, `dkimmilter.toml:17: signing[2].keys[1]: the rule for "*@example.org" names key "nope"`}},
		{"unsafe key permissions", "", 0o604, []string{"dkimmilter.toml:6: keys.rsa:", "chmod 600 "}},
		{"missing key file", "[keys.gone]\ndomain = \"example.org\"\nselector = \"s\"\nfile = \"keys/gone.pem\"\n", 0o600,
			[]string{"dkimmilter.toml:13: keys.gone:", "gone.pem does not exist"}},
		{"bad action", "[actions]\nsign_error = \"shrug\"\n", 0o600,
			[]string{`dkimmilter.toml:14: actions.sign_error: "shrug" is not an action`}},
		// RFC 6376 §5.4: a signature that does not sign From is worthless
		// (verifiers answer permerror), so the daemon must not start.
		{"sign.headers without from", "[sign]\nheaders = [\"subject\", \"to\"]\n", 0o600,
			[]string{`dkimmilter.toml:14: sign.headers: must contain "from"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.extra)
			os.Chmod(filepath.Join(f.dir, "keys/rsa.pem"), tt.mode)
			code, _, errs := runCmd("check", "-config", f.cfg, "-user", me)
			if code != exitConfig {
				t.Fatalf("exit %d, want %d", code, exitConfig)
			}
			for _, w := range tt.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
		})
	}
	code, _, errs := runCmd("check", "-config", "/nonexistent/dkimmilter.toml")
	if code != exitConfig || !strings.Contains(errs, "/nonexistent/dkimmilter.toml") {
		t.Errorf("missing config: exit %d %s", code, errs)
	}
}

func TestUsage(t *testing.T) {
	if code, _, _ := runCmd("frobnicate"); code != exitUsage {
		t.Errorf("unknown command: exit %d", code)
	}
	// A config path without -config is refused, not silently ignored for
	// the default file.
	if code, _, errs := runCmd("check", "/etc/other.toml"); code != exitUsage || !strings.Contains(errs, "did you mean -config /etc/other.toml?") {
		t.Errorf("check FILE: exit %d, %q", code, errs)
	}
	if code, _, errs := runCmd("serve", "-h"); code != exitOK || !strings.Contains(errs, "-config") {
		t.Errorf("serve -h: exit %d, %q", code, errs)
	}
	code, out, _ := runCmd("help")
	if code != 0 || !strings.Contains(out, "dkimmilter check") {
		t.Errorf("help: %d %s", code, out)
	}
}

// proc is the daemon run as a real process; startProc returns it once it
// logged readiness.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncWriter
	done   chan error
}

func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, nil, args...)
}

// startProcEnv is startProc with extra environment variables.
func startProcEnv(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "DKIMMILTER_TEST_MAIN=1"), env...)
	return startCmd(t, cmd, nil)
}

// startCmd starts cmd (the daemon, possibly behind a wrapper), runs
// started if not nil, and returns once the daemon logged readiness. Its
// stderr is a pipe of the OS, not copied by exec: a process started by
// the daemon (an upgrade) writes to it too, and done must report the
// daemon's own exit without waiting for that one's.
func startCmd(t testing.TB, cmd *exec.Cmd, started func()) *proc {
	t.Helper()
	d := &proc{cmd: cmd, stderr: &syncWriter{}, done: make(chan error, 1)}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go func() { d.done <- cmd.Wait() }()
	if started != nil {
		started()
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			d.stderr.Write([]byte(sc.Text() + "\n"))
			if !sent && strings.Contains(sc.Text(), "dkimmilter ready") {
				ready <- true
				sent = true
			}
		}
		if !sent {
			ready <- false
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("proc stderr:\n%s", d.stderr.String())
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("proc exited before ready:\n%s", d.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("proc not ready:\n%s", d.stderr.String())
	}
	return d
}

// End to end through the real process: it listens on a unix socket with
// socket_mode, signs mail from an internal client, logs one line per
// message, and exits 0 on SIGTERM (removing its socket).
func TestServeEndToEnd(t *testing.T) {
	f := newFixture(t, "")
	sock := filepath.Join(f.dir, "milter.sock")
	// A stale socket from a crash is replaced.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	d := startProc(t, "serve", "-config", f.cfg)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket: %v %v", fi.Mode(), err)
	}
	c, err := testkit.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect("localhost", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	msg := testkit.CRLF([]byte("From: a@example.com\nTo: b@example.net\nSubject: hi\n\nhello\n"))
	r, err := c.Send(testkit.Envelope{From: "a@example.com", QueueID: "4XE2E"}, msg, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ins := testkit.Mods(r, gomilter.ActInsertHeader); len(ins) != 1 || ins[0].HeaderName != "DKIM-Signature" {
		t.Fatalf("mods %+v", r.Mods)
	}
	c.Close()

	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	logs := d.stderr.String()
	for _, want := range []string{"qid=4XE2E", "decision=signed", "keys=\"d=example.com s=rsa a=rsa-sha256\"", "msg=stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("socket left behind")
	}
}

// With no config file at the default path, serve runs verify-only and
// says how to enable signing; -listen puts it on a free port (8891 is
// often OpenDKIM's), and without -listen the address is inet:127.0.0.1:8891.
func TestServeDefault(t *testing.T) {
	if _, err := os.Stat(config.DefaultPath); err == nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s exists on the CI machine: the default cannot be tested", config.DefaultPath)
		}
		t.Skipf("%s exists on this machine", config.DefaultPath)
	}
	cfg, defaulted, err := loadConfig("")
	if err != nil || !defaulted || cfg.Listen != "inet:127.0.0.1:8891" {
		t.Errorf("the default: %v %v %+v", err, defaulted, cfg)
	}
	addr := freePort(t)
	d := startProc(t, "-listen", "inet:"+addr)
	logs := d.stderr.String()
	for _, want := range []string{"verifying only", "listen=inet:" + addr, "mode=v", "dkimmilter keys gen -d example.com"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	c, err := testkit.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect("mail.example.net", "198.51.100.7"); err != nil {
		t.Fatal(err)
	}
	msg := testkit.CRLF([]byte("From: a@example.com\nSubject: hi\n\nhello\n"))
	r, err := c.Send(testkit.Envelope{From: "a@example.com"}, msg, 0)
	if err != nil {
		t.Fatal(err)
	}
	ins := testkit.Mods(r, gomilter.ActInsertHeader)
	if len(ins) != 1 || ins[0].HeaderName != "Authentication-Results" || !strings.Contains(ins[0].HeaderValue, "dkim=none") {
		t.Errorf("mods %+v", r.Mods)
	}
	// QUIT, as Postfix does at the end of the SMTP session: the stop
	// waits for the connections Postfix holds.
	c.Close()
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.done
}

// A config error at start exits 78, so systemd does not restart-loop. A
// daemon that serves instead is killed after a while: the test fails then,
// rather than hanging the suite.
func TestServeConfigErrorExits78(t *testing.T) {
	f := newFixture(t, "nonsense = true\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "serve", "-config", f.cfg)
	cmd.Env = append(os.Environ(), "DKIMMILTER_TEST_MAIN=1")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("still running after 20s, want exit 78 at once:\n%s", out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 78 {
		t.Fatalf("exit %v, want 78:\n%s", err, out)
	}
	if !strings.Contains(string(out), "nonsense") {
		t.Errorf("output does not name the key:\n%s", out)
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
