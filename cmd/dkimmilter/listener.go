package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sys/unix"

	"github.com/dkimmilter/dkimmilter/milter"
)

// The milter socket is handed to an upgraded process under one of these
// names (tableflip's named files), which say who owns the socket file: a
// socket this daemon created is unlinked by the last process to stop; one
// systemd created belongs to the socket unit and is never unlinked.
const (
	fdOwn     = "milter-socket"
	fdSystemd = "milter-socket-systemd"
)

// milterSocket is the listening milter socket and where it came from.
type milterSocket struct {
	ln     net.Listener
	addr   string // in listen syntax: unix:/path or inet:host:port
	from   string // "systemd", "previous process" or "created"
	owned  bool   // the socket file is ours to unlink at stop
	sockFi os.FileInfo
}

// openSocket returns the milter socket: the one the previous process
// handed over on an upgrade, else the one systemd passed (socket
// activation), else a new one on listen. An inherited socket wins over
// listen: it is the one Postfix already connects to, and the process
// that hands it over (systemd or the old daemon) keeps it open across the
// restart, which is the point. A mismatch is logged as a warning.
func openSocket(upg *tableflip.Upgrader, listen string, mode os.FileMode, log *slog.Logger) (*milterSocket, error) {
	s, err := inheritedSocket(upg)
	if err != nil {
		return nil, err
	}
	if s == nil {
		if s, err = activatedSocket(); err != nil {
			return nil, err
		}
	}
	if s == nil {
		ln, err := milter.Listen(listen, mode)
		if err != nil {
			return nil, err
		}
		s = &milterSocket{ln: ln, addr: listen, from: "created", owned: true}
	}
	// The socket file outlives this process when it hands the socket to
	// an upgraded one: closing the listener must never unlink it (which
	// net.UnixListener does by default for a socket it created). The
	// last process to stop removes it (removeSocket).
	if ul, ok := s.ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
		if s.owned {
			s.sockFi, _ = os.Stat(ul.Addr().String())
		}
	}
	if sameListen(listen, s.addr) {
		// The configuration's spelling (inet:localhost:8891), so that
		// a reload does not take it for a change of listen.
		s.addr = listen
	} else {
		log.Warn("the socket handed to dkimmilter is not the configuration's listen: serving on the one handed over",
			"socket", s.addr, "from", s.from, "listen", listen,
			"hint", "make listen in the configuration and ListenStream= in dkimmilter.socket name the same socket")
	}
	name := fdOwn
	if !s.owned {
		name = fdSystemd
	}
	f, err := s.ln.(interface{ File() (*os.File, error) }).File()
	if err == nil {
		err = upg.AddFile(name, f)
		f.Close()
	}
	if err != nil {
		s.ln.Close()
		return nil, fmt.Errorf("keeping the socket %s for an upgrade: %w", s.addr, err)
	}
	return s, nil
}

// inheritedSocket is the socket the previous process handed over on an
// upgrade (SIGUSR2), or nil.
func inheritedSocket(upg *tableflip.Upgrader) (*milterSocket, error) {
	for _, name := range []string{fdSystemd, fdOwn} {
		f, err := upg.File(name)
		if err != nil {
			return nil, fmt.Errorf("the socket handed over by the previous process: %w", err)
		}
		if f == nil {
			continue
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("the socket handed over by the previous process: %w", err)
		}
		return &milterSocket{ln: ln, addr: listenAddr(ln.Addr()), from: "previous process", owned: name == fdOwn}, nil
	}
	return nil, nil
}

// activatedSocket is the socket systemd passed (socket activation), or
// nil when there is none.
func activatedSocket() (*milterSocket, error) {
	files, names, err := listenFds()
	if err != nil || len(files) == 0 {
		return nil, err
	}
	if len(files) != 1 {
		for _, f := range files {
			f.Close()
		}
		return nil, fmt.Errorf("systemd passed %d sockets (%s), dkimmilter serves one: give dkimmilter.socket a single ListenStream= line", len(files), strings.Join(names, ", "))
	}
	f := files[0]
	defer f.Close()
	// Accept=yes would pass one connection per process instead of the
	// listening socket.
	if v, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return nil, fmt.Errorf("the socket systemd passed (%s) is not a listening socket: set Accept=no in dkimmilter.socket", names[0])
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the socket systemd passed (%s): %w", names[0], err)
	}
	return &milterSocket{ln: ln, addr: listenAddr(ln.Addr()), from: "systemd"}, nil
}

// listenFds reads the sockets passed by socket activation, as
// sd_listen_fds(3) does: they are the descriptors from 3 on, LISTEN_FDS
// of them, for this process only when LISTEN_PID is its PID (otherwise
// they were meant for a parent). The variables are then removed, so
// that no process started later (an upgrade) takes them for its own;
// the descriptors are closed on exec for the same reason. names are
// LISTEN_FDNAMES (FileDescriptorName= in the socket unit).
func listenFds() (files []*os.File, names []string, err error) {
	pid, fds, fdNames := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if pid == "" {
		return nil, nil, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, nil, fmt.Errorf("LISTEN_FDS=%q: not a number of sockets", fds)
	}
	split := strings.Split(fdNames, ":")
	const start = 3 // SD_LISTEN_FDS_START
	for i := 0; i < n; i++ {
		fd := start + i
		unix.CloseOnExec(fd)
		name := "fd " + strconv.Itoa(fd)
		if i < len(split) && split[i] != "" {
			name = split[i]
		}
		files = append(files, os.NewFile(uintptr(fd), name))
		names = append(names, name)
	}
	return files, names, nil
}

// listenAddr writes a listener's address in listen syntax.
func listenAddr(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return "inet:" + a.String()
}

// sameListen reports whether the configuration's listen names the socket
// actually listened on (addr, from listenAddr): the same path, or the
// same port on the same address (a host name resolved, an empty or
// unspecified host matching any).
func sameListen(listen, addr string) bool {
	if listen == addr {
		return true
	}
	if !strings.HasPrefix(listen, "inet:") || !strings.HasPrefix(addr, "inet:") {
		return false
	}
	want, err1 := net.ResolveTCPAddr("tcp", strings.TrimPrefix(listen, "inet:"))
	got, err2 := net.ResolveTCPAddr("tcp", strings.TrimPrefix(addr, "inet:"))
	if err1 != nil || err2 != nil || want.Port != got.Port {
		return false
	}
	return want.IP == nil || want.IP.IsUnspecified() || want.IP.Equal(got.IP)
}

// removeSocket removes the socket file at the final stop, if this daemon
// created it and it is still the same file (a socket another process put
// there since is not ours to remove).
func (s *milterSocket) removeSocket() {
	if !s.owned || s.sockFi == nil {
		return
	}
	path := strings.TrimPrefix(s.addr, "unix:")
	if fi, err := os.Stat(path); err == nil && os.SameFile(fi, s.sockFi) {
		os.Remove(path)
	}
}

// removePidfile removes the pidfile at the final stop if it still names
// this process (after an upgrade it names the new one).
func removePidfile(path string) {
	if path == "" {
		return
	}
	data, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}
