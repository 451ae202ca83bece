// Package dkim holds the DKIM facts that the signer, the verifier, the key
// store and the commands share, each defined once: the tag=value list
// parser, the DKIM-Signature and key record parsers, header fields and the
// two canonicalization algorithms, the key's DNS name, the RSA key sizes,
// folding the fields we add, the address of a From field, and splitting
// a saved message. It knows nothing about DNS, keys on disk or the milter
// protocol.
//
// Why not go-msgauth's dkim package: it keeps all of this unexported, signs
// with a fixed tag order and the wall clock, refuses every l= signature,
// gives no access to the selector, algorithm, key size or key flags, and
// hashes the body once per signature. The verifier and signer packages
// explain what they need instead; go-msgauth stays in the tests as an
// independent second verifier of what we sign.
package dkim

import (
	"errors"
	"fmt"
	"strings"
)

// errTagSyntax and errDuplicateTag are the two ways a tag-list can be
// malformed (RFC 6376 §3.2).
var (
	errTagSyntax    = errors.New("malformed tag-list")
	errDuplicateTag = errors.New("duplicate tag")
)

// Tag is one tag=value pair. Start and End delimit everything between the
// "=" and the next ";" (or the end) in the string that was parsed, white
// space included: RFC 6376 §3.7 removes the b= value "including all
// surrounding whitespace" before hashing the signature field.
type Tag struct {
	Name       string
	Value      string
	Start, End int
}

// TagList is a parsed tag-list in the order of the input.
type TagList []Tag

// ParseTagList parses a tag-list as defined in RFC 6376 §3.2
// (https://www.rfc-editor.org/rfc/rfc6376#section-3.2): tag names are
// case-sensitive, surrounding folding white space is dropped, a trailing ";"
// is allowed, and a tag that appears twice makes the whole list invalid.
// Values are returned as they appear, with interior white space kept; use
// StripFWS for base64 values.
func ParseTagList(s string) (TagList, error) {
	var tags TagList
	// seen takes over the duplicate check once the list is long: a
	// hostile signature of a few hundred kilobytes holds tens of
	// thousands of tags, and comparing each with all before it cost
	// seconds of CPU per field.
	var seen map[string]struct{}
	pos := 0
	for pos <= len(s) {
		end := strings.IndexByte(s[pos:], ';')
		if end < 0 {
			end = len(s)
		} else {
			end += pos
		}
		spec := s[pos:end]
		if strings.TrimLeft(spec, " \t\r\n") == "" {
			// An empty spec is only legal after the last ";". Other
			// implementations (dkimpy, OpenDKIM) also skip empty specs in
			// the middle, so a stray ";;" is not worth a permerror.
			pos = end + 1
			continue
		}
		eq := strings.IndexByte(spec, '=')
		if eq < 0 {
			return nil, fmt.Errorf("%w: %q has no \"=\"", errTagSyntax, strings.TrimSpace(spec))
		}
		name := strings.Trim(spec[:eq], " \t\r\n")
		if !validTagName(name) {
			return nil, fmt.Errorf("%w: bad tag name %q", errTagSyntax, name)
		}
		vs, ve := pos+eq+1, end
		for vs < ve && isFWS(s[vs]) {
			vs++
		}
		for ve > vs && isFWS(s[ve-1]) {
			ve--
		}
		if tags.has(name, seen) {
			return nil, fmt.Errorf("%w %s=", errDuplicateTag, name)
		}
		tags = append(tags, Tag{Name: name, Value: s[vs:ve], Start: pos + eq + 1, End: end})
		seen = tags.index(seen)
		pos = end + 1
	}
	return tags, nil
}

// ParseTagListLoose reads what it can of a malformed tag-list: specs that
// do not parse are skipped and a repeated tag keeps its first value. It is
// only for naming a broken signature (d=, s=, a=, b=) in
// Authentication-Results and logs, never for verifying one.
func ParseTagListLoose(s string) TagList {
	var tags TagList
	var seen map[string]struct{}
	for _, spec := range strings.Split(s, ";") {
		name, value, ok := strings.Cut(spec, "=")
		name = strings.Trim(name, " \t\r\n")
		if !ok || !validTagName(name) {
			continue
		}
		if !tags.has(name, seen) {
			tags = append(tags, Tag{Name: name, Value: strings.Trim(value, " \t\r\n")})
			seen = tags.index(seen)
		}
	}
	return tags
}

// indexFrom is the list length from which duplicate checks go through a
// map: below it, a scan is cheaper than hashing.
const indexFrom = 16

// has reports whether the list has a tag named name; seen is its index,
// nil while the list is short.
func (l TagList) has(name string, seen map[string]struct{}) bool {
	if seen != nil {
		_, ok := seen[name]
		return ok
	}
	for _, t := range l {
		if t.Name == name {
			return true
		}
	}
	return false
}

// index keeps seen in step with l after an append, building it when the
// list reaches indexFrom tags.
func (l TagList) index(seen map[string]struct{}) map[string]struct{} {
	switch {
	case seen != nil:
		seen[l[len(l)-1].Name] = struct{}{}
	case len(l) >= indexFrom:
		seen = make(map[string]struct{}, 2*len(l))
		for _, t := range l {
			seen[t.Name] = struct{}{}
		}
	}
	return seen
}

// Get returns the value of the named tag.
func (l TagList) Get(name string) (string, bool) {
	for _, t := range l {
		if t.Name == name {
			return t.Value, true
		}
	}
	return "", false
}

// Lookup returns the named tag itself.
func (l TagList) Lookup(name string) (Tag, bool) {
	for _, t := range l {
		if t.Name == name {
			return t, true
		}
	}
	return Tag{}, false
}

// validTagName: tag-name = ALPHA *ALNUMPUNC, ALNUMPUNC = ALPHA / DIGIT / "_".
func validTagName(n string) bool {
	if n == "" || !isAlpha(n[0]) {
		return false
	}
	for i := 1; i < len(n); i++ {
		c := n[i]
		if !isAlpha(c) && !(c >= '0' && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isFWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// StripFWS removes all folding white space, as base64 values (b=, bh=, p=)
// may be folded anywhere (RFC 6376 §3.5).
func StripFWS(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if !isFWS(s[i]) {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// SplitColonList splits a colon-separated list such as h= or the key
// record's h=/s=/t=, trimming FWS around each element and dropping empty
// ones.
func SplitColonList(s string) []string {
	parts := strings.Split(s, ":")
	out := parts[:0]
	for _, p := range parts {
		p = strings.Trim(p, " \t\r\n")
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// decodeQuotedPrintable decodes dkim-quoted-printable (RFC 6376 §2.11), the
// encoding of i= and z=: "=XX" hex escapes, FWS ignored.
func decodeQuotedPrintable(s string) (string, error) {
	if strings.IndexByte(s, '=') < 0 && !strings.ContainsAny(s, " \t\r\n") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isFWS(c):
		case c == '=':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", fmt.Errorf("bad quoted-printable escape in %q", s)
			}
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
