package dnsupdate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
)

// command runs a program for each change: the DNS provider's own tool,
// or a script around its API.
type command struct {
	table   string
	argv    []string
	ttl     time.Duration
	timeout time.Duration
}

// maxOutput bounds what is kept of a command's output: a tool that
// prints without end must not fill memory or the log.
const maxOutput = 64 << 10

// tailLines is how many of its last lines a failed command's error shows.
const tailLines = 10

func newCommand(p *config.Publisher) (*command, error) {
	if len(p.Command) == 0 || p.Command[0] == "" {
		return nil, fmt.Errorf("[publish.%s] method \"command\" needs command = [\"/path/to/program\", ...]", p.Name)
	}
	c := &command{table: "publish." + p.Name, argv: p.Command, ttl: p.TTL, timeout: p.Timeout}
	if c.ttl <= 0 {
		c.ttl = 5 * time.Minute
	}
	if c.timeout <= 0 {
		c.timeout = 10 * time.Second
	}
	return c, nil
}

func (c *command) args(ch Change) []string {
	return append(append([]string(nil), c.argv...), ch.Action.String(), ch.Name, ch.Value)
}

func (c *command) env(ch Change) []string {
	return []string{
		"DKIMMILTER_ACTION=" + ch.Action.String(),
		"DKIMMILTER_NAME=" + ch.Name,
		"DKIMMILTER_VALUE=" + ch.Value,
		"DKIMMILTER_TTL=" + strconv.Itoa(int(c.ttl/time.Second)),
		"DKIMMILTER_EXPECT=" + ch.Expect,
	}
}

// Apply runs the command, without a shell, with the action, the name and
// the value as its last three arguments and in its environment (with the
// TTL and the expected record, which a tool can use to refuse to
// overwrite a record changed by hand). Its exit status decides; its
// output, stdout and stderr together, comes back either way.
func (c *command) Apply(ctx context.Context, ch Change) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	args := c.args(ch)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), c.env(ch)...)
	out := &tail{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// The command runs in a process group of its own, and the timeout
	// kills the whole group: a helper it started would otherwise live
	// on and make the change after Apply has reported that it failed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A child that keeps the output pipes open after the command was
	// killed (one that left the group) must not hold Apply past its
	// timeout.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	text := out.String()
	if err == nil {
		return text, nil
	}
	last := lastLines(text, tailLines)
	if last != "" {
		last = "; its last output:\n" + last
	}
	var ee *exec.ExitError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return text, fmt.Errorf("[%s] %s %s: %s was stopped after the timeout of %s (raise timeout in [%s] if the provider is slow)%s",
			c.table, ch.Action, ch.Name, args[0], c.timeout, c.table, last)
	case errors.As(err, &ee):
		return text, fmt.Errorf("[%s] %s %s: %s failed: %s%s", c.table, ch.Action, ch.Name, args[0], ee.ProcessState, last)
	}
	return text, fmt.Errorf("[%s] %s %s: running %s: %v", c.table, ch.Action, ch.Name, args[0], err)
}

// Describe is the command line, quoted for a POSIX shell.
func (c *command) Describe(ch Change) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# [%s]: %s %s by running (no shell; the environment also has DKIMMILTER_ACTION, _NAME, _VALUE, _TTL=%d and _EXPECT):\n",
		c.table, ch.Action, ch.Name, int(c.ttl/time.Second))
	args := c.args(ch)
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(shellQuote(a))
	}
	b.WriteByte('\n')
	return b.String()
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tail keeps the last max bytes written to it, and how many were dropped.
type tail struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.dropped += int64(over)
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return n, nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped == 0 {
		return string(t.buf)
	}
	return fmt.Sprintf("[%d bytes of output left out]\n%s", t.dropped, t.buf)
}

// lastLines returns the last n non-empty lines of s.
func lastLines(s string, n int) string {
	lines := bytes.Split(bytes.TrimRight([]byte(s), "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(string(bytes.Join(lines, []byte("\n"))))
}
