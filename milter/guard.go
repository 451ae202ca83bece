package milter

import (
	"fmt"
	"net"
	"net/textproto"
	"runtime/debug"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// guard is the Milter go-milter drives: it hands each callback to the
// session and recovers a panic in it (a bug of ours, set off by some
// message), so that the message answers actions.internal_error (tempfail
// by default) and the connection goes on with the next one.
//
// go-milter runs each callback between reading a whole packet and writing
// its answer, so when one panics the conversation is still in step: the
// guard returns what that stage answers (nothing with the no-reply
// flags, continue otherwise), marks the message failed, and end of message
// gives the answer. What the session had written already at end of
// message (header changes) stands: Postfix applies it if the answer lets
// the message through, and drops it otherwise.
//
// What cannot be recovered is left to go-milter's own recover, which
// closes the connection (Postfix then applies milter_default_action): a
// panic outside the callbacks, in the code that reads and writes packets,
// where a packet may be half read or half written; and a callback that
// returns an error, which only writing a header change to the connection
// does: the connection is broken already.
type guard struct {
	s *session
	// conn is the connection wrapper, whose qid is the queue id it saw
	// in the macros, for a message that failed before the session
	// learned its own; nil in tests without one.
	conn *conn
}

// The stages of a message, as the log names them.
const (
	stageConnect = "connect"
	stageHelo    = "helo"
	stageMail    = "mail"
	stageRcpt    = "rcpt"
	stageHeader  = "header"
	stageEOH     = "end of headers"
	stageBody    = "body"
	stageEOM     = "end of message"
	stageAbort   = "abort"
)

// failure is a panic recovered while handling a message or a connection.
type failure struct {
	stage string
	value any
}

func (f *failure) String() string { return fmt.Sprintf("%s: %v", f.stage, f.value) }

// failpoint runs the runtime's test hook for stage: tests make it panic
// there. Production runtimes have none (LoadRuntime sets no hook, and no
// configuration can).
func (g guard) failpoint(stage string) {
	if h := g.s.rt.testHook; h != nil {
		h(stage)
	}
}

// recovered handles a panic of a callback at stage: it logs it, once per
// message, and marks what it broke. A panic at connect leaves the
// connection's state (the client address) unknown: every message on the
// connection then fails.
func (g guard) recovered(stage string, v any) {
	s := g.s
	f := &failure{stage: stage, value: v}
	switch {
	case stage == stageConnect:
		s.broken = f
	case stage == stageAbort:
		// The message is over anyway: drop it. Its cleanup (which
		// cancels its key lookups) may be what panicked, so it runs
		// under a recover of its own.
		func() {
			defer func() { recover() }()
			s.reset()
		}()
		s.msg = nil
	default:
		if s.msg == nil || stage == stageMail {
			// MAIL FROM panicked before or while it set up the new
			// message: do not keep the previous one.
			s.msg = &message{start: s.rt.now()}
		}
		if s.msg.failure != nil {
			return // logged at the first
		}
		s.msg.failure = f
	}
	qid := ""
	if s.msg != nil {
		qid = s.msg.qid
	}
	if qid == "" && g.conn != nil {
		qid = g.conn.qid
	}
	then := "the message answers actions.internal_error = " + s.rt.Config.Actions.InternalError.String()
	switch stage {
	case stageConnect:
		then = "every message on this connection answers actions.internal_error = " + s.rt.Config.Actions.InternalError.String()
	case stageAbort:
		then = "the message was over; the connection goes on"
	}
	s.log.Error("internal error: recovered a panic", "qid", qid, "stage", stage, "panic", fmt.Sprint(v),
		"client", s.clientDesc(), "then", then, "stack", string(debug.Stack()))
}

// failed reports whether the message in progress has failed: the rest of
// it is not looked at.
func (g guard) failed() bool { return g.s.msg != nil && g.s.msg.failure != nil }

func (g guard) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			g.recovered(stageConnect, v)
			resp, err = nil, nil // SMFIP_NR_CONN
		}
	}()
	g.failpoint(stageConnect)
	return g.s.Connect(host, family, port, addr, m)
}

func (g guard) Helo(name string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			g.recovered(stageHelo, v)
			resp, err = gomilter.RespContinue, nil
		}
	}()
	g.failpoint(stageHelo)
	return g.s.Helo(name, m)
}

func (g guard) MailFrom(from string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			g.recovered(stageMail, v)
			resp, err = nil, nil // SMFIP_NR_MAIL
		}
	}()
	g.failpoint(stageMail)
	resp, err = g.s.MailFrom(from, m)
	if g.s.broken != nil {
		g.s.msg.failure = g.s.broken
	}
	return resp, err
}

func (g guard) RcptTo(rcpt string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			g.recovered(stageRcpt, v)
			resp, err = gomilter.RespContinue, nil
		}
	}()
	if g.failed() {
		return gomilter.RespContinue, nil
	}
	g.failpoint(stageRcpt)
	return g.s.RcptTo(rcpt, m)
}

func (g guard) Header(name, value string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	var arCount int
	if g.s.msg != nil {
		arCount = g.s.msg.arCount
	}
	defer func() {
		if v := recover(); v != nil {
			g.recovered(stageHeader, v)
			resp, err = nil, nil // SMFIP_NR_HDR
			if g.s.msg.arCount == arCount {
				// The field was not counted before the panic: count it,
				// so that the indexes of the forged fields stay right.
				g.s.noteAR(dkim.NewField(name, value))
			}
		}
	}()
	if g.failed() {
		// Only the Authentication-Results fields are still noted: an
		// internal_error of "accept" or "quarantine" removes the
		// forged ones.
		g.s.macros(m)
		g.s.noteAR(dkim.NewField(name, value))
		return nil, nil
	}
	g.failpoint(stageHeader)
	return g.s.Header(name, value, m)
}

func (g guard) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			g.recovered(stageEOH, v)
			resp, err = nil, nil // SMFIP_NR_EOH
		}
	}()
	if g.failed() {
		return nil, nil
	}
	g.failpoint(stageEOH)
	return g.s.Headers(h, m)
}

func (g guard) BodyChunk(chunk []byte, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			g.recovered(stageBody, v)
			resp, err = nil, nil // SMFIP_NR_BODY
		}
	}()
	if g.failed() {
		return nil, nil
	}
	g.failpoint(stageBody)
	return g.s.BodyChunk(chunk, m)
}

// Body is end of message, where every message gets its answer: a failed
// one actions.internal_error. The message state is dropped after the
// recover, which needs it.
func (g guard) Body(m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer g.s.reset()
	defer func() {
		if v := recover(); v != nil {
			g.recovered(stageEOM, v)
			resp, err = g.failMessage(m)
		}
	}()
	if g.failed() {
		return g.failMessage(m)
	}
	g.failpoint(stageEOM)
	return g.s.Body(m)
}

func (g guard) Abort(m *gomilter.Modifier) (err error) {
	defer func() {
		if v := recover(); v != nil {
			g.recovered(stageAbort, v)
			err = nil
		}
	}()
	g.failpoint(stageAbort)
	return g.s.Abort(m)
}

// failMessage answers a failed message with actions.internal_error and
// logs its line. With accept or quarantine the message goes on without
// our signature or Authentication-Results (whatever was done of them is
// not to be trusted), but forged Authentication-Results noted so far are
// removed all the same.
func (g guard) failMessage(m *gomilter.Modifier) (gomilter.Response, error) {
	s, msg := g.s, g.s.msg
	msg.decision, msg.outcome = failed, outInternalError
	msg.action = s.rt.Config.Actions.InternalError
	msg.note = "internal error at " + msg.failure.String()
	resp, quarantine := answer(outInternalError, msg.action, "")
	if resp == nil {
		if err := s.removeForgedAR(m); err != nil {
			return nil, err
		}
		if quarantine != "" {
			if err := m.Quarantine(quarantine); err != nil {
				return nil, err
			}
		}
		resp = gomilter.RespContinue
	}
	if msg.action == config.Accept {
		msg.note += "; delivered as it came (actions.internal_error = accept)"
	}
	s.logMessage(msg, nil)
	return resp, nil
}
