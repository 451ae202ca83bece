package milter

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// go-milter's lines, as it prints them, at the level each deserves.
func TestLibraryLog(t *testing.T) {
	tests := []struct {
		line string
		want slog.Level
	}{
		{"Error reading milter command: read tcp 127.0.0.1:8891->127.0.0.1:40222: use of closed network connection", slog.LevelDebug},
		{"Error reading milter command: read unix /run/dkimmilter.sock->@: read: connection reset by peer", slog.LevelDebug},
		{"Error writing packet: write tcp 127.0.0.1:8891->127.0.0.1:40222: write: broken pipe", slog.LevelDebug},
		{"Error reading milter command: milter: idle timeout", slog.LevelDebug},
		{"Error reading milter command: " + errShutdown.Error(), slog.LevelDebug},
		{"Error reading milter command: unexpected EOF", slog.LevelDebug},
		{"Unrecognized command code: Z", slog.LevelWarn},
		{"Error performing milter command: milter: malformed macro command", slog.LevelWarn},
		{"Error reading milter command: milter: packet length 10485768 exceeds 1048576 bytes", slog.LevelWarn},
		{"panic handling command: boom\ngoroutine 7 [running]:\nmain.f()", slog.LevelError},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		w := LibraryLog(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})))
		w.Write([]byte(tt.line + "\n"))
		first, _, _ := strings.Cut(b.String(), "\n")
		if want := "level=" + tt.want.String() + " "; !strings.Contains(first, want) {
			t.Errorf("%q logged as %q, want %s", tt.line, first, want)
		}
		if !strings.Contains(first, "from=go-milter") {
			t.Errorf("%q logged without its source: %q", tt.line, first)
		}
	}
}
