package verifier

import (
	"errors"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// ReasonClass names the class of a verification error in a few fixed
// words, for metrics labels and scripts: reason texts carry details (key
// sizes, tag values) that would make label values unbounded.
func ReasonClass(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range reasonClasses {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return malformed
}

// malformed is the class of every other problem of a signature or a key
// record: always a permerror.
const malformed = "malformed"

// reasonClasses lists each sentinel with its class and the result it
// comes with.
var reasonClasses = []struct {
	err    error
	name   string
	result Result
}{
	{ErrBodyHash, "body_hash", Fail},
	{ErrSignature, "signature", Fail},
	{ErrNoKey, "no_key", PermError},
	{ErrKeyRevoked, "key_revoked", PermError},
	{ErrExpired, "expired", PermError},
	{ErrFuture, "future", PermError},
	{ErrDNSTimeout, "dns_timeout", TempError},
	{ErrDNSFailure, "dns_failure", TempError},
	{dkim.ErrKeyTooShort, "key_too_short", Policy},
	{dkim.ErrSHA1, "rsa_sha1", Policy},
	{ErrUnsignedContent, "body_length", Policy},
	{ErrBodyTooShort, "body_length", Fail},
	{ErrUnsignedFrom, "unsigned_from", Policy},
	{ErrTooMany, "too_many", Neutral},
	{ErrTooManyHeaders, "header_limit", PermError},
	{ErrHeaderTooLarge, "header_limit", PermError},
}

// ResultClass is a result with the class of its reason, as metrics label
// a verification.
type ResultClass struct {
	Result Result
	Class  string // ReasonClass of the error; "" for pass and none
}

// ResultClasses lists every pair a verification can have, none (an
// unsigned message) included, so that metrics can export each at zero
// before the first message.
func ResultClasses() []ResultClass {
	out := []ResultClass{{Pass, ""}, {None, ""}}
	for _, c := range reasonClasses {
		rc := ResultClass{c.result, c.name}
		if !containsClass(out, rc) {
			out = append(out, rc)
		}
	}
	return append(out, ResultClass{PermError, malformed})
}

func containsClass(list []ResultClass, rc ResultClass) bool {
	for _, x := range list {
		if x == rc {
			return true
		}
	}
	return false
}
