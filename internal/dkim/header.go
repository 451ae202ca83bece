package dkim

import (
	"strings"
)

// Field is one header field as it appears in the message: Raw is
// "Name:value" with its folding line breaks as CRLF and no final CRLF.
// Name is the part before the colon with trailing WSP removed.
type Field struct {
	Name string
	Raw  string
}

// NewField builds a Field from a name and a value as a milter receives them
// with SMFIP_HDR_LEADSPC: the value is everything after the colon, folded
// lines separated by LF or CRLF. Line breaks are normalised to CRLF so that
// simple header canonicalization sees the bytes that were on the wire.
func NewField(name, value string) Field {
	if strings.IndexByte(value, '\n') >= 0 {
		value = strings.ReplaceAll(value, "\r\n", "\n")
		value = strings.ReplaceAll(value, "\n", "\r\n")
	}
	return Field{Name: strings.TrimRight(name, " \t"), Raw: name + ":" + value}
}

// ParseField splits a raw field ("Name:value...") into a Field.
func ParseField(raw string) Field {
	name, _, _ := strings.Cut(raw, ":")
	return Field{Name: strings.TrimRight(name, " \t"), Raw: raw}
}

// Value returns what follows the colon, unchanged.
func (f Field) Value() string {
	_, v, _ := strings.Cut(f.Raw, ":")
	return v
}

// Header is a message header in order, top first.
type Header []Field

// Count returns how many fields are named name (case-insensitively).
func (h Header) Count(name string) int {
	n := 0
	for _, f := range h {
		if EqualFoldASCII(f.Name, name) {
			n++
		}
	}
	return n
}

// AppendSignedHeaders appends the canonical form of the fields named in h=,
// in h= order. Each name takes the bottom-most instance not yet used; a name
// with no instance left contributes nothing, which is what makes
// oversigning work (RFC 6376 §5.4.2,
// https://www.rfc-editor.org/rfc/rfc6376#section-5.4.2).
func (h Header) AppendSignedHeaders(dst []byte, c Canon, names []string) []byte {
	if len(names)*len(h) > 4096 {
		return h.appendSignedIndexed(dst, c, names)
	}
	used := make([]bool, len(h))
	for _, name := range names {
		for i := len(h) - 1; i >= 0; i-- {
			if !used[i] && EqualFoldASCII(h[i].Name, name) {
				used[i] = true
				dst = appendCanonicalHeader(dst, c, h[i].Raw)
				break
			}
		}
	}
	return dst
}

// appendSignedIndexed is AppendSignedHeaders in linear time, for the
// hostile case: h= comes from the message, and a signature listing 100,000
// names over a header of 1,000 fields cost the scan above half a second.
// Each name maps to its fields top to bottom, and instances are taken
// from the end.
func (h Header) appendSignedIndexed(dst []byte, c Canon, names []string) []byte {
	byName := make(map[string][]int)
	for i, f := range h {
		k := lowerASCII(f.Name)
		byName[k] = append(byName[k], i)
	}
	for _, name := range names {
		k := lowerASCII(name)
		idx := byName[k]
		if len(idx) == 0 {
			continue
		}
		dst = appendCanonicalHeader(dst, c, h[idx[len(idx)-1]].Raw)
		byName[k] = idx[:len(idx)-1]
	}
	return dst
}

// AppendSignatureField appends the canonical form of the DKIM-Signature
// field being signed or verified, without the final CRLF (RFC 6376 §3.7).
// raw must already have its b= value removed.
func AppendSignatureField(dst []byte, c Canon, raw string) []byte {
	dst = appendCanonicalHeader(dst, c, raw)
	return dst[:len(dst)-2]
}

// EqualFoldASCII compares field names as RFC 5322 does: ASCII letters
// without regard to case, every other byte exactly. strings.EqualFold
// also folds Unicode ("ſ" matches "s"), which would make a hostile
// name count as another field in one code path and not in the next.
func EqualFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x != y && lowerByte(x) != lowerByte(y) {
			return false
		}
	}
	return true
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lowerByte(b[j])
			}
			return string(b)
		}
	}
	return s
}

func lowerByte(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
