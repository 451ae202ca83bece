package config

import (
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// Publisher is one [publish.NAME] table: how DNS records are published.
type Publisher struct {
	Name string
	Line int // of the [publish.NAME] header

	// Method is "rfc2136" (a dynamic update signed with TSIG, RFC 2136
	// and RFC 8945) or "command" (a program run with the action, the
	// record's name and its value, for providers with an API).
	Method string

	// rfc2136:
	Server  string // the zone's primary, "host:port"; "" for the SOA's MNAME on port 53
	Zone    string // the zone to update; "" found from DNS (the SOA of the record's name)
	TSIGKey string // a BIND key file (tsig-keygen's output); "" sends unsigned updates

	// command: the program and its first arguments; the action ("add",
	// "revoke", "delete"), the record's name and its TXT value follow.
	Command []string

	TTL     time.Duration // of the records published
	Timeout time.Duration // of one update, or one run of the command
}

// Rotation is the [rotation] table.
type Rotation struct {
	// StateDir holds each rotating key's state and the keys rotation
	// made: the daemon's user must be able to write to it.
	StateDir string
	// Margin: an old key's record stays published for sign.expire plus
	// this long after the switch, then it is revoked.
	Margin time.Duration
	// RevokedFor: a revoked record (p= empty) stays this long before it
	// is deleted, with the old key's file.
	RevokedFor time.Duration
	// CheckInterval: how often a pending key's record is checked at the
	// zone's authoritative servers.
	CheckInterval time.Duration
	// Retry is the first wait after a failed step; each failure doubles
	// it, up to RetryMax.
	Retry, RetryMax time.Duration
}

// The defaults of [publish.NAME] and [rotation]. Records are published
// with a short TTL so that a revoked or replaced record leaves caches
// soon; an update or a provider's command that takes longer than the
// timeout has failed and is retried. The rotation margins are in days, as
// mail waits in queues for days (Postfix's maximal_queue_lifetime is 5d).
const (
	DefaultPublishTTL     = 5 * time.Minute
	DefaultPublishTimeout = 10 * time.Second
)

func defaultRotation() Rotation {
	return Rotation{StateDir: "/var/lib/dkimmilter", Margin: 2 * 24 * time.Hour, RevokedFor: 7 * 24 * time.Hour,
		CheckInterval: time.Minute, Retry: time.Minute, RetryMax: time.Hour}
}

// Publish methods.
const (
	MethodRFC2136 = "rfc2136"
	MethodCommand = "command"
)

// RecordName is the DNS name of the record of the key's selector sel:
// SELECTOR._domainkey.DOMAIN, or, with Delegate, the name in the
// provider's zone that the customer's SELECTOR._domainkey.DOMAIN is a
// CNAME to: SELECTOR.DOMAIN-WITH-DASHES._domainkey.DELEGATE. Verifiers
// follow the CNAME (RFC 6376 §3.6.2.2 asks for a TXT lookup, and a
// resolver answers it through the alias), so the provider can replace the
// record without the customer.
// https://www.rfc-editor.org/rfc/rfc6376#section-3.6.2.2
func (k *Key) RecordName(sel string) string {
	if k.Delegate == "" {
		return sel + "._domainkey." + k.Domain
	}
	return DelegatedName(sel, k.Domain, k.Delegate)
}

// DelegatedName is the provider's name for the record of selector sel of
// domain when the records are delegated to the zone delegate.
func DelegatedName(sel, domain, delegate string) string {
	return sel + "." + strings.ReplaceAll(domain, ".", "-") + "._domainkey." + delegate
}

// filePublisher is a [publish.NAME] table as the file writes it.
type filePublisher struct {
	Method  string   `toml:"method"`
	Server  string   `toml:"server"`
	Zone    string   `toml:"zone"`
	TSIGKey string   `toml:"tsig_key"`
	Command []string `toml:"command"`
	TTL     rawValue `toml:"ttl"`
	Timeout rawValue `toml:"timeout"`
}

// fileRotation is the [rotation] table as the file writes it.
type fileRotation struct {
	StateDir      string   `toml:"state_dir"`
	Margin        rawValue `toml:"margin"`
	RevokedFor    rawValue `toml:"revoked_for"`
	CheckInterval rawValue `toml:"check_interval"`
	Retry         rawValue `toml:"retry"`
	RetryMax      rawValue `toml:"retry_max"`
}

// durationSetting is one duration of a table with its bounds.
type durationSetting struct {
	name     string
	v        any
	dst      *time.Duration
	example  string
	min, max time.Duration
}

// durations reads and bounds the durations of the table at p. A nil
// value (a [publish.NAME] that leaves it out) keeps *dst.
func (c *checker) durations(p path, list []durationSetting) {
	for _, d := range list {
		if d.v == nil {
			continue
		}
		v, ok := c.duration(p.child(d.name), d.v, d.example)
		if !ok {
			continue
		}
		if v < d.min || v > d.max {
			c.errf(p.child(d.name), "%q is out of range; write a duration from %q to %q, such as %q", d.v, fmtBound(d.min), fmtBound(d.max), d.example)
		}
		*d.dst = v
	}
}

// fmtBound writes a bound as the file would: "1d" rather than "24h0m0s".
func fmtBound(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}

// rotation checks the [rotation] table.
func (c *checker) rotation(f fileRotation) Rotation {
	p := keyPath("rotation")
	out := defaultRotation()
	switch sd := f.StateDir; {
	case sd == "":
		c.errf(p.child("state_dir"), `must not be empty; write a directory the daemon's user can write to, such as "/var/lib/dkimmilter"`)
	case !filepath.IsAbs(sd):
		// Not relative to the config file: the state belongs with the
		// daemon's other state, never next to its configuration.
		c.errf(p.child("state_dir"), `%q must be an absolute path, such as "/var/lib/dkimmilter"`, sd)
	default:
		out.StateDir = filepath.Clean(sd)
	}
	const forever = 365 * 24 * time.Hour
	c.durations(p, []durationSetting{
		{"margin", f.Margin.v, &out.Margin, "2d", 0, forever},
		{"revoked_for", f.RevokedFor.v, &out.RevokedFor, "7d", 0, forever},
		{"check_interval", f.CheckInterval.v, &out.CheckInterval, "1m", time.Second, time.Hour},
		{"retry_max", f.RetryMax.v, &out.RetryMax, "1h", time.Second, 24 * time.Hour},
	})
	// retry is bounded by retry_max: backoff doubles from one to the other.
	if v, ok := c.duration(p.child("retry"), f.Retry.v, "1m"); ok {
		switch {
		case v < time.Second:
			c.errf(p.child("retry"), `%q is out of range; write a duration from "1s" to retry_max (%s), such as "1m"`, f.Retry.v, fmtBound(out.RetryMax))
		case v > out.RetryMax:
			c.errf(p.child("retry"), `%q is longer than retry_max (%s): the wait after a failure doubles from retry up to retry_max; shorten retry or raise retry_max`, f.Retry.v, fmtBound(out.RetryMax))
		}
		out.Retry = v
	}
	return out
}

// publishers checks the [publish.NAME] tables.
func (c *checker) publishers(f map[string]*filePublisher, md *toml.MetaData) map[string]*Publisher {
	out := make(map[string]*Publisher, len(f))
	for name, fp := range f {
		if fp == nil {
			fp = &filePublisher{}
		}
		p := keyPath("publish", name)
		if prob := keyNameProblem(name); prob != "" {
			c.errf(p, "the publisher name %s; use letters, digits, '-', '_' and '.'", prob)
		}
		pub := &Publisher{Name: name, Line: c.ix.line(p), TTL: DefaultPublishTTL, Timeout: DefaultPublishTimeout}
		defined := func(key string) bool { return md.IsDefined("publish", name, key) }
		onlyFor := func(key, method string) {
			if defined(key) {
				c.errf(p.child(key), "is a setting of method = %q, not of method = %q; remove it", method, fp.Method)
			}
		}
		switch fp.Method {
		case MethodRFC2136:
			pub.Method = fp.Method
			pub.Server = c.updateServer(p.child("server"), fp.Server)
			if fp.Zone != "" {
				pub.Zone = strings.ToLower(fp.Zone)
				if prob := dkim.NameProblem(pub.Zone); prob != "" {
					c.errf(p.child("zone"), `%q is not a DNS name: %s; write the zone the records are in, such as "example.com", or leave zone out to find it from DNS`, fp.Zone, prob)
				}
			}
			switch {
			case fp.TSIGKey == "":
				// Unsigned updates, for a server that allows them by
				// address (allow-update { 192.0.2.25; }).
			case filepath.IsAbs(fp.TSIGKey):
				pub.TSIGKey = filepath.Clean(fp.TSIGKey)
			default:
				// As key files: relative to the config file.
				pub.TSIGKey = filepath.Join(c.dir, fp.TSIGKey)
			}
			onlyFor("command", MethodCommand)
		case MethodCommand:
			pub.Method = fp.Method
			switch {
			case len(fp.Command) == 0 || fp.Command[0] == "":
				c.errf(p.child("command"), `missing: the program to run and its first arguments, such as command = ["/usr/local/bin/dns-publish", "--zone", "example.com"]; the action, the record's name and its value follow them`)
			case !filepath.IsAbs(fp.Command[0]):
				// No search of $PATH: which program publishes keys
				// must not depend on the daemon's environment.
				c.errf(p.child("command"), "%q must be an absolute path: the program is run without a shell and without searching $PATH", fp.Command[0])
			default:
				pub.Command = slices.Clone(fp.Command)
			}
			for _, key := range []string{"server", "zone", "tsig_key"} {
				onlyFor(key, MethodRFC2136)
			}
		case "":
			c.errf(p.child("method"), `missing: how records are published, method = "rfc2136" (dynamic DNS updates) or "command" (a program of yours)`)
		default:
			c.errf(p.child("method"), `%q is not a method; write "rfc2136" (dynamic DNS updates) or "command" (a program of yours)`, fp.Method)
		}
		c.durations(p, []durationSetting{
			{"ttl", fp.TTL.v, &pub.TTL, "5m", time.Second, 24 * time.Hour},
			{"timeout", fp.Timeout.v, &pub.Timeout, "10s", time.Second, 5 * time.Minute},
		})
		out[name] = pub
	}
	return out
}

// updateServer reads an rfc2136 server: "host", "host:port", an IP
// address, "[v6]:port"; it returns "host:port", port 53 by default, or ""
// when s is empty (the zone's primary, from its SOA).
func (c *checker) updateServer(p path, s string) string {
	if s == "" {
		return ""
	}
	const forms = `write "HOST" or "HOST:PORT" (port 53 when left out), such as "ns1.example.com", "192.0.2.53:53" or "[2001:db8::53]:53", or leave server out to send updates to the primary named in the zone's SOA`
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String()
	}
	host, port := s, "53"
	if h, pt, err := net.SplitHostPort(s); err == nil {
		host, port = h, pt
	} else if strings.Contains(s, ":") {
		c.errf(p, "%q is not a server address; %s", s, forms)
		return ""
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		c.errf(p, "%q: the port must be a number from 1 to 65535; %s", s, forms)
		return ""
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if prob := hostnameProblem(host); prob != "" {
			c.errf(p, "%q: %q is neither an IP address nor a host name: %s; %s", s, host, prob, forms)
			return ""
		}
	}
	return net.JoinHostPort(host, port)
}

// keyRotation reads a key's rotate, publish, selectors and delegate, as
// far as they can be checked alone; rotationRefs checks them against the
// rest of the file.
func (c *checker) keyRotation(p path, k *Key, fk *fileKey) {
	if fk.Rotate.v != nil {
		if v, ok := c.duration(p.child("rotate"), fk.Rotate.v, "30d"); ok {
			switch {
			case v < 0:
				c.errf(p.child("rotate"), `must not be negative; write a period such as "30d", or "0" for no rotation`)
			case v > 0 && v < time.Second:
				c.errf(p.child("rotate"), `%v is less than a second; write a period such as "30d", or "0" for no rotation`, v)
			default:
				k.Rotate = v
			}
		}
	}
	k.Publish = fk.Publish
	seen := map[string]int{}
	for i, s := range fk.Selectors {
		ep := p.child("selectors").elem(i + 1)
		if prob := dkim.NameProblem(s); prob != "" {
			c.errf(ep, "%q is not a selector: %s; write one or more DNS labels (letters, digits, '-', '_') separated by dots, e.g. \"s1\"", s, prob)
			continue
		}
		if j, dup := seen[strings.ToLower(s)]; dup {
			// DNS names do not tell case apart: both would be one record.
			c.errf(ep, "%q is listed twice (also entry %d; DNS names ignore case)", s, j)
			continue
		}
		seen[strings.ToLower(s)] = i + 1
		k.Selectors = append(k.Selectors, s)
	}
	if fk.Selectors != nil && len(fk.Selectors) < 2 {
		c.errf(p.child("selectors"), `needs at least two selectors, such as ["s1", "s2"]: the next key is published under one while the current one signs under the other`)
	}
	if fk.Delegate != "" {
		k.Delegate = strings.ToLower(strings.TrimSuffix(fk.Delegate, "."))
		if prob := dkim.NameProblem(k.Delegate); prob != "" {
			c.errf(p.child("delegate"), "%q is not a DNS name: %s; write the provider's zone the records are published in, such as \"provider.example\"", fk.Delegate, prob)
			k.Delegate = ""
		}
	}
}

// rotationRefs checks what ties the keys' rotation settings to each other
// and to [publish.NAME].
func (c *checker) rotationRefs(cfg *Config, md *toml.MetaData) {
	pubs := make([]string, 0, len(cfg.Publishers))
	for n := range cfg.Publishers {
		pubs = append(pubs, n)
	}
	slices.Sort(pubs)
	owners := map[string]string{} // record name → the key whose record it is
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		if k.Delegate == "" && k.Query == "" && !strings.Contains(k.Domain+k.File, "%") && k.Selector != "" {
			for _, sel := range append([]string{k.Selector}, k.Selectors...) {
				owners[strings.ToLower(k.RecordName(sel))] = name
			}
		}
	}
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		p := keyPath("keys", name)
		defined := func(key string) bool { return md.IsDefined("keys", name, key) }
		var set []string
		for _, key := range []string{"rotate", "publish", "selectors", "delegate"} {
			if defined(key) {
				set = append(set, key)
			}
		}
		if len(set) == 0 {
			continue
		}
		switch {
		case k.Query != "" && k.ListQuery == "":
			// Each domain rotates on its own: the engine must know them
			// all, not only those a message has asked for.
			c.errf(p.child(set[0]), `a key with a query rotates the domains its list_query returns; add list_query = "SELECT domain, selector, private_key FROM dkim_keys"`)
			continue
		case k.Query != "" && k.Rotate <= 0:
			// Its records are published per domain by rotation alone:
			// keys publish and keys revoke change one configured key.
			c.errf(p.child(set[0]), `on a key with a query, %s only go with rotate; add rotate = "30d", or remove %s`, strings.Join(set, ", "), strings.Join(set, ", "))
			continue
		case k.Query == "" && strings.Contains(k.Domain+k.File, "%"):
			c.errf(p.child(set[0]), "a key with '%%' in its domain or file name cannot be published or rotated: the domains it signs for are not known ahead; give each domain a key of its own, or keep the keys in the database (query and list_query), whose keys rotate; remove %s", strings.Join(set, ", "))
			continue
		}
		switch {
		case k.Publish != "" && cfg.Publishers[k.Publish] == nil:
			hint := Suggest(k.Publish, pubs)
			switch {
			case hint != "":
			case len(pubs) > 0:
				hint = "; the publishers are " + orList(pubs)
			default:
				hint = `; add one, such as [publish.` + toml.Key{k.Publish}.String() + `] with method = "rfc2136"`
			}
			c.errf(p.child("publish"), "names %q, but there is no [publish.%s] table%s", k.Publish, toml.Key{k.Publish}, hint)
		case defined("publish") && k.Publish == "":
			c.errf(p.child("publish"), "must not be empty; name a [publish.NAME] table, or remove publish")
		case k.Rotate > 0 && k.Publish == "":
			c.errf(p.child("rotate"), `needs publish: rotation publishes each new key's record before it signs; add publish = "NAME", naming a [publish.NAME] table`)
		case k.Publish != "" && k.Selector != "" && cfg.Publishers[k.Publish].Zone != "":
			// The server refuses an update of a name outside the zone
			// (NOTZONE): every rotation step would fail, days after a
			// reload that looked fine.
			zone, name := cfg.Publishers[k.Publish].Zone, strings.ToLower(k.RecordName(k.Selector))
			if z := strings.TrimSuffix(zone, "."); name != z && !strings.HasSuffix(name, "."+z) {
				c.errf(p.child("publish"), "the record %s is not in zone %s, which [publish.%s] updates: every update would be refused; publish through a table for the zone that holds it, or leave zone out of [publish.%s] to find it from DNS",
					name, z, toml.Key{k.Publish}, toml.Key{k.Publish})
			}
		}
		if k.Query == "" && len(k.Selectors) > 0 && !slices.ContainsFunc(k.Selectors, func(s string) bool { return strings.EqualFold(s, k.Selector) }) {
			c.errf(p.child("selectors"), "does not list the key's selector %q: rotation starts from the configured key and alternates between these selectors; add %q", k.Selector, k.Selector)
		}
		if k.Delegate != "" && len(k.Selectors) == 0 {
			c.errf(p.child("delegate"), `needs selectors, such as selectors = ["s1", "s2"]: the customer publishes one CNAME per selector, once, and rotation alternates between them`)
		}
		if k.Delegate != "" && k.Selector != "" {
			for _, s := range append([]string{k.Selector}, k.Selectors...) {
				if n := k.RecordName(s); len(n) > 253 {
					c.errf(p.child("delegate"), "%s is longer than the 253 characters of a DNS name; choose shorter selectors or a shorter zone", n)
					break
				}
			}
		}
		// Dashes make the provider's names ambiguous: a-b.example and
		// a.b-example both become a-b-example. Two keys must not share a
		// record.
		if k.Delegate != "" {
			for _, sel := range k.Selectors {
				rn := strings.ToLower(k.RecordName(sel))
				if other, ok := owners[rn]; ok && other != name {
					o := cfg.Keys[other]
					c.errf(p.child("delegate"), "the record of selector %q would be %s, which is the record of keys.%s (%s, domain %s) too; give one of them other selectors", sel, rn, toml.Key{other}, c.where(o.Line), o.Domain)
					break
				}
				owners[rn] = name
			}
		}
		// Another key of the domain under one of these selectors would
		// have its record replaced, revoked and deleted by rotation.
		for _, other := range cfg.KeyNames() {
			o := cfg.Keys[other]
			if other == name || o.Domain != k.Domain {
				continue
			}
			for i, s := range k.Selectors {
				if strings.EqualFold(s, o.Selector) || slices.ContainsFunc(o.Selectors, func(t string) bool { return strings.EqualFold(s, t) }) {
					c.errf(p.child("selectors").elem(i+1), "%q is a selector of keys.%s (%s) too; the keys of %s need selectors of their own, or rotating one replaces the other's record", s, toml.Key{other}, c.where(o.Line), k.Domain)
				}
			}
		}
	}
}
