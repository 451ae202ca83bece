package dkim

import (
	"fmt"
	"hash"
	"strings"
	"sync"
)

// Canon is a canonicalization algorithm (RFC 6376 §3.4).
type Canon uint8

const (
	Simple Canon = iota
	Relaxed
)

func (c Canon) String() string {
	if c == Relaxed {
		return "relaxed"
	}
	return "simple"
}

// parseCanonName parses one canonicalization name.
func parseCanonName(s string) (Canon, bool) {
	switch s {
	case "simple":
		return Simple, true
	case "relaxed":
		return Relaxed, true
	}
	return Simple, false
}

// ParseCanon parses a c= value. A missing c= means simple/simple and a
// single word names the header algorithm with a simple body (RFC 6376
// §3.5, c= tag).
func ParseCanon(s string) (header, body Canon, err error) {
	if s == "" {
		return Simple, Simple, nil
	}
	hs, bs, both := strings.Cut(s, "/")
	var ok bool
	if header, ok = parseCanonName(hs); !ok {
		return 0, 0, fmt.Errorf("unknown canonicalization %q", s)
	}
	if !both {
		return header, Simple, nil
	}
	if body, ok = parseCanonName(bs); !ok {
		return 0, 0, fmt.Errorf("unknown canonicalization %q", s)
	}
	return header, body, nil
}

// appendCanonicalHeader appends the canonical form of one raw header field
// ("Name:value", folded with CRLF, no final CRLF) followed by CRLF.
func appendCanonicalHeader(dst []byte, c Canon, raw string) []byte {
	if c == Simple {
		dst = append(dst, raw...)
		return append(dst, '\r', '\n')
	}
	return append(appendRelaxedHeader(dst, raw), '\r', '\n')
}

// appendRelaxedHeader implements RFC 6376 §3.4.2
// (https://www.rfc-editor.org/rfc/rfc6376#section-3.4.2): lower-case name,
// unfold, collapse WSP runs to one SP, drop WSP at the end of the value and
// around the colon.
func appendRelaxedHeader(dst []byte, raw string) []byte {
	name, value, _ := strings.Cut(raw, ":")
	name = strings.TrimRight(name, " \t")
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	dst = append(dst, ':')
	wsp := false
	started := false
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c == '\r' && i+1 < len(value) && value[i+1] == '\n' {
			continue // CRLF: see LF below
		}
		switch c {
		case '\n':
			// Unfolding removes the line break itself; the WSP that
			// follows it is collapsed below. A lone CR is content, as
			// dkimpy has it.
		case ' ', '\t':
			wsp = true
		default:
			if wsp && started {
				dst = append(dst, ' ')
			}
			wsp = false
			started = true
			dst = append(dst, c)
		}
	}
	return dst
}

// BodyHasher canonicalizes a message body as it streams and feeds it to a
// hash, keeping only O(1) state between writes: chunk boundaries may fall
// anywhere, even between CR and LF (Postfix fills 65535-byte chunks).
//
// Bare LF line ends are read as CRLF, like go-msgauth and dkimpy do, so that
// messages saved with Unix line ends verify.
type BodyHasher struct {
	canon Canon
	h     hash.Hash
	limit int64 // l=, or -1

	length int64 // canonical octets produced so far (beyond limit too)
	crlfs  int   // line ends not yet emitted: empty lines may be trailing
	wsp    bool  // relaxed: WSP seen, not yet emitted
	cr     bool  // a CR ended the previous write
	out    []byte
	pooled *[]byte // where out came from; Sum gives it back
}

// NewBodyHasher returns a BodyHasher; limit is the l= value or -1.
func NewBodyHasher(c Canon, h hash.Hash, limit int64) *BodyHasher {
	p := outBufs.Get().(*[]byte)
	return &BodyHasher{canon: c, h: h, limit: limit, out: (*p)[:0], pooled: p}
}

// outBufs recycles the canonicalization buffers: each message needs one
// (growing to 32 KB with Postfix's 64 KB chunks) for the time of its
// body, and thousands of messages a second made them most of what the
// body path allocated.
var outBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Write canonicalizes p. It never fails.
func (b *BodyHasher) Write(p []byte) (int, error) {
	out := b.out[:0]
	for i := 0; i < len(p); i++ {
		c := p[i]
		if b.cr {
			b.cr = false
			if c == '\n' {
				b.lineEnd()
				continue
			}
			// A bare CR is content.
			out = b.emit(out, '\r')
		}
		switch c {
		case '\r':
			b.cr = true
		case '\n':
			b.lineEnd()
		case ' ', '\t':
			if b.canon == Relaxed {
				b.wsp = true
				continue
			}
			out = b.emit(out, c)
		default:
			// Fast path: copy a run of ordinary bytes in one go.
			j := i + 1
			for j < len(p) && p[j] != '\r' && p[j] != '\n' && p[j] != ' ' && p[j] != '\t' {
				j++
			}
			out = b.emit(out, c)
			out = append(out, p[i+1:j]...)
			i = j - 1
		}
		if len(out) >= 32*1024 {
			b.flush(out)
			out = out[:0]
		}
	}
	b.flush(out)
	b.out = out[:0]
	return len(p), nil
}

// lineEnd records a CRLF without emitting it: it is dropped if only empty
// lines follow (RFC 6376 §3.4.3, §3.4.4). Relaxed also drops the WSP that
// ended the line.
func (b *BodyHasher) lineEnd() {
	b.wsp = false
	b.crlfs++
}

// emit appends a content byte after the line ends and WSP it makes
// significant.
func (b *BodyHasher) emit(out []byte, c byte) []byte {
	for ; b.crlfs > 0; b.crlfs-- {
		out = append(out, '\r', '\n')
	}
	if b.wsp {
		// Relaxed: a WSP run inside a line, leading ones included, is one SP.
		b.wsp = false
		out = append(out, ' ')
	}
	return append(out, c)
}

func (b *BodyHasher) flush(out []byte) {
	if len(out) == 0 {
		return
	}
	n := int64(len(out))
	if b.limit >= 0 && b.length < b.limit {
		keep := b.limit - b.length
		if keep > n {
			keep = n
		}
		b.h.Write(out[:keep])
	} else if b.limit < 0 {
		b.h.Write(out)
	}
	b.length += n
}

// Sum finishes the body: a final CRLF for a body that has content (added if
// the last line had none), a single CRLF for an empty simple body, nothing
// for an empty relaxed body. It returns the hash; Length is then final.
func (b *BodyHasher) Sum() []byte {
	out := b.out[:0]
	if b.cr {
		b.cr = false
		out = b.emit(out, '\r')
	}
	if b.length > 0 || len(out) > 0 || b.canon == Simple {
		out = append(out, '\r', '\n')
	}
	b.crlfs = 0
	b.flush(out)
	if b.pooled != nil {
		*b.pooled = out[:0]
		outBufs.Put(b.pooled)
		b.pooled, b.out = nil, nil
	}
	return b.h.Sum(nil)
}

// Length is the number of canonical body octets, the unit of l=.
func (b *BodyHasher) Length() int64 { return b.length }
