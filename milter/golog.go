package milter

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"syscall"
)

// LibraryLog returns a writer for the standard log package (log.SetOutput,
// with log.SetFlags(0)), through which go-milter logs: it has no logger
// option, and writes every line alike. Each line goes to l at a level
// chosen by what it says. A connection that we closed (idle, drain, a
// limit) or that Postfix closed is debug: the session has already logged
// what mattered (a message cut, a timeout), and "use of closed network
// connection" at INFO on every drain reads like a fault. A panic is an
// error; anything else, a protocol error on Postfix's side, a warning.
func LibraryLog(l *slog.Logger) io.Writer { return libraryLog{l} }

type libraryLog struct{ l *slog.Logger }

// Write logs one record per call: the log package writes each line it
// is given (a panic's with its stack) in one call.
func (w libraryLog) Write(p []byte) (int, error) {
	line, rest, _ := strings.Cut(string(bytes.TrimRight(p, "\n")), "\n")
	args := []any{"from", "go-milter"}
	if rest != "" {
		args = append(args, "stack", rest)
	}
	w.l.Log(context.Background(), libraryLevel(line), line, args...)
	return len(p), nil
}

// closedConn are the texts of the errors of a connection that has ended,
// as go-milter prints them (it does not wrap: errors.Is cannot be used).
var closedConn = []string{
	"use of closed network connection", // net.ErrClosed: we closed it
	"milter: idle timeout",             // conn.timeoutError, logged by conn
	"milter: message timeout",
	"milter: shutdown_timeout", // errShutdown: the session logged the message cut
	syscall.ECONNRESET.Error(), // Postfix went away
	syscall.EPIPE.Error(),
	io.ErrUnexpectedEOF.Error(),
	"i/o timeout", // a deadline that go-milter's write met
}

func libraryLevel(line string) slog.Level {
	if strings.HasPrefix(line, "panic") {
		return slog.LevelError
	}
	for _, s := range closedConn {
		if strings.Contains(line, s) {
			return slog.LevelDebug
		}
	}
	return slog.LevelWarn
}
