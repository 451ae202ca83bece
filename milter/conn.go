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
}

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

// drain stops new sessions, ends idle ones now and the others as soon as
// their message is done, and force-closes what is left when ctx ends. It
// returns how many connections had to be cut mid-message.
func (t *tracker) drain(ctx context.Context) int {
	t.mu.Lock()
	t.draining = true
	t.drainingNow.Store(true)
	for c := range t.conns {
		c.wake()
	}
	t.mu.Unlock()

	finished := make(chan struct{})
	go func() { t.done.Wait(); close(finished) }()
	select {
	case <-finished:
		return 0
	case <-ctx.Done():
	}
	t.mu.Lock()
	cut := len(t.conns)
	for c := range t.conns {
		c.Conn.Close()
	}
	t.mu.Unlock()
	<-finished
	return cut
}

// isDraining is read on every packet: an atomic copy of draining.
func (t *tracker) isDraining() bool { return t.drainingNow.Load() }

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
// to know whether a message is in progress: MAIL starts one, ABORT (which
// Postfix sends after every message) or QUIT ends it. That is what lets a
// drain close idle sessions at once and busy ones between messages.
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
	wrote    bool   // our first packet, the negotiation reply, is written
	// noDataReply: SMFIP_NR_DATA was negotiated, and dropReplies counts
	// the DATA events whose reply go-milter has yet to write (and we to
	// drop): see dropDataReply.
	noDataReply bool
	dropReplies int
	closeOnce   sync.Once
	eof         bool
	onClose     func() // set before the connection is served
}

// Read serves go-milter from a small buffer: go-milter reads each packet
// with two reads (its length, then the rest), and with the no-reply flags
// Postfix sends a message's header packets back to back, so one system
// call now brings many packets. Body chunks bigger than the buffer are
// read straight into go-milter's slice.
//
// During a drain, a session between messages ends here with a clean EOF
// (go-milter takes it as the MTA hanging up and logs nothing), unless
// Postfix has already sent more: with the no-reply flags it does not wait
// for us after MAIL, so a message may be in the socket before we see it.
func (c *conn) Read(p []byte) (int, error) {
	for {
		if c.eof {
			return 0, io.EOF
		}
		if c.t.isDraining() && !c.busy.Load() && !c.pending() {
			c.eof = true
			return 0, io.EOF
		}
		if c.rd.Buffered() == 0 {
			// Only a read that goes to the socket can wait.
			c.setDeadline()
			if c.t.isDraining() && !c.busy.Load() {
				// The drain began after the check above, and setDeadline
				// may have undone its wake-up: check again.
				continue
			}
		}
		n, err := c.rd.Read(p)
		c.parse(p[:n])
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			if n == 0 && c.t.isDraining() && !c.messageExpired() {
				// Woken by the drain, or a deadline during it: between
				// messages the check above ends the session; during one,
				// keep waiting for its end (the drain's own deadline
				// cuts it otherwise, and so does the message timeout).
				continue
			}
			return n, c.timeoutError()
		}
		return n, err
	}
}

// socket is the connection's unbuffered read side, for conn.rd.
type socket struct{ c *conn }

func (s socket) Read(p []byte) (int, error) {
	n, err := s.c.Conn.Read(p)
	if n > 0 && s.c.ack != nil {
		s.c.ack()
	}
	return n, err
}

// drainGrace is how long a drain waits for packets already on their way
// from an idle session before ending it.
const drainGrace = 100 * time.Millisecond

// pending reports whether Postfix has sent something we have not read.
func (c *conn) pending() bool {
	if c.rd.Buffered() > 0 {
		return true
	}
	c.Conn.SetReadDeadline(c.t.now().Add(drainGrace))
	_, err := c.rd.Peek(1)
	return err == nil
}

// messageExpired: a message is in flight and has used up
// limits.message_timeout.
func (c *conn) messageExpired() bool {
	l := c.t.limits
	return c.busy.Load() && l.MessageTimeout > 0 && c.t.now().Sub(c.msgStart) >= l.MessageTimeout
}

// timeoutError says which limit ended the session.
func (c *conn) timeoutError() error {
	l := c.t.limits
	if c.messageExpired() {
		c.t.metrics.limit(limitMessageTimeout)
		c.t.log.Warn("message took longer than limits.message_timeout: session closed", "limit", l.MessageTimeout, "client", c.RemoteAddr().String())
		return errors.New("milter: message timeout")
	}
	c.t.metrics.limit(limitIdleTimeout)
	c.t.log.Info("milter connection idle longer than limits.idle_timeout: closed", "limit", l.IdleTimeout)
	return errors.New("milter: idle timeout")
}

// setDeadline arms the read deadline: the idle timeout, or the end of the
// message deadline if sooner.
func (c *conn) setDeadline() {
	l := c.t.limits
	var d time.Time
	now := c.t.now()
	if l.IdleTimeout > 0 {
		d = now.Add(l.IdleTimeout)
	}
	if c.busy.Load() && l.MessageTimeout > 0 {
		if end := c.msgStart.Add(l.MessageTimeout); d.IsZero() || end.Before(d) {
			d = end
		}
	}
	c.Conn.SetReadDeadline(d)
}

// wake interrupts a blocked Read so that it sees the drain.
func (c *conn) wake() {
	if !c.busy.Load() {
		c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
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

// parse follows what Postfix sends. A message ends at end of message
// (SMFIC_BODYEOB): Postfix 3.7 sends SMFIC_ABORT only before the next
// MAIL or at QUIT, not after each message, so waiting for ABORT would
// keep a finished session "busy" and make every drain wait its deadline.
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
	case 'E', 'A', 'Q': // SMFIC_BODYEOB, SMFIC_ABORT, SMFIC_QUIT
		c.busy.Store(false)
		c.qid = ""
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

// sent follows our answers: a reply code, reject, tempfail, discard or
// accept ends the message too (at end of headers, Postfix sends no more
// of it).
func (c *conn) sent(p []byte) {
	c.out.feed(p, func(code byte) {
		switch code {
		case 'y', 'r', 't', 'd', 'a':
			c.busy.Store(false)
		}
	}, nil)
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
// recover of its own.
func (c *conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		c.t.remove(c)
		if c.onClose != nil {
			defer func() {
				if v := recover(); v != nil {
					c.t.log.Error("panic while closing a milter session", "panic", v)
				}
			}()
			c.onClose()
		}
	})
	return err
}
