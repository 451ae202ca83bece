package keystore

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// requireRoot skips a test that changes file owners, unless CI=true, where
// it must run.
func requireRoot(t *testing.T) {
	t.Helper()
	testkit.RequireRoot(t, "this test changes file owners")
}

// nobody is the account of the user nobody, which every Linux system has.
func nobody(t *testing.T) *Account {
	t.Helper()
	a, err := LookupAccount("nobody")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// pemKey is an Ed25519 key in PKCS#8 PEM.
func pemKey(t *testing.T) []byte {
	k, err := Generate("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// otherGID is a group that neither root nor nobody is in.
const otherGID = 4242

// A key file readable by its group is safe when that group is one of the
// reader's: root:opendkim 0640, with the daemon in group opendkim.
// Readable by others, or writable by its group, it never is.
func TestGroupReadableKeys(t *testing.T) {
	requireRoot(t)
	nb := nobody(t)
	ng := nb.Groups[0]
	dir := t.TempDir()
	data := pemKey(t)
	tests := []struct {
		name string
		gid  int
		mode os.FileMode
		acct *Account // nil: this process (root, group root)
		want string   // "" for accepted
	}{
		{"daemon's group", ng, 0o640, nb, ""},
		{"process's group", 0, 0o640, nil, ""},
		{"not the daemon's group", ng, 0o640, nil, "can be read by its group " + groupName(ng) + ", which user root does not belong to (hint: chmod 600 "},
		// Not nobody's own and not its group's: nobody cannot read it
		// at all, and that is the error (not that others can).
		{"root's group, other daemon", 0, 0o640, nb, "user nobody cannot read "},
		{"group-writable", ng, 0o660, nb, "can be read or written by its group (hint: chmod 600 "},
		{"world-readable", ng, 0o644, nb, "by group or others (hint: chmod 600 "},
		{"owner only", otherGID, 0o600, nb, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, dir, strconv.Itoa(i)+".pem", data, tt.mode)
			if err := os.Chown(p, 0, tt.gid); err != nil {
				t.Fatal(err)
			}
			_, err := ReadPrivateKeyFor(p, tt.acct)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("err = %v, want %q", err, tt.want)
			case tt.want != "" && !errors.Is(err, ErrUnsafePermissions) && !errors.Is(err, fs.ErrPermission):
				t.Errorf("%v is neither ErrUnsafePermissions nor fs.ErrPermission", err)
			}
		})
	}
	// The hint for a key the daemon owns, readable by a group it is not
	// in, also says how to share it with that group.
	p := writeFile(t, dir, "share.pem", data, 0o640)
	os.Chown(p, nb.UID, otherGID)
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // t.TempDir's 0700 would be the problem
	}
	_, err := ReadPrivateKeyFor(p, nb)
	if _, hint := SplitHint(err); hint != "chmod 600 "+p+", or, to share the key with group 4242, usermod -aG 4242 nobody and restart dkimmilter" {
		t.Errorf("hint %q", hint)
	}
}

// Each path component that refuses the account is named, with the
// command that fixes that component: a directory is fixed on the
// directory, not by a chown of the key below it.
func TestAccessProblems(t *testing.T) {
	requireRoot(t)
	nb := nobody(t)
	ng := groupName(nb.Groups[0])
	base := t.TempDir()
	// t.TempDir's directories are 0700: open the way to base.
	for d := base; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	type node struct {
		uid, gid int
		mode     os.FileMode
	}
	root := func(mode os.FileMode) node { return node{0, 0, mode} }
	tests := []struct {
		name   string
		dir    node // base/d
		file   node // base/d/k.pem
		create bool // CreateProblems(base/d) instead of ReadProblems(base/d/k.pem)
		want   []string
	}{
		{"readable", root(0o755), node{nb.UID, 0, 0o600}, false, nil},
		{"root's directory and file", root(0o700), root(0o600), false,
			[]string{"chgrp " + ng + " D && chmod g+x D", "chown nobody D/k.pem"}},
		{"own directory without x", node{nb.UID, 0, 0o600}, node{nb.UID, 0, 0o600}, false, []string{"chmod u+x D"}},
		{"own file without r", root(0o755), node{nb.UID, 0, 0o200}, false, []string{"chmod u+r D/k.pem"}},
		{"group directory without x", node{0, nb.Groups[0], 0o700}, node{0, nb.Groups[0], 0o600}, false,
			[]string{"chmod g+x D", "chmod g+r D/k.pem"}},
		{"another daemon's group", node{0, otherGID, 0o750}, node{0, otherGID, 0o640}, false,
			[]string{"usermod -aG 4242 nobody (then restart dkimmilter)", "usermod -aG 4242 nobody (then restart dkimmilter)"}},
		{"another group's closed directory", node{0, otherGID, 0o700}, node{nb.UID, 0, 0o600}, false, []string{"chmod o+x D"}},
		{"socket directory", root(0o755), node{}, true, []string{"chgrp " + ng + " D && chmod g+wx D"}},
		{"socket directory of another group", node{0, otherGID, 0o755}, node{}, true, []string{"chown nobody D"}},
		{"socket directory ok", node{nb.UID, 0, 0o700}, node{}, true, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := filepath.Join(base, strconv.Itoa(i))
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			os.Chown(d, tt.dir.uid, tt.dir.gid)
			os.Chmod(d, tt.dir.mode)
			var ps []AccessProblem
			if tt.create {
				ps = nb.CreateProblems(d)
			} else {
				f := writeFile(t, d, "k.pem", []byte("x"), tt.file.mode)
				os.Chown(f, tt.file.uid, tt.file.gid)
				ps = nb.ReadProblems(f)
			}
			var got []string
			for _, p := range ps {
				got = append(got, strings.ReplaceAll(p.Fix, d, "D"))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("fixes:\n%s\nwant:\n%s\n(problems %v)", strings.Join(got, "\n"), strings.Join(tt.want, "\n"), ps)
			}
			// Root is never refused.
			if ps := ProcessAccount().ReadProblems(filepath.Join(d, "k.pem")); ps != nil {
				t.Errorf("root refused: %v", ps)
			}
		})
	}
	// The daemon's own error for a file it cannot open names the
	// directory that refuses it, found from what it can see.
	d := filepath.Join(base, "closed")
	os.Mkdir(d, 0o700)
	f := writeFile(t, d, "k.pem", pemKey(t), 0o600)
	os.Chown(f, nb.UID, 0)
	text, fixes := DescribeProblems(nb.ReadProblems(f))
	if text != d+" (root:root 0700) gives nobody no search (x)" || fixes != "chgrp "+ng+" "+d+" && chmod g+x "+d {
		t.Errorf("described %q, %q", text, fixes)
	}
}
