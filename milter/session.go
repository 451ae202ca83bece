package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"slices"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/authres"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/signer"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// session is one milter connection, which Postfix opens per SMTP session
// (and per message for non_smtpd_milters). Its callbacks run one at a time,
// so it needs no locks. Connection state (client, authserv-id) survives
// from message to message; message state is reset at MAIL FROM and ABORT.
//
// Every callback answers continue, a decision to reject or tempfail is
// sent as an SMTP reply code ('y'), and a discard as one go-milter is told
// to continue after (keepSession): go-milter throws the session's Milter
// away after any other final answer, and with it the client address of the
// connection (doc/postfix.md, "Answers"). go-milter calls the session
// through guard, which recovers a panic in a callback.
type session struct {
	rt      *Runtime
	log     *slog.Logger
	metrics *Metrics // nil records nothing
	guard   guard    // what go-milter calls: the session behind a recover

	// Connection.
	clientHost string
	clientIP   netip.Addr
	mtaHost    string // Postfix's j macro: $myhostname
	daemonName string // Postfix's {daemon_name}: the master.cf service

	// What the client is, from the connect event (classify): why it is
	// a peer (passed through untouched), an internal host, or received
	// through a service in sign.daemon_names; "" for not.
	classified bool
	peer       string
	internal   string
	daemon     string

	// broken is a panic recovered at connect: the connection's state is
	// unknown, and each of its messages answers actions.internal_error.
	broken *failure

	msg *message
}

// message is the state of one message.
type message struct {
	start      time.Time
	qid        string
	envFrom    string
	authType   string
	authAuthen string
	header     dkim.Header

	// What the header limits need: every field is counted, kept or not.
	fields      int
	headerBytes int
	overLimit   error  // the limit the header passed: the rest is not kept
	fromValue   string // the first From field's value, even past a limit
	hasFrom     bool
	// Authentication-Results fields, counted as Postfix counts them for
	// ChangeHeader (1-based, by name), and those that claim our
	// authserv-id: forged ones are removed even past a header limit.
	arCount int
	forged  []int

	decided  bool // end of headers seen, or implied (see BodyChunk)
	decision decision
	from     string // address of the first From field
	sel      *keystore.Selection
	signer   *signer.Signer
	verify   *verifier.Message
	results  []*verifier.Verification // decided without verifying (a header limit)
	reply    gomilter.Response        // an early answer, at end of headers
	note     string                   // why the decision was taken, for the log

	// What [actions] said, and for which outcome; quarantine is the
	// reason of a message to hold.
	outcome    outcome
	action     config.Action
	quarantine string

	// mismatch: the client authenticated and is not an internal host,
	// and its login may not have this From signed (sign.sender_binding).
	mismatch *keystore.Mismatch

	// failure is a panic recovered while handling the message: the rest
	// of it is not looked at, and end of message answers
	// actions.internal_error (guard.go).
	failure *failure
}

func newSession(rt *Runtime, log *slog.Logger, m *Metrics) *session {
	return &session{rt: rt, log: log, metrics: m}
}

func (s *session) macros(m *gomilter.Modifier) {
	if s.msg == nil {
		return
	}
	for _, k := range []string{"i", "{i}"} {
		if v := m.Macros[k]; v != "" {
			s.msg.qid = v
		}
	}
	if v := m.Macros["{auth_type}"]; v != "" {
		s.msg.authType = v
	}
	if v := m.Macros["{auth_authen}"]; v != "" {
		s.msg.authAuthen = v
	}
}

func (s *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	s.clientHost = host
	if a, ok := netip.AddrFromSlice(addr); ok {
		s.clientIP = a.Unmap()
	} else if a, err := netip.ParseAddr(strings.Trim(m.Macros["{client_addr}"], "[]")); err == nil {
		// go-milter loses the address of unix-family connects; Postfix
		// sends it as a macro when asked (milter_connect_macros).
		s.clientIP = a.Unmap()
	}
	s.mtaHost = m.Macros["j"]
	// Postfix sends {daemon_name} at connect by default
	// (milter_connect_macros); master.cf's -o milter_macro_daemon_name
	// sets it per service.
	s.daemonName = m.Macros["{daemon_name}"]
	s.classified = false
	s.classify()
	s.metrics.connection()
	return nil, nil // SMFIP_NR_CONN
}

func (s *session) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.reset()
	s.msg = &message{start: s.rt.now(), envFrom: from}
	s.macros(m)
	return nil, nil // SMFIP_NR_MAIL
}

func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.macros(m)
	return gomilter.RespContinue, nil
}

func (s *session) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	if s.msg == nil {
		// A header without MAIL FROM: Postfix never does this, but a
		// message is still a message.
		s.msg = &message{start: s.rt.now()}
	}
	s.macros(m)
	msg := s.msg
	if s.classify(); s.peer != "" {
		// Passed through untouched: nothing to keep, no limit to apply.
		msg.fields++
		return nil, nil // SMFIP_NR_HDR
	}
	// With SMFIP_HDR_LEADSPC the value is exactly what followed the colon,
	// so the field is rebuilt byte for byte (doc/postfix.md).
	f := dkim.NewField(name, value)
	s.noteAR(f)
	if msg.decided {
		// After end of headers (Postfix never does this): too late to
		// sign or verify, but a forged A-R was noted above.
		return nil, nil // SMFIP_NR_HDR
	}
	if !msg.hasFrom && dkim.EqualFoldASCII(f.Name, "From") {
		msg.fromValue, msg.hasFrom = f.Value(), true
	}
	msg.fields++
	msg.headerBytes += len(f.Raw) + 2
	if msg.overLimit == nil {
		s.checkHeaderLimits()
	}
	if msg.overLimit == nil {
		msg.header = append(msg.header, f)
	}
	return nil, nil // SMFIP_NR_HDR
}

// noteAR counts the Authentication-Results fields, as Postfix counts them
// for ChangeHeader, and notes those that claim our authserv-id: forged
// ones are removed at end of message, whatever else happened to it.
func (s *session) noteAR(f dkim.Field) {
	if msg := s.msg; msg != nil && dkim.EqualFoldASCII(f.Name, "Authentication-Results") {
		msg.arCount++
		if authres.ClaimsAuthservID(f.Value(), s.authservID()) {
			msg.forged = append(msg.forged, msg.arCount)
		}
	}
}

// checkHeaderLimits applies [limits] max_headers and max_header_bytes:
// past either, the rest of the header is not kept (but still counted and
// read for forged A-R fields), and the message gets a defined result at
// end of headers (see decide).
func (s *session) checkHeaderLimits() {
	msg, l := s.msg, s.rt.Config.Limits
	var key string
	var limit int
	switch {
	case l.MaxHeaders > 0 && msg.fields > l.MaxHeaders:
		msg.overLimit, key, limit = verifier.ErrTooManyHeaders, limitMaxHeaders, l.MaxHeaders
	case l.MaxHeaderBytes > 0 && msg.headerBytes > l.MaxHeaderBytes:
		msg.overLimit, key, limit = verifier.ErrHeaderTooLarge, limitMaxHeaderBytes, l.MaxHeaderBytes
	default:
		return
	}
	// What was kept is no use now: free it. (go-milter keeps a copy of
	// every field until the message ends, which our limits cannot bound;
	// Postfix's message_size_limit and limits.message_timeout do.)
	msg.header = nil
	s.metrics.limit(key)
	s.log.Warn("message header over limits."+key+": the rest of the header is not kept",
		"qid", msg.qid, "client", s.clientDesc(), "limit", limit, "fields", msg.fields, "bytes", msg.headerBytes)
}

// Headers is the end of the header block: the message is signed or
// verified from here on, and the key lookups start.
func (s *session) Headers(_ textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	if s.msg == nil {
		s.msg = &message{start: s.rt.now()}
	}
	s.macros(m)
	s.decide()
	// SMFIP_NR_EOH: a refusal decided here (msg.reply) is answered at
	// end of message, where Postfix waits for an answer anyway.
	return nil, nil
}

// decide applies the rule of doc/decision.md: sign when the client is
// trusted and the SigningTable has keys for the From address; verify
// everything else. It runs once per message, at end of headers, or at the
// first body chunk or end of message when a client skipped end of
// headers.
func (s *session) decide() {
	msg, cfg := s.msg, s.rt.Config
	if msg.decided {
		return
	}
	msg.decided = true
	if s.classify(); s.peer != "" {
		// OpenDKIM's PeerList: nothing is done with the message.
		msg.decision, msg.note = skipped, s.peer
		return
	}
	if msg.hasFrom {
		if addrs := dkim.FromAddresses(msg.fromValue); len(addrs) > 0 {
			msg.from = addrs[0] // the first mailbox, as OpenDKIM
		}
	}
	trusted, why := s.trusted()
	// Checked first: the arguments would cost an allocation or two per
	// message at every level.
	debug := s.log.Enabled(context.Background(), slog.LevelDebug)
	if debug {
		s.log.Debug("decision", "qid", msg.qid, "client", s.clientDesc(), "from", msg.from,
			"mode", cfg.Mode.String(), "trusted", trusted, "why", why)
	}
	if cfg.Mode.Signs() && trusted && msg.from != "" {
		sel, err := s.rt.Keys.Lookup(msg.from)
		if debug && sel != nil {
			for _, k := range sel.Keys {
				s.log.Debug("signing key chosen", "qid", msg.qid, "from", msg.from, "rule", sel.Rule.From,
					"key", k.Name, "d", k.Domain, "s", k.Selector, "i", sel.Identity, "file", k.File)
			}
		}
		if err == nil && sel != nil && s.internal == "" && (s.daemon == "" || msg.authType != "" || msg.authAuthen != "") {
			// An authenticated client that is not an internal host: a
			// user, who may have signed only the From domains its login
			// may use (doc/decision.md), also through a service in
			// sign.daemon_names (a submission service is where users
			// log in). A source that cannot say is a signing failure,
			// never a yes.
			msg.mismatch, err = s.senders().Check(withQueueID(context.Background(), msg.qid), msg.authAuthen, msg.from)
		}
		switch {
		case err != nil || sel == nil || msg.mismatch != nil:
		case msg.overLimit != nil:
			// What was not kept cannot be signed.
			err = fmt.Errorf("cannot sign: %w (%s)", msg.overLimit, s.limitText())
		default:
			err = s.startSigning(sel)
		}
		if err != nil {
			msg.mismatch = nil
			s.failSigning(err)
			if msg.reply != nil {
				// The answer goes out at end of message; the body that
				// comes before it is not looked at.
				s.logMessage(msg, nil)
			}
			return
		}
		switch {
		case msg.mismatch != nil:
			if s.senderMismatch(msg.mismatch) {
				// Refused: answered at end of message, as above.
				s.logMessage(msg, nil)
				return
			}
			// Not signed: verified below as an untrusted client's.
			why = msg.note
		case sel != nil:
			msg.note = why
			return
		default:
			why = "no signing rule for " + msg.from
		}
	} else if cfg.Mode.Signs() && trusted {
		why += ", but the message has no From address to sign for"
	}
	if !cfg.Mode.Verifies() {
		msg.decision = skipped
		msg.note = why + "; mode is \"s\""
		return
	}
	msg.decision = verified
	msg.note = why
	if msg.overLimit != nil {
		// RFC 8601 §2.7.1 permerror: the message cannot be verified. Its
		// signatures may be in the part that was not kept.
		msg.results = []*verifier.Verification{{Result: verifier.PermError, Err: msg.overLimit}}
		msg.note += "; not verified: " + s.limitText()
		return
	}
	msg.verify = s.rt.Verifier.Begin(withQueueID(context.Background(), msg.qid), msg.header)
}

// limitText names the header limit the message passed, for logs.
func (s *session) limitText() string {
	l, msg := s.rt.Config.Limits, s.msg
	if errors.Is(msg.overLimit, verifier.ErrTooManyHeaders) {
		return fmt.Sprintf("%d header fields, over limits.max_headers = %d", msg.fields, l.MaxHeaders)
	}
	return fmt.Sprintf("%d header bytes, over limits.max_header_bytes = %d", msg.headerBytes, l.MaxHeaderBytes)
}

// classify looks the client up in peers, sign.internal_hosts and
// sign.daemon_names once per connection, as OpenDKIM does at connect:
// the answers hold for every message of the connection, and the reasons
// are built here rather than per message.
func (s *session) classify() {
	if s.classified {
		return
	}
	s.classified = true
	cfg := s.rt.Config
	s.peer, s.internal, s.daemon = "", "", ""
	if ok, entry := cfg.Peers.Match(s.clientHost, s.clientIP); ok {
		s.peer = "peer (peers: " + entry + "): passed through untouched"
	}
	if ok, entry := cfg.Sign.InternalHosts.Match(s.clientHost, s.clientIP); ok {
		s.internal = "internal host (sign.internal_hosts: " + entry + ")"
	}
	if s.daemonName != "" && slices.Contains(cfg.Sign.DaemonNames, s.daemonName) {
		s.daemon = "received through Postfix service " + s.daemonName + " (sign.daemon_names)"
	}
}

// trusted says whether the client may have its mail signed, and why.
func (s *session) trusted() (bool, string) {
	cfg := s.rt.Config
	s.classify()
	switch {
	case s.internal != "":
		return true, s.internal
	case s.daemon != "":
		return true, s.daemon
	}
	if cfg.Sign.SignAuthenticated && (s.msg.authType != "" || s.msg.authAuthen != "") {
		return true, "authenticated as " + s.msg.authAuthen
	}
	return false, "client " + s.clientDesc() + " is neither internal nor authenticated"
}

// senders is the Runtime's sender binding.
func (s *session) senders() *keystore.Binding {
	if s.rt.Senders == nil {
		return keystore.NewBinding(s.rt.Config)
	}
	return s.rt.Senders
}

func (s *session) startSigning(sel *keystore.Selection) error {
	cfg := s.rt.Config
	now := s.rt.now()
	params := make([]signer.Params, 0, len(sel.Keys))
	for _, k := range sel.Keys {
		params = append(params, signer.Params{
			Domain: k.Domain, Selector: k.Selector, Identity: sel.Identity, Key: k.Signer,
			HeaderCanon: cfg.Sign.HeaderCanon, BodyCanon: cfg.Sign.BodyCanon,
			Headers: cfg.Sign.Headers, Oversign: cfg.Sign.Oversign, OversignIfPresent: cfg.Sign.OversignIfPresent,
			Time: now, Expire: cfg.Sign.Expire, Gate: s.rt.signGate,
		})
	}
	sg, err := signer.New(s.msg.header, params)
	if err != nil {
		return err
	}
	s.msg.sel, s.msg.signer, s.msg.decision = sel, sg, signed
	return nil
}

func (s *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	if s.msg == nil {
		return nil, nil // SMFIP_NR_BODY
	}
	if !s.msg.decided {
		// A body without end of headers (Postfix always sends it): the
		// header block is over all the same.
		// A refusal (msg.reply) is sent at end of message: with
		// SMFIP_NR_BODY there is no reply to a body chunk.
		s.decide()
	}
	if s.msg.signer != nil {
		s.msg.signer.Write(chunk)
	}
	if s.msg.verify != nil {
		s.msg.verify.Write(chunk)
	}
	return nil, nil // SMFIP_NR_BODY
}

// Body is the end of the message: every header change happens here.
func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	if s.msg == nil {
		// EOM without a message: nothing to do, nothing to lose.
		return gomilter.RespContinue, nil
	}
	s.macros(m)
	msg := s.msg
	// guard.Body drops the message state when this returns.
	if !msg.decided {
		// End of message without end of headers: decide on what came.
		s.decide()
	}
	if msg.reply != nil {
		// Refused at end of headers (and logged there).
		return msg.reply, nil
	}
	var resp gomilter.Response
	var results []*verifier.Verification
	var sigs []string
	switch {
	case msg.signer != nil:
		values, err := msg.signer.Sign()
		if err != nil {
			s.failSigning(err)
			resp = msg.reply
			break
		}
		sigs = values
	case msg.decision == verified:
		results = msg.results
		if msg.verify != nil {
			results = msg.verify.Finish()
		}
		r, o, a, q := s.verifyAction(results)
		if msg.mismatch == nil || a != config.Accept {
			// A sender mismatch (accept or quarantine) decides unless
			// the verification's own action is more than accept.
			resp, msg.outcome, msg.action, msg.quarantine = r, o, a, q
		}
	}
	if resp == nil {
		// Header changes only matter for a message Postfix accepts.
		// Deletions first: an inserted field would shift the indexes.
		if err := s.removeForgedAR(m); err != nil {
			return nil, err
		}
		for _, v := range sigs {
			if err := m.InsertHeader(0, "DKIM-Signature", v); err != nil {
				return nil, err
			}
		}
		if msg.quarantine != "" {
			if err := m.Quarantine(msg.quarantine); err != nil {
				return nil, err
			}
		}
		if msg.decision == verified {
			if err := m.InsertHeader(0, "Authentication-Results", authres.Format(s.authservID(), verifier.AuthResults(results))); err != nil {
				return nil, err
			}
		}
		resp = gomilter.RespContinue
	}
	s.logMessage(msg, results)
	return resp, nil
}

func (s *session) Abort(m *gomilter.Modifier) error {
	s.reset()
	return nil
}

// closed is called once the connection is gone, however it went (cause):
// Postfix hung up, a timeout or the drain's deadline ended it, a protocol
// error, or a handler panicked. Postfix sends ABORT after every message it
// gives up, so a message still open here (or one whose end of message, eom,
// was not answered) was cut off: Postfix applies milter_default_action to
// it (or has hung up on it), and the log names it by queue id (from the
// connection's macros when the message had not reached the session's
// callbacks yet, or has left them), envelope sender and stage. It reports
// whether a message was cut.
func (s *session) closed(connQID string, cause cutCause, eom bool) bool {
	msg := s.msg
	if msg == nil && !eom {
		return false
	}
	qid, stage := connQID, stageEOM
	var mailFrom, from string
	if msg != nil {
		if msg.qid != "" {
			qid = msg.qid
		}
		mailFrom, from = msg.envFrom, msg.from
		switch {
		case eom:
		case !msg.decided && msg.fields == 0:
			stage = "before the header"
		case !msg.decided:
			stage = "header"
		default:
			stage = "body"
		}
	}
	s.log.Warn("milter connection ended in the middle of a message", "qid", qid, "stage", stage,
		"client", s.clientDesc(), "mail_from", mailFrom, "from", from, "cause", cause.String())
	s.metrics.messageCut(cause)
	s.reset()
	return true
}

// reset drops the message state; pending key lookups are cancelled.
func (s *session) reset() {
	if s.msg != nil && s.msg.verify != nil {
		s.msg.verify.Close()
	}
	s.msg = nil
}

// trustedInternal: the client is an internal host, whose
// Authentication-Results fields we keep (a trusted relay may have added
// them); a merely authenticated user is not trusted that far.
// A service in sign.daemon_names is not trusted that far either: its
// clients are users, not relays.
func (s *session) trustedInternal() bool {
	s.classify()
	return s.internal != ""
}

// authservID is the config's, else Postfix's $myhostname, else ours.
func (s *session) authservID() string {
	switch {
	case s.rt.Config.AuthservID != "":
		return s.rt.Config.AuthservID
	case s.mtaHost != "":
		return s.mtaHost
	}
	return s.rt.Hostname
}

// removeForgedAR deletes the Authentication-Results fields that claim our
// authserv-id: RFC 8601 §5 (https://www.rfc-editor.org/rfc/rfc8601#section-5)
// says otherwise anyone can forge a pass. An internal host's are kept
// (see trustedInternal). ChangeHeader indexes are 1-based per field name
// and shift as fields go, so delete from the last up.
func (s *session) removeForgedAR(m *gomilter.Modifier) error {
	if s.trustedInternal() || s.peer != "" {
		// A peer's mail passes through untouched.
		return nil
	}
	idx := s.msg.forged // noted by Header, limits or not
	for i := len(idx) - 1; i >= 0; i-- {
		if err := m.ChangeHeader(idx[i], "Authentication-Results", ""); err != nil {
			return err
		}
		// Done: a second call (after an internal error) must not
		// delete at an index that has shifted.
		s.msg.forged = idx[:i]
	}
	s.metrics.forgedAR(len(idx))
	if len(idx) > 0 {
		s.msg.note = strings.TrimPrefix(s.msg.note+fmt.Sprintf("; removed %d forged Authentication-Results", len(idx)), "; ")
	}
	return nil
}

// clientDesc names the client as Postfix logs it: "name[ip]", or "[ip]"
// when Postfix found no name (it then sends "[ip]" as the name).
func (s *session) clientDesc() string {
	ip := s.clientIP.String()
	switch {
	case !s.clientIP.IsValid():
		return s.clientHost
	case s.clientHost == "" || s.clientHost == "["+ip+"]" || s.clientHost == "unknown":
		return "[" + ip + "]"
	}
	return s.clientHost + "[" + ip + "]"
}
