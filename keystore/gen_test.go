package keystore

import (
	"bytes"
	"crypto"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

func TestGenerate(t *testing.T) {
	tests := []struct {
		kind    string
		bits    int
		alg     string
		want    int   // bits of the key made
		wantErr error // or nil; other errors are matched by text
		errText string
	}{
		{kind: "rsa", bits: 0, alg: "rsa-sha256", want: 2048},
		{kind: "rsa", bits: 1024, alg: "rsa-sha256", want: 1024},
		{kind: "ed25519", bits: 0, alg: "ed25519-sha256", want: 256},
		{kind: "ed25519", bits: 256, alg: "ed25519-sha256", want: 256},
		{kind: "rsa", bits: 512, wantErr: dkim.ErrKeyTooShort, errText: "512 bits; RFC 8301 §3.2 forbids"},
		{kind: "rsa", bits: 1023, wantErr: dkim.ErrKeyTooShort},
		{kind: "rsa", bits: 8193, wantErr: ErrKeyTooLong, errText: "up to 4096 bits"},
		{kind: "rsa", bits: 65536, wantErr: ErrKeyTooLong},
		{kind: "ed25519", bits: 2048, errText: "always 256 bits"},
		{kind: "dsa", errText: `unknown key type "dsa": want rsa or ed25519`},
		{kind: "RSA", errText: "unknown key type"},
	}
	for _, tt := range tests {
		pk, err := Generate(tt.kind, tt.bits)
		if tt.wantErr != nil || tt.errText != "" {
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("Generate(%q, %d): err = %v, want %v %q", tt.kind, tt.bits, err, tt.wantErr, tt.errText)
			}
			continue
		}
		if err != nil {
			t.Errorf("Generate(%q, %d): %v", tt.kind, tt.bits, err)
			continue
		}
		if pk.Algorithm != tt.alg || pk.Bits != tt.want || pk.KeyType != tt.kind {
			t.Errorf("Generate(%q, %d) = %s %s %d bits", tt.kind, tt.bits, pk.KeyType, pk.Algorithm, pk.Bits)
		}
	}
}

// The key lands at DIR/DOMAIN/SELECTOR.pem as PKCS#8 PEM, mode 0600 in a
// directory 0700, loads back as the same key, and is never overwritten.
func TestWriteKeyFile(t *testing.T) {
	for _, kind := range []string{"rsa", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			root := t.TempDir()
			pk, err := Generate(kind, 0)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(root, "keys/example.com/s202611.pem")
			if err := WriteKeyFile(path, pk); err != nil {
				t.Fatal(err)
			}
			for p, mode := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700, filepath.Join(root, "keys"): 0o700} {
				if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != mode {
					t.Errorf("%s: mode %v, want %04o (%v)", p, fi.Mode().Perm(), mode, err)
				}
			}
			data, _ := os.ReadFile(path)
			if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----\n")) {
				t.Errorf("not PKCS#8 PEM:\n%s", data)
			}
			back, err := ReadPrivateKey(path)
			if err != nil {
				t.Fatal(err)
			}
			if !back.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pk.Signer.Public()) {
				t.Error("the file holds another key")
			}

			other, _ := Generate("ed25519", 0)
			err = WriteKeyFile(path, other)
			if !errors.Is(err, ErrKeyExists) || !strings.Contains(err.Error(), path) {
				t.Errorf("second write: %v, want ErrKeyExists naming %s", err, path)
			}
			if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
				t.Error("the first key was changed")
			}
			// A dangling symlink is not followed or replaced either.
			link := filepath.Join(filepath.Dir(path), "link.pem")
			os.Symlink(filepath.Join(root, "elsewhere.pem"), link)
			if err := WriteKeyFile(link, other); !errors.Is(err, ErrKeyExists) {
				t.Errorf("symlink: %v", err)
			}
			if _, err := os.Stat(filepath.Join(root, "elsewhere.pem")); err == nil {
				t.Error("wrote through a symlink")
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 2 {
				t.Errorf("temporary files left: %v", entries)
			}
		})
	}
}

// Concurrent writers of one path: exactly one wins, the file is whole.
func TestWriteKeyFileRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "example.com", "s1.pem")
	pk, _ := Generate("ed25519", 0)
	errs := make(chan error)
	for range 8 {
		go func() { errs <- WriteKeyFile(path, pk) }()
	}
	ok := 0
	for range 8 {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrKeyExists):
			t.Error(err)
		}
	}
	if ok != 1 {
		t.Errorf("%d writers succeeded, want 1", ok)
	}
	if _, err := ReadPrivateKey(path); err != nil {
		t.Error(err)
	}
}

func TestDefaultSelector(t *testing.T) {
	nov := time.Date(2026, 11, 14, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		now   time.Time
		files []string // in DIR/example.com
		kind  string
		used  []string
		want  string
	}{
		{"empty", nov, nil, "rsa", nil, "s202611"},
		{"no directory yet", nov, []string{"-"}, "ed25519", nil, "s202611"},
		{"January is zero-padded", time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), nil, "rsa", nil, "s202701"},
		{"other months stay", nov, []string{"s202610.pem", "s202609e.pem"}, "rsa", nil, "s202611"},
		{"rsa exists, ed25519 made", nov, []string{"s202611.pem"}, "ed25519", nil, "s202611e"},
		{"ed25519 exists, rsa made", nov, []string{"s202611.pem"}, "rsa", nil, "s202611r"},
		{"OpenDKIM .private counts", nov, []string{"s202611.private", "s202611.txt"}, "ed25519", nil, "s202611e"},
		{"both taken", nov, []string{"s202611.pem", "s202611e.pem"}, "ed25519", nil, "s202611e2"},
		{"counter", nov, []string{"s202611.pem", "s202611r.pem", "s202611r2.pem"}, "rsa", nil, "s202611r3"},
		{"configured elsewhere", nov, nil, "rsa", []string{"S202611"}, "s202611r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if len(tt.files) == 1 && tt.files[0] == "-" {
				dir = filepath.Join(dir, "missing")
			} else {
				os.Mkdir(filepath.Join(dir, "example.com"), 0o700)
				for _, f := range tt.files {
					os.WriteFile(filepath.Join(dir, "example.com", f), nil, 0o600)
				}
			}
			got := SelectorFor(tt.now, filepath.Join(dir, "example.com"), tt.kind, tt.used, nil)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// InspectKeyFile says what a key file holds even when ReadPrivateKey
// refuses it.
func TestInspectKeyFile(t *testing.T) {
	dir := t.TempDir()
	good, _ := Generate("ed25519", 0)
	p := filepath.Join(dir, "good.pem")
	if err := WriteKeyFile(p, good); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.pem")
	WriteKeyFile(open, good)
	os.Chmod(open, 0o660)
	short := writeFile(t, dir, "short.pem", testkit.File("rsa512.key"), 0o600)
	garbage := writeFile(t, dir, "garbage", []byte("hello"), 0o600)
	tests := []struct {
		path   string
		kt     string // "" for no key
		bits   int
		unsafe string
		err    error
		text   string
	}{
		{p, "ed25519", 256, "", nil, ""},
		{open, "ed25519", 256, "its group", ErrUnsafePermissions, "chmod 600 " + open},
		{short, "rsa", 512, "", dkim.ErrKeyTooShort, "keys rotate -d DOMAIN"},
		{garbage, "", 0, "", nil, "not a private key"},
		{filepath.Join(dir, "missing.pem"), "", 0, "", fs.ErrNotExist, "keys gen -d DOMAIN"},
	}
	for _, tt := range tests {
		st := InspectKeyFile(tt.path)
		if (st.Key == nil) != (tt.kt == "") || st.Key != nil && (st.Key.KeyType != tt.kt || st.Key.Bits != tt.bits) {
			t.Errorf("%s: key %+v, want %s %d", tt.path, st.Key, tt.kt, tt.bits)
		}
		if st.Unsafe != tt.unsafe {
			t.Errorf("%s: unsafe %q, want %q", tt.path, st.Unsafe, tt.unsafe)
		}
		if tt.text == "" && st.Err != nil || tt.text != "" && (st.Err == nil || !strings.Contains(st.Err.Error(), tt.text)) {
			t.Errorf("%s: err %v, want %q", tt.path, st.Err, tt.text)
		}
		if tt.err != nil && !errors.Is(st.Err, tt.err) {
			t.Errorf("%s: err %v is not %v", tt.path, st.Err, tt.err)
		}
		if st.Key != nil && st.ModTime.IsZero() {
			t.Errorf("%s: no mtime", tt.path)
		}
	}
}
