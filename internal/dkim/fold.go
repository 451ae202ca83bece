package dkim

import "strings"

// foldWidth keeps folded lines within the 78 characters RFC 5322 §2.1.1
// asks for, and far from the 998 at which Postfix's SMTP client breaks
// lines itself (smtp_line_length_limit), which would break a signature.
// https://www.rfc-editor.org/rfc/rfc5322#section-2.1.1
const foldWidth = 76

// Folder builds the value of a header field we add (DKIM-Signature,
// Authentication-Results), folding with CRLF TAB (RFC 5322 §2.2.3) before
// anything that would pass foldWidth. The value starts with the space
// that follows the colon, as Postfix wants it with SMFIP_HDR_LEADSPC.
// A TAB counts as 8 columns.
type Folder struct {
	b     strings.Builder
	col   int
	fresh bool // at the start of a line that Break began
}

// NewFolder starts the value of the field name.
func NewFolder(name string) *Folder { return &Folder{col: len(name) + 1} }

// Word adds w after a space, or at the start of a new line when it would
// pass the width.
func (f *Folder) Word(w string) {
	switch {
	case f.fresh:
		f.fresh = false
	case f.col+1+len(w) > foldWidth && f.col > 8:
		f.newLine()
	default:
		f.b.WriteByte(' ')
		f.col++
	}
	f.write(w)
}

// Join adds s with no space before it, or at the start of a new line
// when it would pass the width: for lists that may be folded between
// their items, such as h= (RFC 6376 §3.5).
func (f *Folder) Join(s string) {
	if f.col+len(s) > foldWidth && f.col > 8 {
		f.newLine()
	}
	f.write(s)
}

// Fill adds s with no space before it, broken across as many lines as it
// needs: for base64 values, where folding white space may go anywhere
// (b= and bh=, RFC 6376 §3.5).
func (f *Folder) Fill(s string) {
	for len(s) > 0 {
		n := foldWidth - f.col
		if n < 8 {
			f.newLine()
			n = foldWidth - f.col
		}
		n = min(n, len(s))
		f.write(s[:n])
		s = s[n:]
	}
}

// Break ends the line with end (a separator that must stay with what it
// ends) and starts a new one; the next Word goes at its start.
func (f *Folder) Break(end string) {
	f.b.WriteString(end)
	f.newLine()
	f.fresh = true
}

// String returns the value so far.
func (f *Folder) String() string { return f.b.String() }

func (f *Folder) newLine() {
	f.b.WriteString("\r\n\t")
	f.col = 8
}

func (f *Folder) write(s string) {
	f.b.WriteString(s)
	f.col += len(s)
}
