//go:build !linux

package milter

import "net"

// tcpAcker: TCP_QUICKACK is Linux's. Elsewhere a milter on inet: may wait
// for the peer's delayed ACK once per message (see quickack_linux.go); a
// unix socket does not.
func tcpAcker(net.Conn) func() { return nil }
