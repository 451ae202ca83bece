package main

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
)

// The systemd unit keeps the properties the README promises, and
// systemd-analyze rates its sandbox "OK" or better (exposure under 2).
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../contrib/systemd/dkimmilter.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "RestartPreventExitStatus=78",
		// The new process of an upgrade tells systemd its PID.
		"NotifyAccess=all", "RuntimeDirectory=dkimmilter",
		// [rotation] state_dir's default, writable by the service.
		"StateDirectory=dkimmilter", "StateDirectoryMode=0700",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "SystemCallFilter=@system-service",
		"User=dkimmilter", "ReadWritePaths=/var/spool/postfix/dkimmilter",
		"ExecStart=/usr/local/bin/dkimmilter serve -config /etc/dkimmilter/dkimmilter.toml -pidfile /run/dkimmilter/dkimmilter.pid",
		// mail.log, beside Postfix's lines.
		"SyslogIdentifier=dkimmilter", "SyslogFacility=mail",
	} {
		if !strings.Contains(string(unit), want+"\n") {
			t.Errorf("unit lacks %q", want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed: the sandbox score is not checked")
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "../../contrib/systemd/dkimmilter.service").CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for dkimmilter.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if v, _ := strconv.ParseFloat(string(m[1]), 64); v >= 2 {
		t.Errorf("exposure %.1f, want under 2:\n%s", v, out)
	}
}

// The socket unit listens where the packaged configuration does, with
// the owner, group and mode that let Postfix (group postfix) connect and
// nobody else, and passes the listening socket (Accept=no).
func TestSystemdSocketUnit(t *testing.T) {
	unit, err := os.ReadFile("../../contrib/systemd/dkimmilter.socket")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load("../../contrib/deb/dkimmilter.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ListenStream=" + strings.TrimPrefix(cfg.Listen, "unix:"),
		"SocketUser=dkimmilter", "SocketGroup=postfix", "SocketMode=0660", "Accept=no",
		"ExecStartPre=/usr/bin/install -d -o dkimmilter -g postfix -m 2750 /var/spool/postfix/dkimmilter",
		"WantedBy=sockets.target",
	} {
		if !strings.Contains(string(unit), want+"\n") {
			t.Errorf("socket unit lacks %q", want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed: the unit's syntax is not checked")
	}
	// Unknown keys and bad values; missing users and binaries are this
	// host's business.
	out, _ := exec.Command("systemd-analyze", "verify", "../../contrib/systemd/dkimmilter.socket").CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "Unknown key") || strings.Contains(l, "Failed to parse") || strings.Contains(l, "Invalid") {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
}

// The configuration the Debian package installs loads, listens where the
// README tells Postfix to look, and signs nothing until keys are added.
func TestPackagedConfig(t *testing.T) {
	cfg, err := config.Load("../../contrib/deb/dkimmilter.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "unix:/var/spool/postfix/dkimmilter/dkimmilter.sock" || len(cfg.Keys) != 0 || len(cfg.Signing) != 0 {
		t.Errorf("listen %q, %d keys, %d rules", cfg.Listen, len(cfg.Keys), len(cfg.Signing))
	}
	code, out, errs := runCmd("check", "-config", "../../contrib/deb/dkimmilter.toml")
	if code != exitOK || !strings.Contains(out, "dkimmilter.toml: OK") {
		t.Errorf("check: exit %d\n%s%s", code, out, errs)
	}
}
