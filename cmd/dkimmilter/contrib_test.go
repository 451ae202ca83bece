package main

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
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
		"ProtectSystem=strict", "NoNewPrivileges=yes", "SystemCallFilter=@system-service",
		"User=dkimmilter", "ReadWritePaths=/var/spool/postfix/dkimmilter",
		"ExecStart=/usr/local/bin/dkimmilter serve -config /etc/dkimmilter/dkimmilter.toml",
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
