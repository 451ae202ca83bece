package milter

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// Protocol abuse, written on the socket by hand: whatever one connection
// sends, it ends that session only (or gets a sensible answer), the daemon
// keeps signing on fresh connections after each, and when it is all over
// no goroutine or file descriptor is left behind.
func TestProtocolAbuse(t *testing.T) {
	e := newEnv(t, "")
	logTo(t, e.logs)
	addr := e.addr
	e.sendSigned(t, addr) // warm up: DNS server, caches, keys
	base := settle(t, countResources())

	// A message from an internal host up to the end of its headers.
	begin := func(r *rawConn) {
		r.negotiate()
		r.connect("localhost", "127.0.0.1")
		r.send('M', "<alice@example.com>\x00")
		r.expect('c')
		for _, f := range []string{"From: Alice <alice@example.com>", "To: bob@example.net", "Subject: hi"} {
			name, value, _ := strings.Cut(f, ":")
			r.header(name, value)
			r.expect('c')
		}
	}
	// DATA, with the queue id in its macros, as Postfix sends it.
	data := func(r *rawConn, qid string) {
		r.send('D', "Ti\x00"+qid+"\x00")
		r.send('T')
		r.expect('c')
	}
	rawPacket := func(length uint32, cmd byte, payload string) []byte {
		b := binary.BigEndian.AppendUint32(nil, length)
		return append(append(b, cmd), payload...)
	}

	tests := []struct {
		name  string
		abuse func(t *testing.T, r *rawConn)
		log   string // expected in the milter's log, if anything
	}{
		{"garbage bytes", func(t *testing.T, r *rawConn) {
			r.write([]byte("GET / HTTP/1.0\r\nHost: x\r\n\r\n"))
			r.expectClosed()
		}, "exceeds"},
		{"packet length 2^31", func(t *testing.T, r *rawConn) {
			r.write(rawPacket(1<<31, 'B', "xxxx"))
			r.expectClosed()
		}, "packet length 2147483648"},
		{"packet length 0", func(t *testing.T, r *rawConn) {
			r.write(rawPacket(0, 'B', ""))
			r.expectClosed()
		}, "zero-length"},
		{"short packet then hang-up", func(t *testing.T, r *rawConn) {
			r.write(rawPacket(100, 'L', "From\x00"))
			r.c.Close()
		}, ""},
		{"unknown command", func(t *testing.T, r *rawConn) {
			r.negotiate()
			r.send('Z', "what")
			r.expectClosed()
		}, `level=WARN msg="Unrecognized command code: Z" from=go-milter`},
		{"header before connect", func(t *testing.T, r *rawConn) {
			// No client address: not trusted, so verified and not signed,
			// whatever the From says.
			r.negotiate()
			r.header("From", " alice@example.com")
			r.expect('c')
			r.send('N')
			r.expect('c')
			r.send('E')
			for _, f := range inserted(r.expect('c')) {
				if !strings.HasPrefix(f, "Authentication-Results: mx.example.com; dkim=none") {
					t.Errorf("inserted %q", f)
				}
			}
		}, ""},
		{"body before end of headers", func(t *testing.T, r *rawConn) {
			// The body implies the end of the header: signed as usual.
			begin(r)
			r.send('B', "Hello\r\n")
			r.expect('c')
			r.send('E')
			if f := inserted(r.expect('c')); len(f) != 1 || !strings.HasPrefix(f[0], "DKIM-Signature: v=1;") {
				t.Errorf("inserted %q", f)
			}
		}, ""},
		{"end of message with no message", func(t *testing.T, r *rawConn) {
			r.negotiate()
			r.connect("localhost", "127.0.0.1")
			r.send('E')
			if mods := r.expect('c'); len(mods) != 0 {
				t.Errorf("modifications for no message: %v", mods)
			}
			r.send('A') // no reply to ABORT
			r.send('E')
			r.expect('c')
		}, ""},
		{"end of headers twice, header after it", func(t *testing.T, r *rawConn) {
			begin(r)
			r.send('N')
			r.expect('c')
			r.send('N')
			r.expect('c')
			r.header("Subject", " late")
			r.expect('c')
			r.send('B', "Hello\r\n")
			r.expect('c')
			r.send('E')
			if f := inserted(r.expect('c')); len(f) != 1 || !strings.HasPrefix(f[0], "DKIM-Signature:") {
				t.Errorf("inserted %q", f)
			}
		}, ""},
		{"disconnect mid-body", func(t *testing.T, r *rawConn) {
			begin(r)
			r.send('N')
			r.expect('c')
			r.send('B', "Hello\r\n")
			r.expect('c')
			r.c.Close()
		}, "ended in the middle of a message"},
		{"disconnect mid-body, verifying", func(t *testing.T, r *rawConn) {
			// Key lookups in flight are cancelled with the session.
			e.dns.SetDelay("slow._domainkey.sender.example", 5*time.Second)
			r.negotiate()
			r.connect("mail.sender.example", remote)
			r.send('M', "<dave@sender.example>\x00")
			r.expect('c')
			r.header("DKIM-Signature", " v=1; a=rsa-sha256; d=sender.example; s=slow; h=from; bh=AAAA; b=AAAA")
			r.expect('c')
			r.send('N')
			r.expect('c')
			r.c.Close()
		}, "ended in the middle of a message"},
		{"10 MB header", func(t *testing.T, r *rawConn) {
			begin(r)
			big := make([]byte, 10<<20)
			for i := range big {
				big[i] = 'x'
			}
			go r.send('L', "X-Big\x00", string(big), "\x00") // fails when the milter hangs up
			r.expectClosed()
		}, "exceeds 1048576"},
		{"macro packets with odd NUL layout", func(t *testing.T, r *rawConn) {
			r.negotiate()
			for _, p := range []string{"Cj", "C\x00\x00\x00", "Cj\x00mx\x00orphan\x00", "C", "\x00\x00"} {
				r.send('D', p) // macros get no reply
			}
			r.connect("localhost", "127.0.0.1")
			r.send('D')
			r.expectClosed() // an empty macro packet is a protocol error
		}, `level=WARN msg="Error performing milter command: milter: malformed macro command"`},
		{"header with a NUL in its value", func(t *testing.T, r *rawConn) {
			begin(r)
			r.send('L', "Subject\x00 a\x00b\x00")
			r.expect('c')
		}, ""},
		{"connect without family", func(t *testing.T, r *rawConn) {
			r.negotiate()
			r.send('C', "host\x00")
			r.expectClosed()
		}, "malformed connect"},
		{"connect without port", func(t *testing.T, r *rawConn) {
			// go-milter answers tempfail and starts a fresh session.
			r.negotiate()
			r.send('C', "host\x00", "4")
			r.expect('t')
			r.connect("localhost", "127.0.0.1")
		}, ""},
		{"connect without NUL", func(t *testing.T, r *rawConn) {
			r.negotiate()
			r.send('C', "host")
			r.expectClosed()
		}, "malformed connect"},
		{"DATA, answered by nothing", func(t *testing.T, r *rawConn) {
			// SMFIP_NR_DATA: go-milter's "continue" to DATA must not
			// reach Postfix, which would take it as the answer to end
			// of message.
			r.negotiate()
			if r.pflags&gomilter.OptNoDataReply == 0 {
				t.Fatal("SMFIP_NR_DATA not negotiated")
			}
			r.connect("localhost", "127.0.0.1")
			r.send('M', "<alice@example.com>\x00")
			r.expect('c')
			data(r, "QDATA1")
			r.header("From", " Alice <alice@example.com>")
			r.expect('c')
			r.send('N')
			r.expect('c')
			r.send('B', "Hello\r\n")
			r.expect('c')
			r.send('E')
			if f := inserted(r.expect('c')); len(f) != 1 || !strings.HasPrefix(f[0], "DKIM-Signature:") {
				t.Errorf("end of message answered with %q: a stray DATA reply?", f)
			}
		}, ""},
		{"cut before the header", func(t *testing.T, r *rawConn) {
			// Postfix sends the queue id with DATA; the SMTP client is
			// still sending the content when the connection ends.
			r.negotiate()
			r.connect("localhost", "127.0.0.1")
			r.send('D', "M{mail_addr}\x00carol@example.com\x00")
			r.send('M', "<carol@example.com>\x00")
			r.expect('c')
			data(r, "QCUT12345")
			r.c.Close()
		}, `qid=QCUT12345 stage="before the header" client=localhost[127.0.0.1] mail_from=carol@example.com`},
		{"quit mid-message", func(t *testing.T, r *rawConn) {
			begin(r)
			r.send('Q')
			r.expectClosed()
		}, "ended in the middle of a message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.abuse(t, dialRaw(t, addr))
			if tt.log != "" {
				waitFor(t, "the log line", func() bool { return strings.Contains(e.logs.String(), tt.log) })
			}
			e.sendSigned(t, addr)
		})
	}

	// Thousands of tiny body chunks: 20,000 one-byte chunks, signed, and
	// the signature verifies.
	body := strings.Repeat("0123456789abcdefghi\n", 1000)
	c, err := testkit.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect("localhost", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	raw := testkit.CRLF([]byte(strings.SplitAfter(outbound, "\n\n")[0] + body))
	r, err := c.Send(aliceEnv, raw, 1)
	if err != nil {
		t.Fatal(err)
	}
	out := testkit.Apply(raw, r.Mods, c.Session.ProtocolOption(gomilter.OptHeaderLeadingSpace))
	if res := e.verify(out); len(res) != 1 || res[0].Result != "pass" {
		t.Errorf("20,000 one-byte chunks: %+v", res)
	}
	c.Close()

	got := settle(t, base)
	t.Logf("goroutines %d, fds %d (before: %d, %d)", got.goroutines, got.fds, base.goroutines, base.fds)
}
