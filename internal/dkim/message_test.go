package dkim

import (
	"strings"
	"testing"
)

func TestSplitMessage(t *testing.T) {
	h, body, notes := SplitMessage([]byte("From x Mon\nA: 1\n  2\nB: 3\r\n\nline\nline2\r\n"))
	if len(h) != 2 || h[0].Raw != "A: 1\r\n  2" || h[1].Raw != "B: 3" {
		t.Errorf("header %q", h)
	}
	if string(body) != "line\r\nline2\r\n" {
		t.Errorf("body %q", body)
	}
	if len(notes) != 2 || !strings.Contains(notes[0], "mixes") || !strings.Contains(notes[1], "mbox") {
		t.Errorf("notes %q", notes)
	}
	if h, _, _ := SplitMessage([]byte("From : a@example.com\r\n\r\n")); len(h) != 1 || h[0].Name != "From" {
		t.Errorf("From field with space before the colon: %q", h)
	}
	if _, _, notes := SplitMessage([]byte("A: 1\r\n\r\nx\r\n")); len(notes) != 0 {
		t.Errorf("CRLF notes %q", notes)
	}
}
