package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// Every problem is listed on its own, from joined errors and config
// errors however nested, without reading their text.
func TestEachProblem(t *testing.T) {
	cfgErrs := config.Errors{{File: "a.toml", Line: 1, Msg: "one"}, {File: "a.toml", Line: 2, Msg: "two"}}
	err := errors.Join(cfgErrs, fmt.Errorf("keys: %w", errors.New("three\nstill three")), errors.Join(errors.New("four")))
	var got []string
	eachProblem(err, func(e error) { got = append(got, e.Error()) })
	want := []string{"a.toml:1: one", "a.toml:2: two", "keys: three\nstill three", "four"}
	if !slices.Equal(got, want) {
		t.Errorf("problems %q, want %q", got, want)
	}
}

// requireRoot skips a test that changes file owners or runs commands as
// another user, unless CI=true, where it must run.
func requireRoot(t *testing.T) {
	t.Helper()
	testkit.RequireRoot(t, "this test changes file owners and runs commands as another user")
}

// asUser runs a command as acct, as the daemon would run.
func asUser(acct *keystore.Account, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	var groups []uint32
	for _, g := range acct.Groups[1:] {
		groups = append(groups, uint32(g))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(acct.UID), Gid: uint32(acct.Groups[0]), Groups: groups}}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %q as %s: %v: %s", name, args, acct.Name, err, out)
	}
	return nil
}

var hintRE = regexp.MustCompile(`\(hint: (.*)\)$`)

// check, run as root, judges the key files, the "%" keys' files and the
// socket's directory as the service user, and each hint it prints is the
// command that fixes the component it names: applying them makes the
// check pass, and the user then really can read the keys and create the
// socket. A "%" key without files, and a rule left with no key, warn.
func TestCheckAsServiceUser(t *testing.T) {
	requireRoot(t)
	nb, err := keystore.LookupAccount("nobody")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, `
[keys.hosted]
domain = "%"
selector = "h1"
file = "hosted/%/h1.pem"
[keys.nowhere]
domain = "%"
selector = "n1"
file = "nowhere/%.pem"
[[signing]]
from = "*@nowhere.example"
keys = ["nowhere"]
[[signing]]
from = "*"
keys = ["hosted"]
`)
	hosted := testkit.WriteKey(f.dir, "hosted/example.org/h1.pem", edKey(), false)
	rsa := filepath.Join(f.dir, "keys/rsa.pem")
	ng := nb.Groups[0]
	gname := strconv.Itoa(ng)
	if g, err := user.LookupGroupId(gname); err == nil {
		gname = g.Name
	}

	code, out, errs := runCmd("check", "-config", f.cfg, "-user", "nobody")
	if code != exitConfig {
		t.Fatalf("exit %d, want %d\n%s%s", code, exitConfig, out, errs)
	}
	wantOutput(t, errs,
		"warning: "+f.cfg+":18: keys.nowhere: no file matches "+filepath.Join(f.dir, "nowhere/%.pem")+", so the key signs for no domain; used by signing[2] ("+f.cfg+":22, from = \"*@nowhere.example\")",
		"warning: "+f.cfg+":22: signing[2] (from = \"*@nowhere.example\"): no key of the rule (nowhere) has a file, so the rule signs nothing\n",
		f.cfg+":14: keys.hosted: user nobody cannot read "+hosted+": permission denied: "+f.dir+" (root:root 0700) gives nobody no search (x); ",
		"(hint: chgrp "+gname+" "+f.dir+" && chmod g+x "+f.dir+"; then chgrp "+gname+" "+f.dir+"/hosted && chmod g+x "+f.dir+"/hosted; then chgrp "+gname+" "+f.dir+"/hosted/example.org && chmod g+x "+f.dir+"/hosted/example.org; then chown nobody "+hosted+")\n",
		f.cfg+":18: keys.nowhere: user nobody cannot reach the files of "+filepath.Join(f.dir, "nowhere/%.pem")+": "+f.dir+" (root:root 0700) gives nobody no search (x) (hint: chgrp "+gname+" "+f.dir+" && chmod g+x "+f.dir+")\n",
		f.cfg+":6: keys.rsa: user nobody cannot read "+rsa+": ",
		"(hint: chgrp "+gname+" "+f.dir+" && chmod g+x "+f.dir+"; then chgrp "+gname+" "+f.dir+"/keys && chmod g+x "+f.dir+"/keys; then chown nobody "+rsa+")\n",
		f.cfg+": listen: user nobody cannot create the socket in "+f.dir+": "+f.dir+" (root:root 0700) gives nobody no write and search (wx) (hint: chgrp "+gname+" "+f.dir+" && chmod g+wx "+f.dir+")\n",
		f.cfg+": FAILED (checked as user nobody, given by -user; -user NAME checks as another)\n")
	if err := asUser(nb, "cat", hosted); err == nil {
		t.Fatal("nobody can read the key before the fixes: the test proves nothing")
	}

	// Apply every hint, in order, as an admin would.
	for _, l := range strings.Split(errs, "\n") {
		m := hintRE.FindStringSubmatch(l)
		if m == nil || strings.HasPrefix(l, "warning:") {
			continue
		}
		for _, c := range strings.Split(m[1], "; then ") {
			if out, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s", c, err, out)
			}
		}
	}
	code, out, errs = runCmd("check", "-config", f.cfg, "-user", "nobody")
	if code != exitOK {
		t.Fatalf("after the fixes: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "files checked as user nobody, given by -user; -user NAME checks as another\n", f.cfg+": OK\n")
	for _, p := range []string{rsa, hosted} {
		if err := asUser(nb, "cat", p); err != nil {
			t.Errorf("the check passes, but: %v", err)
		}
	}
	if err := asUser(nb, "touch", filepath.Join(f.dir, "milter.sock")); err != nil {
		t.Errorf("the check passes, but: %v", err)
	}

	// By default, root checks as the owner of the socket's directory.
	os.Chown(f.dir, nb.UID, ng)
	code, out, errs = runCmd("check", "-config", f.cfg)
	if code != exitOK || !strings.Contains(out, "files checked as user nobody, the owner of the socket's directory "+f.dir+";") {
		t.Errorf("default user: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runCmd("check", "-config", f.cfg, "-user", "no-such-user-here"); code != exitUsage || !strings.Contains(errs, `-user: no user "no-such-user-here"`) {
		t.Errorf("unknown user: exit %d %s", code, errs)
	}
}

// The daemon does not make the socket's directory: a missing one is a
// warning that says who must make it; a TCP socket has none to check.
func TestCheckSocketDir(t *testing.T) {
	f := newFixture(t, "")
	text, _ := os.ReadFile(f.cfg)
	missing := filepath.Join(f.dir, "run/dkimmilter")
	os.WriteFile(f.cfg, []byte(strings.Replace(string(text), "unix:"+f.dir+"/milter.sock", "unix:"+missing+"/milter.sock", 1)), 0o644)
	code, out, errs := runCmd("check", "-config", f.cfg, "-user", me)
	if code != exitOK || !strings.Contains(errs, "warning: "+f.cfg+": listen: the socket's directory "+missing+" does not exist, and the daemon does not make it: make it before the daemon starts, owned by "+me) {
		t.Errorf("exit %d\n%s%s", code, out, errs)
	}
	os.WriteFile(f.cfg, []byte(strings.Replace(string(text), "unix:"+f.dir+"/milter.sock", "inet:127.0.0.1:8891", 1)), 0o644)
	if code, out, errs := runCmd("check", "-config", f.cfg, "-user", me); code != exitOK || errs != "" {
		t.Errorf("TCP: exit %d\n%s%s", code, out, errs)
	}
}

// A shutdown_timeout that would outlast Postfix's default
// milter_command_timeout during a restart on dkimmilter.socket is a
// warning (doc/postfix.md); the default and 25s are not.
func TestCheckShutdownTimeout(t *testing.T) {
	for _, c := range []struct {
		limits string
		warn   bool
	}{
		{"", false},
		{"[limits]\nshutdown_timeout = \"25s\"\n", false},
		{"[limits]\nshutdown_timeout = \"26s\"\n", true},
		{"[limits]\nshutdown_timeout = \"30s\"\n", true},
	} {
		f := newFixture(t, c.limits)
		code, out, errs := runCmd("check", "-config", f.cfg, "-user", me)
		want := "warning: " + f.cfg + ": limits.shutdown_timeout = "
		if code != exitOK || strings.Contains(errs, want) != c.warn {
			t.Errorf("%q: exit %d, want warning %v:\n%s%s", c.limits, code, c.warn, out, errs)
		}
		if c.warn && !strings.Contains(errs, "milter_command_timeout (30s by default)") {
			t.Errorf("%q: the warning does not name Postfix's setting:\n%s", c.limits, errs)
		}
	}
}
