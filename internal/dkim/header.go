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
		if strings.EqualFold(f.Name, name) {
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
	used := make([]bool, len(h))
	for _, name := range names {
		for i := len(h) - 1; i >= 0; i-- {
			if !used[i] && strings.EqualFold(h[i].Name, name) {
				used[i] = true
				dst = AppendCanonicalHeader(dst, c, h[i].Raw)
				break
			}
		}
	}
	return dst
}

// AppendSignatureField appends the canonical form of the DKIM-Signature
// field being signed or verified, without the final CRLF (RFC 6376 §3.7).
// raw must already have its b= value removed.
func AppendSignatureField(dst []byte, c Canon, raw string) []byte {
	dst = AppendCanonicalHeader(dst, c, raw)
	return dst[:len(dst)-2]
}
