package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// openTempDir is a temporary directory that every user may search (those
// of t.TempDir are 0700), for a test that reads files as another user.
func openTempDir(t *testing.T) string {
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	return dir
}

// ownerOf is "user:group mode" of path.
func ownerOf(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return lookupUser(int(st.Uid)) + ":" + lookupGroup(int(st.Gid)) + " " + fi.Mode().String()
}

// Run as root, keys gen gives the key and the directories it made to the
// daemon's user, who can then read it; a directory it did not make that
// keeps the user out is named with its fix.
func TestKeysGenGivesKeyToUser(t *testing.T) {
	requireRoot(t)
	nb, err := keystore.LookupAccount("nobody")
	if err != nil {
		t.Fatal(err)
	}
	ng := lookupGroup(nb.Groups[0])
	base := openTempDir(t)
	dir := filepath.Join(base, "keys")
	code, out, errs := genAt("-d", "example.com", "-t", "ed25519", "-dir", dir, "-user", "nobody")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	file := filepath.Join(dir, "example.com/s202611.pem")
	for p, want := range map[string]string{file: "nobody:" + ng + " -rw-------", filepath.Dir(file): "nobody:" + ng + " drwx------", dir: "nobody:" + ng + " drwx------"} {
		if got := ownerOf(t, p); got != want {
			t.Errorf("%s: %s, want %s", p, got, want)
		}
	}
	if !strings.Contains(out, "# Wrote "+file+": ed25519, 256 bits, mode 0600, owner nobody:"+ng+".\n") || strings.Contains(out, "cannot read it yet") {
		t.Errorf("output:\n%s", out)
	}
	if err := asUser(nb, "cat", file); err != nil {
		t.Error(err)
	}

	// Into a directory made by root, 0700: the key is nobody's, but the
	// directory keeps nobody out, and gen says which command fixes it.
	closed := filepath.Join(base, "closed")
	os.MkdirAll(filepath.Join(closed, "example.org"), 0o700)
	code, out, errs = genAt("-d", "example.org", "-t", "ed25519", "-dir", closed, "-user", "nobody")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	wantOutput(t, out, "# User nobody, who runs dkimmilter, cannot read it yet: "+closed+" (root:root 0700) gives nobody no search (x); ",
		"Fix it with:\n#   chgrp "+ng+" "+closed+" && chmod g+x "+closed+"\n#   chgrp "+ng+" "+closed+"/example.org && chmod g+x "+closed+"/example.org\n")

	if code, _, errs := genAt("-d", "example.net", "-dir", dir, "-user", "no-such-user-here"); code != exitUsage || !strings.Contains(errs, `no user "no-such-user-here"`) {
		t.Errorf("unknown -user: exit %d %s", code, errs)
	}
}

// Run as root, keys rotate gives the new key the old key's owner, group
// and mode when the daemon's user reads the old key that way (a key
// shared through a group, 0640), else to the user with mode 0600.
func TestKeysRotateGivesKeyToUser(t *testing.T) {
	requireRoot(t)
	nb, err := keystore.LookupAccount("nobody")
	if err != nil {
		t.Fatal(err)
	}
	ng := lookupGroup(nb.Groups[0])
	for _, tt := range []struct {
		name     string
		uid, gid int
		mode     os.FileMode
		want     string
	}{
		{"group-readable layout kept", 0, nb.Groups[0], 0o640, "root:" + ng + " -rw-r-----"},
		{"another group's layout: the user's own key", 0, 4242, 0o640, "nobody:" + ng + " -rw-------"},
		{"root's key: the user's own key", 0, 0, 0o600, "nobody:" + ng + " -rw-------"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newKeysFixture(t, "")
			for d := filepath.Dir(f.rsa); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
				os.Chmod(d, 0o755)
			}
			os.Chown(f.rsa, tt.uid, tt.gid)
			os.Chmod(f.rsa, tt.mode)
			code, out, errs := rotateAt("-d", "example.com", "-t", "rsa", "-config", f.cfg, "-user", "nobody")
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errs)
			}
			newFile := filepath.Join(filepath.Dir(f.rsa), "s202611.pem")
			if got := ownerOf(t, newFile); got != tt.want {
				t.Errorf("new key %s, want %s", got, tt.want)
			}
			if !strings.Contains(out, "Wrote "+newFile+" (mode 0") || strings.Contains(out, "cannot read it yet") {
				t.Errorf("output:\n%s", out)
			}
			if _, err := keystore.ReadPrivateKeyFor(newFile, nb); err != nil {
				t.Errorf("the daemon's user would refuse the new key: %v", err)
			}
			if err := asUser(nb, "cat", newFile); err != nil {
				t.Error(err)
			}
		})
	}
}

// Run as root, the keys commands judge a key readable by its group as the
// daemon's user reads it: the Debian layout (root:opendkim 0640, with the
// daemon in group opendkim) is fine for them as for check, although root
// is not in the group; in a group the daemon is not in, the daemon cannot
// read it, and that is the error.
func TestKeysCommandsJudgeAsServiceUser(t *testing.T) {
	requireRoot(t)
	f := newKeysFixture(t, "")
	cfg, err := config.Load(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	acct, _, err := serviceAccount(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	if acct.UID == 0 || acct.InGroup(0) {
		t.Skipf("the service user here is %s, in root's group: nothing to tell apart", acct.Name)
	}
	os.Chown(f.ed, 0, acct.Groups[0])
	os.Chmod(f.ed, 0o640)
	f.dns.SetTXT("s2026e._domainkey.example.com", mustRecord(t, f.ed))
	code, out, errs := listAt("-config", f.cfg)
	if code != exitOK || !strings.Contains(out, " 0640 ok ") {
		t.Errorf("keys list: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCmd("keys", "check", "-config", f.cfg, "example-ed"); code != exitOK {
		t.Errorf("keys check: exit %d\n%s%s", code, out, errs)
	}
	os.Chown(f.ed, 0, 4242)
	if code, out, _ := runCmd("keys", "check", "-config", f.cfg, "example-ed"); code != exitConfig || !strings.Contains(out, "user "+acct.Name+" cannot read "+f.ed+": permission denied: ") {
		t.Errorf("another group: exit %d\n%s", code, out)
	}
}

func mustRecord(t *testing.T, file string) string {
	t.Helper()
	st := keystore.InspectKeyFile(file)
	if st.Key == nil {
		t.Fatal(st.Err)
	}
	return keystore.Record(st.Key)
}
