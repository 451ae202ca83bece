package milter

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// startLimited starts a second server on e's runtime with limits.
func (e *env) startLimited(l Limits) (*Server, string) {
	e.t.Helper()
	srv := NewServer(ServerOptions{Runtime: e.rt, Log: e.srv.log, Limits: l, Metrics: e.metrics})
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

// shutdown runs srv.Shutdown with a deadline in the background; the
// channel has what it returned and how long it took.
type shutdownResult struct {
	cut  int
	took time.Duration
}

func shutdown(srv *Server, timeout time.Duration) <-chan shutdownResult {
	out := make(chan shutdownResult, 1)
	go func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		n := srv.Shutdown(ctx)
		out <- shutdownResult{n, time.Since(start)}
	}()
	return out
}

// A drain keeps every connection Postfix holds: one between two messages
// (Postfix reads nothing from it until its next message ends, which would
// meet a closed socket) and one with a message in flight. Both messages
// that come during the drain are signed, and the drain ends as soon as
// Postfix closes the connections (QUIT), long before its grace or its
// deadline.
func TestShutdownDrains(t *testing.T) {
	e := newEnv(t, "")
	srv, addr := e.startLimited(Limits{})
	idle := dialAt(t, addr, "127.0.0.1")
	if r, err := idle.Send(aliceEnv, testkit.CRLF([]byte(outbound)), 0); err != nil || len(testkit.Mods(r, gomilter.ActInsertHeader)) != 1 {
		t.Fatalf("first message: %v %+v", err, r)
	}
	busy := dialAt(t, addr, "127.0.0.1")
	startMessage(t, busy)
	waitFor(t, "two sessions", func() bool { return srv.Sessions() == 2 })

	res := shutdown(srv, time.Minute)
	waitFor(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	// Longer than a drain used to give an idle connection.
	time.Sleep(300 * time.Millisecond)
	if n := srv.Sessions(); n != 2 {
		t.Fatalf("%d sessions left after the drain began, want 2: a connection Postfix holds was closed", n)
	}
	r, err := idle.Send(aliceEnv, testkit.CRLF([]byte(outbound)), 0)
	if err != nil || len(testkit.Mods(r, gomilter.ActInsertHeader)) != 1 {
		t.Errorf("next message on the idle connection during the drain: %v %+v", err, r)
	}
	if mods := finishMessage(t, busy); len(mods) != 1 || mods[0].HeaderName != "DKIM-Signature" {
		t.Errorf("message in flight during the drain: %+v", mods)
	}
	idle.Close()
	busy.Close()
	select {
	case r := <-res:
		if r.cut != 0 || r.took > DefaultDrainGrace {
			t.Errorf("drain cut %d messages and took %v; want 0, ended by the clients' QUIT", r.cut, r.took)
		}
	case <-time.After(DefaultDrainGrace):
		t.Fatal("the drain did not end when Postfix closed its connections")
	}
	if srv.Sessions() != 0 {
		t.Errorf("%d sessions left", srv.Sessions())
	}
}

// Once a message has ended during the drain, a connection that then stays
// idle for the grace is closed, and the drain ends with it; a connection
// with no message since the drain began is not closed by the grace, only
// by the drain's deadline, and that cuts no message.
func TestShutdownGrace(t *testing.T) {
	e := newEnv(t, "")
	grace := 300 * time.Millisecond
	srv, addr := e.startLimited(Limits{DrainGrace: grace})
	done := dialAt(t, addr, "127.0.0.1")
	quiet := dialAt(t, addr, "127.0.0.1")
	if _, err := quiet.Send(aliceEnv, testkit.CRLF([]byte(outbound)), 0); err != nil {
		t.Fatal(err)
	}
	// The milter notes that the message ended just after it wrote the
	// answer this client has read: let it, so that the message counts
	// as ended before the drain.
	time.Sleep(100 * time.Millisecond)
	res := shutdown(srv, 3*time.Second)
	time.Sleep(50 * time.Millisecond)
	if _, err := done.Send(aliceEnv, testkit.CRLF([]byte(outbound)), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the connection idle after its message to be closed", func() bool { return srv.Sessions() == 1 })
	if _, err := done.Send(aliceEnv, testkit.CRLF([]byte(outbound)), 0); err == nil {
		t.Error("the connection idle past the grace still answers")
	}
	r := <-res
	if r.cut != 0 {
		t.Errorf("cut %d messages, want 0: no message was in flight", r.cut)
	}
	if r.took < 3*time.Second {
		t.Errorf("the drain took %v: the connection with no message since it began was closed before the deadline", r.took)
	}
	if !strings.Contains(e.logs.String(), `msg="stop deadline reached: closing the milter connections left" messages_in_flight=0 between_messages=1`) {
		t.Errorf("log:\n%s", e.logs.String())
	}
}

// When the deadline passes, every message still in flight is cut: each is
// logged with its queue id and stage, and counted; a connection between
// messages is closed without counting as a cut message.
func TestShutdownDeadlineCuts(t *testing.T) {
	e := newEnv(t, "")
	srv, addr := e.startLimited(Limits{})
	inHeader := dialAt(t, addr, "127.0.0.1")
	s := inHeader.Session
	if _, err := s.Mail("alice@example.com", nil); err != nil {
		t.Fatal(err)
	}
	s.Macros(gomilter.CodeHeader, "i", "4XCUTHDR1")
	s.HeaderField("From", " alice@example.com")
	inBody := dialAt(t, addr, "127.0.0.1")
	inBody.Session.Macros(gomilter.CodeMail, "i", "4XCUTBODY")
	startMessage(t, inBody)
	idle := dialAt(t, addr, "127.0.0.1")
	_ = idle
	waitFor(t, "three sessions", func() bool { return srv.Sessions() == 3 })
	r := <-shutdown(srv, 300*time.Millisecond)
	if r.cut != 2 {
		t.Errorf("cut %d, want 2", r.cut)
	}
	if srv.Sessions() != 0 {
		t.Errorf("%d sessions left", srv.Sessions())
	}
	log := e.logs.String()
	for _, want := range []string{
		`msg="milter connection ended in the middle of a message" qid=4XCUTHDR1 stage=header .* cause=shutdown`,
		`msg="milter connection ended in the middle of a message" qid=4XCUTBODY stage=body .* cause=shutdown`,
	} {
		if !regexp.MustCompile(want).MatchString(log) {
			t.Errorf("log lacks %s", want)
		}
	}
	if n := strings.Count(log, "ended in the middle of a message"); n != 2 {
		t.Errorf("%d messages logged as cut, want 2:\n%s", n, log)
	}
	var b strings.Builder
	e.metrics.WritePrometheus(&b)
	if !strings.Contains(b.String(), `dkimmilter_messages_cut_total{cause="shutdown"} 2`) {
		t.Errorf("scrape:\n%s", b.String())
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
// session whose message is answered has no message in flight, and the
// drain's deadline closes it without counting a cut message.
func TestShutdownAfterFinishedMessage(t *testing.T) {
	e := newEnv(t, "")
	srv, addr := e.startLimited(Limits{})
	done := dialAt(t, addr, "127.0.0.1")
	if _, err := done.Send(aliceEnv, testkit.CRLF([]byte(outbound)), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session", func() bool { return srv.Sessions() == 1 })
	if r := <-shutdown(srv, 200*time.Millisecond); r.cut != 0 {
		t.Errorf("%d finished sessions were cut as if a message were in flight", r.cut)
	}
	if strings.Contains(e.logs.String(), "ended in the middle of a message") {
		t.Errorf("log:\n%s", e.logs.String())
	}
}

// The packet follower: MAIL, a header, end of headers or body start a
// message; our answer to end of message, ABORT and QUIT end it, and so
// does a final answer of ours (a reply code at end of headers), split
// across writes or not.
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
		{in: pkt('E', ""), busy: true},
		{out: pkt('i', "\x00\x00\x00\x00DKIM-Signature\x00 v=1\x00"), busy: true},
		{out: pkt('c', ""), busy: false},
		// A continue that answers anything but end of message (DATA
		// without SMFIP_NR_DATA) ends nothing.
		{in: pkt('M', "<c@example.com>\x00"), busy: true},
		{out: pkt('c', ""), busy: true},
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
	if c.qid != "Q1" {
		t.Errorf("at end of message: qid %q, want Q1 until it is answered", c.qid)
	}
	c.sent(pkt('c', ""))
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

// A message whose end of message is still waiting on DNS when the
// deadline passes gets a moment more, then its connection is closed under
// it: the answer never reaches Postfix, and the message is logged as cut
// at end of message (the session has let go of it by then: the queue id
// comes from the connection) and counted.
func TestShutdownCutsEndOfMessage(t *testing.T) {
	e := newEnv(t, strings.Replace(baseConfig, `timeout = "1s"`, `timeout = "10s"`, 1))
	k := testkit.RSAKey(2048)
	name := "slow._domainkey.sender.example"
	e.dns.SetTXT(name, testkit.KeyRecord(k, ""))
	e.dns.SetDelay(name, 3*time.Second)
	msg := testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d=sender.example; s=slow; h=from:to:subject", k)
	srv, addr := e.startLimited(Limits{})
	c := dialAt(t, addr, remote)
	sent := make(chan error, 1)
	go func() {
		_, err := c.Send(daveEnv, testkit.CRLF([]byte(msg)), 0)
		sent <- err
	}()
	waitFor(t, "the key lookup", func() bool { return e.dns.Queries(name) > 0 })
	if r := <-shutdown(srv, 100*time.Millisecond); r.cut != 1 {
		t.Errorf("cut %d, want 1", r.cut)
	}
	if err := <-sent; err == nil {
		t.Error("end of message was answered after the stop closed the connection")
	}
	want := `msg="milter connection ended in the middle of a message" qid=4Xin0001 stage="end of message" .* cause=shutdown`
	if !regexp.MustCompile(want).MatchString(e.logs.String()) {
		t.Errorf("log lacks %s", want)
	}
}
