package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// sdNotify tells systemd about the daemon's state (sd_notify(3)): READY=1
// once it serves, RELOADING=1 … READY=1 around a reload, STOPPING=1 on the
// way out. It does nothing outside systemd (no NOTIFY_SOCKET). The
// protocol is one datagram on a unix socket; libsystemd or go-systemd
// would be a dependency for ten lines.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = c.Write([]byte(state))
	return err
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd wants
// with RELOADING=1 to tell one reload from the next (sd_notify(3)).
// golang.org/x/sys/unix has the clock on every Unix we build for; it is
// already compiled in through miekg/dns.
func monotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return ""
	}
	return fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000)
}
