package milter

import (
	"errors"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// outcome is what [actions] keys answer: one per key, named as the key,
// as OpenDKIM's On-* settings. It is the outcome= of the log line.
type outcome uint8

// The verification outcomes come first, in the order that decides when a
// message has several (doc/decision.md, "Actions"): a temporary failure
// first, since a retry may bring a pass; then a header we could not
// verify at all; then signatures that are broken, before those whose key
// is missing, before those that verify but are not acceptable.
const (
	noOutcome         outcome = iota
	outDNSError               // temperror: a key lookup failed for now
	outSecurity               // the header passed [limits]: not verified
	outBadSignature           // fail, or a permerror other than a missing key
	outKeyNotFound            // permerror: no key record at the selector's name
	outPolicy                 // policy: verifies, but is not acceptable
	outNoSignature            // no DKIM-Signature at all (dkim=none)
	outSignError              // a signing key could not be used
	outInternalError          // dkimmilter failed on the message (a recovered panic)
	outSenderMismatch         // sign.sender_binding: the From is not one the login may use
)

var outcomeNames = [...]string{
	noOutcome:        "",
	outDNSError:      "dns_error",
	outSecurity:      "security",
	outBadSignature:  "bad_signature",
	outKeyNotFound:   "key_not_found",
	outPolicy:        "policy",
	outNoSignature:   "no_signature",
	outSignError:     "sign_error",
	outInternalError: "internal_error",

	outSenderMismatch: "sender_mismatch",
}

// String is the outcome as the log writes it: the name of its [actions]
// key.
func (o outcome) String() string { return outcomeNames[o] }

// action is what acts configures for o.
func (o outcome) action(acts config.Actions) config.Action {
	switch o {
	case outDNSError:
		return acts.DNSError
	case outSecurity:
		return acts.Security
	case outBadSignature:
		return acts.BadSignature
	case outKeyNotFound:
		return acts.KeyNotFound
	case outPolicy:
		return acts.Policy
	case outNoSignature:
		return acts.NoSignature
	case outSignError:
		return acts.SignError
	case outInternalError:
		return acts.InternalError
	case outSenderMismatch:
		return acts.SenderMismatch
	}
	return config.Accept
}

// verifyOutcome classifies a verified message: no outcome when a
// signature passed, since one good signature is enough for the message
// (RFC 6376 §6.1, https://www.rfc-editor.org/rfc/rfc6376#section-6.1);
// no_signature when it has none; otherwise the first outcome in the order
// above, with the first signature that has it (for its reason). A
// signature whose key record says t=y is ignored: the domain is testing,
// and asks that its signatures not be judged (RFC 6376 §3.6.1); OpenDKIM
// too turns a reject, tempfail or discard into accept for one.
func verifyOutcome(results []*verifier.Verification) (outcome, *verifier.Verification) {
	if len(results) == 0 {
		return outNoSignature, nil
	}
	best, by := noOutcome, (*verifier.Verification)(nil)
	for _, v := range results {
		if v.Result == verifier.Pass {
			return noOutcome, nil
		}
		if v.Testing {
			continue
		}
		if o := resultOutcome(v); o != noOutcome && (best == noOutcome || o < best) {
			best, by = o, v
		}
	}
	return best, by
}

// resultOutcome is the outcome of one signature that did not pass.
func resultOutcome(v *verifier.Verification) outcome {
	switch v.Result {
	case verifier.TempError:
		return outDNSError
	case verifier.Fail:
		return outBadSignature
	case verifier.Policy:
		return outPolicy
	case verifier.PermError:
		switch {
		case errors.Is(v.Err, verifier.ErrTooManyHeaders), errors.Is(v.Err, verifier.ErrHeaderTooLarge):
			return outSecurity
		case errors.Is(v.Err, verifier.ErrNoKey):
			// No record at the name (NXDOMAIN, or no TXT record), or
			// several TXT records, none a DKIM key. A single record
			// that is there but is not a usable key (broken, another
			// kind of TXT record), or revoked with an empty p=, is a
			// bad signature, as OpenDKIM's key syntax errors and
			// REVOKED are.
			return outKeyNotFound
		}
		return outBadSignature
	}
	return noOutcome // neutral: not evaluated
}
