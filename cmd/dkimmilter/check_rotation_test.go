package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/keystore"
)

const tsigKeyFile = `key "dkimmilter" {
	algorithm hmac-sha256;
	secret "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";
};
`

// rotationFixture is the test configuration with a key that rotates
// through an rfc2136 publisher with a TSIG key, its state in the
// fixture's directory; extra goes on top of the [rotation] table.
func rotationFixture(t *testing.T, rotate, extra string) *fixture {
	t.Helper()
	f := newFixture(t, `
[keys.rot]
domain   = "example.net"
selector = "s1"
file     = "keys/rsa.pem"
rotate   = "`+rotate+`"
publish  = "bind"

[publish.bind]
method   = "rfc2136"
server   = "127.0.0.1"
tsig_key = "tsig.key"
`)
	if err := os.WriteFile(filepath.Join(f.dir, "tsig.key"), []byte(tsigKeyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(f.dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.OpenFile(f.cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cfg.Close()
	if _, err := cfg.WriteString("\n[rotation]\nstate_dir = \"" + filepath.Join(f.dir, "state") + "\"\n" + extra); err != nil {
		t.Fatal(err)
	}
	return f
}

// usePublisher makes keys.rot publish through [publish.NAME], and puts
// the fixture's directory into the file where it says DIR.
func usePublisher(t *testing.T, f *fixture, name string) {
	t.Helper()
	data, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	data = []byte(strings.ReplaceAll(strings.Replace(string(data), `publish  = "bind"`, `publish  = "`+name+`"`, 1), "DIR", f.dir))
	if err := os.WriteFile(f.cfg, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheckRotation(t *testing.T) {
	for _, tt := range []struct {
		name   string
		rotate string
		extra  string
		setup  func(f *fixture)
		code   int
		out    []string
		errs   []string
		noWarn bool
	}{
		{name: "all in place", rotate: "30d", code: exitOK, noWarn: true,
			out: []string{"key rot: d=example.net s=s1, rsa 2048 bits, ", "\n  rotates every 30 days, records published through [publish.bind] (rfc2136), state in DIR/state\n", ": OK\n"}},
		{name: "no TSIG key file", rotate: "30d", setup: func(f *fixture) { os.Remove(filepath.Join(f.dir, "tsig.key")) }, code: exitConfig,
			errs: []string{":21: publish.bind.tsig_key: DIR/tsig.key does not exist (hint: make it with 'tsig-keygen -a hmac-sha256 NAME > DIR/tsig.key'", ": FAILED"}},
		{name: "a directory as TSIG key", rotate: "30d", setup: func(f *fixture) {
			os.Remove(filepath.Join(f.dir, "tsig.key"))
			os.Mkdir(filepath.Join(f.dir, "tsig.key"), 0o700)
		}, code: exitConfig, errs: []string{"publish.bind.tsig_key: DIR/tsig.key is a directory"}},
		{name: "a TSIG secret every user can read", rotate: "30d", setup: func(f *fixture) { os.Chmod(filepath.Join(f.dir, "tsig.key"), 0o644) }, code: exitOK,
			errs: []string{"warning: ", "publish.bind.tsig_key: every user of this host can read the TSIG secret in DIR/tsig.key, and with it change the zone: chmod o-r DIR/tsig.key\n"}},
		{name: "no state directory yet", rotate: "30d", setup: func(f *fixture) { os.Remove(filepath.Join(f.dir, "state")) }, code: exitOK,
			errs: []string{"warning: DIR/dkimmilter.toml: rotation.state_dir: DIR/state does not exist: make it, owned by "}},
		{name: "a file as state directory", rotate: "30d", setup: func(f *fixture) {
			os.Remove(filepath.Join(f.dir, "state"))
			os.WriteFile(filepath.Join(f.dir, "state"), nil, 0o600)
		}, code: exitConfig, errs: []string{"DIR/dkimmilter.toml: rotation.state_dir: DIR/state is not a directory\n"}},
		{name: "a command publisher's program", rotate: "30d", extra: "[publish.api]\nmethod = \"command\"\ncommand = [\"/bin/true\", \"--zone\", \"example.net\"]\n",
			setup: func(f *fixture) { usePublisher(t, f, "api") }, code: exitOK, noWarn: true,
			out: []string{"rotates every 30 days, records published through [publish.api] (command)"}},
		{name: "a command that does not exist", rotate: "30d", extra: "[publish.api]\nmethod = \"command\"\ncommand = [\"/nonexistent/dns-api\"]\n",
			setup: func(f *fixture) { usePublisher(t, f, "api") }, code: exitConfig,
			errs: []string{"publish.api.command: /nonexistent/dns-api does not exist (hint: install it, or fix the path)"}},
		{name: "a command that is not executable", rotate: "30d", extra: "[publish.api]\nmethod = \"command\"\ncommand = [\"DIR/tsig.key\"]\n",
			setup: func(f *fixture) { usePublisher(t, f, "api") }, code: exitConfig,
			errs: []string{"publish.api.command: DIR/tsig.key is not executable (hint: chmod +x DIR/tsig.key)"}},
		{name: "a directory as command", rotate: "30d", extra: "[publish.api]\nmethod = \"command\"\ncommand = [\"/tmp\"]\n",
			setup: func(f *fixture) { usePublisher(t, f, "api") }, code: exitConfig,
			errs: []string{"publish.api.command: /tmp is not a program file"}},
		{name: "a short period warns", rotate: "2s", code: exitOK,
			errs: []string{"warning: DIR/dkimmilter.toml:14: keys.rot.rotate = 2s: a new key every 2s keeps several old records published"}},
		{name: "no x= with rotation warns", rotate: "30d", extra: "[sign]\nexpire = \"0\"\n", code: exitOK,
			errs: []string{"warning: DIR/dkimmilter.toml: sign.expire is 0, so signatures carry no x=, and rotation revokes an old key's record rotation.margin (2 days) after the switch"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := rotationFixture(t, tt.rotate, tt.extra)
			if tt.setup != nil {
				tt.setup(f)
			}
			code, out, errs := runCmd("check", "-config", f.cfg, "-user", me)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out, errs)
			}
			dir := func(l []string) []string {
				out := make([]string, len(l))
				for i, s := range l {
					out[i] = strings.ReplaceAll(s, "DIR", f.dir)
				}
				return out
			}
			wantOutput(t, out, dir(tt.out)...)
			wantOutput(t, errs, dir(tt.errs)...)
			if tt.noWarn && strings.Contains(errs, "warning") {
				t.Errorf("warnings:\n%s", errs)
			}
		})
	}
}

// Run as root, check judges the TSIG key and the state directory as the
// daemon's user, and its hints are the commands that let that user read
// the one and write in the other.
func TestCheckRotationAsServiceUser(t *testing.T) {
	requireRoot(t)
	nb, err := keystore.LookupAccount("nobody")
	if err != nil {
		t.Fatal(err)
	}
	f := rotationFixture(t, "30d", "")
	tsig, state := filepath.Join(f.dir, "tsig.key"), filepath.Join(f.dir, "state")
	code, out, errs := runCmd("check", "-config", f.cfg, "-user", "nobody")
	if code != exitConfig {
		t.Fatalf("exit %d, want %d\n%s%s", code, exitConfig, out, errs)
	}
	wantOutput(t, errs, "publish.bind.tsig_key: user nobody cannot read "+tsig+": permission denied: ",
		f.cfg+": rotation.state_dir: user nobody cannot write the rotation state in "+state+": ")
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
	if code, out, errs := runCmd("check", "-config", f.cfg, "-user", "nobody"); code != exitOK {
		t.Fatalf("after the fixes: exit %d\n%s%s", code, out, errs)
	}
	if err := asUser(nb, "cat", tsig); err != nil {
		t.Errorf("the check passes, but: %v", err)
	}
	if err := asUser(nb, "touch", filepath.Join(state, "rot.json")); err != nil {
		t.Errorf("the check passes, but: %v", err)
	}
}
