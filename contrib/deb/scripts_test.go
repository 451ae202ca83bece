package main

import (
	"fmt"
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

// postinst, on an upgrade under systemd: a running daemon that wrote its
// pidfile gets SIGUSR2 and hands over to the new binary in place (no
// restart); an older daemon, a stopped one, or policy-rc.d forbidding
// service actions gets deb-systemd-invoke restart; a fresh install a
// start. systemd's presence (/run/systemd/system) and the pidfile are
// faked in a mount namespace of their own, so this needs root and
// unshare(1); policy-rc.d is a stub in PATH, as the other commands.
func TestPostinstUpgradeInPlace(t *testing.T) {
	if os.Geteuid() != 0 {
		need(t, "needs root for a mount namespace (unshare -m)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		need(t, "needs unshare(1) from util-linux")
	}
	kill := "systemctl kill --kill-who=main --signal=USR2 dkimmilter.service"
	restart := "deb-systemd-invoke restart dkimmilter.service"
	tests := []struct {
		name     string
		old      string // $2: the version upgraded from; "" for a first install
		mainpid  string // what systemd says the main PID is
		pidfile  string // /run/dkimmilter/dkimmilter.pid; "" for none
		takeover bool   // the new process becomes the main PID after SIGUSR2
		policy   int    // policy-rc.d's exit status
		want     []string
		stderr   string
	}{
		{"upgrade in place", "0.9", "100", "100", true, 0, []string{kill},
			"dkimmilter: upgraded in place: process 200 serves, process 100 finishes its messages and exits"},
		{"new binary fails", "0.9", "100", "100", false, 0, []string{kill},
			"dkimmilter: the new binary did not take over from process 100 within 30s"},
		{"daemon without a pidfile", "0.9", "100", "", true, 0, []string{restart}, ""},
		{"pidfile of another process", "0.9", "100", "99", true, 0, []string{restart}, ""},
		{"not running", "0.9", "0", "", false, 0, []string{restart}, ""},
		{"policy-rc.d forbids", "0.9", "100", "100", true, 101, []string{restart}, ""},
		{"first install", "", "0", "", false, 0, []string{"deb-systemd-invoke start dkimmilter.service"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, calls := stubs(t, map[string]bool{"passwd dkimmilter": true, "group postfix": true})
			// systemctl: logs its calls, answers MainPID from a file, and
			// on SIGUSR2 moves it to 200 when the takeover succeeds.
			state := filepath.Join(dir, "mainpid")
			os.WriteFile(state, []byte(tt.mainpid+"\n"), 0o644)
			takeover := ""
			if tt.takeover {
				takeover = `[ "$1" = kill ] && echo 200 >` + state + "\n"
			}
			systemctl := "#!/bin/sh\necho \"systemctl $*\" >>" + calls + "\n" + takeover +
				`[ "$1 $2" = "show -p" ] && cat ` + state + "\nexit 0\n"
			os.WriteFile(filepath.Join(dir, "systemctl"), []byte(systemctl), 0o755)
			os.WriteFile(filepath.Join(dir, "sleep"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
			os.WriteFile(filepath.Join(dir, "policy-rc.d"), []byte(fmt.Sprintf("#!/bin/sh\nexit %d\n", tt.policy)), 0o755)
			setup := "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system /run/dkimmilter && "
			if tt.pidfile != "" {
				setup += "echo " + tt.pidfile + " >/run/dkimmilter/dkimmilter.pid && "
			}
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
				setup+`exec sh postinst configure "$0"`, tt.old)
			cmd.Env = append(os.Environ(), "PATH="+dir+":/usr/bin:/bin")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("postinst: %v\n%s", err, stderr.String())
			}
			data, _ := os.ReadFile(calls)
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
				if strings.HasPrefix(l, "deb-systemd-invoke") || strings.HasPrefix(l, "systemctl kill") {
					got = append(got, l)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("postinst acted\n%s\nwant\n%s\n(all calls:\n%s)", strings.Join(got, "\n"), strings.Join(tt.want, "\n"), data)
			}
			if (tt.stderr == "") != (stderr.Len() == 0) || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.stderr)
			}
			if !strings.Contains(string(data), "deb-systemd-helper update-state dkimmilter.socket") {
				t.Errorf("the socket unit's state is not recorded for purge:\n%s", data)
			}
		})
	}
}
