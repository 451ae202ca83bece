package verifier

import (
	"errors"
	"fmt"

	"github.com/dkimmilter/dkimmilter/internal/authres"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// Result is a DKIM result word of RFC 8601 §2.7.1
// (https://www.rfc-editor.org/rfc/rfc8601#section-2.7.1).
type Result string

const (
	None      Result = "none"
	Pass      Result = "pass"
	Fail      Result = "fail"
	Neutral   Result = "neutral"
	Policy    Result = "policy"
	TempError Result = "temperror"
	PermError Result = "permerror"
)

// The failure classes, one sentinel each, so that callers (the milter's
// actions, metrics, the verify command) can tell them apart with errors.Is.
// Their texts are the reasons stamped in Authentication-Results: the words
// operators search for. Two more come from internal/dkim, where the facts
// they are about live: dkim.ErrKeyTooShort and dkim.ErrSHA1.
var (
	ErrBodyHash        = errors.New("body hash did not verify")
	ErrSignature       = errors.New("signature did not verify")
	ErrNoKey           = errors.New("no key for signature")
	ErrKeyRevoked      = errors.New("key revoked")
	ErrExpired         = errors.New("signature expired")
	ErrFuture          = errors.New("signature timestamp in the future")
	ErrDNSTimeout      = errors.New("DNS timeout")
	ErrDNSFailure      = errors.New("DNS server failure")
	ErrUnsignedContent = errors.New("unsigned content after l=")
	ErrUnsignedFrom    = errors.New("unsigned From header")
	ErrTooMany         = errors.New("too many signatures")
	ErrBodyTooShort    = errors.New("l= is longer than the body")

	// A message whose header passes the milter's [limits] is not
	// verified at all (its signatures may be in the part not kept).
	ErrTooManyHeaders = errors.New("too many header fields")
	ErrHeaderTooLarge = errors.New("header too large")
)

// Verification is the result of one signature, with everything
// Authentication-Results and the log need to name it.
type Verification struct {
	Result Result
	Err    error // nil for pass; errors.Is against the sentinels above

	Domain    string // header.d
	Identity  string // header.i
	Selector  string // header.s
	Algorithm string // header.a
	B         string // the whole b= value; A-R prints a unique prefix

	DNSName       string // the key's DNS name, when it was looked up
	Record        string // the TXT record used, when one was found
	KeyType       string // "rsa" or "ed25519", from the key record
	KeyBits       int    // 0 when no key was read
	Testing       bool   // key record t=y
	Authenticated bool   // the resolver validated the answer (AD bit)
	Stale         bool   // the key record was served stale: DNS failed (RFC 8767)

	Signature *dkim.Signature // the parsed field (nil only for "none")
}

// AuthResults returns vs in the form Authentication-Results takes them
// (authres.Format).
func AuthResults(vs []*Verification) []authres.DKIM {
	out := make([]authres.DKIM, len(vs))
	for i, v := range vs {
		out[i] = authres.DKIM{
			Result: string(v.Result), Reason: v.Reason(), Comment: v.Comment(),
			Domain: v.Domain, Identity: v.Identity, Selector: v.Selector, Algorithm: v.Algorithm, B: v.B,
		}
	}
	return out
}

// Reason is the text for A-R reason=; empty for pass.
func (v *Verification) Reason() string {
	if v.Err == nil {
		return ""
	}
	return v.Err.Error()
}

// Comment is the A-R comment: key size and type, the testing flag,
// which tells the operator that the domain asked not to be judged on it,
// and "stale key record" when DNS failed and the key came from a record
// past its TTL (RFC 8767): a reader of the field learns that the key was
// not checked against DNS for this message.
func (v *Verification) Comment() string {
	var c string
	switch {
	case v.KeyType == "ed25519":
		c = "ed25519 key"
	case v.KeyBits > 0:
		c = fmt.Sprintf("%d-bit %s key", v.KeyBits, v.KeyType)
	}
	add := func(s string) {
		if c != "" {
			c += "; "
		}
		c += s
	}
	if v.Testing {
		add("testing key")
	}
	if v.Stale {
		add("stale key record")
	}
	return c
}
