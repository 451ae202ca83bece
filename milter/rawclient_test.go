package milter

import (
	"encoding/binary"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// rawConn writes milter packets by hand (a 4-byte big-endian length, a
// command byte, the payload), so that tests can send what no MTA would:
// go-milter's client only sends well-formed conversations.
type rawConn struct {
	t *testing.T
	c net.Conn

	pflags gomilter.OptProtocol // what the milter asked for at OPTNEG
	last   byte                 // the last command sent
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c}
}

// send writes one packet; write errors are returned, not fatal: the
// milter may well have hung up on what came before.
func (r *rawConn) send(cmd byte, payload ...string) error {
	p := strings.Join(payload, "")
	b := make([]byte, 5, 5+len(p))
	binary.BigEndian.PutUint32(b, uint32(1+len(p)))
	b[4] = cmd
	if cmd != 'D' {
		r.last = cmd
	}
	_, err := r.c.Write(append(b, p...))
	return err
}

// noReply says whether the milter asked not to answer cmd (the
// SMFIP_NR_* flags): such an event is continued without a packet.
func (r *rawConn) noReply(cmd byte) bool {
	flag := map[byte]gomilter.OptProtocol{
		'C': gomilter.OptNoConnReply, 'H': gomilter.OptNoHeloReply, 'M': gomilter.OptNoMailReply,
		'R': gomilter.OptNoRcptReply, 'L': gomilter.OptNoHeaderReply, 'N': gomilter.OptNoEOHReply,
		'B': gomilter.OptNoBodyReply, 'T': gomilter.OptNoDataReply,
	}[cmd]
	return flag != 0 && r.pflags&flag != 0
}

func (r *rawConn) write(b []byte) error {
	_, err := r.c.Write(b)
	return err
}

// packet is one packet from the milter.
type packet struct {
	code byte
	data []byte
}

// read returns the next packet, or an error when the milter closed the
// connection (or sent nothing for 10 seconds).
func (r *rawConn) read() (packet, error) {
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(r.c, hdr[:]); err != nil {
		return packet{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > 1<<20 {
		return packet{}, errors.New("bad packet length")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.c, b); err != nil {
		return packet{}, err
	}
	return packet{code: b[0], data: b[1:]}, nil
}

// answer reads modifications until the final answer of a stage.
func (r *rawConn) answer() (mods []packet, final packet) {
	r.t.Helper()
	for {
		p, err := r.read()
		if err != nil {
			r.t.Fatalf("reading the answer: %v", err)
		}
		if strings.IndexByte("+-bhmiqep", p.code) < 0 {
			return mods, p
		}
		mods = append(mods, p)
	}
}

// expect reads one answer and checks its code. A continue for an event
// the milter does not answer (SMFIP_NR_*) is implied, as Postfix takes it.
func (r *rawConn) expect(code byte) []packet {
	r.t.Helper()
	if code == 'c' && r.noReply(r.last) {
		return nil
	}
	mods, final := r.answer()
	if final.code != code {
		r.t.Fatalf("answer %q %q, want %q", final.code, final.data, code)
	}
	return mods
}

// expectClosed reads until the milter hangs up; anything it still sends
// first is returned.
func (r *rawConn) expectClosed() []packet {
	r.t.Helper()
	var got []packet
	for {
		p, err := r.read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.t.Fatalf("the milter kept the connection open (got %v)", got)
			}
			return got
		}
		got = append(got, p)
	}
}

// negotiate is SMFIC_OPTNEG as Postfix sends it: version 6, every action,
// and the protocol steps we may skip.
func (r *rawConn) negotiate() {
	r.t.Helper()
	var b [12]byte
	binary.BigEndian.PutUint32(b[0:], 6)
	binary.BigEndian.PutUint32(b[4:], 0x1ff)
	binary.BigEndian.PutUint32(b[8:], 0x1fffff)
	r.send('O', string(b[:]))
	_, final := r.answer()
	if final.code != 'O' || len(final.data) < 12 {
		r.t.Fatalf("negotiation answered %q", final.code)
	}
	// Version 6, whose flags we negotiate; under version 2 Postfix sends
	// no DATA, and with it no queue id before the content.
	if v := binary.BigEndian.Uint32(final.data[0:4]); v != 6 {
		r.t.Fatalf("negotiation answered protocol version %d, want 6", v)
	}
	r.pflags = gomilter.OptProtocol(binary.BigEndian.Uint32(final.data[8:12]))
}

// connect sends SMFIC_CONNECT for an IPv4 client.
func (r *rawConn) connect(host, ip string) {
	r.t.Helper()
	r.send('C', host, "\x00", "4", "\x61\xa8", ip, "\x00")
	r.expect('c')
}

// header sends one field as Postfix does with SMFIP_HDR_LEADSPC.
func (r *rawConn) header(name, value string) error {
	return r.send('L', name, "\x00", value, "\x00")
}

// inserted returns the fields the milter inserted, as "Name: value".
func inserted(mods []packet) []string {
	var out []string
	for _, m := range mods {
		if m.code != 'i' && m.code != 'h' {
			continue
		}
		d := m.data
		if m.code == 'i' {
			d = d[4:]
		}
		name, value, _ := strings.Cut(strings.TrimSuffix(string(d), "\x00"), "\x00")
		out = append(out, name+":"+value)
	}
	return out
}

// sendSigned sends one normal outbound message on a connection of its own
// and closes it; it fails unless the message was signed.
func (e *env) sendSigned(t *testing.T, addr string) {
	t.Helper()
	c, err := testkit.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect("localhost", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	r, err := c.Send(aliceEnv, testkit.CRLF([]byte(outbound)), 0)
	if err != nil {
		t.Fatalf("a normal message after the abuse: %v", err)
	}
	if ins := testkit.Mods(r, gomilter.ActInsertHeader); len(ins) != 1 || ins[0].HeaderName != "DKIM-Signature" {
		t.Fatalf("a normal message after the abuse was not signed: %+v %+v", r.Action, r.Mods)
	}
}

// resources counts goroutines and open file descriptors.
type resources struct{ goroutines, fds int }

func countResources() resources {
	fds, _ := os.ReadDir("/proc/self/fd")
	return resources{runtime.NumGoroutine(), len(fds)}
}

// settle waits until the process is back to base (sessions end on their
// own goroutines, a little after the client sees the close), and fails
// with both counts and a goroutine dump if it never gets there.
func settle(t *testing.T, base resources) resources {
	t.Helper()
	var now resources
	for i := 0; i < 500; i++ {
		runtime.GC()
		if now = countResources(); now.goroutines <= base.goroutines && now.fds <= base.fds {
			return now
		}
		time.Sleep(20 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	t.Fatalf("leak: %d goroutines and %d fds, %d and %d before\n%s",
		now.goroutines, now.fds, base.goroutines, base.fds, buf[:runtime.Stack(buf, true)])
	return now
}

// logTo sends go-milter's log lines (it uses the standard log package)
// to w for the test, so that they show with the milter's own log.
func logTo(t *testing.T, w io.Writer) {
	old, flags := log.Writer(), log.Flags()
	log.SetFlags(0)
	log.SetOutput(LibraryLog(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	t.Cleanup(func() { log.SetOutput(old); log.SetFlags(flags) })
}
