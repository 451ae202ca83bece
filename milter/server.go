// Package milter is the glue between Postfix's milter protocol (through
// go-milter) and the signer and verifier: one session per milter
// connection, which decides whether a message is signed or verified,
// streams its body, and at end of message inserts DKIM-Signature or
// Authentication-Results and removes forged Authentication-Results.
package milter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// Runtime is everything a session needs, built from one configuration. A
// session keeps the Runtime it started with, so that a reload never
// changes the rules in the middle of a message.
type Runtime struct {
	Config *config.Config
	Keys   *keystore.Store
	// Senders is the sender binding of authenticated clients; nil: the
	// one Config gives, made per message (a Runtime not from
	// LoadRuntime).
	Senders  *keystore.Binding
	Verifier *verifier.Verifier
	Hostname string           // authserv-id of last resort
	Now      func() time.Time // nil: time.Now

	signGate chan struct{} // see signer.Params.Gate
	lookups  *lookups      // nil for a Runtime not from LoadRuntime

	// refs counts the holders of the Runtime: whoever loaded it (the
	// Server, once given it), and each session that runs on it. The
	// last release closes what it holds open (the key database's
	// connection pool): a reload replaces the Runtime for new sessions,
	// but sessions in flight may still look keys up in the old one.
	life *runtimeLife // nil: not counted (a Runtime not from LoadRuntime)

	// testHook, when set, runs before each milter callback with the
	// stage's name (guard.go): tests make it panic to check that a bug
	// costs one message its internal_error answer and nothing more.
	// Nothing outside the package's tests sets it.
	testHook func(stage string)
}

// LoadRuntime loads cfg's keys and its sender binding ([sign.senders],
// then database.senders_query on the keys' pool), and builds its
// resolver: DNS, timed and counted by m (nil: not counted), each query
// logged when log is at debug level (nil: not logged), a resolver outage
// logged once (WARN, then INFO when it ends; nil log: not at all), under
// a TTL cache that serves stale key records when DNS fails
// (dns.max_stale). rot holds the keys that rotation put in place of
// the configured ones (keystore/rotation): the daemon passes the same one
// to every Runtime, so that a switch applies to the Runtime in force,
// and a reload does not undo it; nil for none. It is what serve runs at
// start and on each reload; warnings (short keys) do not stop it.
func LoadRuntime(cfg *config.Config, m *Metrics, log *slog.Logger, rot *keystore.Rotated) (*Runtime, []string, error) {
	keys, warnings, err := keystore.Load(cfg)
	if err != nil {
		return nil, warnings, err
	}
	keys.SetRotated(rot)
	lk, err := newLookups(cfg, m, log, nil)
	if err != nil {
		keys.Close() // its connection pool: no Runtime will hold it
		return nil, warnings, err
	}
	if m != nil {
		keys.SetObserver(m)
	}
	host, _ := os.Hostname()
	rt := &Runtime{
		Config:   cfg,
		Keys:     keys,
		Senders:  keystore.NewBinding(cfg, keys.SenderSources()...),
		lookups:  lk,
		Verifier: verifier.New(verifier.ConfigOptions(cfg, lk.cache)),
		Hostname: host,
		signGate: make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	rt.life = &runtimeLife{}
	rt.life.refs.Store(1)
	return rt, warnings, nil
}

// runtimeLife is a Runtime's count of holders.
type runtimeLife struct {
	refs      atomic.Int64
	closeOnce sync.Once
}

// retain adds a holder of rt; each must release it once.
func (rt *Runtime) retain() {
	if rt.life != nil {
		rt.life.refs.Add(1)
	}
}

// release drops a holder of rt; the last one closes its key store.
func (rt *Runtime) release() {
	if rt.life != nil && rt.life.refs.Add(-1) <= 0 {
		rt.Close()
	}
}

// Close closes what rt holds open: the key database's connection pool.
// A Runtime given to a Server is closed by the Server (SetRuntime,
// Shutdown) when its last session ends; Close is for a Runtime that
// never was. It is safe to call more than once.
func (rt *Runtime) Close() {
	if rt.life == nil {
		rt.Keys.Close()
		return
	}
	rt.life.closeOnce.Do(func() { rt.Keys.Close() })
}

// lookups is a Runtime's key lookup stack, with handles on the parts a
// reload hands over to the next Runtime (inherit).
type lookups struct {
	cache   *dns.Cache
	health  *dns.Health // nil without a logger
	servers string      // the resolvers, in order
}

// newLookups builds the key lookup stack of cfg, from the top: the TTL
// cache with serve-stale (its clock is now; nil: time.Now), the debug
// log, the metrics, the outage watch, and the DNS client.
func newLookups(cfg *config.Config, m *Metrics, log *slog.Logger, now func() time.Time) (*lookups, error) {
	client, err := dns.NewClient(cfg.DNS.Nameservers, cfg.DNS.Timeout)
	if err != nil {
		return nil, fmt.Errorf("%s: dns: %w", cfg.Where(0), err)
	}
	lk := &lookups{servers: strings.Join(client.Servers(), ", ")}
	var next dns.Resolver = client
	if lk.health = watchResolver(client, log); lk.health != nil {
		next = lk.health
	}
	lk.cache = dns.NewCache(logLookups(m.ObserveResolver(next), log),
		dns.CacheOptions{MaxStale: cfg.DNS.MaxStale, Now: now})
	return lk, nil
}

// inherit hands what the lookups of prev, the Runtime in force until
// now, know over to rt's: the cached key records, so that a reload does
// not throw away what serve-stale needs, and, for the same resolvers, the
// state of an outage, so that it is neither reported twice nor left
// without its end; and the key database's connection pool, when its
// settings are the same.
func (rt *Runtime) inherit(prev *Runtime) {
	if rt == nil || prev == nil || rt.lookups == nil || prev.lookups == nil {
		return
	}
	rt.Keys.Adopt(prev.Keys)
	rt.lookups.cache.Adopt(prev.lookups.cache)
	if rt.lookups.servers == prev.lookups.servers && rt.lookups.health != nil {
		rt.lookups.health.Adopt(prev.lookups.health)
	}
}

func (rt *Runtime) now() time.Time {
	if rt.Now != nil {
		return rt.Now()
	}
	return time.Now()
}

// Server serves milter connections.
type Server struct {
	log    *slog.Logger
	rt     atomic.Pointer[Runtime]
	limits Limits

	metrics *Metrics // nil counts nothing

	mu      sync.Mutex
	tracker *tracker
	closed  bool

	rtMu     sync.Mutex // a session's retain of rt against SetRuntime's release
	released bool       // Shutdown released the current Runtime
}

// Actions and Protocol we negotiate. Postfix offers every action, so this
// never conflicts. SMFIP_HDR_LEADSPC makes Postfix send header values with
// their leading white space, which simple canonicalization needs; the
// no-HELO/RCPT/UNKNOWN flags save round trips for events we do not use.
// DATA is kept for the queue id it brings before the content
// (conn.macros, protocolVersion6), without a reply (conn.dropDataReply).
// doc/postfix.md has each fact this relies on, and where it comes from.
//
// The no-reply flags (SMFIP_NR_CONN, _MAIL, _DATA, _HDR, _EOH, _BODY) let
// Postfix stream the connect, MAIL, DATA, header, end-of-headers and body
// events without waiting for an answer to each: a 2 KB message takes one
// round trip (end of message) instead of 16, which is most
// of the per-message cost of a milter (bench/README.md). A message we
// refuse at end of headers (a key that cannot sign) gets its answer at end
// of message: its body is transferred for nothing, which is rare and cheap
// next to a round trip on every message.
// go-milter announces protocol version 2; conn rewrites it to 6, the
// version whose flags these are (the end-to-end test against a real
// Postfix checks the whole conversation). The matching handlers must
// return a nil Response: go-milter writes any other, and that would
// desynchronise the conversation (doc/postfix.md). Our decisions come at
// end of headers and end of message, which keep their replies.
const (
	actions   = gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine
	noReplies = gomilter.OptNoConnReply | gomilter.OptNoMailReply | gomilter.OptNoDataReply |
		gomilter.OptNoHeaderReply | gomilter.OptNoEOHReply | gomilter.OptNoBodyReply
	protocol = gomilter.OptHeaderLeadingSpace | gomilter.OptNoHelo | gomilter.OptNoRcptTo |
		gomilter.OptNoUnknown | noReplies
)

// ServerOptions configure a Server.
type ServerOptions struct {
	Runtime *Runtime     // what sessions run on until SetRuntime swaps in another (required)
	Log     *slog.Logger // required
	Metrics *Metrics     // nil: nothing is counted
	Limits  Limits       // the zero value: no limit
}

// NewServer returns a server; it serves once Serve is called. With
// Metrics, it reports its open sessions as dkimmilter_sessions.
func NewServer(o ServerOptions) *Server {
	s := &Server{log: o.Log, limits: o.Limits, metrics: o.Metrics}
	s.rt.Store(o.Runtime)
	o.Metrics.sessionsGauge(s.Sessions)
	return s
}

// SetRuntime switches new sessions to rt; sessions in flight keep theirs.
// The key cache and the state of a resolver outage carry over (inherit).
// The server takes over the caller's hold on rt, and lets go of the
// Runtime before: it closes when its last session ends.
func (s *Server) SetRuntime(rt *Runtime) {
	s.rtMu.Lock()
	prev := s.rt.Load()
	rt.inherit(prev)
	s.rt.Store(rt)
	s.rtMu.Unlock()
	if prev != nil && prev != rt {
		prev.release()
	}
}

// acquire returns the Runtime for a new session, held for it.
func (s *Server) acquire() *Runtime {
	s.rtMu.Lock()
	defer s.rtMu.Unlock()
	rt := s.rt.Load()
	rt.retain()
	return rt
}

// Runtime returns the runtime new sessions get.
func (s *Server) Runtime() *Runtime { return s.rt.Load() }

// Serve accepts connections until Close or Shutdown. It returns nil then.
func (s *Server) Serve(ln net.Listener) error {
	t := newTracker(ln, s.limits, s.log)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.tracker = t
	t.metrics = s.metrics
	s.mu.Unlock()
	defer t.Close()
	for {
		c, err := t.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return err
		}
		go s.serveConn(c.(*conn))
	}
}

// serveConn runs one milter connection through go-milter. go-milter's
// Server.Serve is given a listener that yields just this connection, so
// that the session it creates is known here: go-milter drops a session
// without calling Abort when its connection ends (a timeout, a protocol
// error, a panic, a client gone mid-message), and the session must then
// cancel its key lookups and say in the log which message was cut.
func (s *Server) serveConn(c *conn) {
	var cur *session
	srv := &gomilter.Server{
		// Called here once, then on the connection's own goroutine after
		// any final answer; closed runs on that goroutine too, so cur
		// needs no lock.
		NewMilter: func() gomilter.Milter {
			if cur != nil {
				// Its message got its final answer.
				cur.rt.release()
			}
			cur = newSession(s.acquire(), s.log, s.metrics)
			// The guard lives in the session: one allocation for
			// both, not a guard boxed in the interface besides.
			cur.guard = guard{s: cur, conn: c}
			return &cur.guard
		},
		Actions:  actions,
		Protocol: protocol,
	}
	c.onClose = func(cause cutCause, eom bool) bool {
		defer cur.rt.release()
		return cur.closed(c.qid, cause, eom)
	}
	srv.Serve(&oneConn{c: c}) // returns at once; the session goes on
}

// oneConn is a listener with a single connection to accept; closing it
// leaves the connection alone.
type oneConn struct {
	c    net.Conn
	done bool
}

func (o *oneConn) Accept() (net.Conn, error) {
	if o.done {
		return nil, net.ErrClosed
	}
	o.done = true
	return o.c, nil
}

func (o *oneConn) Close() error   { return nil }
func (o *oneConn) Addr() net.Addr { return o.c.LocalAddr() }

// Close stops accepting connections; sessions in flight go on.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	t := s.tracker
	s.mu.Unlock()
	if t != nil {
		return t.Close()
	}
	return nil
}

// Shutdown stops accepting connections (the listener is closed) and waits
// for the open ones to end: when Postfix closes them, or when a message
// ended on one and it then stayed idle for the grace (DefaultDrainGrace).
// A connection with no message since the drain began is never closed
// before ctx ends: Postfix reads nothing from it until its next message
// ends, which would then meet a closed socket. When ctx ends, what is
// left is closed. It returns how many messages were cut in the middle
// (each costs that message Postfix's milter_default_action; each is
// logged with its queue id and stage, and counted).
func (s *Server) Shutdown(ctx context.Context) int {
	s.Close()
	s.mu.Lock()
	t := s.tracker
	s.mu.Unlock()
	cut := 0
	if t != nil {
		cut = t.drain(ctx)
	}
	// The server lets go of its Runtime: it closes (its key database's
	// connections too) with the last session.
	s.rtMu.Lock()
	release := !s.released
	s.released = true
	s.rtMu.Unlock()
	if release {
		s.rt.Load().release()
	}
	return cut
}

// Sessions returns the number of open milter connections.
func (s *Server) Sessions() int {
	s.mu.Lock()
	t := s.tracker
	s.mu.Unlock()
	if t == nil {
		return 0
	}
	return t.Sessions()
}

// Listen opens the milter socket: "unix:/path" or "inet:host:port". A
// stale unix socket left by a crash is removed (but not a live one: that
// would steal another instance's socket), and the new one gets mode.
func Listen(addr string, mode fs.FileMode) (net.Listener, error) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(addr, "unix:")
		if err := removeStale(path); err != nil {
			return nil, err
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w (hint: the directory %s must exist and be writable by this user)", path, err, filepath.Dir(path))
		}
		if err := os.Chmod(path, mode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("chmod %s: %w", path, err)
		}
		return ln, nil
	case strings.HasPrefix(addr, "inet:"):
		hp := strings.TrimPrefix(addr, "inet:")
		ln, err := net.Listen("tcp", hp)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", hp, err)
		}
		return ln, nil
	}
	return nil, fmt.Errorf("listen address %q: want unix:/path or inet:host:port", addr)
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; remove it or choose another listen path", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by a running milter (another dkimmilter?)", path)
	}
	return os.Remove(path)
}
