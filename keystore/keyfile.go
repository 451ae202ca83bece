package keystore

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// ErrUnsafePermissions is returned for a key file that others may read,
// that group or others may write, or that a group the daemon does not run
// with may read: a DKIM private key lets anyone sign mail as the domain.
var ErrUnsafePermissions = errors.New("unsafe key file permissions")

// PrivateKey is a loaded signing key.
type PrivateKey struct {
	Signer    crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
	Algorithm string        // "rsa-sha256" or "ed25519-sha256"
	KeyType   string        // "rsa" or "ed25519" (the k= of its DNS record)
	Bits      int
}

// ReadPrivateKey loads a private key file after checking that nobody but
// this process's user and groups can read it. It accepts what admins have
// on disk: PEM PKCS#1 ("RSA PRIVATE KEY", what opendkim-genkey writes as
// .private) and PKCS#8 ("PRIVATE KEY", RSA or Ed25519), DER, and the
// base64 Ed25519 seed that dkimpy's dknewkey writes.
func ReadPrivateKey(path string) (*PrivateKey, error) {
	return ReadPrivateKeyFor(path, nil)
}

// ReadPrivateKeyFor is ReadPrivateKey judging the file's group by the
// groups of acct (nil: this process), as `dkimmilter check -user` does.
func ReadPrivateKeyFor(path string, acct *Account) (*PrivateKey, error) {
	st := InspectKeyFileFor(path, acct)
	if st.Err != nil {
		return nil, st.Err
	}
	return st.Key, nil
}

// hinted is a key file error that says what fixes it. Its text ends with
// "(hint: …)", and SplitHint takes the two apart again for a report that
// prints hints on a line of their own.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() + " (hint: " + h.hint + ")" }
func (h *hinted) Unwrap() error { return h.err }

// withHint adds what fixes err to it.
func withHint(err error, hint string) error { return &hinted{err: err, hint: hint} }

// SplitHint returns an error's text without its hint, and the hint: what
// fixes it, or "" when this package knows none.
func SplitHint(err error) (text, hint string) {
	var h *hinted
	if !errors.As(err, &h) {
		return err.Error(), ""
	}
	return strings.TrimSuffix(err.Error(), " (hint: "+h.hint+")"), h.hint
}

// permError refuses a key file that others may read or write, or that
// its group may write; the error wraps ErrUnsafePermissions and says which
// chmod fixes it. A file its group may read is accepted when that group is
// one of acct's: the group is then the daemon's own, as in Debian's
// OpenDKIM layout (root:opendkim 0640, with the daemon in group opendkim),
// so that both daemons can read the same keys. The execute bits are
// ignored: they let nobody read the key.
func permError(path string, fi fs.FileInfo, acct *Account) error {
	perm := fi.Mode().Perm()
	if perm&0o026 == 0 && perm&0o040 == 0 {
		return nil
	}
	if perm&0o026 == 0 {
		_, gid, ok := owner(fi)
		if ok && acct.InGroup(gid) {
			return nil
		}
		// Readable by a group acct is not in, and not acct's own: acct
		// cannot read it at all, which is the problem to report (with
		// usermod -aG when that group opens the way), not that others
		// can.
		if err := UnreadableError(path, acct); err != nil {
			return err
		}
		acct = acct.named()
		g := groupName(gid)
		return withHint(fmt.Errorf("%w: %s has mode %04o and can be read by its group %s, which user %s does not belong to",
			ErrUnsafePermissions, path, perm, g, acct.Name),
			fmt.Sprintf("chmod 600 %s, or, to share the key with group %s, usermod -aG %s %s and restart dkimmilter", path, g, g, acct.Name))
	}
	return withHint(fmt.Errorf("%w: %s has mode %04o and can be read or written by %s",
		ErrUnsafePermissions, path, perm, unsafeWho(perm)), "chmod 600 "+path)
}

// unsafeWho names who besides the owner has access under perm.
func unsafeWho(perm fs.FileMode) string {
	switch {
	case perm&0o060 != 0 && perm&0o006 == 0:
		return "its group"
	case perm&0o060 == 0:
		return "others"
	}
	return "group or others"
}

// UnreadableError says which component of path refuses acct (nil: this
// process) and what fixes it: a directory on the way as often as the file
// (a per-domain directory made by root with 0700). It is nil when acct
// can read the file, as far as owners, groups and modes tell.
func UnreadableError(path string, acct *Account) error {
	acct = acct.named()
	ps := acct.ReadProblems(path)
	if len(ps) == 0 {
		return nil
	}
	text, fixes := DescribeProblems(ps)
	return withHint(fmt.Errorf("user %s cannot read %s: %w: %s", acct.Name, path, fs.ErrPermission, text), fixes)
}

// notExist is a missing key file; it matches fs.ErrNotExist.
type notExist string

func (e notExist) Error() string { return string(e) + " does not exist" }
func (e notExist) Unwrap() error { return fs.ErrNotExist }

func fileError(path string, err error, acct *Account) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return withHint(notExist(path),
			"fix the path, or generate a key with 'dkimmilter keys gen -d DOMAIN -s SELECTOR -dir DIR', which writes DIR/DOMAIN/SELECTOR.pem")
	case errors.Is(err, fs.ErrPermission):
		if err := UnreadableError(path, acct); err != nil {
			return err
		}
		acct = acct.named()
		return withHint(fmt.Errorf("user %s cannot read %s: %w", acct.Name, path, fs.ErrPermission),
			"run 'dkimmilter check -user "+acct.Name+"' as root: it names the file or directory that refuses the user, and the chown or chmod that fixes it")
	}
	return err
}

// ParsePrivateKey parses key data in any of the forms ReadPrivateKey takes.
// RSA keys under dkim.MinRSABits are refused with dkim.ErrKeyTooShort.
func ParsePrivateKey(data []byte) (*PrivateKey, error) {
	k, err := decodeKey(data)
	if err != nil {
		return nil, err
	}
	if err := sizeError(k); err != nil {
		return nil, err
	}
	return k, nil
}

// sizeError refuses RSA keys under dkim.MinRSABits, which RFC 8301 §3.2
// forbids signers to use.
func sizeError(k *PrivateKey) error {
	if k.KeyType == "rsa" && k.Bits < dkim.MinRSABits {
		return withHint(fmt.Errorf("RSA %w: %d bits; signers must use at least %d (RFC 8301 §3.2) and should use %d",
			dkim.ErrKeyTooShort, k.Bits, dkim.MinRSABits, dkim.RecommendedRSABits),
			fmt.Sprintf("'dkimmilter keys rotate -d DOMAIN' makes a %d-bit key under a new selector and prints the steps to switch to it", dkim.RecommendedRSABits))
	}
	return nil
}

// decodeKey is ParsePrivateKey without the size policy, so that listings
// can still say what a too-short key is.
func decodeKey(data []byte) (*PrivateKey, error) {
	if block, _ := pem.Decode(data); block != nil {
		switch block.Type {
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("bad PKCS#1 RSA key: %v", err)
			}
			return wrapKey(k)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("bad PKCS#8 key: %v", err)
			}
			return wrapKey(k)
		case "ENCRYPTED PRIVATE KEY":
			return nil, withHint(errors.New("the key is encrypted; a milter cannot ask for a passphrase"), "openssl pkey -in KEY -out KEY.pem, then chmod 600 KEY.pem")
		default:
			return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
		}
	}
	// Not PEM: base64 (dknewkey's Ed25519 seed, or DER) or raw DER.
	der := data
	if b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(data)), "")); err == nil {
		switch len(b) {
		case ed25519.SeedSize:
			return wrapKey(ed25519.NewKeyFromSeed(b))
		case ed25519.PrivateKeySize:
			return wrapKey(ed25519.PrivateKey(b))
		}
		der = b
	}
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return wrapKey(k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return wrapKey(k)
	}
	return nil, errors.New("not a private key: want PEM (PKCS#1 or PKCS#8), DER, or a base64 Ed25519 seed")
}

func wrapKey(k any) (*PrivateKey, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		bits := k.N.BitLen()
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("invalid RSA key: %v", err)
		}
		k.Precompute()
		return &PrivateKey{Signer: k, Algorithm: "rsa-sha256", KeyType: "rsa", Bits: bits}, nil
	case ed25519.PrivateKey:
		return &PrivateKey{Signer: k, Algorithm: "ed25519-sha256", KeyType: "ed25519", Bits: 256}, nil
	case *ed25519.PrivateKey:
		return wrapKey(*k)
	default:
		return nil, fmt.Errorf("a %T key cannot sign DKIM: use RSA or Ed25519", k)
	}
}
