package keystore

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// DefaultKeyDir is where keys gen writes keys, as DIR/DOMAIN/SELECTOR.pem.
const DefaultKeyDir = "/etc/dkimmilter/keys"

// ErrKeyExists is returned by WriteKeyFile when the file is already there:
// a key is never overwritten, because its record may be published and mail
// signed with it may still be in transit.
var ErrKeyExists = errors.New("key file already exists")

// ErrKeyTooLong is an RSA size above dkim.MaxRSABits.
var ErrKeyTooLong = errors.New("RSA key too long")

// KeySize checks kind and bits as Generate does, without making a key,
// and returns the size Generate would make: bits is the RSA modulus size
// (0 for dkim.RecommendedRSABits, RFC 8301 §3.2's recommendation) and must
// be 0 or 256 for Ed25519, whose size is fixed. RSA keys run from
// dkim.MinRSABits to dkim.MaxRSABits: larger ones only make the DNS record
// too large for UDP and signing slow.
// https://www.rfc-editor.org/rfc/rfc8301#section-3.2
func KeySize(kind string, bits int) (int, error) {
	switch kind {
	case "rsa":
		switch {
		case bits == 0:
			return dkim.RecommendedRSABits, nil
		case bits < dkim.MinRSABits:
			return 0, fmt.Errorf("RSA %w: %d bits; RFC 8301 §3.2 forbids signing with RSA keys under %d bits (the default, %d, is what it recommends)",
				dkim.ErrKeyTooShort, bits, dkim.MinRSABits, dkim.RecommendedRSABits)
		case bits > dkim.MaxRSABits:
			return 0, fmt.Errorf("%w: %d bits; verifiers need only accept keys up to %d bits (RFC 8301 §3.2), and %d is the most this command makes",
				ErrKeyTooLong, bits, dkim.VerifiableRSABits, dkim.MaxRSABits)
		}
		return bits, nil
	case "ed25519":
		if bits != 0 && bits != 256 {
			return 0, fmt.Errorf("ed25519 keys are always 256 bits, not %d (leave out -b)", bits)
		}
		return 256, nil
	}
	return 0, fmt.Errorf("unknown key type %q: want rsa or ed25519", kind)
}

// Generate makes a new signing key of kind "rsa" or "ed25519"; see KeySize
// for bits.
func Generate(kind string, bits int) (*PrivateKey, error) {
	bits, err := KeySize(kind, bits)
	if err != nil {
		return nil, err
	}
	if kind == "ed25519" {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating an ed25519 key: %w", err)
		}
		return wrapKey(k)
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("generating a %d-bit RSA key: %w", bits, err)
	}
	return wrapKey(k)
}

// WriteKeyFile writes pk to path as a PKCS#8 PEM file with mode 0600,
// creating its directory with mode 0700. It never replaces a file: the key
// is written to a temporary file (created with O_EXCL) in the same
// directory, synced, then hard-linked to path, which fails if path exists.
// So path either does not exist or holds the whole key, whatever happens,
// and a concurrent writer cannot be overwritten either. An existing path
// gives ErrKeyExists, naming the file.
func WriteKeyFile(path string, pk *PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(pk.Signer)
	if err != nil {
		return fmt.Errorf("encoding the key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if _, err := os.Lstat(path); err == nil {
		return existsError(path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the key directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*") // O_EXCL, mode 0600
	if err != nil {
		return fmt.Errorf("writing the key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := writeSync(tmp, data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	err = os.Link(tmp.Name(), path)
	switch {
	case errors.Is(err, fs.ErrExist):
		return existsError(path)
	case err != nil:
		// A file system without hard links: create path itself with
		// O_EXCL, which still never replaces a file.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return existsError(path)
		}
		if err != nil {
			return fmt.Errorf("writing the key: %w", err)
		}
		if err := writeSync(f, data); err != nil {
			os.Remove(path)
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	// Make the new name durable before anyone publishes its record.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func writeSync(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func existsError(path string) error {
	return fmt.Errorf("%w: %s (a key is never overwritten: choose another selector with -s, or remove the file yourself if no DNS record or config uses it)", ErrKeyExists, path)
}

// SelectorFor returns a date selector for a new key in keyDir: "s" and
// the year and month ("s202611"), so that selectors sort by age and say
// when a key was made. When keyDir already has a key file of that name
// (any extension: SEL.pem, OpenDKIM's SEL.private), or the name is in
// used (selectors configured elsewhere for the domain), it appends the
// algorithm, "r" or "e" (as when an RSA and an Ed25519 key are made the
// same month), then a counter: s202611r, s202611r2, ... A name for which
// inDNS (if not nil) reports a record is skipped too: after a quick
// rotation the old key's file and table may be gone while its revoked
// record (p=) is still published under the name.
func SelectorFor(now time.Time, keyDir, kind string, used []string, inDNS func(selector string) bool) string {
	base := fmt.Sprintf("s%04d%02d", now.Year(), int(now.Month()))
	suffix := "r"
	if kind == "ed25519" {
		suffix = "e"
	}
	taken := map[string]bool{}
	for _, s := range used {
		taken[strings.ToLower(s)] = true
	}
	if entries, err := os.ReadDir(keyDir); err == nil {
		for _, e := range entries {
			name, _, _ := strings.Cut(e.Name(), ".")
			taken[strings.ToLower(name)] = true
		}
	}
	free := func(s string) bool { return !taken[s] && (inDNS == nil || !inDNS(s)) }
	if free(base) {
		return base
	}
	for n := 1; ; n++ {
		s := base + suffix
		if n > 1 {
			s += strconv.Itoa(n)
		}
		if free(s) {
			return s
		}
	}
}
