package dkim

import "errors"

// RSA key sizes, RFC 8301 §3.2: signers must use keys of at least 1024
// bits and should use 2048, and verifiers must be able to verify keys of
// 1024 to 4096 bits. https://www.rfc-editor.org/rfc/rfc8301#section-3.2
const (
	// MinRSABits is the smallest RSA key we sign with, and the smallest
	// the verifier accepts whatever verify.min_rsa_bits says.
	MinRSABits = 1024
	// RecommendedRSABits is the size signers should use: the size keys
	// gen makes by default, and under which we warn.
	RecommendedRSABits = 2048
	// VerifiableRSABits is the largest size every verifier must accept:
	// a larger key may be treated as no key by some receivers.
	VerifiableRSABits = 4096
	// MaxRSABits is the largest RSA key we make, sign with or verify.
	// Larger keys are a denial-of-service lever more than a security
	// gain, and their records no longer fit a UDP answer.
	MaxRSABits = 8192
)

// ErrKeyTooShort is an RSA key under MinRSABits (for signing, or when
// verifying, under verify.min_rsa_bits). Its text is the reason stamped in
// Authentication-Results, where the size follows it: "key too short (512
// bits)".
var ErrKeyTooShort = errors.New("key too short")
