package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrKeyRevoked is an empty p= (RFC 6376 §3.6.1).
var ErrKeyRevoked = errors.New("key revoked")

// ErrNotKeyRecord says a TXT record does not look like a DKIM key record at
// all (another TXT record published at the same name), as opposed to a DKIM
// key record that is broken.
var ErrNotKeyRecord = errors.New("not a DKIM key record")

// KeyRecord is a parsed DKIM key record (RFC 6376 §3.6.1,
// https://www.rfc-editor.org/rfc/rfc6376#section-3.6.1).
type KeyRecord struct {
	Version  string           // v=, "" when absent
	KeyType  string           // k=, "rsa" when absent
	Hashes   []string         // h=, nil when absent (all hashes allowed)
	Services []string         // s=, nil when absent ("*")
	Flags    []string         // t=
	Notes    string           // n=
	P        string           // p= with FWS removed
	Key      crypto.PublicKey // *rsa.PublicKey or ed25519.PublicKey; nil when revoked
	Bits     int              // RSA modulus size; 256 for Ed25519
}

// Testing reports the t=y flag: the domain is testing DKIM, and a failure
// must not be treated worse than an unsigned message.
func (r *KeyRecord) Testing() bool { return r.hasFlag("y") }

// Strict reports the t=s flag: i= must be in exactly d=, not a subdomain.
func (r *KeyRecord) Strict() bool { return r.hasFlag("s") }

func (r *KeyRecord) hasFlag(f string) bool {
	for _, x := range r.Flags {
		if x == f {
			return true
		}
	}
	return false
}

// AllowsHash reports whether the record's h= allows the named hash.
func (r *KeyRecord) AllowsHash(h string) bool {
	if r.Hashes == nil {
		return true
	}
	for _, x := range r.Hashes {
		if strings.EqualFold(x, h) {
			return true
		}
	}
	return false
}

// AllowsEmail reports whether the record's s= allows use for email.
func (r *KeyRecord) AllowsEmail() bool {
	if r.Services == nil {
		return true
	}
	for _, s := range r.Services {
		if s == "*" || strings.EqualFold(s, "email") {
			return true
		}
	}
	return false
}

// ParseKeyRecord parses a key record. The error says what is wrong in the
// words an operator can act on; it wraps ErrKeyRevoked for an empty p= and
// ErrNotKeyRecord for TXT records that are not DKIM keys at all (no p=, or
// a v= other than DKIM1), which callers skip when several TXT records share
// the name. A revoked key comes back with the record and ErrKeyRevoked, so
// that the caller can still tell its k= and flags.
func ParseKeyRecord(s string) (*KeyRecord, error) {
	r, err := parseKeyRecord(s)
	if err != nil && len(s) == maxTXTString && !errors.Is(err, ErrNotKeyRecord) && !errors.Is(err, ErrKeyRevoked) {
		// A 2048-bit RSA record is about 410 bytes; one TXT string
		// holds 255 (RFC 1035 §3.3). A record of exactly 255 bytes
		// whose key does not parse was cut there: by a DNS panel, or a
		// zone file with the whole record in one quoted string.
		err = fmt.Errorf("%w (%v)", ErrRecordCut, err)
	}
	return r, err
}

// maxTXTString is the most bytes one TXT character-string holds.
const maxTXTString = 255

// ErrRecordCut is a key record that ends at 255 bytes, the size of one
// TXT string, with its key incomplete.
var ErrRecordCut = errors.New("key record cut at 255 bytes, the most one TXT string holds: p= is incomplete")

func parseKeyRecord(s string) (*KeyRecord, error) {
	tags, err := ParseTagList(s)
	if err != nil {
		return nil, fmt.Errorf("%w: key record: %v", ErrNotKeyRecord, err)
	}
	r := &KeyRecord{KeyType: "rsa"}
	if v, ok := tags.Get("v"); ok {
		r.Version = v
		if v != "DKIM1" {
			return nil, fmt.Errorf("%w: key record has v=%s, not DKIM1", ErrNotKeyRecord, v)
		}
	}
	p, ok := tags.Get("p")
	if !ok {
		return nil, fmt.Errorf("%w: key record has no p= tag", ErrNotKeyRecord)
	}
	r.P = StripFWS(p)
	if k, ok := tags.Get("k"); ok {
		r.KeyType = strings.ToLower(k)
	}
	if h, ok := tags.Get("h"); ok {
		r.Hashes = SplitColonList(h)
	}
	if sv, ok := tags.Get("s"); ok {
		r.Services = SplitColonList(sv)
	}
	if t, ok := tags.Get("t"); ok {
		r.Flags = SplitColonList(t)
	}
	r.Notes, _ = tags.Get("n")

	switch r.KeyType {
	case "rsa", "ed25519":
	default:
		return r, fmt.Errorf("unknown key type k=%s", r.KeyType)
	}
	if r.P == "" {
		return r, ErrKeyRevoked
	}
	der, err := base64.StdEncoding.DecodeString(r.P)
	if err != nil {
		return r, fmt.Errorf("bad base64 in key record p=")
	}
	switch r.KeyType {
	case "rsa":
		pub, err := parseRSAPublicKey(der)
		if err != nil {
			return r, err
		}
		r.Key, r.Bits = pub, pub.N.BitLen()
	case "ed25519":
		// RFC 8463 §4.2: the raw 32-byte key, not SubjectPublicKeyInfo.
		if len(der) != ed25519.PublicKeySize {
			return r, fmt.Errorf("ed25519 key in p= is %d bytes, want %d", len(der), ed25519.PublicKeySize)
		}
		r.Key, r.Bits = ed25519.PublicKey(der), 256
	}
	return r, nil
}

// parseRSAPublicKey accepts SubjectPublicKeyInfo, which RFC 6376 §3.6.1
// specifies, and a bare PKCS#1 RSAPublicKey, which some generators publish
// and every major verifier accepts.
func parseRSAPublicKey(der []byte) (*rsa.PublicKey, error) {
	if k, err := x509.ParsePKIXPublicKey(der); err == nil {
		pub, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("key record p= holds a %T key, not RSA", k)
		}
		return pub, nil
	}
	if pub, err := x509.ParsePKCS1PublicKey(der); err == nil {
		return pub, nil
	}
	return nil, fmt.Errorf("key record p= is not an RSA public key")
}

// EncodePublicKey returns the p= value for a public key: SPKI for RSA, the
// raw key for Ed25519 (RFC 8463 §4.2).
func EncodePublicKey(pub crypto.PublicKey) (keyType, p string, err error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", "", err
		}
		return "rsa", base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "ed25519", base64.StdEncoding.EncodeToString(k), nil
	}
	return "", "", fmt.Errorf("unsupported public key type %T", pub)
}
