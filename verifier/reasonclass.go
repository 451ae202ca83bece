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
	return "malformed"
}

var reasonClasses = []struct {
	err  error
	name string
}{
	{ErrBodyHash, "body_hash"},
	{ErrSignature, "signature"},
	{ErrNoKey, "no_key"},
	{ErrKeyRevoked, "key_revoked"},
	{ErrExpired, "expired"},
	{ErrFuture, "future"},
	{ErrDNSTimeout, "dns_timeout"},
	{ErrDNSFailure, "dns_failure"},
	{dkim.ErrKeyTooShort, "key_too_short"},
	{dkim.ErrSHA1, "rsa_sha1"},
	{ErrUnsignedContent, "body_length"},
	{ErrBodyTooShort, "body_length"},
	{ErrUnsignedFrom, "unsigned_from"},
	{ErrTooMany, "too_many"},
	{ErrTooManyHeaders, "header_limit"},
	{ErrHeaderTooLarge, "header_limit"},
}
