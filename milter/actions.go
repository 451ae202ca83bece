package milter

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// Reply texts, one pair (tempfail, reject) per outcome. RFC 7372
// registers X.7.20 for "no passing DKIM signature found"; 4.4.3 is a
// directory (DNS) failure; X.3.4 a message too big for the system, which
// a header over our limits is; X.3.0 an unspecified system problem, which
// a signing failure or our own is. The verification outcomes add the
// reason of the signature that decided: "550 5.7.20 No passing DKIM
// signature: no key for signature". Signing and internal failures add
// nothing: their details (file names, a panic) are for the log, not for
// the SMTP client.
const (
	replySignTempfail     = "451 4.3.0 DKIM signing failed, try again later"
	replySignReject       = "550 5.7.0 DKIM signing failed"
	replyDNSTempfail      = "451 4.4.3 DKIM key lookup failed"
	replyDNSReject        = "550 5.7.20 DKIM key lookup failed"
	replySecurityTempfail = "452 4.3.4 Message header too large to verify DKIM"
	replySecurityReject   = "552 5.3.4 Message header too large to verify DKIM"
	replyBadTempfail      = "451 4.7.20 No passing DKIM signature"
	replyBadReject        = "550 5.7.20 No passing DKIM signature"
	replyNoneTempfail     = "451 4.7.20 No DKIM signature"
	replyNoneReject       = "550 5.7.20 No DKIM signature"
	replyInternalTempfail = "451 4.3.0 Internal error in the DKIM milter, try again later"
	replyInternalReject   = "550 5.3.0 Internal error in the DKIM milter"

	// The login may not have this From signed: a policy refusal, X.7.1
	// (RFC 3463 "delivery not authorized"), naming the From domain and
	// the login, for the user whose mail program shows it.
	replySenderTempfail = "451 4.7.1 From domain not allowed for this login"
	replySenderReject   = "550 5.7.1 From domain not allowed for this login"
)

var replyTexts = [...]struct{ tempfail, reject string }{
	outDNSError:      {replyDNSTempfail, replyDNSReject},
	outSecurity:      {replySecurityTempfail, replySecurityReject},
	outBadSignature:  {replyBadTempfail, replyBadReject},
	outKeyNotFound:   {replyBadTempfail, replyBadReject},
	outPolicy:        {replyBadTempfail, replyBadReject},
	outNoSignature:   {replyNoneTempfail, replyNoneReject},
	outSignError:     {replySignTempfail, replySignReject},
	outInternalError: {replyInternalTempfail, replyInternalReject},

	outSenderMismatch: {replySenderTempfail, replySenderReject},
}

// reply builds an SMTP reply that go-milter does not treat as final (see
// session), so the connection keeps its state for the next message.
func reply(text string) gomilter.Response {
	return gomilter.NewResponseStr('y', text)
}

// respDiscard answers SMFIR_DISCARD. go-milter takes SMFIR_DISCARD for
// the end of the session and replaces its Milter, losing the client
// address of the connection (doc/postfix.md, "Answers"); Postfix takes it
// for the end of the message only, as a reply code, so it is sent as one
// that go-milter continues after.
var respDiscard gomilter.Response = keepSession(gomilter.ActDiscard)

// keepSession is a final answer for Postfix that go-milter does not end
// the session on.
type keepSession gomilter.ActionCode

func (k keepSession) Response() *gomilter.Message { return &gomilter.Message{Code: byte(k)} }
func (k keepSession) Continue() bool              { return true }

// answer is what the milter says for a message whose outcome o asks for
// action a: a response (nil for accept and quarantine: go on), and for
// quarantine the reason Postfix records with the held message. reason is
// what decided, from the message (a signature's reason), and made safe
// here.
func answer(o outcome, a config.Action, reason string) (resp gomilter.Response, quarantine string) {
	reason = replySafe(reason, 200)
	switch a {
	case config.Tempfail, config.Reject:
		t := replyTexts[o].tempfail
		if a == config.Reject {
			t = replyTexts[o].reject
		}
		if reason != "" && (o <= outPolicy || o == outSenderMismatch) {
			t += ": " + reason
		}
		return reply(t), ""
	case config.Discard:
		return respDiscard, ""
	case config.Quarantine:
		switch o {
		case outSignError:
			reason = "signing failed, held unsigned"
		case outInternalError:
			reason = "internal error"
		case outNoSignature:
			reason = "no DKIM signature"
		case outSenderMismatch:
			reason = "not signed, From domain not allowed for this login: " + reason
		}
		return nil, "DKIM: " + reason
	}
	return nil, ""
}

// failSigning applies actions.sign_error: a key that cannot be used should
// delay the message (the default), not let it leave unsigned. With
// "accept" the message goes on unsigned, with "quarantine" it is held
// unsigned, with "discard" dropped; the log says why.
func (s *session) failSigning(err error) {
	msg := s.msg
	msg.signer, msg.note = nil, err.Error()
	s.metrics.signError()
	msg.outcome, msg.action = outSignError, s.rt.Config.Actions.SignError
	msg.decision = signError
	msg.reply, msg.quarantine = answer(outSignError, msg.action, "")
	switch msg.action {
	case config.Accept:
		msg.decision = notSigned
		msg.note = "signing failed, delivered unsigned (actions.sign_error = accept): " + err.Error()
	case config.Quarantine:
		msg.note = "signing failed, held unsigned (actions.sign_error = quarantine): " + err.Error()
	case config.Discard:
		msg.note = "signing failed, discarded (actions.sign_error = discard): " + err.Error()
	}
}

// senderMismatch applies actions.sender_mismatch to a message whose From
// its login may not use (sign.sender_binding): it is not signed. With
// tempfail, reject or discard it is refused at end of message, and
// senderMismatch reports true. With accept or quarantine it is then
// verified as an untrusted client's message would be (decide goes on):
// it claims a From the user does not own, so it gets what any message
// with that From from outside gets, Authentication-Results and the
// verification [actions] included (one of those that refuses the
// message wins over the quarantine).
func (s *session) senderMismatch(mm *keystore.Mismatch) bool {
	msg := s.msg
	msg.mismatch = mm
	s.metrics.senderMismatch(mm.Label())
	msg.outcome, msg.action = outSenderMismatch, s.rt.Config.Actions.SenderMismatch
	login := mm.Login
	if login == "" {
		login = `""`
	}
	domain := mm.Domain
	if domain == "" {
		domain = mm.From
	}
	msg.reply, msg.quarantine = answer(outSenderMismatch, msg.action, domain+" (login "+login+")")
	msg.note = mm.Reason + " (sign.sender_binding; actions.sender_mismatch = " + msg.action.String() + ")"
	if msg.reply != nil {
		msg.decision = senderMismatch
		return true
	}
	return false
}

// verifyAction applies the [actions] of the verification outcomes to a
// verified message (verifyOutcome says which outcome decides). It returns
// nil to deliver the message (quarantined when quarantine is set).
func (s *session) verifyAction(results []*verifier.Verification) (resp gomilter.Response, o outcome, action config.Action, quarantine string) {
	o, v := verifyOutcome(results)
	if o == noOutcome {
		return nil, o, config.Accept, ""
	}
	action = o.action(s.rt.Config.Actions)
	var reason string
	if v != nil {
		reason = v.Reason()
	}
	resp, quarantine = answer(o, action, reason)
	return resp, o, action, quarantine
}

// replySafe makes a reason safe for an SMTP reply line or a quarantine
// reason: reasons can quote tag values from the message (a= or k= as
// written), and a CR LF there would start a new reply line, '%' is eaten
// by Postfix, and RFC 5321 §4.5.3.1.5 caps a reply line at 512 octets.
func replySafe(s string, max int) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '%' {
			b[i] = '?'
		}
	}
	if len(b) > max {
		b = append(b[:max-3], "..."...)
	}
	return string(b)
}

// logMessage writes the one line per message: queue id, client, decision,
// each result with its reason, the outcome and the action it took (when
// not accept), and the time taken.
func (s *session) logMessage(msg *message, results []*verifier.Verification) {
	attrs := []any{
		"qid", msg.qid,
		"client", s.clientDesc(),
		"from", msg.from,
	}
	if msg.authType != "" || msg.authAuthen != "" {
		// Who sent it, for the audit of what was signed as whom.
		attrs = append(attrs, "login", msg.authAuthen)
	}
	attrs = append(attrs, "decision", msg.decision.String())
	if msg.sel != nil {
		var keys []string
		for _, k := range msg.sel.Keys {
			keys = append(keys, "d="+k.Domain+" s="+k.Selector+" a="+k.Algorithm)
		}
		attrs = append(attrs, "keys", strings.Join(keys, ", "))
	}
	if msg.decision == verified {
		attrs = append(attrs, "dkim", summarize(results))
	}
	if msg.action != config.Accept {
		attrs = append(attrs, "action", msg.action.String())
	}
	if msg.outcome != noOutcome {
		attrs = append(attrs, "outcome", msg.outcome.String())
	}
	if msg.note != "" {
		attrs = append(attrs, "why", msg.note)
	}
	d := s.rt.now().Sub(msg.start)
	attrs = append(attrs, "duration", d.Round(time.Microsecond))
	s.metrics.message(msg.decision, results, d)
	s.metrics.action(msg.action)
	level := slog.LevelInfo
	switch {
	case msg.decision == signError || msg.decision == failed:
		level = slog.LevelError
	case msg.mismatch != nil:
		// A user sending as someone else: a mistake, or a stolen
		// password.
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "message", attrs...)
}

// summarize renders results for the log: "pass d=… s=…; fail d=… s=…
// reason=…".
func summarize(results []*verifier.Verification) string {
	if len(results) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(results))
	for _, v := range results {
		p := string(v.Result)
		if v.Domain != "" {
			p += " d=" + v.Domain
		}
		if v.Selector != "" {
			p += " s=" + v.Selector
		}
		if v.Algorithm != "" {
			p += " a=" + v.Algorithm
		}
		if r := v.Reason(); r != "" {
			p += " reason=\"" + r + "\""
		}
		if errors.Is(v.Err, verifier.ErrNoKey) || errors.Is(v.Err, verifier.ErrDNSTimeout) || errors.Is(v.Err, verifier.ErrDNSFailure) {
			p += " dns=" + v.DNSName
		}
		if v.Stale {
			// The key came from a record past its TTL: DNS failed.
			p += " key=stale dns=" + v.DNSName
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}
