// The body probe: when bh= does not match, undo the changes that relays
// commonly make to a body, one at a time, and say which one brings the
// hash back. These are the causes behind most "body hash did not verify"
// reports (https://github.com/lieser/dkim_verifier/issues/420,
// https://github.com/postalsys/mailauth/issues/58): a list or gateway
// footer, white space stripped by a gateway (which only simple body
// canonicalization notices, RFC 6376 §3.4.3,
// https://www.rfc-editor.org/rfc/rfc6376#section-3.4.3), line ends, and
// mbox quoting. Re-encoding (quoted-printable, base64) and rewritten
// content are not undone: the probe then says that nothing common explains
// the change.

package explain

import (
	"bytes"
	"context"
	"fmt"
	"mime"
	"strings"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// The kinds of Probe.
const (
	ProbeCanonicalization = "canonicalization"       // bh= is the other canonicalization's hash
	ProbeFooter           = "footer"                 // lines appended at the end
	ProbeMIMEFooter       = "mime-footer"            // lines added before the closing MIME boundary
	ProbeSpaceAdded       = "trailing-space-added"   // trailing white space added to lines
	ProbeSpaceRemoved     = "trailing-space-removed" // trailing white space stripped ("-- ", format=flowed)
	ProbeLineEnds         = "line-ends"              // CR CR LF, a final line end, LF-signed bodies
	ProbeMboxFrom         = "mbox-from-quoting"      // ">From " quoting by an mbox file
	ProbeNone             = "none"                   // nothing common explains it
)

const (
	maxFooterLines    = 40 // trailing lines tried one by one
	maxSeparatorTries = 10 // separator lines further up tried as footer starts
	probeNoneText     = "no common modification explains it: the body was changed after signing"
)

// Probe is the diagnosis of a body hash failure.
type Probe struct {
	Kind  string
	Text  string   // the diagnosis, for people
	Lines []string // the lines removed (footers) or changed, as they are now
	// Verifies reports that with the change undone the whole signature
	// verifies, header included (Verified: an rsa-sha1 one is then
	// policy, not pass).
	Verifies bool
}

// probeBody tries the usual modifications in turn, simplest first, and
// returns the first that makes the body hash match bh=.
func probeBody(ctx context.Context, v *verifier.Verifier, h dkim.Header, body []byte, i int, s *dkim.Signature, bh *BodyHashes) *Probe {
	if bh.OtherMatches() {
		other := dkim.Simple
		if s.BodyCanon == dkim.Simple {
			other = dkim.Relaxed
		}
		return &Probe{Kind: ProbeCanonicalization, Text: fmt.Sprintf(
			"the body matches bh= under %s body canonicalization, but c= says %s: the signer hashed with one and declared the other (a signer bug; the body did not change)",
			other, s.BodyCanon)}
	}
	matches := func(b []byte) bool { return bytes.Equal(hashBody(s, s.BodyCanon, b), s.BodyHash) }
	found := func(kind, text string, changed []string, b []byte) *Probe {
		return &Probe{Kind: kind, Text: text, Lines: changed, Verifies: passes(ctx, v, h, b, i)}
	}
	lines := splitLines(body)
	n := len(lines)

	// White space at line ends: only simple body canonicalization sees it.
	for _, keepSep := range []bool{false, true} {
		// Once on every line, once sparing the "-- " signature separator,
		// whose space is meant to be there.
		b, changed := mapLines(lines, func(_ int, l string) string {
			if keepSep && l == "-- " {
				return l
			}
			return strings.TrimRight(l, " \t")
		})
		if len(changed) > 0 && matches(b) {
			return found(ProbeSpaceAdded, fmt.Sprintf("the body matches once trailing white space is removed from %s: something added white space at line ends after signing", plural(len(changed), "line")), changed, b)
		}
	}
	if b, changed := mapLines(lines, func(_ int, l string) string {
		if l == "--" {
			return "-- "
		}
		return l
	}); len(changed) > 0 && matches(b) {
		return found(ProbeSpaceRemoved, `the body matches once the signature separator "--" gets back its trailing space ("-- "): a gateway stripped trailing white space after signing (c=.../relaxed would have survived it)`, changed, b)
	}
	if b, changed := mapLines(lines, func(j int, l string) string {
		// RFC 3676 §4.2: in format=flowed text a line that continues a
		// paragraph ends with a space.
		if l != "" && !strings.HasSuffix(l, " ") && j+1 < n && lines[j+1] != "" {
			return l + " "
		}
		return l
	}); len(changed) > 0 && matches(b) {
		return found(ProbeSpaceRemoved, "the body matches once a space is put back at the end of lines that continue a paragraph: the text was format=flowed (RFC 3676) and something stripped trailing white space after signing (c=.../relaxed would have survived it)", changed, b)
	}

	// Line ends.
	if bytes.Contains(body, []byte("\r\r\n")) {
		if b := bytes.ReplaceAll(body, []byte("\r\r\n"), []byte("\r\n")); matches(b) {
			return found(ProbeLineEnds, "the body matches once doubled CRs (CR CR LF) are made single: a line-end conversion ran twice after signing", nil, b)
		}
	}
	if bytes.HasSuffix(body, []byte("\r\n")) {
		if b := body[:len(body)-2]; matches(b) {
			return found(ProbeLineEnds, "the body matches without its final line end: one was added after signing", nil, b)
		}
	}
	if b := append(append([]byte(nil), body...), '\r', '\n'); matches(b) {
		return found(ProbeLineEnds, "the body matches with a final line end added: it was removed after signing", nil, b)
	}
	if bytes.Equal(lfBodyHash(s, lines), s.BodyHash) {
		return &Probe{Kind: ProbeLineEnds, Text: "bh= is the hash of the body with bare LF line ends: the signer hashed the message before converting it to CRLF (a signer bug; no verifier will accept this signature)"}
	}

	// mbox quoting: ">From " stands for "From " (mboxrd).
	if b, changed := mapLines(lines, func(_ int, l string) string {
		if t := strings.TrimLeft(l, ">"); len(t) < len(l) && strings.HasPrefix(t, "From ") {
			return l[1:]
		}
		return l
	}); len(changed) > 0 && matches(b) {
		return found(ProbeMboxFrom, `the body matches once ">From " lines are unquoted: the message went through an mbox file after signing, which quotes lines starting with "From "`, changed, b)
	}

	// Footers: the last 1..40 lines, then from a separator line further up.
	footer := func(cut int) *Probe {
		for cut > 0 && strings.TrimSpace(lines[cut-1]) == "" && matches(joinLines(lines[:cut-1])) {
			cut-- // the blank line before a footer is part of it
		}
		return found(ProbeFooter, fmt.Sprintf("the body matches the signed hash without its last %s: something appended a footer after signing (a mailing list or a gateway)", plural(n-cut, "line")), lines[cut:], joinLines(lines[:cut]))
	}
	for k := 1; k <= min(maxFooterLines, n); k++ {
		if matches(joinLines(lines[:n-k])) {
			return footer(n - k)
		}
	}
	for j, tries := n-maxFooterLines-1, 0; j >= 0 && tries < maxSeparatorTries; j-- {
		if isSeparator(lines[j]) {
			tries++
			if matches(joinLines(lines[:j])) {
				return footer(j)
			}
		}
	}
	if p := probeMIMEFooter(h, lines, matches, found); p != nil {
		return p
	}

	text := probeNoneText + " (rewritten links, an inserted banner or disclaimer, or re-encoding as quoted-printable or base64 are common causes). Tried: removing up to 40 trailing lines and from footer separators, the lines before the closing MIME boundary, trailing white space, line ends and mbox quoting"
	if s.BodyCanon == dkim.Simple {
		text += "; with c=.../simple any change of white space breaks the hash, even one that leaves no trace"
	}
	return &Probe{Kind: ProbeNone, Text: text}
}

// probeMIMEFooter removes up to 40 lines just before the closing boundary
// of a multipart message: where lists put a footer part, or append text to
// the last part.
func probeMIMEFooter(h dkim.Header, lines []string, matches func([]byte) bool, found func(string, string, []string, []byte) *Probe) *Probe {
	boundary := mimeBoundary(h)
	if boundary == "" {
		return nil
	}
	c := -1
	for j := len(lines) - 1; j >= 0; j-- {
		if strings.TrimRight(lines[j], " \t") == "--"+boundary+"--" {
			c = j
			break
		}
	}
	for k := 1; c > 0 && k <= min(maxFooterLines, c); k++ {
		cand := append(append([]string(nil), lines[:c-k]...), lines[c:]...)
		b := joinLines(cand)
		if !matches(b) {
			continue
		}
		what := "text was added at the end of the last MIME part"
		if strings.HasPrefix(lines[c-k], "--"+boundary) {
			what = "a footer MIME part was added"
		}
		return found(ProbeMIMEFooter, fmt.Sprintf("the body matches without the %s before the closing MIME boundary: %s after signing (a mailing list or a gateway)", plural(k, "line"), what), lines[c-k:c], b)
	}
	return nil
}

// mimeBoundary returns the boundary of a multipart message, "" otherwise.
func mimeBoundary(h dkim.Header) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, "Content-Type") {
			mt, params, err := mime.ParseMediaType(strings.ReplaceAll(f.Value(), "\r\n", ""))
			if err != nil || !strings.HasPrefix(mt, "multipart/") {
				return ""
			}
			return params["boundary"]
		}
	}
	return ""
}

// isSeparator recognises the lines footers start with: "--", "-- ", and
// rules of underscores, dashes, equals signs or stars.
func isSeparator(l string) bool {
	t := strings.TrimRight(l, " \t")
	if t == "--" {
		return true
	}
	if len(t) < 4 {
		return false
	}
	return strings.Trim(t, string(t[0])) == "" && strings.ContainsRune("_-=*", rune(t[0]))
}

// splitLines splits a CRLF body into lines without their line ends.
func splitLines(body []byte) []string {
	if len(body) == 0 {
		return nil
	}
	lines := strings.Split(string(body), "\r\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

func joinLines(lines []string) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// mapLines applies f to each line; it returns the new body and the lines
// f changed (as they were).
func mapLines(lines []string, f func(int, string) string) ([]byte, []string) {
	out := make([]string, len(lines))
	var changed []string
	for j, l := range lines {
		out[j] = f(j, l)
		if out[j] != l {
			changed = append(changed, l)
		}
	}
	return joinLines(out), changed
}

// lfBodyHash hashes the body as a signer of s that never converted its LF
// line ends to CRLF would have (RFC 6376 §3.4.3 and §3.4.4 with LF for
// CRLF).
func lfBodyHash(s *dkim.Signature, lines []string) []byte {
	c, limit := s.BodyCanon, s.Length
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		if c == dkim.Relaxed {
			orig := l
			l = strings.Join(strings.FieldsFunc(orig, isWSP), " ")
			if l != "" && isWSP(rune(orig[0])) {
				l = " " + l // a leading WSP run is one space, not nothing
			}
		}
		out = append(out, l)
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	var b []byte
	for _, l := range out {
		b = append(append(b, l...), '\n')
	}
	if len(out) == 0 && c == dkim.Simple {
		b = []byte("\n")
	}
	if limit >= 0 && int64(len(b)) > limit {
		b = b[:limit]
	}
	h := s.NewHash()
	h.Write(b)
	return h.Sum(nil)
}

func isWSP(r rune) bool { return r == ' ' || r == '\t' }

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
