// Package logging builds the daemon's slog logger: logfmt or JSON lines,
// durations with their unit, and, under systemd, lines the journal files
// by priority.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
)

// New returns a logger writing format ("text" or "json") lines to w, from
// level ("debug", "info", "warn" or "error") up.
//
// Durations keep their unit in both formats ("duration":"2.261ms"):
// slog's JSON handler writes bare nanoseconds, which nobody reads right.
//
// With journal (stderr is the journal: StderrIsJournal), each line starts
// with its syslog priority, "<4>" for a warning, which journald takes off
// and keeps as the line's priority (sd-daemon(3)): journalctl -p warning
// and rsyslog's mail.warn see warnings as warnings. The time is left out:
// journald stamps every line, and the unit's SyslogFacility=mail and
// SyslogIdentifier=dkimmilter put the lines in mail.log next to Postfix's.
func New(w io.Writer, format, level string, journal bool) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if journal && a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}}
	var pw *prefixWriter
	if journal {
		pw = &prefixWriter{w: w}
		w = pw
	}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("-log-format %q: want text or json", format)
	}
	if journal {
		h = prefixed{h, pw}
	}
	return slog.New(h), nil
}

// StderrIsJournal reports whether stderr is connected to the journal:
// systemd sets $JOURNAL_STREAM to its device and inode (systemd.exec(5)),
// which a redirection of stderr no longer matches.
func StderrIsJournal() bool {
	v := os.Getenv("JOURNAL_STREAM")
	if v == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(v, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// prefixed writes each record's syslog priority before it.
type prefixed struct {
	slog.Handler
	w *prefixWriter
}

func (h prefixed) Handle(ctx context.Context, r slog.Record) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.prefix = priority(r.Level)
	return h.Handler.Handle(ctx, r)
}

func (h prefixed) WithAttrs(as []slog.Attr) slog.Handler {
	return prefixed{h.Handler.WithAttrs(as), h.w}
}

func (h prefixed) WithGroup(name string) slog.Handler {
	return prefixed{h.Handler.WithGroup(name), h.w}
}

// prefixWriter puts prefix before each line; Handle holds mu across the
// handler's single write of the record.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	if _, err := w.w.Write(append([]byte(w.prefix), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// priority is the syslog priority of a level, as sd-daemon(3) prefixes
// it.
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}
