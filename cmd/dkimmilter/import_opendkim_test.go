package main

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// importSchemaKnown reports whether the config package knows the keys every
// translation writes: peers, sign.daemon_names and the [actions] keys
// beyond the first three. Until it does, dkimmilter check refuses each
// translation, naming those keys, and import-opendkim exits 78.
func importSchemaKnown() bool {
	_, err := config.Parse("", []byte("peers = []\n[sign]\ndaemon_names = []\n[actions]\nkey_not_found = \"accept\"\npolicy = \"accept\"\nsecurity = \"accept\"\nno_signature = \"accept\"\ninternal_error = \"tempfail\"\n"))
	return err == nil
}

// importFixture writes an OpenDKIM single-key configuration and its key
// into a new directory, reachable by the service user as dkimmilter check
// wants it; extra is appended to opendkim.conf.
func importFixture(t *testing.T, extra string) (dir, conf string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "dkmimport")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	key := testkit.WriteKey(dir, "keys/s1.private", testkit.RSAKey(2048), true)
	for _, d := range []string{dir, filepath.Dir(key)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// As root, check looks at the key as the service user: give it the
	// key, as an admin switching would (or would put it in the group).
	if u, err := user.Lookup("dkimmilter"); err == nil && os.Geteuid() == 0 {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(key, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	conf = filepath.Join(dir, "opendkim.conf")
	text := "Syslog yes\nSocket inet:8891@localhost\nDomain example.com\nSelector s1\nKeyFile " + key + "\n" + extra
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, conf
}

// wantImportChecked checks the end of a run whose translation is complete:
// exit 0 once the config package knows the schema, else 78 with check
// naming the keys it does not know yet.
func wantImportChecked(t *testing.T, code int, errs string) {
	t.Helper()
	if !strings.Contains(errs, "dkimmilter check -config ") {
		t.Errorf("stderr does not show the check:\n%s", errs)
	}
	if !importSchemaKnown() {
		if code != exitConfig || !strings.Contains(errs, `unknown key "key_not_found"`) {
			t.Errorf("exit %d, want %d with check refusing the keys it does not know yet:\n%s", code, exitConfig, errs)
		}
		t.Log("the config package does not know the whole schema yet: exit 0 is not tested")
		return
	}
	if code != exitOK || !strings.Contains(errs, "import complete: dkimmilter check passes") {
		t.Errorf("exit %d, want 0:\n%s", code, errs)
	}
}

func TestImportOpenDKIMStdout(t *testing.T) {
	dir, conf := importFixture(t, "")
	code, out, errs := runCmd("import-opendkim", conf)
	for _, want := range []string{
		"# " + conf + ":2: Socket inet:8891@localhost",
		`listen = "inet:localhost:8893"`,
		`file     = "` + dir + `/keys/s1.private"`,
		`from = "*@example.com"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	for _, want := range []string{
		conf + ": 5 settings: 4 translated, 1 not needed, 0 not supported; written to stdout",
		"everything that decides which mail is signed",
		"dkimmilter check -config <stdout>:",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if strings.Contains(errs, os.TempDir()+"/dkimmilter-import-") {
		t.Errorf("stderr names the temporary copy:\n%s", errs)
	}
	wantImportChecked(t, code, errs)
}

func TestImportOpenDKIMFile(t *testing.T) {
	dir, conf := importFixture(t, "")
	_, stdout, _ := runCmd("import-opendkim", conf)
	dst := filepath.Join(dir, "dkimmilter.toml")
	code, out, errs := runCmd("import-opendkim", "-o", dst, conf)
	if out != "" {
		t.Errorf("with -o, stdout has %q", out)
	}
	data, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != stdout {
		t.Errorf("the file differs from the stdout translation:\n%s", data)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	if g, err := user.LookupGroup(serviceGroup); err == nil && os.Geteuid() == 0 {
		fi, _ := os.Stat(dst)
		if gid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Gid)); gid != g.Gid {
			t.Errorf("group %s, want %s (%s)", gid, g.Gid, serviceGroup)
		}
	}
	if !strings.Contains(errs, "written to "+dst) || !strings.Contains(errs, "dkimmilter check -config "+dst) {
		t.Errorf("stderr does not name %s:\n%s", dst, errs)
	}
	wantImportChecked(t, code, errs)

	// An existing file is kept without -f, replaced (and its mode set)
	// with it.
	if err := os.WriteFile(dst, []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs = runCmd("import-opendkim", "-o", dst, conf)
	if data, _ := os.ReadFile(dst); code != exitFailure || string(data) != "mine\n" || !strings.Contains(errs, "add -f") {
		t.Errorf("without -f: exit %d, file %q, stderr:\n%s", code, data, errs)
	}
	code, _, errs = runCmd("import-opendkim", "-o", dst, "-f", conf)
	data, _ = os.ReadFile(dst)
	if fi, _ := os.Stat(dst); string(data) != stdout || fi.Mode().Perm() != 0o640 {
		t.Errorf("with -f: mode %v, file:\n%s", fi.Mode().Perm(), data)
	}
	wantImportChecked(t, code, errs)
}

// Settings that change mail and are not translated: exit 3, each named,
// the configuration written all the same.
func TestImportOpenDKIMUntranslated(t *testing.T) {
	_, conf := importFixture(t, "ExemptDomains csl:partner.example\nMacroList {auth_authen}\n")
	code, out, errs := runCmd("import-opendkim", conf)
	if code != exitUntranslated {
		t.Errorf("exit %d, want %d", code, exitUntranslated)
	}
	for _, want := range []string{
		"NOT translated, and it changes mail (2;",
		conf + ":6: ExemptDomains:",
		conf + ":7: MacroList:",
		`the macro "auth_authen"`,
		"import incomplete: 2 setting(s)",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if !strings.Contains(out, "NOT SUPPORTED, changes mail") || !strings.Contains(out, "[[signing]]") {
		t.Errorf("the configuration is not written with its notes:\n%s", out)
	}
}

// A translation that check refuses (the key file is gone): exit 78, with
// check's report.
func TestImportOpenDKIMCheckFails(t *testing.T) {
	dir, conf := importFixture(t, "")
	key := filepath.Join(dir, "keys/s1.private")
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd("import-opendkim", conf)
	if code != exitConfig || !strings.Contains(errs, "dkimmilter check fails on the result") {
		t.Errorf("exit %d, want %d:\n%s", code, exitConfig, errs)
	}
	if importSchemaKnown() && !strings.Contains(errs, key) {
		t.Errorf("check's report does not name %s:\n%s", key, errs)
	}
}

// Untranslated settings and a check that fails: 78, since the file will
// not load, with the untranslated settings still named.
func TestImportOpenDKIMCheckFailsAndUntranslated(t *testing.T) {
	dir, conf := importFixture(t, "ExemptDomains csl:partner.example\n")
	if err := os.Remove(filepath.Join(dir, "keys/s1.private")); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd("import-opendkim", conf)
	if code != exitConfig {
		t.Errorf("exit %d, want %d:\n%s", code, exitConfig, errs)
	}
	for _, want := range []string{
		conf + ":6: ExemptDomains:",
		"dkimmilter check fails on the result",
		"1 setting(s) that change mail were not translated either",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

func TestImportOpenDKIMUsage(t *testing.T) {
	dir, conf := importFixture(t, "")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"import-opendkim", conf, conf}, exitUsage, "one opendkim.conf at most"},
		{[]string{"import-opendkim", "-x"}, exitUsage, "flag provided but not defined"},
		{[]string{"import-opendkim", "-h"}, exitOK, "overwrite FILE"},
		{[]string{"import-opendkim", filepath.Join(dir, "none.conf")}, exitFailure, filepath.Join(dir, "none.conf")},
		{[]string{"import-opendkim", "-o", filepath.Join(dir, "no/such/dir.toml"), conf}, exitFailure, "create the directory first: install -d -m 755 " + filepath.Join(dir, "no/such")},
	} {
		code, _, errs := runCmd(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, want %d with %q:\n%s", tc.args, code, tc.code, tc.want, errs)
		}
	}
	if code, out, _ := runCmd("-h"); code != exitOK || !strings.Contains(out, "dkimmilter import-opendkim [-o FILE [-f]] [/etc/opendkim.conf]") {
		t.Errorf("-h does not list import-opendkim:\n%s", out)
	}
}
