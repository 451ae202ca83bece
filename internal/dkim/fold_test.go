package dkim

import (
	"strings"
	"testing"
)

// Folding: words fold before they would pass 76 columns, Join folds
// between list items without a space, Fill breaks a value anywhere, and
// Break ends a line with what must stay on it.
func TestFolder(t *testing.T) {
	f := NewFolder("X-Test") // "X-Test:" is 7 columns
	f.Word(strings.Repeat("a", 60))
	f.Word("bbbbbbbbbb") // 7+1+60+1+10 = 79: folds
	f.Join(":cc")
	f.Break(";")
	f.Word("d=1")
	f.Word("b=")
	f.Fill(strings.Repeat("E", 100))
	want := " " + strings.Repeat("a", 60) + "\r\n\tbbbbbbbbbb:cc;\r\n\td=1 b=" +
		strings.Repeat("E", 76-8-len("d=1 b=")) + "\r\n\t" + strings.Repeat("E", 100-(76-8-len("d=1 b=")))
	if got := f.String(); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	for _, l := range strings.Split(f.String(), "\r\n") {
		if w := len(strings.Replace(l, "\t", "        ", 1)); w > 76 {
			t.Errorf("line of %d columns: %q", w, l)
		}
	}
}
