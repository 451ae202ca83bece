package milter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// Limits bound what one connection may cost. go-milter v0.5.0 has no
// timeouts, no limit on connections and no drain (doc/postfix.md): its
// Serve starts a goroutine per connection and reads with no deadline, and
// Close only closes the listener. The listener and connection wrappers in
// this file add all three without forking it.
type Limits struct {
	MaxSessions    int           // concurrent milter connections; 0: no limit
	IdleTimeout    time.Duration // no packet from Postfix for this long ends the session; 0: none
	MessageTimeout time.Duration // one message (MAIL to ABORT) may take this long; 0: none
	// DrainGrace is how long a connection whose message ended during a
	// drain may stay idle before the drain closes it; 0: DefaultDrainGrace.
	// Only tests change it.
	DrainGrace time.Duration
}

// DefaultDrainGrace is how long, during a drain, a milter connection may
// stay idle after a message ended on it before it is closed.
//
// Postfix keeps one milter connection per SMTP session and, with the
// no-reply flags, reads nothing from it until end of message: a
// connection we close between messages is noticed only when the session's
// next message meets the closed socket at its end, and that message gets
// milter_default_action. So a drain never closes a connection on which it
// has not seen a message end: its SMTP client may be in its TLS
// handshake, its AUTH, or between two messages, and only Postfix (QUIT,
// close) or limits.shutdown_timeout ends it. Once a message has ended
// during the drain, the session's next packet comes as soon as its SMTP
// client sends the next MAIL FROM, which a client with more to send does
// within a round trip or two of our answer (its 250); a connection that
// stays idle is idle because its client is. The longest pause Postfix's
// own SMTP client leaves between two messages on one session is
// smtp_connection_cache_time_limit (2s by default: a cached connection
// then QUITs); 5s covers that and a slow client's round trips, and
// delays the end of a drain by at most that much after the last message.
const DefaultDrainGrace = 5 * time.Second

// cutWindow is how long, once the drain's deadline has passed, what
// Postfix has already sent is still read, so that a message already in the
// socket is finished (its end of message included) or at least named in
// the log, not lost unseen. hardClose is how long a connection busy in a
// callback (an end of message waiting on DNS) gets after that before its
// socket is closed under it.
const (
	cutWindow = 100 * time.Millisecond
	hardClose = time.Second
)

// tracker is the listener wrapper: it counts connections, enforces
// MaxSessions, and knows each connection's state for a graceful drain.
type tracker struct {
	net.Listener
	limits  Limits
	log     *slog.Logger
	metrics *Metrics // nil counts nothing
	sem     chan struct{}
	now     func() time.Time

	mu          sync.Mutex
	conns       map[*conn]struct{}
	draining    bool
	drainingNow atomic.Bool
	done        sync.WaitGroup

	// stopAt is set when the drain's deadline has passed: connections
	// read until then, and end (Read).
	stopAt atomic.Pointer[time.Time]
	cut    atomic.Int32 // messages cut by the drain's deadline

	full atomic.Bool // logged "limit reached" once per episode

	quit     chan struct{} // closed by Close: Accept stops waiting for a slot
	quitOnce sync.Once
}

func newTracker(ln net.Listener, limits Limits, log *slog.Logger) *tracker {
	t := &tracker{Listener: ln, limits: limits, log: log, conns: map[*conn]struct{}{}, now: time.Now, quit: make(chan struct{})}
	if limits.MaxSessions > 0 {
		t.sem = make(chan struct{}, limits.MaxSessions)
	}
	return t
}

// Accept waits for a free session slot, then for a connection. While all
// slots are taken, new connections wait in the kernel's backlog: Postfix
// waits milter_connect_timeout for them, which beats refusing outright.
func (t *tracker) Accept() (net.Conn, error) {
	if t.sem != nil {
		select {
		case t.sem <- struct{}{}:
		default:
			t.metrics.limit(limitMaxSessions)
			if !t.full.Swap(true) {
				t.log.Warn("session limit reached: new milter connections wait", "max_sessions", t.limits.MaxSessions)
			}
			select {
			case t.sem <- struct{}{}:
			case <-t.quit:
				return nil, net.ErrClosed
			}
			t.full.Store(false)
		}
	}
	c, err := t.acceptRetry()
	if err != nil {
		if t.sem != nil {
			<-t.sem
		}
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// Replies are single small writes (go-milter flushes a bufio per
		// packet); Nagle would hold each one back for a delayed ACK.
		tc.SetNoDelay(true)
	}
	mc := &conn{Conn: c, t: t, ack: tcpAcker(c)}
	mc.rd = bufio.NewReaderSize(socket{mc}, 4096)
	t.mu.Lock()
	if t.draining {
		t.mu.Unlock()
		c.Close()
		if t.sem != nil {
			<-t.sem
		}
		return nil, net.ErrClosed
	}
	t.conns[mc] = struct{}{}
	t.done.Add(1)
	t.mu.Unlock()
	return mc, nil
}

// acceptRetry retries the errors a busy server sees (out of file
// descriptors, a connection reset before it was accepted) with a backoff,
// as net/http does: go-milter's Serve returns on the first Accept error,
// which would stop the daemon from serving for a passing shortage.
func (t *tracker) acceptRetry() (net.Conn, error) {
	delay := 5 * time.Millisecond
	for {
		c, err := t.Listener.Accept()
		if err == nil || errors.Is(err, net.ErrClosed) || !retryable(err) {
			return c, err
		}
		t.log.Warn("accept failed, retrying", "err", err, "in", delay)
		time.Sleep(delay)
		if delay *= 2; delay > time.Second {
			delay = time.Second
		}
	}
}

func retryable(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// Close stops accepting, also while Accept waits for a free slot.
func (t *tracker) Close() error {
	t.quitOnce.Do(func() { close(t.quit) })
	return t.Listener.Close()
}

// Sessions returns the number of open milter connections.
func (t *tracker) Sessions() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// drain stops new sessions and waits for the open ones to end: each ends
// when Postfix closes it (QUIT, or the SMTP client gone), or when a
// message ended on it during the drain and it then stayed idle for the
// grace (DefaultDrainGrace). When ctx ends, what Postfix has already sent
// is read for cutWindow, then every connection ends: a message still in
// flight is cut, and logged and counted by its session. drain returns how
// many messages it cut.
func (t *tracker) drain(ctx context.Context) int {
	t.mu.Lock()
	t.draining = true
	t.drainingNow.Store(true)
	t.mu.Unlock()

	finished := make(chan struct{})
	go func() { t.done.Wait(); close(finished) }()
	select {
	case <-finished:
		return int(t.cut.Load())
	case <-ctx.Done():
	}
	at := t.now().Add(cutWindow)
	t.stopAt.Store(&at)
	t.mu.Lock()
	busy := 0
	for c := range t.conns {
		if c.busy.Load() {
			busy++
		}
		// Wakes a Read blocked on the socket; one about to block sees
		// stopAt (setDeadline).
		c.Conn.SetReadDeadline(at)
	}
	if n := len(t.conns); n > 0 {
		t.log.Warn("stop deadline reached: closing the milter connections left", "messages_in_flight", busy, "between_messages", n-busy,
			"then", "a message cut is logged on its own; Postfix applies milter_default_action to it, and to the next message of a session closed between messages")
	}
	t.mu.Unlock()
	select {
	case <-finished:
		return int(t.cut.Load())
	case <-time.After(cutWindow + hardClose):
	}
	// Busy in a callback: an end of message still waiting on DNS.
	t.mu.Lock()
	for c := range t.conns {
		c.cause.CompareAndSwap(int32(causeClosed), int32(causeShutdown))
		c.Conn.Close()
	}
	t.mu.Unlock()
	<-finished
	return int(t.cut.Load())
}

// isDraining is read on every packet: an atomic copy of draining.
func (t *tracker) isDraining() bool { return t.drainingNow.Load() }

// grace is Limits.DrainGrace or its default.
func (t *tracker) grace() time.Duration {
	if g := t.limits.DrainGrace; g > 0 {
		return g
	}
	return DefaultDrainGrace
}

func (t *tracker) remove(c *conn) {
	t.mu.Lock()
	_, ok := t.conns[c]
	delete(t.conns, c)
	t.mu.Unlock()
	if ok {
		t.done.Done()
		if t.sem != nil {
			<-t.sem
		}
	}
}

// conn follows the milter packets Postfix sends, without buffering them,
// and our answers, to know whether a message is in progress: MAIL starts
// one; our answer to end of message (or a refusal), ABORT or QUIT ends it.
// That is what lets a drain wait for the messages in flight, and close a
// connection only between messages.
type conn struct {
	net.Conn
	t *tracker

	in, out packets // what Postfix sends, what we answer
	rd      *bufio.Reader

	// ack, for a TCP connection on Linux, acknowledges at once what was
	// just read (quickack_linux.go); nil otherwise.
	ack func()

	busy     atomic.Bool
	msgStart time.Time
	qid      string // the queue id Postfix sent for the message in progress (macros)
	// eom: Postfix sent end of message, and we have not answered it yet.
	eom bool
	// endedInDrain: a message ended on this connection during a drain,
	// whose grace then applies (DefaultDrainGrace).
	endedInDrain bool
	cause        atomic.Int32 // a cutCause: why the connection ended
	wrote        bool         // our first packet, the negotiation reply, is written
	// noDataReply: SMFIP_NR_DATA was negotiated, and dropReplies counts
	// the DATA events whose reply go-milter has yet to write (and we to
	// drop): see dropDataReply.
	noDataReply bool
	dropReplies int
	closeOnce   sync.Once
	eof         bool
	onClose     func(cause cutCause, eom bool) bool // set before the connection is served; true: a message was cut
}

// Read serves go-milter from a small buffer: go-milter reads each packet
// with two reads (its length, then the rest), and with the no-reply flags
// Postfix sends a message's header packets back to back, so one system
// call now brings many packets. Body chunks bigger than the buffer are
// read straight into go-milter's slice.
//
// The connection ends here, with a clean EOF (go-milter takes it as the
// MTA hanging up and logs nothing), when a drain's grace or deadline says
// so between messages; with an error that go-milter logs at debug when a
// limit or the drain's deadline cuts a message.
func (c *conn) Read(p []byte) (int, error) {
	for {
		if c.eof {
			return 0, io.EOF
		}
		kind := noDeadline
		if c.rd.Buffered() == 0 {
			// Only a read that goes to the socket can wait.
			kind = c.setDeadline()
			if kind != stopDeadline && c.t.stopAt.Load() != nil {
				// The drain's deadline passed after setDeadline looked,
				// and setDeadline may have undone its wake-up.
				continue
			}
		}
		n, err := c.rd.Read(p)
		c.parse(p[:n])
		if n == 0 && err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			switch {
			case c.t.stopAt.Load() != nil:
				if c.busy.Load() {
					c.cause.Store(int32(causeShutdown))
					return 0, errShutdown
				}
				c.eof = true
				return 0, io.EOF
			case kind == graceDeadline:
				c.t.log.Debug("stopping: milter connection idle after its message, closed", "grace", c.t.grace(), "client", c.RemoteAddr().String())
				c.eof = true
				return 0, io.EOF
			}
			return n, c.timeoutError(kind)
		}
		return n, err
	}
}

// errShutdown ends a connection whose message the drain's deadline cut.
var errShutdown = errors.New("milter: shutdown_timeout")

// socket is the connection's unbuffered read side, for conn.rd.
type socket struct{ c *conn }

func (s socket) Read(p []byte) (int, error) {
	n, err := s.c.Conn.Read(p)
	if n > 0 && s.c.ack != nil {
		s.c.ack()
	}
	return n, err
}

// The deadlines a read may wait for.
type deadline uint8

const (
	noDeadline      deadline = iota
	idleDeadline             // limits.idle_timeout
	messageDeadline          // limits.message_timeout
	graceDeadline            // a drain's grace, after a message
	stopDeadline             // the drain's deadline (limits.shutdown_timeout)
)

// timeoutError says which limit ended the session.
func (c *conn) timeoutError(kind deadline) error {
	l := c.t.limits
	if kind == messageDeadline {
		c.cause.Store(int32(causeMessageTimeout))
		c.t.metrics.limit(limitMessageTimeout)
		c.t.log.Warn("message took longer than limits.message_timeout: session closed", "limit", l.MessageTimeout, "client", c.RemoteAddr().String())
		return errors.New("milter: message timeout")
	}
	c.cause.Store(int32(causeIdleTimeout))
	c.t.metrics.limit(limitIdleTimeout)
	c.t.log.Info("milter connection idle longer than limits.idle_timeout: closed", "limit", l.IdleTimeout)
	return errors.New("milter: idle timeout")
}

// setDeadline arms the read deadline, the earliest of: the idle timeout;
// the end of the message deadline; during a drain, the grace after a
// message; the drain's deadline. It returns which one it armed.
func (c *conn) setDeadline() deadline {
	l := c.t.limits
	var d time.Time
	kind := noDeadline
	earliest := func(t time.Time, k deadline) {
		if d.IsZero() || t.Before(d) {
			d, kind = t, k
		}
	}
	now := c.t.now()
	if l.IdleTimeout > 0 {
		earliest(now.Add(l.IdleTimeout), idleDeadline)
	}
	busy := c.busy.Load()
	if busy && l.MessageTimeout > 0 {
		earliest(c.msgStart.Add(l.MessageTimeout), messageDeadline)
	}
	if !busy && c.endedInDrain {
		earliest(now.Add(c.t.grace()), graceDeadline)
	}
	if at := c.t.stopAt.Load(); at != nil {
		earliest(*at, stopDeadline)
	}
	c.Conn.SetReadDeadline(d)
	return kind
}

// packets follows packet boundaries in a byte stream without buffering
// it: hdr collects the 4-byte length and the command byte, skip counts the
// payload bytes still to pass over. The payload of a macro packet
// (SMFIC_MACRO) of at most maxMacroPacket bytes is kept, for the queue id.
type packets struct {
	hdr  [5]byte
	hn   int
	skip uint32
	// macro collects the macro packet being read (keeping), its buffer
	// reused: Postfix sends one before every header and body chunk.
	macro   []byte
	keeping bool
}

// maxMacroPacket bounds what is kept of a macro packet: Postfix's are a
// few hundred bytes; a bigger one is passed over.
const maxMacroPacket = 4096

// feed calls cmd with the command byte of each packet that starts in p,
// and macros (if not nil) with the payload of each macro packet.
func (k *packets) feed(p []byte, cmd func(byte), macros func([]byte)) {
	for len(p) > 0 {
		if k.skip > 0 {
			n := uint32(len(p))
			if n > k.skip {
				n = k.skip
			}
			if k.keeping {
				k.macro = append(k.macro, p[:n]...)
			}
			k.skip -= n
			p = p[n:]
			if k.skip == 0 && k.keeping {
				macros(k.macro)
				k.keeping = false
			}
			continue
		}
		n := copy(k.hdr[k.hn:], p)
		k.hn += n
		p = p[n:]
		if k.hn < len(k.hdr) {
			return
		}
		k.hn = 0
		if l := binary.BigEndian.Uint32(k.hdr[:4]); l > 0 {
			k.skip = l - 1
		}
		cmd(k.hdr[4])
		if k.hdr[4] == 'D' && macros != nil && k.skip > 0 && k.skip <= maxMacroPacket {
			k.macro, k.keeping = k.macro[:0], true
		}
	}
}

// parse follows what Postfix sends. A message ends with our answer to end
// of message (SMFIC_BODYEOB, see sent): Postfix 3.7 sends SMFIC_ABORT only
// before the next MAIL or at QUIT, not after each message, so waiting for
// ABORT would keep a finished session "busy" and make every drain wait its
// deadline.
func (c *conn) parse(p []byte) {
	c.in.feed(p, c.command, c.macros)
}

func (c *conn) command(code byte) {
	switch code {
	case 'M', 'L', 'N', 'B':
		// SMFIC_MAIL starts a message. A header, end of headers or
		// body without it (no MTA does that) starts one too, so that
		// limits.message_timeout bounds it: go-milter keeps every
		// header field until ABORT, whatever our limits keep.
		if !c.busy.Load() {
			c.msgStart = c.t.now()
			c.busy.Store(true)
		}
	case 'E': // SMFIC_BODYEOB: the message ends with our answer (sent)
		c.eom = true
	case 'A', 'Q': // SMFIC_ABORT, SMFIC_QUIT
		c.endMessage()
	case 'T': // SMFIC_DATA
		if c.noDataReply {
			c.dropReplies++
		}
	}
}

// macros notes the queue id of the message in progress: Postfix sends it
// with DATA (milter_data_macros), before the message content, so that a
// message cut before its header (a drain, a timeout, Postfix gone) is still
// named in the log. The payload is the stage's command byte, then name and
// value pairs, each NUL-terminated.
func (c *conn) macros(p []byte) {
	if len(p) == 0 {
		return
	}
	// Without allocating: this runs for every header and body chunk.
	for rest := p[1:]; ; {
		name, after, ok := bytes.Cut(rest, []byte{0})
		if !ok {
			return
		}
		value, next, ok := bytes.Cut(after, []byte{0})
		if !ok {
			return
		}
		if (string(name) == "i" || string(name) == "{i}") && len(value) > 0 && string(value) != c.qid {
			c.qid = string(value)
		}
		rest = next
	}
}

// sent follows our answers: the answer to end of message ends the
// message, and so does a reply code, reject, tempfail, discard or accept
// at any stage (Postfix sends no more of the message after one).
func (c *conn) sent(p []byte) {
	c.out.feed(p, func(code byte) {
		switch code {
		case 'c':
			if c.eom {
				c.endMessage()
			}
		case 'y', 'r', 't', 'd', 'a':
			c.endMessage()
		}
	}, nil)
}

// endMessage: the message in progress is over (or there was none).
func (c *conn) endMessage() {
	if (c.busy.Load() || c.eom) && c.t.isDraining() {
		c.endedInDrain = true
	}
	c.busy.Store(false)
	c.eom = false
	c.qid = ""
}

func (c *conn) Write(p []byte) (int, error) {
	if l := c.t.limits.IdleTimeout; l > 0 {
		// Postfix not reading our reply for this long is as dead as one
		// not writing.
		c.Conn.SetWriteDeadline(c.t.now().Add(l))
	}
	if !c.wrote {
		c.wrote = true
		p = protocolVersion6(p)
		c.noDataReply = negotiated(p)&uint32(gomilter.OptNoDataReply) != 0
	}
	if c.dropDataReply(p) {
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	c.sent(p[:n])
	return n, err
}

// dropDataReply swallows go-milter's answer to DATA. go-milter has no
// handler for DATA and always answers it "continue"; with SMFIP_NR_DATA
// Postfix does not read that answer, and a packet it does not expect
// would be read as the answer to a later event. Dropping it saves the
// round trip DATA would cost otherwise (Postfix waits for the reply before
// it answers the client's DATA). go-milter answers each packet before it
// reads the next, so the next packet we write after a DATA is its answer.
func (c *conn) dropDataReply(p []byte) bool {
	if c.dropReplies == 0 || !bytes.Equal(p, []byte{0, 0, 0, 1, 'c'}) {
		return false
	}
	c.dropReplies--
	return true
}

// negotiated returns the protocol flags of our negotiation reply p
// (length, 'O', version, actions, protocol), or 0.
func negotiated(p []byte) uint32 {
	if len(p) < 17 || p[4] != 'O' {
		return 0
	}
	return binary.BigEndian.Uint32(p[13:17])
}

// protocolVersion6 answers Postfix's option negotiation with milter
// protocol version 6 where go-milter writes 2. go-milter implements the
// version 6 flags it negotiates (the no-reply flags, SMFIP_HDR_LEADSPC)
// but announces version 2, under which Postfix sends no SMFIC_DATA: the
// queue id, which arrives with DATA, would stay unknown until the message
// content, and a message cut before it could not be named in the log.
// go-milter answers SMFIC_DATA with "continue", as version 6 expects
// without SMFIP_NR_DATA. p is go-milter's whole reply (one write through
// its bufio.Writer).
func protocolVersion6(p []byte) []byte {
	if len(p) < 9 || p[4] != 'O' || binary.BigEndian.Uint32(p[5:9]) != 2 {
		return p
	}
	q := append([]byte(nil), p...)
	binary.BigEndian.PutUint32(q[5:9], 6)
	return q
}

// Close is called by go-milter when the session ends, after its own
// recover: a panic here would take the daemon down, so onClose gets a
// recover of its own. The session learns why the connection ended, and
// whether end of message was still unanswered (its own message state is
// gone by then); a message the drain's deadline cut is counted for
// Shutdown before the connection stops counting as open.
func (c *conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		defer c.t.remove(c)
		if c.onClose != nil {
			defer func() {
				if v := recover(); v != nil {
					c.t.log.Error("panic while closing a milter session", "panic", v)
				}
			}()
			cause := cutCause(c.cause.Load())
			if c.onClose(cause, c.eom) && cause == causeShutdown {
				c.t.cut.Add(1)
			}
		}
	})
	return err
}
