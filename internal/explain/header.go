// Hints for a header signature failure ("signature did not verify" with a
// good body hash). The signed header block cannot be rebuilt in general,
// but the fields relays commonly alter can be tried: a Subject tag such as
// "[list] " (Mailman's subject_prefix, spam filters' "[SPAM]"), and a From
// rewritten by a list for DMARC (the original kept in X-Original-From or
// Reply-To). Each guess is checked by verifying the whole signature again,
// so a hint that says "verifies once" is a fact, not a guess.

package explain

import (
	"bytes"
	"context"
	"crypto/rsa"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// maxSubjectTags bounds the bracketed tags tried one by one.
const maxSubjectTags = 4

func headerHints(ctx context.Context, v *verifier.Verifier, h dkim.Header, body []byte, i int, s *dkim.Signature, record string) []string {
	var hints []string
	try := func(idx int, value string) bool {
		h2 := append(dkim.Header(nil), h...)
		h2[idx] = dkim.Field{Name: h[idx].Name, Raw: h[idx].Raw[:len(h[idx].Raw)-len(h[idx].Value())] + value}
		return passes(ctx, v, h2, body, i)
	}
	explained := false

	if idx := signedField(h, s, "Subject"); idx >= 0 {
		for _, c := range subjectTags(h[idx].Value()) {
			if try(idx, c.value) {
				hints = append(hints, fmt.Sprintf("the signature verifies once %q is removed from Subject: a mailing list or a filter tagged the Subject after signing", c.tag))
				explained = true
				break
			}
		}
	}

	if idx := signedField(h, s, "From"); idx >= 0 {
		for _, name := range []string{"X-Original-From", "Reply-To"} {
			for _, f := range h {
				if strings.EqualFold(f.Name, name) && try(idx, f.Value()) {
					hints = append(hints, fmt.Sprintf("the signature verifies with the From that %s holds (%s): a mailing list rewrote From after signing (DMARC mitigation); the list's own signature, if any, is the one that counts",
						name, dkim.Sanitize(strings.TrimSpace(f.Value()))))
					explained = true
				}
			}
		}
		if from := strings.ToLower(h[idx].Value()); !explained && (strings.Contains(from, " via ") || strings.Contains(from, "on behalf of")) {
			hints = append(hints, "From looks rewritten by a mailing list (\"via\" in the display name): lists that rewrite From for DMARC break the author's signature")
		}
	}
	if explained {
		return hints
	}

	// z=: the signer's own copies name the field that changed.
	if zh, found := copiedFieldHints(ctx, v, h, body, i, s); len(zh) > 0 {
		hints = append(hints, zh...)
		if found {
			return hints
		}
	}

	switch keyOpens(record, s) {
	case keyDiffers:
		// The header hash cannot be at fault if the key is not the one
		// that signed: say only that.
		return append(hints, fmt.Sprintf("the key published at %s is not the one that made this signature (the signature does not open with it): the selector's key was replaced while mail signed with the old one was in transit, or the signer signs with another key than the one published", s.DNSName()))
	case keyMatches:
		hints = append(hints, fmt.Sprintf("the key published at %s is the one that made this signature (the signature opens with it to a %s digest), so the signed header changed after signing: a field that h= signs (%s) was altered, added above the signed one, or removed; a relay that tags the Subject, rewrites From or re-encodes a field does this",
			s.DNSName(), s.Hash, strings.Join(uniqueLower(s.Headers), ", ")))
	default:
		// Ed25519: the signature cannot be opened to tell.
		var absent []string
		seen := map[string]bool{}
		for _, name := range s.Headers {
			n := strings.ToLower(name)
			if !seen[n] && h.Count(name) == 0 {
				absent = append(absent, n)
			}
			seen[n] = true
		}
		if len(absent) > 0 {
			hints = append(hints, fmt.Sprintf("h= names fields the message does not have now: %s (normal when the signer oversigns them; a field removed after signing looks the same)", strings.Join(absent, ", ")))
		}
		hints = append(hints, fmt.Sprintf("if the signed fields above are what the sender sent, the key published at %s is not the one that signed (was the selector's key replaced while mail signed with the old one was in transit?)", s.DNSName()))
	}
	if s.HeaderCanon == dkim.Simple {
		hints = append(hints, "c=simple/...: simple header canonicalization breaks when a relay refolds a signed field or changes its white space or the case of its name; relaxed would have survived that")
	}
	return hints
}

// copiedFieldHints compares the signed fields with the signer's copies in
// z= (RFC 6376 §3.5) and names each that changed; found: putting the
// copies back makes the signature verify, so those are all the changes.
func copiedFieldHints(ctx context.Context, v *verifier.Verifier, h dkim.Header, body []byte, i int, s *dkim.Signature) (hints []string, found bool) {
	copies, err := s.CopiedHeaders()
	if err != nil {
		return []string{"z= cannot be read: " + err.Error()}, false
	}
	h2 := append(dkim.Header(nil), h...)
	var changed []string
	for _, c := range copies {
		idx := signedField(h, s, c.Name)
		if idx < 0 {
			if slices.ContainsFunc(s.Headers, func(n string) bool { return dkim.EqualFoldASCII(n, c.Name) }) {
				hints = append(hints, fmt.Sprintf("the signed header %s was removed: it was %q when signed", c.Name, dkim.SanitizeN(c.Value, 80)))
				changed = append(changed, c.Name)
			}
			continue
		}
		now := h[idx].Value()
		if strings.Join(strings.Fields(now), " ") == strings.Join(strings.Fields(c.Value), " ") {
			continue
		}
		hints = append(hints, fmt.Sprintf("the signed header %s changed: it was %q when signed, it is %q now", h[idx].Name, dkim.SanitizeN(strings.TrimSpace(c.Value), 80), dkim.SanitizeN(strings.TrimSpace(now), 80)))
		changed = append(changed, h[idx].Name)
		h2[idx] = dkim.Field{Name: h[idx].Name, Raw: h[idx].Raw[:len(h[idx].Raw)-len(now)] + c.Value}
	}
	if len(changed) > 0 && passes(ctx, v, h2, body, i) {
		hints = append(hints, "with the z= copies of "+strings.Join(changed, ", ")+" the signature verifies: nothing else changed")
		return hints, true
	}
	return hints, false
}

type keyVerdict int

const (
	keyUnknown keyVerdict = iota // Ed25519, or no usable RSA key
	keyMatches                   // the RSA signature opens with the key
	keyDiffers                   // it does not: another key signed
)

// keyOpens tells whether the published RSA key made the signature. The
// RSA public operation on b= gives back the PKCS#1 v1.5 block the signer
// encrypted (RFC 8017 §8.2.2): with the right key it has the padding and
// the DigestInfo of s's hash; with another key it is noise. Ed25519 has
// no such operation.
func keyOpens(record string, s *dkim.Signature) keyVerdict {
	rec, err := dkim.ParseKeyRecord(record)
	if err != nil || rec == nil {
		return keyUnknown
	}
	pub, ok := rec.Key.(*rsa.PublicKey)
	if !ok {
		return keyUnknown
	}
	prefix, ok := digestInfoPrefix[s.Hash]
	k := (pub.N.BitLen() + 7) / 8
	if !ok || len(s.Sig) != k {
		return keyDiffers
	}
	m := new(big.Int).SetBytes(s.Sig)
	if m.Cmp(pub.N) >= 0 {
		return keyDiffers
	}
	em := m.Exp(m, big.NewInt(int64(pub.E)), pub.N).FillBytes(make([]byte, k))
	// 0x00 0x01 0xFF… 0x00 DigestInfo
	tLen := len(prefix) + hashSize[s.Hash]
	if len(em) < tLen+11 || em[0] != 0 || em[1] != 1 {
		return keyDiffers
	}
	pad := em[2 : k-tLen-1]
	for _, b := range pad {
		if b != 0xff {
			return keyDiffers
		}
	}
	if em[k-tLen-1] != 0 || !bytes.Equal(em[k-tLen:k-tLen+len(prefix)], prefix) {
		return keyDiffers
	}
	return keyMatches
}

// digestInfoPrefix is the DER DigestInfo before the digest (RFC 8017
// §9.2, note 1).
var digestInfoPrefix = map[string][]byte{
	"sha256": {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	"sha1":   {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
}

var hashSize = map[string]int{"sha256": 32, "sha1": 20}

// uniqueLower lists names once each, lower-cased, in order.
func uniqueLower(names []string) []string {
	var out []string
	for _, n := range names {
		if n = strings.ToLower(n); !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// signedField returns the index of the field instance that the first
// mention of name in h= signs (the bottom-most, RFC 6376 §5.4.2), or -1.
func signedField(h dkim.Header, s *dkim.Signature, name string) int {
	if !slices.ContainsFunc(s.Headers, func(n string) bool { return dkim.EqualFoldASCII(n, name) }) {
		return -1
	}
	for j := len(h) - 1; j >= 0; j-- {
		if strings.EqualFold(h[j].Name, name) {
			return j
		}
	}
	return -1
}

type subjectTag struct {
	tag   string // what is removed, e.g. "[list] "
	value string // the field value without it
}

// subjectTags lists the Subject values with one tag removed: a bracketed
// "[…]" anywhere (with the white space after it, or before it at the end),
// or a leading "***SPAM***"-style marker.
func subjectTags(value string) []subjectTag {
	var out []subjectTag
	for from := 0; len(out) < maxSubjectTags; {
		open := strings.IndexByte(value[from:], '[')
		if open < 0 {
			break
		}
		open += from
		end := strings.IndexByte(value[open:], ']')
		if end < 0 {
			break
		}
		start, stop := open, open+end+1
		if strings.TrimRight(value[stop:], " \t\r\n") == "" {
			for start > 0 && strings.ContainsRune(" \t", rune(value[start-1])) {
				start--
			}
		} else {
			for stop < len(value) && strings.ContainsRune(" \t", rune(value[stop])) {
				stop++
			}
		}
		out = append(out, subjectTag{tag: value[start:stop], value: value[:start] + value[stop:]})
		from = open + end + 1
	}
	t := strings.TrimLeft(value, " \t")
	if strings.HasPrefix(t, "**") {
		if end := strings.Index(t[2:], "**"); end >= 0 {
			stop := 2 + end
			for stop < len(t) && t[stop] == '*' {
				stop++
			}
			for stop < len(t) && (t[stop] == ' ' || t[stop] == '\t') {
				stop++
			}
			lead := value[:len(value)-len(t)]
			out = append(out, subjectTag{tag: t[:stop], value: lead + t[stop:]})
		}
	}
	return out
}
