package testkit

import (
	"errors"
	"fmt"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// Client drives a milter the way Postfix's smtpd and cleanup do (Postfix
// 3.x, src/milter/milter8.c): the default macro lists sent before each
// stage, one SMFIC_HEADER per field with the value exactly as it follows
// the colon (continuation lines joined by LF, leading space kept when the
// milter asked for SMFIP_HDR_LEADSPC, one space eaten otherwise), the body
// in CRLF form in 65535-byte chunks that split anywhere, then EOM. As
// Postfix 3.7 does (seen on the wire), SMFIC_ABORT comes before the next
// message's MAIL, not right after end of message, and before QUIT.
type Client struct {
	Session *gomilter.ClientSession
	// MTAHost is the j macro ($myhostname).
	MTAHost string
	// DaemonName is the {daemon_name} macro: the master.cf service
	// ("smtpd", or what -o milter_macro_daemon_name sets).
	DaemonName string
	// sent: a message went through; the next one starts with ABORT.
	sent bool
}

// Dial connects and negotiates. go-milter's client cannot offer
// SMFIP_HDR_LEADSPC to a version-2 milter (doc/postfix.md), so it offers
// nothing and honours what the milter asks for, as Postfix does.
func Dial(network, addr string) (*Client, error) {
	c := gomilter.NewClientWithOptions(network, addr, gomilter.ClientOptions{
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
	})
	s, err := c.Session()
	if err != nil {
		return nil, err
	}
	return &Client{Session: s, MTAHost: "mx.example.com", DaemonName: "smtpd"}, nil
}

// Close ends the milter connection (ABORT if needed, then QUIT).
func (c *Client) Close() error { return c.Session.Close() }

// Connect sends the connect stage for an SMTP client at ip (IPv4 or IPv6).
func (c *Client) Connect(host, ip string) error {
	if err := c.Session.Macros(gomilter.CodeConn, "j", c.MTAHost, "{daemon_name}", c.DaemonName,
		"v", "Postfix 3.7.11", "_", host+" ["+ip+"]"); err != nil {
		return err
	}
	fam := gomilter.FamilyInet
	if strings.Contains(ip, ":") {
		fam = gomilter.FamilyInet6
	}
	act, err := c.Session.Conn(host, fam, 25000, ip)
	if err != nil {
		return err
	}
	switch act.Code {
	case gomilter.ActContinue:
		return nil
	case gomilter.ActAccept:
		return ErrAccepted
	}
	return fmt.Errorf("connect answered %c", act.Code)
}

// ErrAccepted is Connect's answer when the milter accepted the connection
// without looking at its mail (OpenDKIM's PeerList does): Postfix then
// stops calling the milter for the session.
var ErrAccepted = errors.New("the milter accepted the connection: it is not called for its mail")

// Envelope is what Postfix knows before the header.
type Envelope struct {
	From       string
	Rcpts      []string
	QueueID    string
	AuthType   string // {auth_type}: set when the client authenticated
	AuthAuthen string // {auth_authen}: the SASL login name
}

// Result is what the milter answered at end of message (or earlier).
type Result struct {
	Mods   []gomilter.ModifyAction
	Action *gomilter.Action
	Stage  string // where the milter stopped the message, if it did
}

// Send runs one message through the milter. chunk is the body chunk size
// (0 means 65535, Postfix's size).
func (c *Client) Send(env Envelope, msg []byte, chunk int) (*Result, error) {
	s := c.Session
	if chunk <= 0 {
		chunk = gomilter.MaxBodyChunk
	}
	qid := env.QueueID
	if qid == "" {
		qid = "4Xtest1234"
	}
	if c.sent {
		if err := s.Abort(); err != nil {
			return nil, err
		}
	}
	c.sent = true
	mailMacros := []string{"{mail_addr}", env.From}
	if env.AuthType != "" {
		mailMacros = append(mailMacros, "{auth_type}", env.AuthType, "{auth_authen}", env.AuthAuthen)
	}
	if err := s.Macros(gomilter.CodeMail, mailMacros...); err != nil {
		return nil, err
	}
	if act, err := s.Mail(env.From, nil); err != nil || act.Code != gomilter.ActContinue {
		return &Result{Action: act, Stage: "mail"}, err
	}
	for _, r := range env.Rcpts {
		if err := s.Macros(gomilter.CodeRcpt, "i", qid, "{rcpt_addr}", r); err != nil {
			return nil, err
		}
		if act, err := s.Rcpt(r, nil); err != nil || act.Code != gomilter.ActContinue {
			return &Result{Action: act, Stage: "rcpt"}, err
		}
	}
	h, body := Split(msg)
	lead := s.ProtocolOption(gomilter.OptHeaderLeadingSpace)
	for _, f := range h {
		if err := s.Macros(gomilter.CodeHeader, "i", qid); err != nil {
			return nil, err
		}
		act, err := s.HeaderField(f.Name, HeaderValue(f, lead))
		if err != nil || act.Code != gomilter.ActContinue {
			return c.stop(act, "header", err)
		}
	}
	if err := s.Macros(gomilter.CodeEOH, "i", qid); err != nil {
		return nil, err
	}
	if act, err := s.HeaderEnd(); err != nil || act.Code != gomilter.ActContinue {
		return c.stop(act, "eoh", err)
	}
	for len(body) > 0 {
		n := min(chunk, len(body))
		if err := s.Macros(gomilter.CodeBody, "i", qid); err != nil {
			return nil, err
		}
		act, err := s.BodyChunk(body[:n])
		if err != nil || act.Code != gomilter.ActContinue {
			return c.stop(act, "body", err)
		}
		body = body[n:]
	}
	if err := s.Macros(gomilter.CodeEOB, "i", qid); err != nil {
		return nil, err
	}
	mods, act, err := s.End()
	if err != nil {
		return nil, err
	}
	return &Result{Mods: mods, Action: act}, nil
}

func (c *Client) stop(act *gomilter.Action, stage string, err error) (*Result, error) {
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stage, err)
	}
	return &Result{Action: act, Stage: stage}, nil
}

// HeaderValue is what Postfix sends for a field: what follows the colon,
// continuation lines joined by a bare LF, with the one space after the
// colon removed unless the milter negotiated SMFIP_HDR_LEADSPC.
func HeaderValue(f dkim.Field, leadSpace bool) string {
	v := strings.ReplaceAll(f.Value(), "\r\n", "\n")
	if !leadSpace {
		v = strings.TrimPrefix(v, " ")
	}
	return v
}

// Apply returns the message as Postfix would deliver it after the milter's
// modifications: inserted fields at their index (0 = top), changed fields
// by 1-based index among fields of that name (an empty value deletes),
// added fields at the end. Values carry their own leading space when the
// milter negotiated SMFIP_HDR_LEADSPC; otherwise Postfix adds one.
func Apply(msg []byte, mods []gomilter.ModifyAction, leadSpace bool) []byte {
	h, body := Split(msg)
	field := func(name, value string) dkim.Field {
		if !leadSpace {
			value = " " + value
		}
		return dkim.NewField(name, value)
	}
	for _, m := range mods {
		switch m.Code {
		case gomilter.ActInsertHeader:
			i := min(int(m.HeaderIndex), len(h))
			h = append(h[:i], append(dkim.Header{field(m.HeaderName, m.HeaderValue)}, h[i:]...)...)
		case gomilter.ActAddHeader:
			h = append(h, field(m.HeaderName, m.HeaderValue))
		case gomilter.ActChangeHeader:
			n := 0
			for i, f := range h {
				if strings.EqualFold(f.Name, m.HeaderName) {
					n++
					if n == int(max(m.HeaderIndex, 1)) {
						if m.HeaderValue == "" {
							h = append(h[:i], h[i+1:]...)
						} else {
							h[i] = field(f.Name, m.HeaderValue)
						}
						break
					}
				}
			}
		}
	}
	return Join(h, body)
}

// Fields returns the values of the fields named name in a message, in
// order, unfolded.
func Fields(msg []byte, name string) []string {
	h, _ := Split(msg)
	var out []string
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			out = append(out, strings.TrimSpace(strings.NewReplacer("\r\n", "", "\t", " ").Replace(f.Value())))
		}
	}
	return out
}

// Mods lists modifications of one kind.
func Mods(r *Result, code gomilter.ModifyActCode) []gomilter.ModifyAction {
	var out []gomilter.ModifyAction
	for _, m := range r.Mods {
		if m.Code == code {
			out = append(out, m)
		}
	}
	return out
}
