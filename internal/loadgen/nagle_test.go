package loadgen

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The driver's TCP connections keep Nagle's algorithm on, as Postfix's
// milter client does: a milter that delays its ACKs must show it here.
func TestDialKeepsNagle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := &dialer{}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := d.conn.Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var nodelay int
	var gerr error
	raw.Control(func(fd uintptr) { nodelay, gerr = unix.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_NODELAY) })
	if gerr != nil || nodelay != 0 {
		t.Errorf("TCP_NODELAY = %d (%v), want 0: Nagle on, as Postfix has it", nodelay, gerr)
	}
}
