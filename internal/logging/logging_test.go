package logging

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	tests := []struct {
		format  string
		journal bool
		want    []string // the lines, in order, up to the first space after the time
		not     string
	}{
		{"text", false, []string{`time=`, `level=INFO msg=message qid=Q1 duration=2.261ms`, `level=WARN msg=cut qid=Q2`}, "<"},
		{"json", false, []string{`{"time":`, `"level":"INFO","msg":"message","qid":"Q1","duration":"2.261ms"}`, `"level":"WARN","msg":"cut","qid":"Q2"}`}, "<"},
		{"text", true, []string{`<6>level=INFO msg=message qid=Q1 duration=2.261ms`, `<4>level=WARN msg=cut qid=Q2`}, "time="},
		{"json", true, []string{`<6>{"level":"INFO","msg":"message","qid":"Q1","duration":"2.261ms"}`, `<4>{"level":"WARN","msg":"cut","qid":"Q2"}`}, `"time"`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s journal=%v", tt.format, tt.journal), func(t *testing.T) {
			var b bytes.Buffer
			l, err := New(&b, tt.format, "info", tt.journal)
			if err != nil {
				t.Fatal(err)
			}
			l.Debug("not shown")
			l.Info("message", "qid", "Q1", "duration", 2261*time.Microsecond)
			l.With("qid", "Q2").Warn("cut")
			out := b.String()
			rest := out
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("lacks %q (in order):\n%s", w, out)
				}
				rest = rest[i+len(w):]
			}
			if strings.Contains(out, tt.not) || strings.Contains(out, "not shown") {
				t.Errorf("has %q or the debug line:\n%s", tt.not, out)
			}
			if n := strings.Count(out, "\n"); n != 2 {
				t.Errorf("%d lines, want 2:\n%s", n, out)
			}
		})
	}
	if _, err := New(os.Stderr, "xml", "info", false); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := New(os.Stderr, "text", "loud", false); err == nil {
		t.Error("level loud accepted")
	}
}

// $JOURNAL_STREAM counts only when it names stderr itself.
func TestStderrIsJournal(t *testing.T) {
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		env  string
		want bool
	}{
		{"", false},
		{fmt.Sprintf("%d:%d", uint64(st.Dev), uint64(st.Ino)), true},
		{fmt.Sprintf("%d:%d", uint64(st.Dev), uint64(st.Ino)+1), false},
		{"garbage", false},
	} {
		t.Setenv("JOURNAL_STREAM", tt.env)
		if got := StderrIsJournal(); got != tt.want {
			t.Errorf("JOURNAL_STREAM=%q: %v, want %v", tt.env, got, tt.want)
		}
	}
}
