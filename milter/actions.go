package milter

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// Reply codes. RFC 7372 registers 5.7.20 for "no passing DKIM signature
// found"; 4.4.3 is a directory (DNS) failure; 4.3.0 an unspecified system
// problem, which a signing failure is.
const (
	replySignTempfail = "451 4.3.0 DKIM signing failed, try again later"
	replySignReject   = "550 5.7.0 DKIM signing failed"
	replyDNSTempfail  = "451 4.4.3 DKIM key lookup failed, try again later"
	replyDNSReject    = "550 5.7.20 DKIM key lookup failed"
	replyBadTempfail  = "451 4.7.20 No passing DKIM signature, try again later"
	replyBadReject    = "550 5.7.20 No passing DKIM signature"
)

// reply builds an SMTP reply that go-milter does not treat as final (see
// session), so the connection keeps its state for the next message.
func reply(text string) gomilter.Response {
	return gomilter.NewResponseStr('y', text)
}

// failSigning applies actions.sign_error: a key that cannot be used should
// delay the message (the default), not let it leave unsigned. With
// "accept" the message goes on unsigned and the log says why.
func (s *session) failSigning(err error) {
	msg := s.msg
	msg.signer, msg.note = nil, err.Error()
	s.metrics.signError()
	switch s.rt.Config.Actions.SignError {
	case config.Accept:
		msg.decision = notSigned
		msg.note = "signing failed, delivered unsigned (actions.sign_error = accept): " + err.Error()
	case config.Reject:
		msg.decision, msg.reply = signError, reply(replySignReject)
	default:
		msg.decision, msg.reply = signError, reply(replySignTempfail)
	}
}

// verifyAction applies actions.dns_error and actions.bad_signature. Both
// only apply when no signature passed: one good signature is enough for
// the message (RFC 6376 §6.1). A failing signature whose key record says
// t=y (testing) never rejects or delays mail (RFC 6376 §3.6.1).
func (s *session) verifyAction(results []*verifier.Verification) (resp gomilter.Response, action config.Action, quarantine string) {
	acts := s.rt.Config.Actions
	var temp, bad bool
	for _, v := range results {
		switch v.Result {
		case verifier.Pass:
			return gomilter.RespContinue, config.Accept, ""
		case verifier.TempError:
			temp = true
		case verifier.Fail, verifier.PermError:
			if !v.Testing {
				bad = true
			}
		}
	}
	switch {
	case temp && acts.DNSError != config.Accept:
		action = acts.DNSError
		if action == config.Reject {
			return reply(replyDNSReject), action, ""
		}
		return reply(replyDNSTempfail), action, ""
	case bad && acts.BadSignature != config.Accept:
		action = acts.BadSignature
		switch action {
		case config.Reject:
			return reply(replyBadReject + ": " + firstReason(results)), action, ""
		case config.Tempfail:
			return reply(replyBadTempfail), action, ""
		case config.Quarantine:
			return gomilter.RespContinue, action, "DKIM: " + firstReason(results)
		}
	}
	return gomilter.RespContinue, config.Accept, ""
}

// firstReason is the reason of the first failing signature, made safe for
// an SMTP reply line or a quarantine reason: reasons can quote tag values
// from the message (a= or k= as written), and a CR LF there would start a
// new reply line, '%' is eaten by Postfix, and RFC 5321 §4.5.3.1.5 caps a
// reply line at 512 octets.
func firstReason(results []*verifier.Verification) string {
	for _, v := range results {
		if v.Result == verifier.Fail || v.Result == verifier.PermError {
			return replySafe(v.Reason(), 200)
		}
	}
	return ""
}

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
// each result with its reason, and the time taken.
func (s *session) logMessage(msg *message, results []*verifier.Verification, action config.Action) {
	attrs := []any{
		"qid", msg.qid,
		"client", s.clientDesc(),
		"from", msg.from,
		"decision", msg.decision.String(),
	}
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
	if action != config.Accept {
		attrs = append(attrs, "action", action.String())
	}
	if msg.note != "" {
		attrs = append(attrs, "why", msg.note)
	}
	d := s.rt.now().Sub(msg.start)
	attrs = append(attrs, "duration", d.Round(time.Microsecond))
	s.metrics.message(msg.decision, results, d)
	s.metrics.action(action)
	level := slog.LevelInfo
	if msg.decision == signError {
		level = slog.LevelError
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
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}
