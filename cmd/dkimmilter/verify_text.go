package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dmarc"
	"github.com/dkimmilter/dkimmilter/internal/explain"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// writeVerifyText prints the report for a Postfix admin: the A-R field the
// milter would add, then one block per signature with its result first.
// Everything that comes from the message or the DNS goes through clean:
// a terminal must not run escape sequences a sender chose.
func writeVerifyText(w io.Writer, name, ar string, verifies bool, rep *explain.Report) {
	fmt.Fprintf(w, "%s\n", clean(name))
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if verifies {
		fmt.Fprint(w, "\nthe milter would add:\n")
	} else {
		fmt.Fprint(w, "\nmode has no \"v\": the milter does not verify; with verification on it would add:\n")
	}
	fmt.Fprintf(w, "Authentication-Results:%s\n", clean(strings.ReplaceAll(ar, "\r\n", "\n")))
	if rep.AuthorErr != nil {
		fmt.Fprintf(w, "\nFrom domain: none (%s): DMARC alignment not evaluated\n", clean(rep.AuthorErr.Error()))
	} else {
		fmt.Fprintf(w, "\nFrom domain: %s\n", clean(rep.AuthorDomain))
	}
	if len(rep.Signatures) == 0 {
		fmt.Fprintln(w, "\nno DKIM-Signature: the message is not signed (dkim=none). If it should be,\nthe sender's signer did not sign it, or a relay removed the signature.")
		return
	}
	for i, e := range rep.Signatures {
		fmt.Fprintln(w)
		writeSignatureText(w, i+1, len(rep.Signatures), e, rep.Now)
	}
}

func writeSignatureText(w io.Writer, n, of int, e *explain.Explanation, now time.Time) {
	v, s := e.Verification, e.Verification.Signature
	line := fmt.Sprintf("signature %d of %d: %s", n, of, v.Result)
	if r := v.Reason(); r != "" {
		line += ": " + r
	}
	if c := v.Comment(); c != "" {
		line += " (" + c + ")"
	}
	fmt.Fprintln(w, clean(line))
	if s == nil {
		return
	}
	fmt.Fprintf(w, "  d=%s s=%s a=%s c=%s i=%s\n", clean(s.Domain), clean(s.Selector), clean(s.Algorithm), clean(s.Canonicalization), clean(s.Identity))
	if len(s.Headers) > 0 {
		fmt.Fprintf(w, "  h=%s\n", clean(strings.Join(s.Headers, ":")))
	}
	if s.HasTime {
		fmt.Fprintf(w, "  t=%s (%s)\n", date(s.Time), relative(s.Time, now, "ago", "in the future"))
	}
	if s.HasExpire {
		state := "expires in " + span(s.Expire.Sub(now))
		if now.After(s.Expire) {
			state = "expired " + span(now.Sub(s.Expire)) + " ago"
		}
		fmt.Fprintf(w, "  x=%s (%s)\n", date(s.Expire), state)
	}
	if s.Length >= 0 {
		fmt.Fprintf(w, "  l=%d (only the first %d octets of the canonical body are signed)\n", s.Length, s.Length)
	}
	if errors.Is(v.Err, verifier.ErrTooMany) {
		fmt.Fprintln(w, "  not verified: the message has more signatures than [verify] max_signatures")
		return
	}
	if s.Err != nil {
		fmt.Fprintln(w, "  the signature field itself is unusable: fix the signer")
		return
	}
	writeClockText(w, e)
	writeAlgorithmText(w, e)
	writeKeyText(w, e)
	writeBodyText(w, e)
	writeHeaderText(w, e)
	writeAlignmentText(w, e)
}

func writeClockText(w io.Writer, e *explain.Explanation) {
	c := e.Clock
	if c == nil {
		return
	}
	o := c.Otherwise
	verdict := string(o.Result)
	if r := o.Reason(); r != "" {
		verdict += " (" + r + ")"
	}
	s := e.Verification.Signature
	// An rsa-sha1 signature that verifies is never valid (RFC 8301
	// §3.1), but it is not broken either.
	otherwise := "otherwise valid"
	if o.Result != verifier.Pass {
		otherwise = "otherwise it verifies (rsa-sha1: policy at best)"
	}
	switch {
	case c.Expired && explain.Verified(o):
		verdict += ": expired, " + otherwise
		if s.HasTime {
			verdict += fmt.Sprintf(" (x= is %s after t=: a message delivered or verified later than that fails on the date alone)", span(s.Expire.Sub(s.Time)))
		}
	case c.Expired:
		verdict += ": expired, and broken as well"
	case explain.Verified(o):
		verdict += ": " + otherwise + "; the signer's clock is probably ahead"
	default:
		verdict += ": and broken as well"
	}
	fmt.Fprintf(w, "  clock: verified again as of %s: %s\n", date(c.RunAt), clean(verdict))
}

// writeAlgorithmText says what rsa-sha1 means for the result: RFC 8301
// §3.1 forbids verifiers to consider it valid, so one that verifies is
// policy, and a broken one would be no better once repaired.
func writeAlgorithmText(w io.Writer, e *explain.Explanation) {
	s := e.Verification.Signature
	if s.Hash != "sha1" {
		return
	}
	if errors.Is(e.Detail.Err, dkim.ErrSHA1) {
		fmt.Fprintln(w, "  algorithm: rsa-sha1: the signature verifies, but RFC 8301 §3.1 forbids verifiers to consider rsa-sha1 valid, so it is policy, never pass; the signer must sign with rsa-sha256")
		return
	}
	fmt.Fprintln(w, "  algorithm: rsa-sha1, verified with SHA-1 like any signature; were it intact it would be policy, never pass (RFC 8301 §3.1); the signer must sign with rsa-sha256")
}

func writeKeyText(w io.Writer, e *explain.Explanation) {
	s := e.Verification.Signature
	a := e.DNS
	if a == nil {
		fmt.Fprintf(w, "  key: %s TXT not looked up\n", clean(s.DNSName()))
		return
	}
	fmt.Fprintf(w, "  key: %s TXT: %s\n", clean(a.Name), clean(a.Outcome()))
	if errors.Is(e.Detail.Err, verifier.ErrNoKey) {
		fmt.Fprintf(w, "    hint: no key is published for selector s=%s of %s: a typo in the signer's selector, a record not published yet, or one removed while mail signed with it was in transit\n", clean(s.Selector), clean(s.Domain))
	}
	for _, r := range a.Records {
		fmt.Fprintf(w, "    %q\n", clean(r))
	}
	d := e.Detail
	if d.KeyBits > 0 || d.KeyType != "" {
		testing := "no"
		if d.Testing {
			testing = "yes (t=y: the domain asks that failures be treated like unsigned mail)"
		}
		fmt.Fprintf(w, "    %s, %d bits; testing: %s\n", d.KeyType, d.KeyBits, testing)
	}
	if a.Err == nil {
		dnssec := "not validated (no AD bit)"
		if a.Authenticated {
			dnssec = "validated by the resolver (AD bit)"
		}
		fmt.Fprintf(w, "    DNSSEC: %s\n", dnssec)
	}
}

func writeBodyText(w io.Writer, e *explain.Explanation) {
	b, p := e.BodyHashes, e.Probe
	if p == nil || b == nil {
		return
	}
	fmt.Fprintln(w, "  body hash:")
	fmt.Fprintf(w, "    bh= (signed)       %s\n", b64(b.Signed))
	for _, c := range []struct {
		name string
		sum  []byte
	}{{"relaxed", b.Relaxed}, {"simple", b.Simple}} {
		note := ""
		if c.name == b.Canon.String() {
			note = "  <- c= names this one"
		}
		if string(c.sum) == string(b.Signed) {
			note += "  (matches bh=)"
		}
		fmt.Fprintf(w, "    computed, %-8s %s%s\n", c.name, b64(c.sum), note)
	}
	fmt.Fprintf(w, "  diagnosis: %s", clean(p.Text))
	if len(p.Lines) > 0 {
		what := "the changed lines were"
		if p.Kind == explain.ProbeFooter || p.Kind == explain.ProbeMIMEFooter {
			what = "the removed lines were"
		}
		fmt.Fprintf(w, "; %s:\n", what)
		for _, l := range p.Lines {
			fmt.Fprintf(w, "    | %s\n", clean(l))
		}
	} else {
		fmt.Fprintln(w)
	}
	switch {
	case p.Kind == explain.ProbeNone || p.Kind == explain.ProbeCanonicalization:
	case p.Verifies && e.Verification.Signature.Hash == "sha1":
		fmt.Fprintln(w, "    with that undone, the signature verifies (rsa-sha1: policy, not pass)")
	case p.Verifies:
		fmt.Fprintln(w, "    with that undone, the signature verifies")
	default:
		fmt.Fprintln(w, "    with that undone the body hash matches, but the header signature still fails: signed fields changed too")
	}
}

func writeHeaderText(w io.Writer, e *explain.Explanation) {
	if len(e.SignedHeaders) == 0 {
		return
	}
	fmt.Fprintf(w, "  signed header block (%s canonicalization; exactly what was hashed):\n", e.Verification.Signature.HeaderCanon)
	for _, l := range e.SignedHeaders {
		fmt.Fprintf(w, "    | %s\n", clean(l))
	}
	for _, h := range e.HeaderHints {
		fmt.Fprintf(w, "  hint: %s\n", clean(h))
	}
}

func writeAlignmentText(w io.Writer, e *explain.Explanation) {
	a := e.Alignment
	if a == nil {
		return
	}
	yes := func(b bool) string {
		if b {
			return "aligned"
		}
		return "not aligned"
	}
	fmt.Fprintf(w, "  DMARC alignment of d=%s with From domain %s:\n", clean(a.SigningDomain), clean(a.AuthorDomain))
	if a.Strict {
		fmt.Fprintln(w, "    strict: aligned, relaxed: aligned (the same domain)")
	} else {
		fmt.Fprintf(w, "    strict: not aligned, relaxed: %s\n", yes(a.Relaxed))
		fmt.Fprintf(w, "    organizational domain by %s:\n", a.Method())
		for _, o := range []*dmarc.OrgDomain{a.Author, a.Signing} {
			fmt.Fprintf(w, "      %s -> %s: %s\n", clean(o.Domain), clean(o.Org), clean(o.Why))
		}
		if a.Author.Method == dmarc.OrgByTreeWalk && !a.Author.Found {
			fmt.Fprintf(w, "    no DMARC record for %s: DMARC does not apply to this message\n", clean(a.AuthorDomain))
		}
	}
	if e.Verification.Result != verifier.Pass {
		fmt.Fprintln(w, "    (DMARC counts a signature only when it passes)")
	}
}

func date(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

func relative(t, now time.Time, past, future string) string {
	if t.After(now) {
		return span(t.Sub(now)) + " " + future
	}
	return span(now.Sub(t)) + " " + past
}

// span says a duration the way a person would: days, hours, minutes or
// seconds, rounded.
func span(d time.Duration) string {
	unit := func(n int64, u string) string {
		if n == 1 {
			return "1 " + u
		}
		return fmt.Sprintf("%d %ss", n, u)
	}
	round := func(u time.Duration) int64 { return int64((d + u/2) / u) }
	switch {
	case d >= 48*time.Hour:
		return unit(round(24*time.Hour), "day")
	case d >= time.Hour:
		return unit(round(time.Hour), "hour")
	case d >= time.Minute:
		return unit(round(time.Minute), "minute")
	}
	return unit(round(time.Second), "second")
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// clean replaces control characters (but tab and newline) with '?' so
// that text from a message cannot drive the terminal.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n':
			return r
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return '?'
		}
		return r
	}, s)
}
