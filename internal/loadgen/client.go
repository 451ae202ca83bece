package loadgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// What Postfix 3.x offers a milter (src/milter/milter8.c): every action but
// SMFIF_SETSYMLIST (go-milter's client ignores macro lists), and every
// protocol step flag but SMFIP_SKIP and SMFIP_RCPT_REJ (go-milter's client
// cannot parse a skip reply, and rejected recipients never happen here).
// A version-6 milter such as OpenDKIM then turns off the events and
// replies it does not need, exactly as with Postfix.
const (
	postfixActions = gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt |
		gomilter.OptRemoveRcpt | gomilter.OptChangeHeader | gomilter.OptQuarantine |
		gomilter.OptChangeFrom | gomilter.OptAddRcptWithArgs
	postfixProtocol = gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom |
		gomilter.OptNoRcptTo | gomilter.OptNoBody | gomilter.OptNoHeaders | gomilter.OptNoEOH |
		gomilter.OptNoUnknown | gomilter.OptNoData | gomilter.OptNoHeaderReply |
		gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoMailReply |
		gomilter.OptNoRcptReply | gomilter.OptNoDataReply | gomilter.OptNoUnknownReply |
		gomilter.OptNoEOHReply | gomilter.OptNoBodyReply | gomilter.OptHeaderLeadingSpace

	// A version-2 milter (go-milter's server as it is; dkimmilter
	// answers 6) gets the version-2 offer: go-milter's client only
	// downgrades when the masks fit in it (doc/postfix.md). The milter's
	// reply may still ask for SMFIP_HDR_LEADSPC, which is honoured as
	// Postfix does.
	v2Actions = gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine
)

// target is a milter address and what was learnt about it.
type target struct {
	network, addr string
	v2            atomic.Bool // the milter speaks version 2: offer the v2 masks
	// negotiated is what the milter answered, for the report.
	negotiated atomic.Pointer[string]
}

func parseAddr(a string) (*target, error) {
	switch {
	case strings.HasPrefix(a, "unix:"):
		return &target{network: "unix", addr: strings.TrimPrefix(a, "unix:")}, nil
	case strings.HasPrefix(a, "inet:"):
		return &target{network: "tcp", addr: strings.TrimPrefix(a, "inet:")}, nil
	}
	return nil, fmt.Errorf("address %q: want unix:/path or inet:host:port", a)
}

// dialer remembers the connection go-milter's client dials, to close it
// when negotiation fails (go-milter leaves it open), to put a deadline on
// a whole message, and to send SMFIC_DATA, which its client lacks.
type dialer struct{ conn *vstream }

func (d *dialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// Postfix leaves Nagle's algorithm on for its milter sockets (Go
		// turns it off by default): a milter that delays its ACKs makes
		// Postfix wait, and the driver must see that too.
		tc.SetNoDelay(false)
	}
	d.conn = &vstream{Conn: c}
	return d.conn, nil
}

// vstream buffers what is written until the next read or flush, as
// Postfix's VSTREAM does: milter8_event writes the macros and the event in
// "one VSTREAM transaction", and headers the milter asked no reply for
// (SMFIP_NR_HDR) go out together with the next event that has one. The
// SMTP stages (connect, HELO, MAIL, RCPT, DATA) are sent by smtpd as its
// client's commands arrive, so each goes out on its own even when the
// milter asked for no reply (send flushes them); the header, body and end
// of message events follow later, from cleanup. So a milter sees the
// packets Postfix would send, in about as many writes, and the driver
// makes as few system calls as Postfix. go-milter's client flushes its own
// buffer after every packet; this undoes that.
//
// Reads are buffered too (go-milter reads a packet's length and its body
// with two calls): everything read comes from this one connection, in
// order, so nothing can be read ahead of its time.
type vstream struct {
	net.Conn
	wbuf       []byte
	rbuf       [4096]byte
	rpos, rend int
}

// vstreamSize is where buffered data goes out anyway (a body chunk).
const vstreamSize = 16 << 10

func (v *vstream) Write(p []byte) (int, error) {
	if len(v.wbuf)+len(p) > vstreamSize {
		if err := v.flush(); err != nil {
			return 0, err
		}
		if len(p) > vstreamSize {
			return v.Conn.Write(p)
		}
	}
	v.wbuf = append(v.wbuf, p...)
	return len(p), nil
}

func (v *vstream) Read(p []byte) (int, error) {
	if v.rpos == v.rend {
		if err := v.flush(); err != nil {
			return 0, err
		}
		if len(p) >= len(v.rbuf) {
			return v.Conn.Read(p)
		}
		n, err := v.Conn.Read(v.rbuf[:])
		if n <= 0 {
			return 0, err
		}
		v.rpos, v.rend = 0, n
	}
	n := copy(p, v.rbuf[v.rpos:v.rend])
	v.rpos += n
	return n, nil
}

func (v *vstream) Close() error {
	v.flush()
	return v.Conn.Close()
}

func (v *vstream) flush() error {
	if len(v.wbuf) == 0 {
		return nil
	}
	_, err := v.Conn.Write(v.wbuf)
	v.wbuf = v.wbuf[:0]
	return err
}

// conn is one milter connection, as Postfix's smtpd holds one per SMTP
// session.
type conn struct {
	s    *gomilter.ClientSession
	raw  *vstream
	v6   bool
	lead bool // SMFIP_HDR_LEADSPC negotiated
	used int  // messages sent on it
}

// dial connects and negotiates, first with Postfix's version-6 offer and,
// if the milter answers with an older version, with the version-2 offer.
func dial(t *target) (*conn, error) {
	for {
		v2 := t.v2.Load()
		opts := gomilter.ClientOptions{ActionMask: postfixActions, ProtocolMask: postfixProtocol}
		if v2 {
			opts = gomilter.ClientOptions{ActionMask: v2Actions}
		}
		d := &dialer{}
		opts.Dialer = d
		s, err := gomilter.NewClientWithOptions(t.network, t.addr, opts).Session()
		if errors.Is(err, gomilter.ErrUnsupportedMilterVersion) && !v2 {
			d.conn.Conn.Close()
			t.v2.Store(true)
			continue
		}
		if err != nil {
			if d.conn != nil {
				d.conn.Conn.Close()
			}
			return nil, &Error{Kind: "connect", Err: err}
		}
		if t.negotiated.Load() == nil {
			n := fmt.Sprintf("actions=%#x protocol=%#x", uint32(s.ActionOpts), uint32(s.ProtocolOpts))
			t.negotiated.Store(&n)
		}
		return &conn{s: s, raw: d.conn, v6: !v2, lead: s.ProtocolOption(gomilter.OptHeaderLeadingSpace)}, nil
	}
}

func (c *conn) close() {
	c.s.Close()
}

func (c *conn) off(p gomilter.OptProtocol) bool { return c.s.ProtocolOpts&p != 0 }

// Client is the SMTP client the milter hears about.
type Client struct {
	Host, IP string
	// AuthType and AuthAuthen are the SASL macros; empty for an
	// unauthenticated client.
	AuthType, AuthAuthen string
}

// hello sends the connect and HELO stages with Postfix's default macros
// (milter_connect_macros = j {daemon_name} {daemon_addr} v _; the HELO
// macros are TLS ones, undefined without TLS).
func (c *conn) hello(cl Client) error {
	s := c.s
	if !c.off(gomilter.OptNoConnect) {
		if err := s.Macros(gomilter.CodeConn, "j", "mx.example.com", "{daemon_name}", "smtpd",
			"{daemon_addr}", "127.0.0.1", "v", "Postfix 3.7.11", "_", cl.Host+" ["+cl.IP+"]"); err != nil {
			return ioErr(err)
		}
		fam := gomilter.FamilyInet
		if strings.Contains(cl.IP, ":") {
			fam = gomilter.FamilyInet6
		}
		act, err := s.Conn(cl.Host, fam, 41234, cl.IP)
		if err := check("connect", act, err); err != nil {
			return err
		}
	}
	if !c.off(gomilter.OptNoHelo) {
		act, err := s.Helo(cl.Host)
		if err := check("helo", act, err); err != nil {
			return err
		}
	}
	if err := c.raw.flush(); err != nil { // smtpd, as the client connects and says HELO
		return ioErr(err)
	}
	return nil
}

// send runs one message through the milter the way Postfix's cleanup
// does, and returns the milter's modifications and final answer.
func (c *conn) send(m *Message, cl Client, qid string) ([]gomilter.ModifyAction, *gomilter.Action, error) {
	s := c.s
	if !c.off(gomilter.OptNoMailFrom) {
		kv := []string{"i", qid, "{mail_addr}", m.EnvFrom}
		if cl.AuthType != "" {
			kv = append(kv, "{auth_type}", cl.AuthType, "{auth_authen}", cl.AuthAuthen)
		}
		if err := s.Macros(gomilter.CodeMail, kv...); err != nil {
			return nil, nil, ioErr(err)
		}
		act, err := s.Mail(m.EnvFrom, nil)
		if err := check("mail", act, err); err != nil {
			return nil, act, err
		}
		if err := c.raw.flush(); err != nil { // smtpd, at MAIL FROM
			return nil, nil, ioErr(err)
		}
	}
	if !c.off(gomilter.OptNoRcptTo) {
		for _, r := range m.Rcpts {
			if err := s.Macros(gomilter.CodeRcpt, "i", qid, "{rcpt_addr}", r); err != nil {
				return nil, nil, ioErr(err)
			}
			act, err := s.Rcpt(r, nil)
			if err := check("rcpt", act, err); err != nil {
				return nil, act, err
			}
			if err := c.raw.flush(); err != nil { // smtpd, at RCPT TO
				return nil, nil, ioErr(err)
			}
		}
	}
	if c.v6 && !c.off(gomilter.OptNoData) {
		if err := s.Macros(gomilter.CodeData, "i", qid); err != nil {
			return nil, nil, ioErr(err)
		}
		act, err := c.data()
		if err := check("data", act, err); err != nil {
			return nil, act, err
		}
		if err := c.raw.flush(); err != nil { // smtpd, at DATA
			return nil, nil, ioErr(err)
		}
	}
	if !c.off(gomilter.OptNoHeaders) {
		for i, v := range m.values(c.lead) {
			if err := s.Macros(gomilter.CodeHeader, "i", qid); err != nil {
				return nil, nil, ioErr(err)
			}
			act, err := s.HeaderField(m.Header[i].Name, v)
			if err := check("header", act, err); err != nil {
				return nil, act, err
			}
		}
	}
	if !c.off(gomilter.OptNoEOH) {
		if err := s.Macros(gomilter.CodeEOH, "i", qid); err != nil {
			return nil, nil, ioErr(err)
		}
		act, err := s.HeaderEnd()
		if err := check("eoh", act, err); err != nil {
			return nil, act, err
		}
	}
	if !c.off(gomilter.OptNoBody) {
		for body := m.Body; len(body) > 0; {
			n := min(gomilter.MaxBodyChunk, len(body))
			if err := s.Macros(gomilter.CodeBody, "i", qid); err != nil {
				return nil, nil, ioErr(err)
			}
			act, err := s.BodyChunk(body[:n])
			if err := check("body", act, err); err != nil {
				return nil, act, err
			}
			body = body[n:]
		}
	}
	if err := s.Macros(gomilter.CodeEOB, "i", qid); err != nil {
		return nil, nil, ioErr(err)
	}
	mods, act, err := s.End()
	if err != nil {
		return nil, nil, ioErr(err)
	}
	// Postfix sends ABORT after every message, accepted or not.
	if err := s.Abort(); err != nil {
		return nil, nil, ioErr(err)
	}
	return mods, act, nil
}

// data sends SMFIC_DATA (go-milter's client has no method for it) and
// reads the reply unless the milter asked for none. go-milter reads
// packets straight from the connection, unbuffered, so this interleaves
// safely with its own reads and writes.
func (c *conn) data() (*gomilter.Action, error) {
	if _, err := c.raw.Write([]byte{0, 0, 0, 1, byte(gomilter.CodeData)}); err != nil {
		return nil, err
	}
	if c.off(gomilter.OptNoDataReply) {
		return &gomilter.Action{Code: gomilter.ActContinue}, nil
	}
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(c.raw, hdr[:]); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > 1<<20 {
			return nil, fmt.Errorf("bad packet length %d", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(c.raw, p); err != nil {
			return nil, err
		}
		code := gomilter.ActionCode(p[0])
		if code == 'p' { // progress
			continue
		}
		a := &gomilter.Action{Code: code}
		if code == gomilter.ActReplyCode && len(p) > 4 {
			a.SMTPCode, _ = strconv.Atoi(string(p[1:4]))
			a.SMTPText = strings.TrimRight(string(p[5:]), "\x00")
		}
		return a, nil
	}
}

// Error is a failed message, classified for the report.
type Error struct {
	Kind string // connect, io, timeout, reply-NNN, accept-early, no-signature, no-ar, result
	Err  error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Kind
	}
	return e.Kind + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

func ioErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Kind: "timeout", Err: err}
	}
	return &Error{Kind: "io", Err: err}
}

// check turns an answer other than continue into an Error.
func check(stage string, act *gomilter.Action, err error) error {
	if err != nil {
		return ioErr(fmt.Errorf("%s: %w", stage, err))
	}
	return actionErr(stage, act)
}

func actionErr(stage string, act *gomilter.Action) error {
	switch act.Code {
	case gomilter.ActContinue:
		return nil
	case gomilter.ActReplyCode:
		return &Error{Kind: "reply-" + strconv.Itoa(act.SMTPCode), Err: fmt.Errorf("%s: %d %s", stage, act.SMTPCode, act.SMTPText)}
	case gomilter.ActAccept:
		return &Error{Kind: "accept-early", Err: fmt.Errorf("%s: the milter accepted the message before its end", stage)}
	}
	return &Error{Kind: "answer-" + string(rune(act.Code)), Err: fmt.Errorf("%s: answered %q", stage, rune(act.Code))}
}
