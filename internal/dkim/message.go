package dkim

import (
	"bytes"
	"fmt"
)

// SplitMessage splits a saved message into header fields and body. Line
// ends may be LF (a Unix mailbox, a saved .eml) or CRLF; both come out as
// CRLF, which is what was on the wire and what was signed. A leading mbox
// "From " line is skipped. notes says what was done, for the reader.
func SplitMessage(raw []byte) (h Header, body []byte, notes []string) {
	switch lf, crlf := countLineEnds(raw); {
	case lf > 0 && crlf == 0:
		notes = append(notes, "the file has LF line ends (as saved on Unix): read as CRLF, as the message was on the wire")
	case lf > 0:
		notes = append(notes, fmt.Sprintf("the file mixes LF (%d) and CRLF (%d) line ends: all read as CRLF", lf, crlf))
	}
	rest := raw
	// An mbox "From sender date" line, not a "From :" field (RFC 5322
	// §4.5.3 allows white space before the colon).
	if bytes.HasPrefix(rest, []byte("From ")) && !bytes.HasPrefix(bytes.TrimLeft(rest[5:], " \t"), []byte(":")) {
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			rest = rest[i+1:]
			notes = append(notes, `skipped the mbox "From " line at the top`)
		}
	}
	for len(rest) > 0 {
		line, next := rest, []byte(nil)
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, next = rest[:i], rest[i+1:]
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			body = next
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(h) > 0 {
			h[len(h)-1].Raw += "\r\n" + string(line)
		} else {
			h = append(h, ParseField(string(line)))
		}
		rest = next
	}
	return h, toCRLF(body), notes
}

// countLineEnds counts bare LF and CRLF line ends.
func countLineEnds(b []byte) (lf, crlf int) {
	for i, c := range b {
		if c == '\n' {
			if i > 0 && b[i-1] == '\r' {
				crlf++
			} else {
				lf++
			}
		}
	}
	return lf, crlf
}

// toCRLF turns bare LF line ends into CRLF, leaving CRLF alone.
func toCRLF(b []byte) []byte {
	if bytes.Count(b, []byte("\n")) == bytes.Count(b, []byte("\r\n")) {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/32)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}
