package milter

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpAcker returns what acknowledges at once the data just read from a
// TCP connection, or nil for other connections.
//
// Why: Postfix's milter client has Nagle's algorithm on, and with the
// no-reply flags it writes MAIL, the headers, end of headers and the body
// back to back without waiting for us. Nagle sends the first small write
// and holds the rest until it is acknowledged; Linux, seeing a connection
// where we read and answer (its "pingpong" mode), delays that ACK for up
// to 40 ms. Every message over inet: then waited one delayed-ACK timer
// (about 45 ms, seen in a packet capture of a real Postfix). TCP_QUICKACK
// after each read leaves pingpong mode and sends the pending ACK now
// (tcp(7)); it is not permanent, hence once per read. A Postfix admin
// cannot change Postfix's socket options, so the fix is ours.
func tcpAcker(c net.Conn) func() {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() { raw.Control(setQuickAck) }
}

func setQuickAck(fd uintptr) {
	unix.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
}
