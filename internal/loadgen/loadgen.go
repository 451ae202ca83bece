// Package loadgen drives a milter the way Postfix does, from many
// connections at once, and measures it: messages per second, latency
// percentiles, and the milter process's CPU time and peak memory (read
// from /proc). It speaks to any milter (dkimmilter, OpenDKIM) and checks
// every answer: a DKIM-Signature inserted when signing, an
// Authentication-Results inserted (with an expected result) when
// verifying. bench/milterload is its command line; a soak test can call
// Run directly.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// Mode is what the milter is expected to do with the messages.
type Mode string

const (
	// Sign: an authenticated client on 127.0.0.1 (internal) sends mail
	// from the signing domain; each message must get a DKIM-Signature.
	Sign Mode = "sign"
	// Verify: a client that is neither internal nor authenticated sends a
	// signed message; each must get an Authentication-Results field.
	Verify Mode = "verify"
)

// Config is one load run.
type Config struct {
	Addr        string        // unix:/path or inet:host:port
	Mode        Mode          // Sign or Verify
	Message     *Message      // what every message is
	Concurrency int           // milter connections at once; 0: 1
	Count       int           // messages to send; 0: run for Duration
	Duration    time.Duration // used when Count is 0
	Reuse       int           // messages per connection (Postfix: per SMTP session); 0: 1
	Warmup      int           // messages sent first on one connection, not measured
	Timeout     time.Duration // bound on one message; 0: 60s
	Expect      string        // Verify: the dkim= result the first A-R result must have ("pass"); "": any
	PID         int           // the milter's process, for CPU and memory; 0: not measured
	Client      *Client       // nil: the default client of Mode
	// Save, if set, gets the first message as Postfix would deliver it
	// (the milter's header changes applied): a signed message for a
	// later verify run.
	Save func([]byte)
	// Label and Milter name the run in reports.
	Label, Milter string
}

// DefaultClient is the SMTP client of each mode: sign mail from an
// authenticated internal client, verify mail from an external one.
func DefaultClient(m Mode) Client {
	if m == Sign {
		return Client{Host: "localhost", IP: "127.0.0.1", AuthType: "PLAIN", AuthAuthen: "alice"}
	}
	return Client{Host: "mail.sender.example", IP: "203.0.113.7"}
}

// Run runs the load and returns its report. Errors in messages are
// counted in the report; Run itself fails only when it cannot start (a
// bad address, or warm-up messages that fail).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	t, err := parseAddr(cfg.Addr)
	if err != nil {
		return nil, err
	}
	if cfg.Message == nil {
		return nil, errors.New("no message to send")
	}
	if cfg.Mode != Sign && cfg.Mode != Verify {
		return nil, fmt.Errorf("mode %q: want sign or verify", cfg.Mode)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.Reuse <= 0 {
		cfg.Reuse = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.Count <= 0 && cfg.Duration <= 0 {
		return nil, errors.New("give a message count or a duration")
	}
	cl := DefaultClient(cfg.Mode)
	if cfg.Client != nil {
		cl = *cfg.Client
	}
	r := &runner{cfg: cfg, t: t, client: cl}
	if err := r.warmup(); err != nil {
		return nil, err
	}

	var proc *procSampler
	if cfg.PID > 0 {
		if proc, err = startProc(cfg.PID); err != nil {
			return nil, err
		}
	}
	selfStart, busyStart := selfCPU(), systemBusy()
	start := time.Now()
	if cfg.Count <= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, start.Add(cfg.Duration))
		defer cancel()
	}
	workers := make([]*worker, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{r: r, errs: map[string]int{}}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	rep := &Report{
		Label: cfg.Label, Milter: cfg.Milter, Addr: cfg.Addr, Mode: string(cfg.Mode),
		Concurrency: cfg.Concurrency, Reuse: cfg.Reuse, MessageSize: cfg.Message.Size(),
		Expect: cfg.Expect, Seconds: elapsed.Seconds(), Errors: map[string]int{},
		Protocol: "v6", DriverCPU: (selfCPU() - selfStart).Seconds(), Time: start.UTC().Format(time.RFC3339),
	}
	if t.v2.Load() {
		rep.Protocol = "v2"
	}
	if n := t.negotiated.Load(); n != nil {
		rep.Negotiated = *n
	}
	var lat []time.Duration
	for _, w := range workers {
		lat = append(lat, w.lat...)
		for k, n := range w.errs {
			rep.Errors[k] += n
			rep.Failed += n
		}
		if rep.FirstError == "" {
			rep.FirstError = w.firstErr
		}
	}
	rep.Messages = len(lat)
	rep.setLatency(lat)
	if proc != nil {
		proc.stop(rep)
	}
	if busyStart > 0 {
		// What else ran on the machine meanwhile: a figure taken next to
		// a compiler or a test suite is not a figure.
		rep.OtherCPU = max(0, (systemBusy()-busyStart).Seconds()-rep.MilterCPU-rep.DriverCPU)
	}
	return rep, nil
}

type runner struct {
	cfg    Config
	t      *target
	client Client
	issued atomic.Int64 // messages handed out (Count mode)
	qid    atomic.Uint64
	saved  atomic.Bool
}

// warmup sends cfg.Warmup messages on one connection: the milter loads
// its keys, fills its DNS cache, and the version is negotiated once.
func (r *runner) warmup() error {
	n := max(r.cfg.Warmup, 0)
	if n == 0 && r.cfg.Save == nil {
		return nil
	}
	c, err := r.connect()
	if err != nil {
		return fmt.Errorf("%s: %w", r.cfg.Addr, err)
	}
	defer c.close()
	for i := 0; i < max(n, 1); i++ {
		if err := r.one(c); err != nil {
			return fmt.Errorf("warm-up message: %w", err)
		}
	}
	return nil
}

func (r *runner) connect() (*conn, error) {
	c, err := dial(r.t)
	if err != nil {
		return nil, err
	}
	c.raw.SetDeadline(time.Now().Add(r.cfg.Timeout))
	if err := c.hello(r.client); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// one sends a message on c and checks the answer.
func (r *runner) one(c *conn) error {
	c.used++
	c.raw.SetDeadline(time.Now().Add(r.cfg.Timeout))
	qid := "4X" + strings.ToUpper(strconv.FormatUint(0x10000000+r.qid.Add(1), 16))
	mods, act, err := c.send(r.cfg.Message, r.client, qid)
	if err != nil {
		return err
	}
	if err := r.checkEnd(mods, act); err != nil {
		return err
	}
	if r.cfg.Save != nil && r.saved.CompareAndSwap(false, true) {
		raw := r.cfg.Message.Raw()
		r.cfg.Save(testkit.Apply(raw, mods, c.lead))
	}
	return nil
}

// checkEnd checks the answer at end of message against the mode.
func (r *runner) checkEnd(mods []gomilter.ModifyAction, act *gomilter.Action) error {
	if act.Code != gomilter.ActAccept && act.Code != gomilter.ActContinue {
		return actionErr("eom", act)
	}
	want := "DKIM-Signature"
	if r.cfg.Mode == Verify {
		want = "Authentication-Results"
	}
	var value string
	found := false
	for _, m := range mods {
		if (m.Code == gomilter.ActInsertHeader || m.Code == gomilter.ActAddHeader) &&
			strings.EqualFold(m.HeaderName, want) && !found {
			value, found = m.HeaderValue, true
		}
	}
	switch {
	case !found && r.cfg.Mode == Sign:
		return &Error{Kind: "no-signature", Err: errors.New("no DKIM-Signature was added")}
	case !found:
		return &Error{Kind: "no-ar", Err: errors.New("no Authentication-Results was added")}
	case r.cfg.Mode == Verify && r.cfg.Expect != "":
		got := arResult(value)
		if got != strings.ToLower(r.cfg.Expect) {
			return &Error{Kind: "result-" + got, Err: fmt.Errorf("want dkim=%s, got: %s", r.cfg.Expect, strings.Join(strings.Fields(value), " "))}
		}
	}
	return nil
}

// arResult returns the first dkim= result of an Authentication-Results
// value ("" if none).
func arResult(v string) string {
	v = strings.ToLower(v)
	i := strings.Index(v, "dkim=")
	if i < 0 {
		return ""
	}
	v = v[i+len("dkim="):]
	end := strings.IndexFunc(v, func(r rune) bool { return r < 'a' || r > 'z' })
	if end >= 0 {
		v = v[:end]
	}
	return v
}

type worker struct {
	r        *runner
	lat      []time.Duration
	errs     map[string]int
	firstErr string
}

func (w *worker) run(ctx context.Context) {
	r := w.r
	var c *conn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	for ctx.Err() == nil {
		if r.cfg.Count > 0 && r.issued.Add(1) > int64(r.cfg.Count) {
			return
		}
		if c != nil && c.used >= r.cfg.Reuse {
			c.close()
			c = nil
		}
		if c == nil {
			var err error
			if c, err = r.connect(); err != nil {
				w.fail(err)
				continue
			}
		}
		// Latency is the message's: MAIL FROM to the answer at end of
		// message, as Postfix's cleanup waits for it. Connection set-up
		// counts in the throughput, not here.
		start := time.Now()
		err := r.one(c)
		if err != nil {
			w.fail(err)
			var e *Error
			if !errors.As(err, &e) || e.Kind == "io" || e.Kind == "timeout" || e.Kind == "connect" {
				// The connection is in an unknown state: start afresh,
				// as Postfix does after a milter error.
				c.close()
				c = nil
			}
			continue
		}
		w.lat = append(w.lat, time.Since(start))
	}
}

func (w *worker) fail(err error) {
	kind := "other"
	var e *Error
	if errors.As(err, &e) {
		kind = e.Kind
	}
	w.errs[kind]++
	if w.firstErr == "" {
		w.firstErr = err.Error()
	}
	if kind == "connect" {
		// Do not spin on a milter that is down.
		time.Sleep(10 * time.Millisecond)
	}
}

// ReadMessageFile reads a message file for Verify.
func ReadMessageFile(path string) (*Message, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseMessage(raw, "", nil)
}
