package milter

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// startLimited starts a second server on e's runtime with limits.
func (e *env) startLimited(l Limits) (*Server, string) {
	e.t.Helper()
	srv := NewServer(ServerOptions{Runtime: e.rt, Log: e.srv.log, Limits: l})
	ln, addr := listenLoopback(e.t)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	e.t.Cleanup(func() { srv.Close(); srv.Shutdown(cancelled()); <-done })
	return srv, addr
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

// startMessage sends a message up to the middle of its body.
func startMessage(t *testing.T, c *testkit.Client) {
	t.Helper()
	s := c.Session
	if _, err := s.Mail("alice@example.com", nil); err != nil {
		t.Fatal(err)
	}
	h, body := testkit.Split(testkit.CRLF([]byte(outbound)))
	for _, f := range h {
		if _, err := s.HeaderField(f.Name, testkit.HeaderValue(f, true)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BodyChunk(body[:10]); err != nil {
		t.Fatal(err)
	}
}

func finishMessage(t *testing.T, c *testkit.Client) []gomilter.ModifyAction {
	t.Helper()
	_, body := testkit.Split(testkit.CRLF([]byte(outbound)))
	if _, err := c.Session.BodyChunk(body[10:]); err != nil {
		t.Fatal(err)
	}
	mods, act, err := c.Session.End()
	if err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("end: %v %+v", err, act)
	}
	if err := c.Session.Abort(); err != nil {
		t.Fatal(err)
	}
	return mods
}

// A drain ends idle sessions at once, lets a message in flight finish
// (signed, with its reply), then ends that session too.
func TestShutdownDrains(t *testing.T) {
	e := newEnv(t, "")
	srv, addr := e.startLimited(Limits{})
	idle := dialAt(t, addr, "127.0.0.1")
	busy := dialAt(t, addr, "127.0.0.1")
	startMessage(t, busy)
	waitFor(t, "two sessions", func() bool { return srv.Sessions() == 2 })

	cut := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cut <- srv.Shutdown(ctx)
	}()
	waitFor(t, "the idle session to end", func() bool { return srv.Sessions() == 1 })
	// MAIL gets no reply (SMFIP_NR_MAIL); end of headers does.
	idle.Session.Mail("x@example.com", nil)
	if _, err := idle.Session.HeaderEnd(); err == nil {
		t.Error("idle session still answers after the drain began")
	}
	mods := finishMessage(t, busy)
	if len(mods) != 1 || mods[0].HeaderName != "DKIM-Signature" {
		t.Errorf("message in flight during the drain: %+v", mods)
	}
	if n := <-cut; n != 0 {
		t.Errorf("%d sessions cut", n)
	}
	if srv.Sessions() != 0 {
		t.Errorf("%d sessions left", srv.Sessions())
	}
}

// A message that does not finish before the deadline is cut.
func TestShutdownDeadline(t *testing.T) {
	e := newEnv(t, "")
	srv, addr := e.startLimited(Limits{})
	busy := dialAt(t, addr, "127.0.0.1")
	startMessage(t, busy)
	waitFor(t, "the session", func() bool { return srv.Sessions() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n := srv.Shutdown(ctx); n != 1 {
		t.Errorf("cut %d, want 1", n)
	}
}

// An idle connection is closed after limits.idle_timeout, a message that
// drags on after limits.message_timeout; other sessions carry on.
func TestTimeouts(t *testing.T) {
	e := newEnv(t, "")
	srv, addr := e.startLimited(Limits{IdleTimeout: 200 * time.Millisecond, MessageTimeout: 400 * time.Millisecond})
	dialAt(t, addr, "127.0.0.1")
	waitFor(t, "the idle connection to be closed", func() bool { return srv.Sessions() == 0 })
	if !strings.Contains(e.logs.String(), "idle longer than limits.idle_timeout") {
		t.Errorf("log: %s", e.logs.String())
	}
	slow := dialAt(t, addr, "127.0.0.1")
	startMessage(t, slow)
	// Keep the connection active, but never finish the message.
	waitFor(t, "the slow message to be cut", func() bool {
		_, err := slow.Session.BodyChunk([]byte("x"))
		return err != nil
	})
	if !strings.Contains(e.logs.String(), "limits.message_timeout") {
		t.Errorf("log: %s", e.logs.String())
	}
	// A fresh session still works.
	c := dialAt(t, addr, "127.0.0.1")
	r, err := c.Send(aliceEnv, testkit.CRLF([]byte(outbound)), 0)
	if err != nil || len(testkit.Mods(r, gomilter.ActInsertHeader)) != 1 {
		t.Errorf("after timeouts: %v %+v", err, r)
	}
}

// With max_sessions reached, a new connection waits for a free slot
// instead of being refused.
func TestMaxSessions(t *testing.T) {
	e := newEnv(t, "")
	srv, addr := e.startLimited(Limits{MaxSessions: 1})
	first := dialAt(t, addr, "127.0.0.1")
	second := make(chan *testkit.Client, 1)
	go func() {
		c, err := testkit.Dial("tcp", addr)
		if err != nil {
			second <- nil
			return
		}
		second <- c
	}()
	if srv.Sessions() != 1 {
		t.Errorf("%d sessions with max 1", srv.Sessions())
	}
	first.Close()
	c := <-second
	if c == nil {
		t.Fatal("second connection failed")
	}
	defer c.Close()
	if err := c.Connect("localhost", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.logs.String(), "session limit reached") {
		t.Errorf("log: %s", e.logs.String())
	}
}

func dialAt(t *testing.T, addr, ip string) *testkit.Client {
	t.Helper()
	c, err := testkit.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Connect("client.example.net", ip); err != nil {
		t.Fatal(err)
	}
	return c
}

func listenLoopback(t *testing.T) (net.Listener, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, ln.Addr().String()
}

// A client that sends header fields without ever starting a message (no
// MAIL, no ABORT: no MTA does this) is still bound by message_timeout:
// go-milter would otherwise keep every field it sends, for ever.
func TestMessageTimeoutWithoutMail(t *testing.T) {
	e := newEnv(t, "")
	logTo(t, e.logs)
	srv, addr := e.startLimited(Limits{IdleTimeout: time.Minute, MessageTimeout: 300 * time.Millisecond})
	r := dialRaw(t, addr)
	r.negotiate()
	waitFor(t, "the session to be cut", func() bool {
		if err := r.header("X-Pad", " padding"); err != nil {
			return true
		}
		_, err := r.read()
		return err != nil
	})
	waitFor(t, "the session to end", func() bool { return srv.Sessions() == 0 })
	if !strings.Contains(e.logs.String(), "limits.message_timeout") {
		t.Errorf("log: %s", e.logs.String())
	}
}

// Postfix sends no ABORT after a message (only before the next MAIL): a
// session whose message is done is idle, and a drain does not wait for it.
func TestShutdownAfterFinishedMessage(t *testing.T) {
	e := newEnv(t, "")
	srv, addr := e.startLimited(Limits{})
	done := dialAt(t, addr, "127.0.0.1")
	if _, err := done.Send(aliceEnv, testkit.CRLF([]byte(outbound)), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session", func() bool { return srv.Sessions() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cut := srv.Shutdown(ctx); cut != 0 {
		t.Errorf("%d finished sessions were cut as if a message were in flight", cut)
	}
}

// The packet follower: MAIL, a header, end of headers or body start a
// message; end of message, ABORT and QUIT end it, and so does a final
// answer of ours (a reply code at end of headers), split across writes
// or not.
func TestConnBusyState(t *testing.T) {
	pkt := func(code byte, payload string) []byte {
		b := []byte{0, 0, 0, byte(len(payload) + 1), code}
		return append(b, payload...)
	}
	c := &conn{t: newTracker(nil, Limits{}, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	steps := []struct {
		in, out []byte
		busy    bool
	}{
		{in: pkt('D', "i\x00Q1\x00"), busy: false},
		{in: pkt('M', "<a@example.com>\x00"), busy: true},
		{in: pkt('L', "From\x00 a\x00"), busy: true},
		{out: pkt('y', "451 4.3.0 try later\x00")[:3], busy: true},
		{out: pkt('y', "451 4.3.0 try later\x00")[3:], busy: false},
		{in: append(pkt('A', ""), pkt('M', "<b@example.com>\x00")...), busy: true},
		{in: pkt('B', "body"), busy: true},
		{out: pkt('i', "\x00\x00\x00\x00DKIM-Signature\x00 v=1\x00"), busy: true},
		{in: pkt('E', ""), busy: false},
	}
	for i, st := range steps {
		c.parse(st.in)
		c.sent(st.out)
		if c.busy.Load() != st.busy {
			t.Errorf("step %d: busy %v, want %v", i, c.busy.Load(), st.busy)
		}
	}
}

// The queue id is taken from the macro packets as they stream by, split
// anywhere, kept until the message ends; a macro packet too big to keep
// is passed over without losing the packet boundaries.
func TestConnQueueID(t *testing.T) {
	pkt := func(code byte, payload string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
		return append(append(b, code), payload...)
	}
	c := &conn{t: newTracker(nil, Limits{}, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	var stream []byte
	stream = append(stream, pkt('D', "M{mail_addr}\x00a@example.com\x00")...)
	stream = append(stream, pkt('M', "<a@example.com>\x00")...)
	stream = append(stream, pkt('D', "T{x}\x00"+strings.Repeat("y", maxMacroPacket)+"\x00i\x00WRONG\x00")...)
	stream = append(stream, pkt('D', "Ti\x00Q1\x00")...)
	stream = append(stream, pkt('T', "")...)
	for i := range stream {
		c.parse(stream[i : i+1])
	}
	if c.qid != "Q1" || !c.busy.Load() {
		t.Errorf("after DATA: qid %q busy %v, want Q1 and busy", c.qid, c.busy.Load())
	}
	c.parse(append(pkt('L', "From\x00 a\x00"), pkt('E', "")...))
	if c.qid != "" {
		t.Errorf("after end of message: qid %q, want none", c.qid)
	}
}

// Following the macro packets costs no allocation: Postfix sends one
// before every header and body chunk.
func TestConnQueueIDAllocs(t *testing.T) {
	pkt := func(code byte, payload string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
		return append(append(b, code), payload...)
	}
	c := &conn{t: newTracker(nil, Limits{}, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	stream := append(pkt('D', "Li\x004XABC\x00"), pkt('L', "From\x00 a\x00")...)
	c.parse(stream)
	if n := testing.AllocsPerRun(100, func() { c.parse(stream) }); n != 0 || c.qid != "4XABC" {
		t.Errorf("%v allocations per header, qid %q", n, c.qid)
	}
}

// A message that outlives limits.message_timeout during a drain is cut by
// the timeout, not spun on: the drain ends without its own deadline.
func TestShutdownMessageTimeout(t *testing.T) {
	e := newEnv(t, "")
	srv, addr := e.startLimited(Limits{MessageTimeout: 300 * time.Millisecond})
	busy := dialAt(t, addr, "127.0.0.1")
	startMessage(t, busy)
	waitFor(t, "the session", func() bool { return srv.Sessions() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv.Shutdown(ctx)
	if ctx.Err() != nil {
		t.Error("the drain waited for its own deadline: the message timeout did not end the session")
	}
	if !strings.Contains(e.logs.String(), "limits.message_timeout") {
		t.Errorf("log: %s", e.logs.String())
	}
}
