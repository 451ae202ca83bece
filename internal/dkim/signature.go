package dkim

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Signature is a parsed DKIM-Signature field (RFC 6376 §3.5).
type Signature struct {
	Field Field
	Tags  TagList

	Domain    string // d= (SDID), lower-cased
	Identity  string // i= (AUID), decoded; "@"+d when absent
	Selector  string // s=
	Algorithm string // a= as written
	KeyType   string // "rsa" or "ed25519"
	Hash      string // "sha256" or "sha1"

	HeaderCanon, BodyCanon Canon
	Canonicalization       string   // c= as written, "simple/simple" when absent
	Headers                []string // h=
	BodyHash               []byte   // bh=
	Sig                    []byte   // b=
	B                      string   // b= with white space removed, for header.b
	Time, Expire           time.Time
	HasTime, HasExpire     bool
	Length                 int64 // l=, or -1

	// dnsSelector and dnsDomain are s= and d= as the DNS knows them:
	// A-labels for U-labels (RFC 8616 §4).
	dnsSelector, dnsDomain string

	// Err is why the signature cannot be evaluated. An rsa-sha1
	// signature is evaluated: only a verifier can tell whether it
	// verifies, and it must not be a pass when it does (ErrSHA1).
	Err error
}

// DNSName is where the key lives: selector._domainkey.domain (RFC 6376
// §3.6.2.1), with U-labels as A-labels (RFC 8616 §4).
func (s *Signature) DNSName() string {
	if s.dnsDomain == "" {
		return DNSName(s.Selector, s.Domain) // not a usable signature
	}
	return DNSName(s.dnsSelector, s.dnsDomain)
}

// NewHash returns a hash of the kind a= names, for the body hash.
func (s *Signature) NewHash() hash.Hash {
	if s.Hash == "sha1" {
		return sha1.New()
	}
	return sha256.New()
}

// AppendHeaderHashInput appends what the header hash of s covers in h:
// the fields h= names, canonicalized, then this DKIM-Signature field with
// its b= value removed and no final CRLF (RFC 6376 §3.7,
// https://www.rfc-editor.org/rfc/rfc6376#section-3.7).
func (s *Signature) AppendHeaderHashInput(dst []byte, h Header) []byte {
	dst = h.AppendSignedHeaders(dst, s.HeaderCanon, s.Headers)
	return AppendSignatureField(dst, s.HeaderCanon, s.withoutB())
}

// withoutB returns the raw signature field with the b= value, including
// the white space around it, removed (RFC 6376 §3.7).
func (s *Signature) withoutB() string {
	t, _ := s.Tags.Lookup("b")
	off := len(s.Field.Raw) - len(s.Field.Value())
	return s.Field.Raw[:off+t.Start] + s.Field.Raw[off+t.End:]
}

// ErrSHA1 is an rsa-sha1 signature that verifies, which RFC 8301 §3.1
// forbids verifiers to consider valid: its result is policy, never pass.
// One that does not verify fails like any other signature.
// https://www.rfc-editor.org/rfc/rfc8301#section-3.1
var ErrSHA1 = errors.New("rsa-sha1 is not accepted (RFC 8301)")

var errSyntax = errors.New("malformed signature")

// ParseSignature parses one DKIM-Signature field. Problems with the
// signature itself are reported in Err (the first one found, in the order
// RFC 6376 §6.1.1 checks them) with as many fields filled as could be read,
// so that Authentication-Results can still say which signature it was.
func ParseSignature(f Field) *Signature {
	s := &Signature{Field: f, Length: -1}
	s.Err = s.parse()
	return s
}

func (s *Signature) parse() error {
	tags, err := ParseTagList(s.Field.Value())
	if err != nil {
		// Name the broken signature as well as we can.
		s.name(ParseTagListLoose(s.Field.Value()))
		if errors.Is(err, errDuplicateTag) {
			return err
		}
		return fmt.Errorf("%w: %v", errSyntax, err)
	}
	s.Tags = tags
	// Fill what A-R shows first, so that even a broken signature is named.
	s.name(tags)

	v, ok := tags.Get("v")
	if !ok {
		return errors.New("signature missing required tag v=")
	}
	if v != "1" {
		return fmt.Errorf("unsupported signature version v=%s", v)
	}
	for _, t := range []string{"a", "b", "bh", "d", "h", "s"} {
		if _, ok := tags.Get(t); !ok {
			return fmt.Errorf("signature missing required tag %s=", t)
		}
	}

	kt, hash, ok := strings.Cut(strings.ToLower(s.Algorithm), "-")
	switch {
	case !ok:
		return fmt.Errorf("unknown algorithm a=%s", s.Algorithm)
	case (kt == "rsa" || kt == "ed25519") && hash == "sha256", kt == "rsa" && hash == "sha1":
		// rsa-sha1 is parsed and verified like rsa-sha256, so that a
		// broken one fails (RFC 6376 §6.1); the verifier makes one that
		// verifies policy, as RFC 8301 §3.1 forbids accepting it.
		s.KeyType, s.Hash = kt, hash
	default:
		return fmt.Errorf("unknown algorithm a=%s", s.Algorithm)
	}

	s.Canonicalization = "simple/simple"
	if c, ok := tags.Get("c"); ok {
		s.Canonicalization = c
		if s.HeaderCanon, s.BodyCanon, err = ParseCanon(c); err != nil {
			return err
		}
	}

	if s.dnsDomain, ok = lookupName(s.Domain); !ok || !strings.Contains(s.Domain, ".") {
		return fmt.Errorf("d=%s is not a domain name", Sanitize(s.Domain))
	}
	if s.dnsSelector, ok = lookupName(s.Selector); !ok {
		return fmt.Errorf("s=%s is not a valid selector", Sanitize(s.Selector))
	}
	s.Identity = "@" + s.Domain
	if i, ok := tags.Get("i"); ok {
		id, err := decodeQuotedPrintable(i)
		if err != nil {
			return fmt.Errorf("i= is not valid quoted-printable")
		}
		s.Identity = id
		at := strings.LastIndexByte(id, '@')
		if at < 0 {
			return fmt.Errorf("i=%s has no @", Sanitize(id))
		}
		// RFC 6376 §3.5: the AUID's domain is d= or a subdomain of it.
		idom := strings.ToLower(strings.TrimSuffix(id[at+1:], "."))
		if idom != s.Domain && !strings.HasSuffix(idom, "."+s.Domain) {
			return fmt.Errorf("i= domain %s is not d=%s or a subdomain of it", Sanitize(idom), s.Domain)
		}
	}

	s.Headers = SplitColonList(mustGet(tags, "h"))
	hasFrom := false
	for _, h := range s.Headers {
		if strings.EqualFold(h, "from") {
			hasFrom = true
		}
	}
	if !hasFrom {
		// RFC 6376 §5.4: "The From header field MUST be signed".
		//lint:ignore ST1005 the reason names the From field, as operators search for it
		return errors.New("From header not signed (h= has no From)")
	}

	if s.BodyHash, err = decodeB64(mustGet(tags, "bh")); err != nil {
		return fmt.Errorf("bad base64 in bh=")
	}
	if s.Sig, err = decodeB64(s.B); err != nil || len(s.Sig) == 0 {
		return fmt.Errorf("bad base64 in b=")
	}

	if q, ok := tags.Get("q"); ok {
		dnsTXT := false
		for _, m := range SplitColonList(q) {
			if strings.EqualFold(m, "dns/txt") {
				dnsTXT = true
			}
		}
		if !dnsTXT {
			return fmt.Errorf("unknown query method q=%s", Sanitize(q))
		}
	}
	if t, ok := tags.Get("t"); ok {
		if s.Time, err = parseTime(t); err != nil {
			return fmt.Errorf("bad t= timestamp %q", Sanitize(t))
		}
		s.HasTime = true
	}
	if x, ok := tags.Get("x"); ok {
		if s.Expire, err = parseTime(x); err != nil {
			return fmt.Errorf("bad x= timestamp %q", Sanitize(x))
		}
		s.HasExpire = true
		// RFC 6376 §3.5: x= MUST be greater than t=.
		if s.HasTime && !s.Expire.After(s.Time) {
			return errors.New("x= is not after t=")
		}
	}
	if l, ok := tags.Get("l"); ok {
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil || n < 0 || len(l) > 76 {
			return fmt.Errorf("bad l= body length %q", Sanitize(l))
		}
		s.Length = n
	}
	return nil
}

// name fills the fields that identify a signature in A-R and logs.
func (s *Signature) name(tags TagList) {
	if d, ok := tags.Get("d"); ok {
		s.Domain = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	s.Selector, _ = tags.Get("s")
	s.Algorithm, _ = tags.Get("a")
	if b, ok := tags.Get("b"); ok {
		s.B = StripFWS(b)
	}
}

func mustGet(tags TagList, name string) string {
	v, _ := tags.Get(name)
	return v
}

func decodeB64(s string) ([]byte, error) {
	s = StripFWS(s)
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	// Some signers drop the padding.
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// parseTime reads t= and x=: up to 12 digits of seconds since the epoch
// (RFC 6376 §3.5).
func parseTime(s string) (time.Time, error) {
	if s == "" || len(s) > 12 {
		return time.Time{}, errors.New("bad timestamp")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(int64(n), 0), nil
}

// lookupName returns the name to look up in DNS for a d= or s= value, or
// false when it is not a domain name (RFC 6376 §3.5: d= is a domain name,
// s= one or more labels). Labels of ASCII letters, digits, '-' and '_'
// (which some signers use) stay as they are; a label with bytes beyond
// ASCII must be a U-label, valid UTF-8 that IDNA accepts, and is looked up
// as its A-label (RFC 8616 §4: the DNS holds A-labels). Anything else,
// such as a Latin-1 byte, names nothing that can exist.
// https://www.rfc-editor.org/rfc/rfc8616#section-4
func lookupName(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	labels := strings.Split(s, ".")
	for i, l := range labels {
		if !isASCII(l) {
			a, err := idna.Lookup.ToASCII(l)
			if err != nil || !utf8.ValidString(l) || strings.Contains(a, ".") {
				return "", false
			}
			l = a
			labels[i] = a
		}
		if l == "" || len(l) > 63 {
			return "", false
		}
		for j := 0; j < len(l); j++ {
			c := l[j]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	name := strings.Join(labels, ".")
	return name, len(name) <= 253
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Sanitize makes text from a message safe to quote in a reason or a log:
// control characters (a CR LF could start a new header field) become '?',
// and it is cut at 64 bytes with "...".
func Sanitize(s string) string { return SanitizeN(s, 64) }

// SanitizeN is Sanitize with room for n bytes (0: no bound), for text that
// must be kept whole, such as a domain in Authentication-Results.
func SanitizeN(s string, n int) string {
	if n > 0 && len(s) > n {
		s = s[:n] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// CopiedField is one header field of z=, as the signer saw it.
type CopiedField struct{ Name, Value string }

// CopiedHeaders decodes z= (RFC 6376 §3.5): copies of header fields as
// the signer saw them, which tell a verifier which signed field changed.
// It returns nil when there is no z=. The values are dkim-quoted-printable
// ("|" is =7C, a space =20).
func (s *Signature) CopiedHeaders() ([]CopiedField, error) {
	z, ok := s.Tags.Get("z")
	if !ok {
		return nil, nil
	}
	var out []CopiedField
	for _, c := range strings.Split(z, "|") {
		name, value, ok := strings.Cut(c, ":")
		name = StripFWS(name)
		if !ok || name == "" {
			return out, fmt.Errorf("z= copy %q has no field name", c)
		}
		v, err := decodeQuotedPrintable(value)
		if err != nil {
			return out, fmt.Errorf("z= copy of %s: %w", name, err)
		}
		out = append(out, CopiedField{name, v})
	}
	return out, nil
}
