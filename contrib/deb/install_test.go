package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	etcDir   = "/etc/dkimmilter"
	sockDir  = "/var/spool/postfix/dkimmilter"
	wantsDir = "/etc/systemd/system/multi-user.target.wants"
)

// sh runs a command with a bound on its time, and fails the test when it
// fails.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := shErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func shErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pkgStatus is dpkg's status of the dkimmilter package: "" when dpkg
// does not know it.
func pkgStatus() string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", pkgName).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// stat checks a path's type and mode, owner and group.
func stat(t *testing.T, path string, mode os.FileMode, owner, group string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
	}
	st := fi.Sys().(*syscall.Stat_t)
	u, _ := user.LookupId(strconv.Itoa(int(st.Uid)))
	g, _ := user.LookupGroupId(strconv.Itoa(int(st.Gid)))
	if u == nil || g == nil || u.Username != owner || g.Name != group {
		t.Errorf("%s: owner %d:%d (%v, %v), want %s:%s", path, st.Uid, st.Gid, u, g, owner, group)
	}
}

func gone(t *testing.T, when string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("after %s, %s is still there", when, p)
		}
	}
}

// The package installed on this host as an admin would: dpkg -i, the
// user, files and modes, 'dkimmilter check' and a short serve as the
// service user, an upgrade over itself, remove, purge. It runs only as
// root, with dpkg, on a host where dkimmilter is not installed (nor
// /etc/dkimmilter or the socket directory there from a manual install):
// it installs the package, and cleans up whatever it installed, failed or
// not.
func TestInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		need(t, "not root: the package is not installed")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		need(t, "dpkg not installed: the package is not installed")
	}
	if s := pkgStatus(); s != "" && !strings.HasSuffix(s, "not-installed") {
		need(t, "a dkimmilter package is on this host ("+s+"): the test would replace it")
	}
	for _, p := range []string{etcDir, sockDir} {
		if _, err := os.Lstat(p); err == nil {
			need(t, p+" exists, not from this package: the test would remove it on purge")
		}
	}
	deb := builtDeb(t)
	_, userErr := user.Lookup("dkimmilter")
	_, groupErr := user.LookupGroup("dkimmilter")
	t.Cleanup(func() {
		if s := pkgStatus(); s != "" && !strings.HasSuffix(s, "not-installed") {
			if out, err := shErr("dpkg", "--purge", pkgName); err != nil {
				t.Errorf("cleanup: dpkg --purge: %v\n%s", err, out)
			}
		}
		os.RemoveAll(etcDir)
		os.RemoveAll(sockDir)
		// The user the package made, not one that was there before.
		if userErr != nil {
			if _, err := user.Lookup("dkimmilter"); err == nil {
				shErr("deluser", "--system", "--quiet", "dkimmilter")
			}
		}
		if groupErr != nil {
			if _, err := user.LookupGroup("dkimmilter"); err == nil {
				shErr("delgroup", "--system", "--quiet", "dkimmilter")
			}
		}
	})
	version := strings.TrimSpace(sh(t, "dpkg-deb", "-f", deb, "Version"))
	files := packageFiles(t, deb)

	sh(t, "dpkg", "-i", deb)
	if s := pkgStatus(); s != "install ok installed" {
		t.Fatalf("after dpkg -i: status %q", s)
	}

	// The user: a system user with no home and no shell.
	u, err := user.Lookup("dkimmilter")
	if err != nil {
		t.Fatalf("no dkimmilter user after install: %v", err)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid >= 1000 || uid == 0 {
		t.Errorf("dkimmilter uid %s: not a system user", u.Uid)
	}
	if userErr != nil {
		pw := sh(t, "getent", "passwd", "dkimmilter")
		if !strings.HasSuffix(strings.TrimSpace(pw), ":/nonexistent:/usr/sbin/nologin") {
			t.Errorf("passwd entry %q: want home /nonexistent, shell nologin", pw)
		}
	}
	if _, err := os.Stat("/nonexistent"); err == nil {
		t.Error("/nonexistent exists: the user's home was created")
	}

	stat(t, binPath, 0o755, "root", "root")
	stat(t, etcDir, os.ModeDir|0o755, "root", "root")
	stat(t, etcDir+"/dkimmilter.toml", 0o644, "root", "root")
	stat(t, etcDir+"/keys", os.ModeDir|0o700, "dkimmilter", "dkimmilter")
	stat(t, unitPath, 0o644, "root", "root")
	if _, err := user.LookupGroup("postfix"); err == nil {
		stat(t, sockDir, os.ModeDir|os.ModeSetgid|0o750, "dkimmilter", "postfix")
	} else {
		t.Logf("no postfix group: %s is not checked", sockDir)
	}
	// deb-systemd-helper links /lib/systemd/system/…, the same file on a
	// merged /usr.
	link, err1 := os.Stat(wantsDir + "/dkimmilter.service")
	file, err2 := os.Stat(unitPath)
	if err1 != nil || err2 != nil || !os.SameFile(link, file) {
		t.Errorf("the unit is not enabled: %s/dkimmilter.service: %v, %v", wantsDir, err1, err2)
	}
	unit, _ := os.ReadFile(unitPath)
	if !strings.Contains(string(unit), "\nExecStart="+binPath+" serve -config /etc/dkimmilter/dkimmilter.toml -pidfile /run/dkimmilter/dkimmilter.pid\n") {
		t.Errorf("installed unit does not start %s:\n%s", binPath, unit)
	}

	// The version is the package's, with the revision.
	if out := sh(t, binPath, "version"); !strings.HasPrefix(out, "dkimmilter "+version+", revision ") {
		t.Errorf("dkimmilter version = %q, want the package version %s and a revision", out, version)
	}
	// The configuration as installed is valid.
	if out := sh(t, binPath, "check"); !strings.Contains(out, "/etc/dkimmilter/dkimmilter.toml: OK") ||
		!strings.Contains(out, "listen unix:/var/spool/postfix/dkimmilter/dkimmilter.sock") {
		t.Errorf("dkimmilter check:\n%s", out)
	}
	serveAsServiceUser(t)

	// An upgrade (here, over itself) keeps the admin's configuration, keys
	// and the modes an admin chose.
	const edit = "\n# changed by the admin\n"
	conf, _ := os.ReadFile(etcDir + "/dkimmilter.toml")
	if err := os.WriteFile(etcDir+"/dkimmilter.toml", append(conf, edit...), 0o644); err != nil {
		t.Fatal(err)
	}
	key := etcDir + "/keys/example.com/s202612.pem"
	if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte("not really a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(etcDir+"/keys", 0o750); err != nil {
		t.Fatal(err)
	}
	sh(t, "dpkg", "-i", deb)
	if got, _ := os.ReadFile(etcDir + "/dkimmilter.toml"); !strings.HasSuffix(string(got), edit) {
		t.Errorf("the upgrade replaced the edited configuration:\n%s", got)
	}
	if got, _ := os.ReadFile(key); string(got) != "not really a key\n" {
		t.Errorf("the upgrade lost the key file: %q", got)
	}
	stat(t, etcDir+"/keys", os.ModeDir|0o750, "dkimmilter", "dkimmilter")

	// remove: the program goes, the configuration and keys stay.
	sh(t, "dpkg", "-r", pkgName)
	if s := pkgStatus(); s != "deinstall ok config-files" {
		t.Errorf("after dpkg -r: status %q", s)
	}
	gone(t, "dpkg -r", binPath, unitPath)
	if got, _ := os.ReadFile(etcDir + "/dkimmilter.toml"); !strings.HasSuffix(string(got), edit) {
		t.Errorf("dpkg -r removed the configuration: %q", got)
	}
	if _, err := os.Stat(key); err != nil {
		t.Errorf("dpkg -r removed the keys: %v", err)
	}

	// purge: nothing of the package is left but the private keys, which
	// match records published in DNS.
	out := sh(t, "dpkg", "-P", pkgName)
	if s := pkgStatus(); s != "" && !strings.HasSuffix(s, "not-installed") {
		t.Errorf("after dpkg -P: status %q", s)
	}
	if _, err := os.Stat(key); err != nil {
		t.Errorf("dpkg -P removed the private keys: %v", err)
	}
	if !strings.Contains(out, "keeping the private keys in /etc/dkimmilter/keys") {
		t.Errorf("dpkg -P does not say that it keeps the keys:\n%s", out)
	}
	var notKeys []string
	for _, f := range files {
		if f != etcDir && f != etcDir+"/keys" {
			notKeys = append(notKeys, f)
		}
	}
	gone(t, "dpkg -P", append(notKeys, sockDir, etcDir+"/dkimmilter.toml", wantsDir+"/dkimmilter.service",
		"/etc/systemd/system/dkimmilter.service", // the mask of dpkg -r
		"/var/lib/systemd/deb-systemd-helper-enabled/dkimmilter.service.dsh-also",
		"/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/dkimmilter.service",
	)...)
}

// packageFiles lists the package's own files and directories, not the
// shared ones (/usr, /etc, …).
func packageFiles(t *testing.T, deb string) []string {
	var out []string
	for _, line := range strings.Split(sh(t, "dpkg-deb", "-c", deb), "\n") {
		i := strings.Index(line, " ./")
		if i < 0 {
			continue
		}
		p := strings.TrimSuffix(line[i+2:], "/")
		if strings.Contains(p, "dkimmilter") {
			out = append(out, p)
		}
	}
	if len(out) < 8 {
		t.Fatalf("package files: %v", out)
	}
	return out
}

// serveAsServiceUser runs the installed daemon as the dkimmilter user,
// as the unit does, on a socket in a temporary directory: it must log
// that it is ready, answer a milter option negotiation, and stop on
// SIGTERM with exit 0.
func serveAsServiceUser(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("runuser"); err != nil {
		need(t, "runuser not installed: the daemon is not run as the dkimmilter user")
	}
	dir, err := os.MkdirTemp("", "dkd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	u, _ := user.Lookup("dkimmilter")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	sock := filepath.Join(dir, "milter.sock")
	cfg := filepath.Join(dir, "dkimmilter.toml")
	if err := os.WriteFile(cfg, []byte("listen = \"unix:"+sock+"\"\nauthserv_id = \"mx.example.com\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("runuser", "-u", "dkimmilter", "--", binPath, "serve", "-config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}()
	ready := make(chan string, 1)
	var log strings.Builder
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), `msg="dkimmilter ready"`) {
				ready <- sc.Text()
			}
		}
	}()
	go func() { <-logDone; done <- cmd.Wait() }()
	select {
	case line := <-ready:
		if !strings.Contains(line, "listen=unix:"+sock) {
			t.Errorf("ready line %q does not name the socket", line)
		}
	case err := <-done:
		t.Fatalf("dkimmilter serve as dkimmilter exited before ready: %v\n%s", err, log.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("dkimmilter serve as dkimmilter: not ready after 20s\n%s", log.String())
	}
	if fi, err := os.Stat(sock); err != nil {
		t.Errorf("socket: %v", err)
	} else if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
		t.Errorf("socket owned by uid %d, want dkimmilter (%d)", st.Uid, uid)
	}
	optneg(t, sock)

	// The daemon itself, not runuser, which would kill it at once.
	children, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/task/" + strconv.Itoa(cmd.Process.Pid) + "/children")
	daemon, _ := strconv.Atoi(strings.TrimSpace(string(children)))
	if err != nil || daemon == 0 {
		t.Fatalf("the daemon under runuser (pid %d): %q, %v", cmd.Process.Pid, children, err)
	}
	syscall.Kill(daemon, syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil || !strings.Contains(log.String(), "msg=stopped") {
			t.Errorf("after SIGTERM: %v\n%s", err, log.String())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("no exit 20s after SIGTERM\n%s", log.String())
	}
}

// optneg sends the option negotiation Postfix opens each milter
// connection with (milter protocol version 6) and expects one back.
func optneg(t *testing.T, sock string) {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Errorf("connect to %s: %v", sock, err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	pkt := make([]byte, 4+1+12)
	binary.BigEndian.PutUint32(pkt, 13)
	pkt[4] = 'O'
	binary.BigEndian.PutUint32(pkt[5:], 6)         // version
	binary.BigEndian.PutUint32(pkt[9:], 0x1ff)     // actions Postfix offers
	binary.BigEndian.PutUint32(pkt[13:], 0x1fffff) // protocol steps Postfix offers
	if _, err := c.Write(pkt); err != nil {
		t.Errorf("write option negotiation: %v", err)
		return
	}
	head := make([]byte, 5)
	if _, err := io.ReadFull(c, head); err != nil {
		t.Errorf("no answer to the option negotiation: %v", err)
		return
	}
	if head[4] != 'O' {
		t.Errorf("answer to the option negotiation: command %q, want 'O'", head[4])
	}
}
