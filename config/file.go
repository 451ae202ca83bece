package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// fileConfig is the file as TOML sees it. Its toml tags are the only
// spelling of the key names: the unknown-key check reads them from here.
// Values that need more than a type check (prefixes, durations, modes)
// stay strings here and become Config values in build.
type fileConfig struct {
	Listen     string                    `toml:"listen"`
	SocketMode rawValue                  `toml:"socket_mode"`
	Mode       string                    `toml:"mode"`
	AuthservID string                    `toml:"authserv_id"`
	Peers      []string                  `toml:"peers"`
	Sign       fileSign                  `toml:"sign"`
	Keys       map[string]*fileKey       `toml:"keys"`
	Signing    []*fileRule               `toml:"signing"`
	Verify     fileVerify                `toml:"verify"`
	DNS        fileDNS                   `toml:"dns"`
	Actions    fileActions               `toml:"actions"`
	Limits     fileLimits                `toml:"limits"`
	Metrics    string                    `toml:"metrics_listen"`
	Database   fileDatabase              `toml:"database"`
	Publish    map[string]*filePublisher `toml:"publish"`
	Rotation   fileRotation              `toml:"rotation"`
}

// fileDatabase is the [database] table: where keys with a query are
// looked up, and how the answers are cached.
type fileDatabase struct {
	DSN              string   `toml:"dsn"`
	MaxConns         int      `toml:"max_conns"`
	QueryTimeout     rawValue `toml:"query_timeout"`
	CacheSize        int      `toml:"cache_size"`
	CacheTTL         rawValue `toml:"cache_ttl"`
	NegativeCacheTTL rawValue `toml:"negative_cache_ttl"`
	SendersQuery     string   `toml:"senders_query"`
}

type fileLimits struct {
	MaxSessions     int      `toml:"max_sessions"`
	IdleTimeout     rawValue `toml:"idle_timeout"`
	MessageTimeout  rawValue `toml:"message_timeout"`
	ShutdownTimeout rawValue `toml:"shutdown_timeout"`
	MaxHeaders      int      `toml:"max_headers"`
	MaxHeaderBytes  int      `toml:"max_header_bytes"`
}

type fileSign struct {
	InternalHosts     []string `toml:"internal_hosts"`
	DaemonNames       []string `toml:"daemon_names"`
	SignAuthenticated bool     `toml:"sign_authenticated"`
	Canonicalization  string   `toml:"canonicalization"`
	Expire            rawValue `toml:"expire"`
	Headers           []string `toml:"headers"`
	Oversign          []string `toml:"oversign"`
	OversignIfPresent []string `toml:"oversign_if_present"`

	SenderBinding string              `toml:"sender_binding"`
	Senders       map[string][]string `toml:"senders"`
}

type fileKey struct {
	Domain    string `toml:"domain"`
	Selector  string `toml:"selector"`
	File      string `toml:"file"`
	Query     string `toml:"query"`
	ListQuery string `toml:"list_query"`

	Rotate    rawValue `toml:"rotate"`
	Publish   string   `toml:"publish"`
	Selectors []string `toml:"selectors"`
	Delegate  string   `toml:"delegate"`
}

type fileRule struct {
	From     string   `toml:"from"`
	Keys     []string `toml:"keys"`
	Identity string   `toml:"identity"`
}

type fileVerify struct {
	MinRSABits    int `toml:"min_rsa_bits"`
	MaxSignatures int `toml:"max_signatures"`
}

type fileDNS struct {
	Nameservers []string `toml:"nameservers"`
	Timeout     rawValue `toml:"timeout"`
	MaxStale    rawValue `toml:"max_stale"`
}

type fileActions struct {
	SignError     string `toml:"sign_error"`
	DNSError      string `toml:"dns_error"`
	BadSignature  string `toml:"bad_signature"`
	KeyNotFound   string `toml:"key_not_found"`
	Policy        string `toml:"policy"`
	Security      string `toml:"security"`
	NoSignature   string `toml:"no_signature"`
	InternalError string `toml:"internal_error"`

	SenderMismatch string `toml:"sender_mismatch"`
}

// actionsToFile is the [actions] table as the file writes it.
func actionsToFile(a Actions) fileActions {
	return fileActions{SignError: a.SignError.String(), DNSError: a.DNSError.String(), BadSignature: a.BadSignature.String(),
		KeyNotFound: a.KeyNotFound.String(), Policy: a.Policy.String(), Security: a.Security.String(),
		NoSignature: a.NoSignature.String(), InternalError: a.InternalError.String(),
		SenderMismatch: a.SenderMismatch.String()}
}

// rawValue keeps a TOML value as the toml package parsed it. Durations
// and the socket mode take one because the toml package would read
// `timeout = 5` as five nanoseconds and `socket_mode = 660` as decimal
// 660; both are mistakes to explain, and as values the checks collect them
// with the other problems instead of stopping at the first.
type rawValue struct{ v any }

func (r *rawValue) UnmarshalTOML(v any) error {
	r.v = v
	return nil
}

// toFile turns a Config back into its file form, so that Parse can decode
// the file over Default() and keep the defaults in one literal.
func toFile(c *Config) *fileConfig {
	f := &fileConfig{
		Listen:     c.Listen,
		SocketMode: rawValue{fmt.Sprintf("%04o", uint32(c.SocketMode.Perm()))},
		Mode:       c.Mode.String(),
		AuthservID: c.AuthservID,
		Sign: fileSign{
			SignAuthenticated: c.Sign.SignAuthenticated,
			Canonicalization:  c.Sign.HeaderCanon.String() + "/" + c.Sign.BodyCanon.String(),
			Expire:            rawValue{c.Sign.Expire.String()},
			Headers:           slices.Clone(c.Sign.Headers),
			Oversign:          slices.Clone(c.Sign.Oversign),
			OversignIfPresent: slices.Clone(c.Sign.OversignIfPresent),
			SenderBinding:     c.Sign.SenderBinding.String(),
			Senders:           maps.Clone(c.Sign.Senders),
		},
		Keys:    map[string]*fileKey{},
		Verify:  fileVerify{MinRSABits: c.Verify.MinRSABits, MaxSignatures: c.Verify.MaxSignatures},
		DNS:     fileDNS{Nameservers: slices.Clone(c.DNS.Nameservers), Timeout: rawValue{c.DNS.Timeout.String()}, MaxStale: rawValue{c.DNS.MaxStale.String()}},
		Actions: actionsToFile(c.Actions),
		Limits: fileLimits{
			MaxSessions:     c.Limits.MaxSessions,
			IdleTimeout:     rawValue{c.Limits.IdleTimeout.String()},
			MessageTimeout:  rawValue{c.Limits.MessageTimeout.String()},
			ShutdownTimeout: rawValue{c.Limits.ShutdownTimeout.String()},
			MaxHeaders:      c.Limits.MaxHeaders,
			MaxHeaderBytes:  c.Limits.MaxHeaderBytes,
		},
		Metrics: c.MetricsListen,
		Database: fileDatabase{
			DSN: c.Database.DSN, MaxConns: c.Database.MaxConns, QueryTimeout: rawValue{c.Database.QueryTimeout.String()},
			CacheSize: c.Database.CacheSize, CacheTTL: rawValue{c.Database.CacheTTL.String()},
			NegativeCacheTTL: rawValue{c.Database.NegativeCacheTTL.String()},
			SendersQuery:     c.Database.SendersQuery,
		},
	}
	f.Publish = map[string]*filePublisher{}
	for name, p := range c.Publishers {
		f.Publish[name] = &filePublisher{Method: p.Method, Server: p.Server, Zone: p.Zone, TSIGKey: p.TSIGKey,
			Command: slices.Clone(p.Command), TTL: rawValue{p.TTL.String()}, Timeout: rawValue{p.Timeout.String()}}
	}
	r := c.Rotation
	f.Rotation = fileRotation{StateDir: r.StateDir, Margin: rawValue{r.Margin.String()}, RevokedFor: rawValue{r.RevokedFor.String()},
		CheckInterval: rawValue{r.CheckInterval.String()}, Retry: rawValue{r.Retry.String()}, RetryMax: rawValue{r.RetryMax.String()}}
	f.Peers = c.Peers.Strings()
	f.Sign.InternalHosts = c.Sign.InternalHosts.Strings()
	f.Sign.DaemonNames = slices.Clone(c.Sign.DaemonNames)
	for name, k := range c.Keys {
		f.Keys[name] = &fileKey{Domain: k.Domain, Selector: k.Selector, File: k.File, Query: k.Query, ListQuery: k.ListQuery,
			Publish: k.Publish, Selectors: slices.Clone(k.Selectors), Delegate: k.Delegate}
		if k.Rotate != 0 {
			f.Keys[name].Rotate = rawValue{k.Rotate.String()}
		}
	}
	for _, r := range c.Signing {
		f.Signing = append(f.Signing, &fileRule{From: r.From, Keys: slices.Clone(r.Keys), Identity: r.Identity})
	}
	return f
}

// schema is the shape of fileConfig: the key names a table accepts, or
// any name (the KeyTable). Values and arrays of tables' elements are
// nodes too; a leaf has neither.
type schema struct {
	fields map[string]*schema // a table with fixed keys
	anyKey *schema            // a table with free names: [keys.NAME]
}

var fileSchema = schemaOf(reflect.TypeFor[fileConfig]())

func schemaOf(t reflect.Type) *schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[toml.Unmarshaler]()) {
		return &schema{}
	}
	switch t.Kind() {
	case reflect.Struct:
		s := &schema{fields: map[string]*schema{}}
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
			s.fields[name] = schemaOf(t.Field(i).Type)
		}
		return s
	case reflect.Map:
		return &schema{anyKey: schemaOf(t.Elem())}
	case reflect.Slice:
		if e := t.Elem(); e.Kind() == reflect.Pointer && e.Elem().Kind() == reflect.Struct {
			return schemaOf(e) // an array of tables: indexes do not change the keys
		}
	}
	return &schema{}
}

// homes maps each key name to the tables it belongs in, for the hint on a
// key written under the wrong header.
var homes = func() map[string][]string {
	m := map[string][]string{}
	var walk func(s *schema, p string)
	walk = func(s *schema, p string) {
		if s.anyKey != nil {
			walk(s.anyKey, p+".NAME")
		}
		for name, sub := range s.fields {
			where := "at the top, before any [table] header"
			switch {
			case p == "signing":
				where = "in a [[signing]] table"
			case p != "":
				where = "in [" + p + "]"
			}
			m[name] = append(m[name], where)
			walk(sub, strings.TrimPrefix(p+"."+name, "."))
		}
	}
	walk(fileSchema, "")
	for _, where := range m {
		slices.Sort(where)
	}
	return m
}()

// check walks p down the schema. It returns the length of the longest
// known prefix of p and the table there, or len(p) when p is known. Below
// a value it accepts anything: a table where a value belongs is a type
// error, reported as such.
func (s *schema) check(p path) (int, *schema) {
	node := s
	for i, part := range p {
		switch {
		case node.anyKey != nil:
			node = node.anyKey
		case node.fields == nil:
			return len(p), nil
		default:
			next, ok := node.fields[part.name]
			if !ok {
				return i, node
			}
			node = next
		}
	}
	return len(p), nil
}

// unknownKeys reports keys that are not in the schema, with their line
// and a hint. The key index finds them with array indexes and lines; the
// toml package's own lists (Keys, and Undecoded when the decode finished)
// back it up, so that a key the index missed is still reported.
//
// The toml package matches keys to fields without regard to case, so
// `LISTEN = ...` fills Listen and is not undecoded. The exact comparison
// here is what makes such keys errors: one spelling keeps files greppable.
func (c *checker) unknownKeys(md toml.MetaData, decoded bool) {
	seen := map[string]bool{} // unindexed paths already reported
	reported := func(p path) bool {
		for n := 1; n <= len(p); n++ {
			if seen[p[:n].plain()] {
				return true
			}
		}
		return false
	}
	report := func(p path, line int, kind string) {
		n, table := fileSchema.check(p)
		if n == len(p) || reported(p[:n+1]) {
			return
		}
		bad := p[:n+1]
		seen[bad.plain()] = true
		isTable := len(p) > n+1 || kind == kindTable || kind == kindTables
		if n == 2 && p[0].name == "keys" && isTable {
			c.dotted[p[1].name] = true
		}
		c.errs = append(c.errs, &Error{File: c.file, Line: line, Key: bad.String(), Msg: unknownMsg(bad, table, isTable)})
	}
	// The toml package decodes `keys = 5` or [[keys]] into the map as
	// nothing at all, without an error: catch it here. `publish = "bind"`
	// above the first [keys.NAME] header is the likely slip for publish.
	for _, m := range []struct{ name, msg string }{
		{"keys", "must be tables, one [keys.NAME] per key, e.g. [keys.example-rsa]"},
		{"publish", `must be tables, one [publish.NAME] per way of publishing records, e.g. [publish.bind]; a key's publish = "NAME" belongs in its [keys.NAME] table`},
	} {
		if t := md.Type(m.name); t != "" && t != "Hash" {
			seen[m.name] = true
			kp, _ := c.ix.find(m.name, "")
			c.errs = append(c.errs, &Error{File: c.file, Line: kp.line, Key: m.name, Msg: m.msg})
		}
	}
	for _, k := range c.ix.keys {
		report(k.path, k.line, k.kind)
	}
	for _, k := range md.Keys() {
		p := keyPath(k...)
		if kp, ok := c.ix.find(p.plain(), ""); ok {
			report(kp.path, kp.line, kp.kind)
		} else {
			report(p, 0, "")
		}
	}
	if !decoded {
		return // Undecoded lists everything after a failed decode
	}
	for _, k := range md.Undecoded() {
		if p := keyPath(k...); !reported(p) {
			seen[p.plain()] = true
			c.errs = append(c.errs, &Error{File: c.file, Line: c.ix.line(p), Key: p.String(), Msg: "unknown key"})
		}
	}
}

// unknownMsg explains an unknown key: a case slip, a typo, a key under
// the wrong table header, or a dotted key name that was not quoted.
func unknownMsg(bad path, table *schema, isTable bool) string {
	name := bad[len(bad)-1].name
	msg := fmt.Sprintf("unknown key %q", name)
	var known []string
	if table != nil {
		for k := range table.fields {
			known = append(known, k)
		}
	}
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return msg + fmt.Sprintf("; keys are case-sensitive: write %q", k)
		}
	}
	if s := Suggest(name, known); s != "" {
		return msg + s
	}
	if where, ok := homes[name]; ok {
		return msg + fmt.Sprintf("; %q belongs %s: a key belongs to the last [table] header above it", name, strings.Join(where, " or "))
	}
	if len(bad) == 3 && bad[0].name == "keys" && isTable {
		return msg + fmt.Sprintf(`; a key name with a dot must be quoted: [keys."%s.%s"]`, bad[1].name, name)
	}
	if len(known) > 0 {
		slices.Sort(known)
		return msg + "; known keys here: " + strings.Join(known, ", ")
	}
	return msg
}
