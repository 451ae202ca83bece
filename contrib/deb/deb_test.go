package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// need skips a test whose tool or privilege is missing, and fails it
// under CI=true, where .ci/run has installed everything.
func need(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: required)")
	}
	t.Skip(why)
}

var (
	debOnce sync.Once
	debPath string
	debErr  error
)

// builtDeb builds the package once for all tests, as 'go run -C
// contrib/deb .' does, into a directory removed at the end.
func builtDeb(t *testing.T) string {
	t.Helper()
	debOnce.Do(func() {
		root, err := findRoot(".")
		if err != nil {
			debErr = err
			return
		}
		dir, err := os.MkdirTemp("", "dkimmilter-deb-test")
		if err != nil {
			debErr = err
			return
		}
		debPath, debErr = build(options{root: root, outDir: dir, goarch: runtime.GOARCH})
	})
	if debErr != nil {
		t.Fatal(debErr)
	}
	return debPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if debPath != "" {
		os.RemoveAll(filepath.Dir(debPath))
	}
	os.Exit(code)
}

func TestDebianVersion(t *testing.T) {
	when := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	rev := "ffcf23f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7"
	tests := []struct{ describe, want, err string }{
		{"", "0.0~git20261207.ffcf23f-1", ""},
		{"v1.2.0-0-gffcf23f", "1.2.0-1", ""},
		{"v1.2.0-5-gffcf23f", "1.2.0+git20261207.ffcf23f-1", ""},
		{"v1.3.0-rc1-0-gffcf23f", "1.3.0~rc1-1", ""},
		{"vnext-0-gffcf23f", "", `git describe gave "vnext-0-gffcf23f", not vVERSION-N-gREV: give -version`},
	}
	for _, tt := range tests {
		got, err := debianVersion(tt.describe, rev, when)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && err.Error() != tt.err) {
			t.Errorf("debianVersion(%q) = %q, %v; want %q, %s", tt.describe, got, err, tt.want, tt.err)
		}
	}
}

func TestSplitVersion(t *testing.T) {
	tests := []struct{ in, upstream, revision string }{
		{"1.2.0-1", "1.2.0", "1"},
		{"1.2.0", "1.2.0", "1"},
		{"0.0~git20261207.ffcf23f-1", "0.0~git20261207.ffcf23f", "1"},
		{"1.2.0-rc1-2", "1.2.0-rc1", "2"}, // '-' in upstream: the last one splits
		{"v1.2.0", "", ""},
		{"1.2 0-1", "", ""},
		{"1.2.0-", "", ""},
		{"2:1.2.0-1", "", ""}, // an epoch is not supported
	}
	for _, tt := range tests {
		u, r, err := splitVersion(tt.in)
		if tt.upstream == "" {
			if err == nil || !strings.Contains(err.Error(), "is not a Debian version") {
				t.Errorf("splitVersion(%q) = %q, %q, %v; want an error", tt.in, u, r, err)
			}
			continue
		}
		if u != tt.upstream || r != tt.revision || err != nil {
			t.Errorf("splitVersion(%q) = %q, %q, %v; want %q, %q", tt.in, u, r, err, tt.upstream, tt.revision)
		}
	}
}

func TestPackagedUnit(t *testing.T) {
	unit, err := os.ReadFile("../systemd/dkimmilter.service")
	if err != nil {
		t.Fatal(err)
	}
	got, err := packagedUnit(unit)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte("\nExecStart=/usr/sbin/dkimmilter serve -config /etc/dkimmilter/dkimmilter.toml -pidfile /run/dkimmilter/dkimmilter.pid\n")) || bytes.Contains(got, []byte("/usr/local")) {
		t.Errorf("packaged unit:\n%s", got)
	}
	for _, bad := range []string{"[Service]\nExecStart=/usr/bin/dkimmilter serve\n", "ExecStart=/usr/local/bin/dkimmilter serve\nExecStart=/usr/local/bin/dkimmilter check\n"} {
		if _, err := packagedUnit([]byte(bad)); err == nil || !strings.Contains(err.Error(), "contrib/systemd/dkimmilter.service: want one") {
			t.Errorf("packagedUnit(%q) = %v, want an error", bad, err)
		}
	}
}

func TestChangelog(t *testing.T) {
	got := changelog("1.2.0-1", "A B <a@b.example>", "ffcf23f1", true, time.Date(2026, 12, 7, 3, 4, 5, 0, time.UTC))
	want := "dkimmilter (1.2.0-1) unstable; urgency=medium\n\n  * Built from revision ffcf23f1, with uncommitted changes.\n\n -- A B <a@b.example>  Mon, 07 Dec 2026 03:04:05 +0000\n"
	if got != want {
		t.Errorf("changelog:\n%s\nwant:\n%s", got, want)
	}
}

// Every refusal names what to give instead.
func TestBuildErrors(t *testing.T) {
	root, err := findRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := findRoot(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no dkimmilter source tree above") {
		t.Errorf("findRoot(tmp) = %v", err)
	}
	tests := []struct {
		o    options
		want string
	}{
		{options{root: root, goarch: "mips"}, "-arch mips: no Debian architecture known for it (known: 386, amd64, arm, arm64, ppc64le, riscv64, s390x)"},
		{options{root: root, goarch: "amd64", version: "v1"}, `version "v1-1" is not a Debian version`},
		{options{root: root, goarch: "amd64", maintainer: "nobody"}, `maintainer "nobody" is not "Name <address>"`},
		{options{root: t.TempDir(), goarch: "amd64"}, "the package's version and revision come from git"},
	}
	for _, tt := range tests {
		_, err := build(tt.o)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("build(%+v) = %v, want %q", tt.o, err, tt.want)
		}
	}
	if err := run([]string{"extra"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), `unexpected argument "extra"`) {
		t.Errorf("run(extra) = %v", err)
	}
}

// The maintainer scripts are valid sh.
func TestScriptsParse(t *testing.T) {
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if out, err := exec.Command("sh", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", s, err, out)
		}
		if fi, err := os.Stat(s); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s: not executable (%v)", s, err)
		}
	}
}

// dpkgDeb runs dpkg-deb on the package.
func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		need(t, "dpkg-deb not installed: the package's contents are not checked")
	}
	out, err := exec.Command("dpkg-deb", append(args, builtDeb(t))...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// The package holds what the README says, with the modes and owners a
// Debian admin expects, and its control fields are right.
func TestPackageContents(t *testing.T) {
	deb := builtDeb(t)
	if !regexp.MustCompile(`^dkimmilter_[0-9][A-Za-z0-9.+~]*-[0-9]+_` + debArch[runtime.GOARCH].arch + `\.deb$`).MatchString(filepath.Base(deb)) {
		t.Errorf("package name %s", filepath.Base(deb))
	}
	list := dpkgDeb(t, "-c")
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/sbin/dkimmilter\n",
		"-rw-r--r-- root/root .* ./usr/lib/systemd/system/dkimmilter.service\n",
		"-rw-r--r-- root/root .* ./usr/lib/systemd/system/dkimmilter.socket\n",
		"drwxr-xr-x root/root .* ./etc/dkimmilter/\n",
		"-rw-r--r-- root/root .* ./etc/dkimmilter/dkimmilter.toml\n",
		"-rw-r--r-- root/root .* ./usr/share/man/man8/dkimmilter.8.gz\n",
		"-rw-r--r-- root/root .* ./usr/share/man/man5/dkimmilter.toml.5.gz\n",
		"-rw-r--r-- root/root .* ./usr/share/doc/dkimmilter/copyright\n",
		"-rw-r--r-- root/root .* ./usr/share/doc/dkimmilter/changelog.Debian.gz\n",
		"-rw-r--r-- root/root .* ./usr/share/doc/dkimmilter/examples/dkimmilter.toml\n",
	} {
		if !regexp.MustCompile(`(?m)^` + strings.ReplaceAll(regexp.QuoteMeta(strings.TrimSuffix(want, "\n")), `\.\*`, `.*`) + `$`).MatchString(list) {
			t.Errorf("package lacks %q:\n%s", want, list)
		}
	}
	// Keys and the socket directory belong to the service user, which
	// exists only once postinst ran: they are not in the package.
	if strings.Contains(list, "keys") || strings.Contains(list, "spool") {
		t.Errorf("package ships the keys or socket directory:\n%s", list)
	}
	if got := dpkgDeb(t, "-f"); !strings.Contains(got, "\nDepends: adduser\n") || !strings.Contains(got, "\nSection: mail\n") {
		t.Errorf("control:\n%s", got)
	}
	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-e", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
	}
	if c, _ := os.ReadFile(filepath.Join(dir, "conffiles")); string(c) != "/etc/dkimmilter/dkimmilter.toml\n" {
		t.Errorf("conffiles = %q", c)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if fi, err := os.Stat(filepath.Join(dir, s)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("control %s: %v", s, err)
		}
	}
}

// lintian finds no error in the package; its warnings are logged.
func TestLintian(t *testing.T) {
	if _, err := exec.LookPath("lintian"); err != nil {
		need(t, "lintian not installed (apt-get install lintian): the package is not checked")
	}
	out, _ := exec.Command("lintian", "--pedantic", builtDeb(t)).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "E: "):
			t.Errorf("lintian: %s", line)
		case strings.HasPrefix(line, "W: "), strings.HasPrefix(line, "I: "), strings.HasPrefix(line, "P: "):
			t.Logf("lintian: %s", line)
		}
	}
}

// The same commit gives the same package, byte for byte: file times are
// the commit's, the build is -trimpath, and gzip writes no name or time.
func TestReproducible(t *testing.T) {
	first, err := os.ReadFile(builtDeb(t))
	if err != nil {
		t.Fatal(err)
	}
	root, err := findRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	again, err := build(options{root: root, outDir: t.TempDir(), goarch: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	second, err := os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Errorf("two builds of the same tree differ: %s (%d bytes), %s (%d bytes)", builtDeb(t), len(first), again, len(second))
	}
}
