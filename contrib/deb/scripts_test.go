package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// stubs writes commands into a directory that log their arguments to
// calls and answer getent from the given database; the maintainer scripts
// then run against them instead of the host's adduser, install and
// deb-systemd-helper.
func stubs(t *testing.T, getent map[string]bool) (dir, calls string) {
	t.Helper()
	dir = t.TempDir()
	calls = filepath.Join(dir, "calls")
	log := "#!/bin/sh\necho \"$(basename \"$0\") $*\" >>" + calls + "\n"
	for _, c := range []string{"adduser", "install", "deb-systemd-helper", "deb-systemd-invoke", "systemctl"} {
		if err := os.WriteFile(filepath.Join(dir, c), []byte(log), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var known []string
	for k, ok := range getent {
		if ok {
			known = append(known, `"`+k+`"`)
		}
	}
	script := "#!/bin/sh\nfor k in " + strings.Join(known, " ") + "; do [ \"$1 $2\" = \"$k\" ] && exit 0; done\nexit 2\n"
	if err := os.WriteFile(filepath.Join(dir, "getent"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, calls
}

// postinst makes the user only when it is missing, with the group that
// may already be there, and the socket directory only with group postfix.
// (The host's own state decides the keys directory and systemd lines:
// they are checked by TestInstall.)
func TestPostinstUser(t *testing.T) {
	if _, err := os.Stat("/etc/dkimmilter/keys"); err == nil {
		t.Skip("/etc/dkimmilter/keys exists on this host: postinst's calls would differ")
	}
	if _, err := os.Stat("/var/spool/postfix/dkimmilter"); err == nil {
		t.Skip("/var/spool/postfix/dkimmilter exists on this host: postinst's calls would differ")
	}
	adduserNew := "adduser --quiet --system --group --no-create-home --home /nonexistent --shell /usr/sbin/nologin dkimmilter"
	adduserIngroup := "adduser --quiet --system --ingroup dkimmilter --no-create-home --home /nonexistent --shell /usr/sbin/nologin dkimmilter"
	keys := "install -d -o dkimmilter -g dkimmilter -m 0700 /etc/dkimmilter/keys"
	sock := "install -d -o dkimmilter -g postfix -m 2750 /var/spool/postfix/dkimmilter"
	tests := []struct {
		name   string
		getent map[string]bool
		want   []string
		stderr string
	}{
		{"first install", map[string]bool{"group postfix": true},
			[]string{adduserNew, keys, sock}, ""},
		{"group left by an old install", map[string]bool{"group dkimmilter": true, "group postfix": true},
			[]string{adduserIngroup, keys, sock}, ""},
		{"user exists", map[string]bool{"passwd dkimmilter": true, "group dkimmilter": true, "group postfix": true},
			[]string{keys, sock}, ""},
		{"no postfix", map[string]bool{"passwd dkimmilter": true},
			[]string{keys}, "dkimmilter: no group postfix (is Postfix installed?)"},
	}
	for _, tt := range tests {
		dir, calls := stubs(t, tt.getent)
		cmd := exec.Command("sh", "postinst", "configure", "")
		cmd.Env = append(os.Environ(), "PATH="+dir+":/usr/bin:/bin")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("%s: postinst: %v\n%s", tt.name, err, stderr.String())
			continue
		}
		data, _ := os.ReadFile(calls)
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if !strings.HasPrefix(l, "deb-systemd-") && !strings.HasPrefix(l, "systemctl") {
				got = append(got, l)
			}
		}
		if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
			t.Errorf("%s: postinst ran\n%s\nwant\n%s", tt.name, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
		}
		if !strings.Contains(string(data), "deb-systemd-helper enable dkimmilter.service") && !strings.Contains(string(data), "deb-systemd-helper update-state dkimmilter.service") {
			t.Errorf("%s: the unit is neither enabled nor its state updated:\n%s", tt.name, data)
		}
		if (tt.stderr == "") != (stderr.Len() == 0) || !strings.Contains(stderr.String(), tt.stderr) {
			t.Errorf("%s: stderr %q, want %q", tt.name, stderr.String(), tt.stderr)
		}
	}
}
