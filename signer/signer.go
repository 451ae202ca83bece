// Package signer produces DKIM-Signature fields (RFC 6376 §5) for a message
// that arrives as a header block and then body chunks, as a milter sees it.
// The body is canonicalized and hashed as it streams and never kept; one
// body hash serves every signature that shares its canonicalization, so
// dual RSA + Ed25519 signing (RFC 8463 §6) hashes the body once.
//
// go-msgauth's dkim.Signer would do most of this, but it hashes the body
// once per key, takes t= from the wall clock (no seam for tests), orders
// tags alphabetically and cannot fold h=; we need all four.
package signer

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// ErrNoFrom: a message without a From field cannot be signed; RFC 6376
// §5.4 requires From in h=.
var ErrNoFrom = errors.New("message has no From header field")

// Params describes one signature.
type Params struct {
	Domain   string // d=
	Selector string // s=
	Identity string // i=, optional
	Key      crypto.Signer

	HeaderCanon, BodyCanon dkim.Canon
	// Headers are the field names to sign, in h= order. Each present field
	// is listed once per instance; absent ones are left out.
	Headers []string
	// Oversign names are listed once more than they occur, so that an
	// instance added later breaks the signature (RFC 6376 §8.15), also
	// when the message has none.
	Oversign []string
	// OversignIfPresent names are listed once more than they occur when
	// the message has them: none may be added to those it has, but one it
	// does not have may be (a list's List-Unsubscribe).
	OversignIfPresent []string

	Time   time.Time     // t=
	Expire time.Duration // x= = t= + Expire; 0 leaves x= out

	// Gate, when set, bounds how many private-key operations run at once
	// (a token is held while signing). An RSA-2048 signature is a
	// millisecond of pure CPU: with more of them running than there are
	// CPUs, the scheduler slices them and each runs cache-cold, so 64
	// sessions got less done than 8. With a gate of GOMAXPROCS, the others
	// wait, asleep, and each signature runs to its end.
	Gate chan struct{}
}

// algorithm returns the a= value for a key.
func algorithm(key crypto.Signer) (string, error) {
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		return "rsa-sha256", nil
	case ed25519.PublicKey:
		return "ed25519-sha256", nil
	default:
		return "", fmt.Errorf("unsupported key type %T: DKIM signs with RSA or Ed25519", k)
	}
}

// Signer signs one message with one or more keys.
type Signer struct {
	header dkim.Header
	params []Params
	algs   []string
	bodies [2]*dkim.BodyHasher // by body canonicalization
}

// New starts signing a message whose header block is h.
func New(h dkim.Header, params []Params) (*Signer, error) {
	if h.Count("From") == 0 {
		return nil, ErrNoFrom
	}
	s := &Signer{header: h, params: params}
	for _, p := range params {
		alg, err := algorithm(p.Key)
		if err != nil {
			return nil, fmt.Errorf("d=%s s=%s: %w", p.Domain, p.Selector, err)
		}
		if p.Domain == "" || p.Selector == "" {
			return nil, fmt.Errorf("signature needs a domain and a selector")
		}
		// d= and s= are written as they are: a byte that could end the
		// tag or the field would let whoever chose them (a From domain
		// standing in for '%') add tags of their own.
		if i := strings.IndexFunc(p.Domain+p.Selector, func(r rune) bool {
			return r <= ' ' || r == ';' || r == '=' || r == '"' || r == 0x7f
		}); i >= 0 {
			return nil, fmt.Errorf("d=%q s=%q: not a domain name and a selector", p.Domain, p.Selector)
		}
		s.algs = append(s.algs, alg)
		if s.bodies[p.BodyCanon] == nil {
			s.bodies[p.BodyCanon] = dkim.NewBodyHasher(p.BodyCanon, sha256.New(), -1)
		}
	}
	return s, nil
}

// Write feeds a body chunk. It never fails.
func (s *Signer) Write(p []byte) (int, error) {
	for _, b := range s.bodies {
		if b != nil {
			b.Write(p)
		}
	}
	return len(p), nil
}

// Sign finishes the body and returns one DKIM-Signature field value per
// Params, in order. Each value starts with the single space that follows
// the colon and folds with CRLF TAB: it is the exact text that was signed,
// so even simple header canonicalization survives (Postfix writes it back
// byte for byte when the milter negotiated SMFIP_HDR_LEADSPC).
func (s *Signer) Sign() ([]string, error) {
	var bh [2]string
	for c, b := range s.bodies {
		if b != nil {
			bh[c] = base64.StdEncoding.EncodeToString(b.Sum())
		}
	}
	out := make([]string, len(s.params))
	for i, p := range s.params {
		v, err := s.sign(p, s.algs[i], bh[p.BodyCanon])
		if err != nil {
			return nil, fmt.Errorf("d=%s s=%s: %w", p.Domain, p.Selector, err)
		}
		out[i] = v
	}
	return out, nil
}

func (s *Signer) sign(p Params, alg, bh string) (string, error) {
	f := dkim.NewFolder("DKIM-Signature")
	f.Word("v=1;")
	f.Word("a=" + alg + ";")
	f.Word("c=" + p.HeaderCanon.String() + "/" + p.BodyCanon.String() + ";")
	f.Word("d=" + p.Domain + ";")
	if p.Identity != "" {
		f.Word("i=" + encodeQP(p.Identity) + ";")
	}
	f.Word("s=" + p.Selector + ";")
	t := p.Time
	if t.IsZero() {
		t = time.Now()
	}
	f.Word("t=" + strconv.FormatInt(t.Unix(), 10) + ";")
	if p.Expire > 0 {
		f.Word("x=" + strconv.FormatInt(t.Add(p.Expire).Unix(), 10) + ";")
	}
	names := s.headerList(p)
	for i, n := range names {
		sep := ":"
		if i == len(names)-1 {
			sep = ";"
		}
		if i == 0 {
			f.Word("h=" + n + sep)
		} else {
			f.Join(n + sep)
		}
	}
	f.Word("bh=" + bh + ";")
	f.Word("b=")
	b, err := signPrefix(s.header, p, names, f.String())
	if err != nil {
		return "", err
	}
	f.Fill(b)
	return f.String(), nil
}

// signPrefix hashes the header fields of h= and the signature field
// value as far as it is written (up to "b="), signs, and returns the b=
// value.
func signPrefix(h dkim.Header, p Params, names []string, prefix string) (string, error) {
	data := h.AppendSignedHeaders(make([]byte, 0, 2048), p.HeaderCanon, names)
	data = dkim.AppendSignatureField(data, p.HeaderCanon, "DKIM-Signature:"+prefix)
	sum := sha256.Sum256(data)
	var sig []byte
	var err error
	if p.Gate != nil {
		p.Gate <- struct{}{}
		defer func() { <-p.Gate }()
	}
	if _, ok := p.Key.Public().(ed25519.PublicKey); ok {
		// RFC 8463 §3: Ed25519 signs the SHA-256 hash (PureEdDSA).
		sig, err = p.Key.Sign(rand.Reader, sum[:], crypto.Hash(0))
	} else {
		sig, err = p.Key.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// headerList builds h=: each configured name once per instance present,
// plus once more if it is oversigned, or oversigned when present and
// present (RFC 6376 §5.4.2).
func (s *Signer) headerList(p Params) []string {
	var names []string
	for _, n := range p.Headers {
		c := s.header.Count(n)
		if contains(p.Oversign, n) || c > 0 && contains(p.OversignIfPresent, n) {
			c++
		}
		for ; c > 0; c-- {
			names = append(names, strings.ToLower(n))
		}
	}
	return names
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// encodeQP encodes i= as dkim-quoted-printable (RFC 6376 §2.11): bytes
// outside the safe set become =XX.
func encodeQP(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c > 0x20 && c < 0x7f && c != ';' && c != '=' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	return b.String()
}
