package milter

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What Postfix sends at MAIL FROM (macros and SMFIC_MAIL), as one small
// write: it then writes the header and body events, which its Nagle
// algorithm holds back until this one is acknowledged.
var mailPackets = []byte{0, 0, 0, 5, 'D', 'M', 'i', 0, 'q', 0, 0, 0, 0, 15, 'M', '<', 'a', '@', 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm', '>', 0}

// Over TCP, what the milter reads is acknowledged at once, not after the
// kernel's delayed-ACK timer (40 ms on Linux): Postfix, whose milter socket
// has Nagle on, would otherwise hold the rest of every message for that
// long (quickack_linux.go). The client here has Nagle on, as Postfix does.
func TestReadIsAcknowledgedAtOnce(t *testing.T) {
	ln, addr := listenLoopback(t)
	tr := newTracker(ln, Limits{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer tr.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := tr.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	client, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.(*net.TCPConn).SetNoDelay(false)
	server := <-accepted
	defer server.Close()

	for round := range 5 {
		// A reply first, as at the end of a message: it puts Linux's ACK
		// logic in its interactive ("pingpong") mode, where ACKs wait.
		if round > 0 {
			if _, err := server.Write([]byte{0, 0, 0, 1, 'c'}); err != nil {
				t.Fatal(err)
			}
			io.ReadFull(client, make([]byte, 5))
		}
		if _, err := client.Write(mailPackets); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(server, make([]byte, len(mailPackets))); err != nil {
			t.Fatal(err)
		}
		// The ACK leaves with the read; allow a scheduler's slice for the
		// loopback to deliver it, far below the delayed-ACK timer.
		deadline := time.Now().Add(15 * time.Millisecond)
		for unacked(t, client) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the client's data is still unacknowledged 15 ms after the milter read it", round)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// unacked is the number of segments c has sent that its peer has not
// acknowledged yet (tcp(7), TCP_INFO).
func unacked(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var gerr error
	raw.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return info.Unacked
}
