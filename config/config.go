// Package config reads dkimmilter's TOML configuration file and checks it
// completely before anything starts: every problem is reported at once,
// each with the file, line and key, and what to write instead.
//
// It does not read key files or check their permissions: the keystore
// package does that with the Config this package returns.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// DefaultPath is where the daemon looks without -config.
const DefaultPath = "/etc/dkimmilter/dkimmilter.toml"

// Config is a checked configuration. Values are normalised: lower-cased
// domains and header names, masked prefixes, absolute key file paths.
type Config struct {
	File       string // path loaded from; "" for Default()
	Listen     string // "unix:/abs/path" or "inet:HOST:PORT"
	SocketMode fs.FileMode
	Mode       Mode
	AuthservID string // "" means: Postfix's j macro, else the host name
	Peers      Hosts  // clients whose mail passes untouched, neither signed nor verified (OpenDKIM's PeerList)
	Sign       Sign
	Keys       map[string]*Key // the KeyTable, by name
	Signing    []*SigningRule  // the SigningTable: first match wins
	Verify     Verify
	DNS        DNS
	Actions    Actions
	Limits     Limits
	// MetricsListen is where Prometheus metrics are served ("host:port");
	// "" serves none.
	MetricsListen string
	Database      Database
	// Publishers are the [publish.NAME] tables: how a key's DNS records
	// are published, for keys publish/revoke and rotation.
	Publishers map[string]*Publisher
	// Rotation is the [rotation] table: timing and state of the keys
	// that rotate themselves (Key.Rotate).
	Rotation Rotation
}

// Database is the [database] table: the PostgreSQL server that keys with
// a query are looked up in, per From domain, when a message needs them.
type Database struct {
	DSN              string        // libpq connection string or URL; "" for no database
	MaxConns         int           // connections in the pool at most
	QueryTimeout     time.Duration // one lookup, waiting for a connection included
	CacheSize        int           // answers kept, found and not found together
	CacheTTL         time.Duration // how long a key found is used without asking again
	NegativeCacheTTL time.Duration // how long "no key for this domain" is believed

	// SendersQuery, when set, is asked which From addresses and domains
	// an authenticated login may use besides its own domain, after
	// [sign.senders]: "SELECT allowed FROM dkim_senders WHERE login =
	// $1", $1 being the login in lower case, each row one entry in the
	// forms [sign.senders] takes. "" for none.
	SendersQuery string
}

// Sign is the [sign] table.
type Sign struct {
	InternalHosts     Hosts
	DaemonNames       []string // Postfix {daemon_name} values whose mail is signed as an internal host's
	SignAuthenticated bool
	HeaderCanon       dkim.Canon
	BodyCanon         dkim.Canon
	Expire            time.Duration // x= is t= plus this; 0 leaves x= out
	Headers           []string      // lower-case, in h= order
	Oversign          []string      // listed once more than they occur, absent ones too; each also in Headers
	OversignIfPresent []string      // listed once more than they occur when they occur; each also in Headers, none in Oversign

	// SenderBinding is sign.sender_binding: what a client trusted only
	// because it authenticated may have signed (config/senders.go).
	SenderBinding SenderBinding
	// Senders is [sign.senders]: for each login (lower-case), the From
	// addresses ("user@example.com"), domains ("example.com", with its
	// subdomains) or "*" (any) it may use besides its own domain; all
	// lower-case. nil when there are none.
	Senders map[string][]string
}

// Key is one [keys.NAME] table. Domain and File may contain '%', which
// stands for the domain of the message's From address.
type Key struct {
	Name     string
	Domain   string // lower-case
	Selector string
	File     string // absolute when the config file's directory is known
	Line     int    // of the [keys.NAME] header

	// Query, when set, takes the selector and the private key from
	// [database] instead: "SELECT selector, private_key ... WHERE
	// domain = $1", $1 being the From domain; Domain is then "%", and
	// Selector and File are empty.
	Query string
	// ListQuery, optional with Query, lists every domain's key for the
	// commands (keys list, keys check, keys dns): domain, selector,
	// private_key, without parameters.
	ListQuery string

	// Rotate is the rotation period: a new key begins signing this long
	// after the current one did (config/rotation.go). 0: the key does not
	// rotate. Only keys with a fixed domain and file rotate.
	Rotate time.Duration
	// Publish names the [publish.NAME] table (Config.Publishers) that
	// publishes this key's records; "" for none. Required with Rotate.
	Publish string
	// Selectors, when set, are the selectors rotation alternates between
	// (["s1", "s2"]), each reused once its old record has been deleted:
	// what CNAME delegation needs. nil: a new date-based selector each
	// time, as keys gen and keys rotate choose.
	Selectors []string
	// Delegate, when set, is the provider's zone the records are
	// published in for CNAME delegation: the record of SELECTOR for
	// DOMAIN is SELECTOR.DOMAIN-WITH-DASHES._domainkey.DELEGATE, which the
	// customer's SELECTOR._domainkey.DOMAIN is a CNAME to. "" publishes
	// at SELECTOR._domainkey.DOMAIN.
	Delegate string
}

// SigningRule is one [[signing]] table.
type SigningRule struct {
	From     string   // "*", "*@dom", "*@*.dom" or "local@dom", lower-case
	Keys     []string // names in Config.Keys; one signature each
	Identity string   // i=, may contain '%'; "" for none
	Line     int      // of the [[signing]] header
	KeysLine int      // of its keys = [...], where the array starts
}

// Verify is the [verify] table.
type Verify struct {
	MinRSABits    int
	MaxSignatures int
}

// DNS is the [dns] table.
type DNS struct {
	Nameservers []string // "IP:port" ("[v6]:port"); empty means /etc/resolv.conf
	Timeout     time.Duration
	// MaxStale is how long past its TTL a key record may be used when
	// DNS fails (serve-stale, RFC 8767); 0 turns serve-stale off.
	MaxStale time.Duration
}

// Limits is the [limits] table: what one milter connection and one
// message may cost, and how long a stop waits for messages in flight.
type Limits struct {
	MaxSessions     int           // concurrent milter connections
	IdleTimeout     time.Duration // no packet from Postfix for this long closes the connection
	MessageTimeout  time.Duration // MAIL FROM to end of message
	ShutdownTimeout time.Duration // SIGTERM waits this long for messages in flight
	MaxHeaders      int           // header fields of one message
	MaxHeaderBytes  int           // bytes of one message's header block
}

// Actions is the [actions] table: what the milter answers Postfix, one
// action per outcome, as OpenDKIM's On-* settings. Parse and Default set
// every field; Accept is the zero value. Every field takes every Action.
type Actions struct {
	SignError     Action // a signing key cannot be used
	DNSError      Action // a key lookup failed: temperror
	BadSignature  Action // fail, or a permerror other than a missing key
	KeyNotFound   Action // permerror: no key record at the selector's name
	Policy        Action // dkim=policy: rsa-sha1 that verifies, a short key, unsigned content
	Security      Action // the header passed limits.max_headers or max_header_bytes
	NoSignature   Action // no DKIM-Signature at all: dkim=none
	InternalError Action // dkimmilter failed on the message (a recovered panic)

	SenderMismatch Action // sign.sender_binding refused the From of an authenticated client's message
}

// Action is an answer to Postfix for a message; its String is the word
// in the file, the log and the action label of dkimmilter_actions_total.
type Action uint8

const (
	Accept     Action = iota // deliver (stamped, or unsigned)
	Tempfail                 // 4xx: try again later
	Reject                   // 5xx
	Quarantine               // hold in Postfix's hold queue
	Discard                  // accept and throw away, telling nobody
)

var actionWords = [...]string{Accept: "accept", Tempfail: "tempfail", Reject: "reject", Quarantine: "quarantine", Discard: "discard"}

// AllActions lists every Action, in the order error messages name them.
var AllActions = []Action{Accept, Tempfail, Reject, Quarantine, Discard}

func (a Action) String() string {
	if int(a) < len(actionWords) {
		return actionWords[a]
	}
	return "action" + strconv.Itoa(int(a))
}

// Mode says which sides of the milter are on, as OpenDKIM's Mode: s
// signs, v verifies.
type Mode uint8

const (
	ModeSign   Mode = 1 << iota // s
	ModeVerify                  // v
)

// Signs reports whether the milter signs.
func (m Mode) Signs() bool { return m&ModeSign != 0 }

// Verifies reports whether the milter verifies.
func (m Mode) Verifies() bool { return m&ModeVerify != 0 }

// String is the mode as written in the file: "s", "v" or "sv".
func (m Mode) String() string {
	s := ""
	if m.Signs() {
		s += "s"
	}
	if m.Verifies() {
		s += "v"
	}
	return s
}

// Default returns the configuration an empty file gives. It is the one
// place defaults live: Parse decodes the file over it, and example.toml
// shows the same values (a test checks that).
func Default() *Config {
	return &Config{
		Listen:     "inet:127.0.0.1:8891",
		SocketMode: 0o660,
		Mode:       ModeSign | ModeVerify,
		Peers:      Hosts{},
		Sign: Sign{
			InternalHosts: Hosts{
				{Prefix: netip.MustParsePrefix("127.0.0.1/32")},
				{Prefix: netip.MustParsePrefix("::1/128")},
			},
			DaemonNames:       []string{},
			SignAuthenticated: true,
			HeaderCanon:       dkim.Relaxed,
			BodyCanon:         dkim.Relaxed,
			Expire:            168 * time.Hour,
			// RFC 6376 §5.4.1's list, plus the MIME and List-* fields
			// whose change alters what the reader sees.
			// https://www.rfc-editor.org/rfc/rfc6376#section-5.4.1
			Headers: []string{
				"from", "reply-to", "subject", "date", "to", "cc",
				"message-id", "in-reply-to", "references", "mime-version",
				"content-type", "content-transfer-encoding", "content-id",
				"content-description", "sender", "resent-date",
				"resent-from", "resent-sender", "resent-to", "resent-cc",
				"resent-message-id", "list-id", "list-help",
				"list-unsubscribe", "list-subscribe", "list-post",
				"list-owner", "list-archive", "list-unsubscribe-post",
			},
			// Oversigning (listing a field once more than it occurs)
			// stops a relay from adding a second instance that a
			// reader would be shown, RFC 6376 §8.15. The fields a
			// reader takes for the author's own are oversigned always,
			// present or not: nobody may add them. The others only when
			// present: a mailing list may then add List-Unsubscribe
			// (RFC 8058 one-click lists do) without breaking the
			// author's signature, as rspamd's defaults allow and
			// Exim's long did not.
			// https://www.rfc-editor.org/rfc/rfc6376#section-8.15
			Oversign: []string{"from", "reply-to", "subject", "to", "cc"},
			OversignIfPresent: []string{
				"date", "message-id", "mime-version", "content-type",
				"content-transfer-encoding", "list-unsubscribe",
				"list-unsubscribe-post",
			},
			SenderBinding: BindDomain,
		},
		Keys:    map[string]*Key{},
		Signing: []*SigningRule{},
		Verify:  Verify{MinRSABits: 1024, MaxSignatures: 8},
		DNS:     DNS{Nameservers: []string{}, Timeout: 5 * time.Second, MaxStale: 24 * time.Hour},
		Actions: Actions{SignError: Tempfail, DNSError: Accept, BadSignature: Accept, KeyNotFound: Accept,
			Policy: Accept, Security: Accept, NoSignature: Accept, InternalError: Tempfail,
			SenderMismatch: Accept},
		// Postfix runs at most default_process_limit (100) smtpd
		// processes, each with one milter connection; the idle timeout
		// outlasts smtpd_timeout (300s), so a slow client's session is
		// not cut between its commands (EHLO, RSET and NOOP do not
		// reach the milter, though: a client that idles with them for
		// longer loses the milter connection).
		//
		// A header block is the one part of a message a milter must
		// hold. Real ones are a few kilobytes and rarely pass 64 KiB
		// (long Received and ARC chains); Postfix cuts each field at
		// header_size_limit (102400) but bounds the whole block only by
		// message_size_limit (10 MB). 1 MiB is ten maximal fields, and
		// bounds a session's header memory (about twice that: go-milter
		// keeps its own copy) whatever a client sends; 1000 fields is
		// twenty times hopcount_limit's 50 Received fields.
		Limits: Limits{
			MaxSessions: 500, IdleTimeout: 10 * time.Minute, MessageTimeout: 30 * time.Minute, ShutdownTimeout: 20 * time.Second,
			MaxHeaders: 1000, MaxHeaderBytes: 1 << 20,
		},
		// A lookup is a primary-key read: milliseconds. Postfix waits
		// milter_content_timeout (300s) for the answer, but each second
		// holds an smtpd process; 2s is long enough for a loaded server
		// and short enough that an outage tempfails quickly. Five
		// minutes of caching lets a changed key reach every host soon;
		// a minute of negative caching lets a new domain be signed soon
		// after it is added, without a query per message for the many
		// From domains that have no key.
		Database: Database{MaxConns: 8, QueryTimeout: 2 * time.Second, CacheSize: 10000,
			CacheTTL: 5 * time.Minute, NegativeCacheTTL: time.Minute},
		Publishers: map[string]*Publisher{},
		Rotation:   defaultRotation(),
	}
}

// KeyNames returns the names of the keys, sorted, so that callers that
// load or list them do it in a stable order.
func (c *Config) KeyNames() []string {
	names := make([]string, 0, len(c.Keys))
	for n := range c.Keys {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Where names a place in the configuration for messages from other
// packages: "FILE:LINE", "FILE" when line is 0, "defaults" for Default().
func (c *Config) Where(line int) string {
	switch {
	case c.File == "":
		return "defaults"
	case line == 0:
		return c.File
	}
	return c.File + ":" + strconv.Itoa(line)
}

// Load reads and checks the file at path. A missing file gives an error
// that wraps fs.ErrNotExist, so that callers can say how to create one.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data)
}

// Parse checks data, the contents of file. file names the file in
// messages, and relative key file paths are resolved against its directory
// (made absolute, so that they do not depend on the working directory of a
// later reload; an empty file name means the working directory, and
// messages then say "<input>"). The error, if any, is Errors.
func Parse(file string, data []byte) (*Config, error) {
	name := file
	if name == "" {
		name = "<input>"
	}
	ix := indexLines(data)
	if ix.deep > 0 {
		// Before the toml package sees it: its time grows with the
		// square of the depth.
		return nil, Errors{{File: name, Line: ix.deep, Msg: fmt.Sprintf("a key nested more than %d levels deep; no setting is deeper than three (keys.NAME.file)", maxKeyDepth)}}
	}
	f := toFile(Default())
	md, err := toml.Decode(string(data), f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			// Nothing past a syntax error can be trusted.
			return nil, Errors{{File: name, Line: pe.Position.Line, Msg: "TOML syntax error: " + pe.Message}}
		}
	}
	c := &checker{file: name, ix: ix, dotted: map[string]bool{}}
	if err != nil {
		// A type mismatch stops the toml package half way through, so the
		// values cannot be checked; the unknown keys still can.
		c.typeError(err)
		c.unknownKeys(md, false)
		c.errs.sort()
		return nil, c.errs
	}
	c.unknownKeys(md, true)
	c.dir = "."
	if file != "" {
		c.dir = filepath.Dir(file)
	}
	if abs, err := filepath.Abs(c.dir); err == nil {
		c.dir = abs
	}
	cfg := c.build(f, &md)
	cfg.File = name
	if len(c.errs) > 0 {
		c.errs.sort()
		return nil, c.errs
	}
	return cfg, nil
}

// typeErrorRE matches the toml package's type mismatch errors, which are
// plain errors: `toml: line 6 (last key "signing.keys"): incompatible
// types: TOML value has type string; destination has type slice`.
var typeErrorRE = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)

var (
	incompatibleRE = regexp.MustCompile(`^incompatible types: TOML value has type (.+); destination has type (.+)$`)
	notTableRE     = regexp.MustCompile(`^type mismatch for .*: expected table but found (.+)$`)
)

// typeWords names TOML types for admins: the toml package names the Go
// types on both sides.
var typeWords = map[string]string{
	kindString: "a string", kindInteger: "an integer", kindFloat: "a float",
	kindBool: "true or false", kindDatetime: "a date", kindArray: "an array",
	kindTable: "a table", kindTables: "an array of tables",
	"slice": "an array", "map": "a table", "integer": "an integer",
	"boolean": "true or false",
}

func words(t string) string {
	if w, ok := typeWords[t]; ok {
		return w
	}
	return t
}

// typeError turns a type mismatch into an Error at the right line. The
// toml package's line is that of the last array element with this key,
// not of the one that failed, so the index finds the first key with this
// path whose value has the mismatched type: elements are decoded in order.
func (c *checker) typeError(err error) {
	m := typeErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		c.errs = append(c.errs, &Error{File: c.file, Msg: err.Error()})
		return
	}
	line, _ := strconv.Atoi(m[1])
	key, uerr := strconv.Unquote(m[2])
	if uerr != nil {
		key = m[2]
	}
	msg, kind := m[3], ""
	if t := incompatibleRE.FindStringSubmatch(msg); t != nil {
		kind = t[1]
		msg = fmt.Sprintf("must be %s, not %s", words(t[2]), words(t[1]))
	} else if t := notTableRE.FindStringSubmatch(msg); t != nil {
		kind = t[1]
		msg = fmt.Sprintf("must be a table, not %s", words(t[1]))
	}
	if kp, ok := c.ix.find(key, kind); ok && kind != "" {
		line, key = kp.line, kp.path.String()
	}
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Key: key, Msg: msg})
}
