package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// checker turns a decoded fileConfig into a Config and collects every
// problem on the way; each check returns a usable value even when it
// reports, so that one mistake does not hide the next.
type checker struct {
	file string     // for messages
	dir  string     // to resolve relative key files
	ix   *lineIndex // key → line
	errs Errors

	// dotted names the [keys.NAME] tables that have a table inside:
	// [keys.example.com] meant as [keys."example.com"].
	dotted map[string]bool
}

func (c *checker) errf(p path, format string, args ...any) {
	c.errs = append(c.errs, &Error{File: c.file, Line: c.ix.line(p), Key: p.String(), Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) build(f *fileConfig, md *toml.MetaData) *Config {
	cfg := &Config{
		Listen:     c.listen(f.Listen),
		SocketMode: c.socketMode(f.SocketMode.v),
		Mode:       c.mode(f.Mode),
		AuthservID: c.authservID(f.AuthservID),
	}
	cfg.Peers = c.hosts(keyPath("peers"), f.Peers)
	c.sign(&cfg.Sign, &f.Sign, md)
	cfg.Keys = c.keys(f.Keys, md)
	cfg.Signing = c.signing(f.Signing, cfg.Keys)
	cfg.Verify = c.verify(f.Verify)
	cfg.DNS = c.dns(f.DNS)
	cfg.Limits = c.limits(f.Limits)
	cfg.MetricsListen = c.metricsListen(f.Metrics)
	cfg.Database = c.database(f.Database)
	c.queryKeys(cfg)
	cfg.Publishers = c.publishers(f.Publish, md)
	cfg.Rotation = c.rotation(f.Rotation)
	c.rotationRefs(cfg, md)
	a := f.Actions
	cfg.Actions = Actions{
		SignError:     c.action(keyPath("actions", "sign_error"), a.SignError, AllActions...),
		DNSError:      c.action(keyPath("actions", "dns_error"), a.DNSError, AllActions...),
		BadSignature:  c.action(keyPath("actions", "bad_signature"), a.BadSignature, AllActions...),
		KeyNotFound:   c.action(keyPath("actions", "key_not_found"), a.KeyNotFound, AllActions...),
		Policy:        c.action(keyPath("actions", "policy"), a.Policy, AllActions...),
		Security:      c.action(keyPath("actions", "security"), a.Security, AllActions...),
		NoSignature:   c.action(keyPath("actions", "no_signature"), a.NoSignature, AllActions...),
		InternalError: c.action(keyPath("actions", "internal_error"), a.InternalError, AllActions...),

		SenderMismatch: c.action(keyPath("actions", "sender_mismatch"), a.SenderMismatch, AllActions...),
	}
	return cfg
}

// listen takes Postfix's milter address syntax, which admins copy into
// smtpd_milters: unix:/path or inet:host:port.
func (c *checker) listen(s string) string {
	p := keyPath("listen")
	if sock, ok := strings.CutPrefix(s, "unix:"); ok {
		switch {
		case !strings.HasPrefix(sock, "/"):
			c.errf(p, `%q: the socket path must be absolute, e.g. "unix:/var/spool/postfix/dkimmilter/dkimmilter.sock"`, s)
		case len(sock) > 107:
			// sun_path is 108 bytes on Linux, with the NUL.
			c.errf(p, "the socket path is %d bytes long; Unix socket paths are limited to 107: choose a shorter one", len(sock))
		}
		return s
	}
	if hp, ok := strings.CutPrefix(s, "inet:"); ok {
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			c.errf(p, `%q: write "inet:HOST:PORT", e.g. "inet:127.0.0.1:8891", with IPv6 addresses in brackets: "inet:[::1]:8891"`, s)
			return s
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			c.errf(p, "%q: the port must be a number from 1 to 65535", s)
		}
		if host == "" {
			c.errf(p, `%q: the host is missing; write an address such as "inet:127.0.0.1:8891"`, s)
		} else if strings.HasPrefix(hp, "[") {
			if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
				c.errf(p, "%q: [%s] is not an IPv6 address", s, host)
			}
		} else if _, err := netip.ParseAddr(host); err != nil {
			if prob := hostnameProblem(host); prob != "" {
				c.errf(p, "%q: %q is neither an IP address nor a host name: %s", s, host, prob)
			}
		}
		return s
	}
	hint := `write "unix:/path/to/socket" or "inet:HOST:PORT"`
	switch {
	case strings.HasPrefix(s, "/"):
		hint = fmt.Sprintf("write %q", "unix:"+s)
	case strings.HasPrefix(s, "local:"):
		hint = fmt.Sprintf("write %q: Postfix calls local sockets unix:", "unix:"+strings.TrimPrefix(s, "local:"))
	case strings.HasPrefix(s, "inet6:"):
		hint = `write "inet:[ADDRESS]:PORT", e.g. "inet:[::1]:8891"`
	default:
		if _, _, err := net.SplitHostPort(s); err == nil {
			hint = fmt.Sprintf("write %q", "inet:"+s)
		}
	}
	c.errf(p, "%q is not a socket address; %s", s, hint)
	return s
}

func (c *checker) socketMode(v any) fs.FileMode {
	p := keyPath("socket_mode")
	s, ok := v.(string)
	if !ok {
		c.errf(p, `must be a quoted octal string such as "0660", not %s (TOML would read 660 as a decimal number)`, words(goType(v)))
		return 0o660
	}
	digits := strings.TrimPrefix(s, "0o")
	n, err := strconv.ParseUint(digits, 8, 32)
	switch {
	case err != nil || digits == "":
		c.errf(p, `%q is not an octal mode; write it like "0660"`, s)
	case n > 0o777:
		c.errf(p, `%q is more than "0777": only permission bits are allowed`, s)
	default:
		return fs.FileMode(n)
	}
	return 0o660
}

func (c *checker) mode(s string) Mode {
	switch s {
	case "s":
		return ModeSign
	case "v":
		return ModeVerify
	case "sv", "vs":
		return ModeSign | ModeVerify
	}
	c.errf(keyPath("mode"), `%q is not a mode; write "s" (sign), "v" (verify) or "sv" (both)`, s)
	return ModeSign | ModeVerify
}

// authservID goes verbatim into Authentication-Results, where it is one
// token before the first ';' (RFC 8601 §2.5); anything that would end or
// comment out that token makes the header unparsable.
// https://www.rfc-editor.org/rfc/rfc8601#section-2.5
func (c *checker) authservID(s string) string {
	if !utf8.ValidString(s) {
		c.errf(keyPath("authserv_id"), "is not valid UTF-8")
		return s
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`;()"\`, r) {
			c.errf(keyPath("authserv_id"), `%q: %q is not allowed; write a single word such as the host name, "mx.example.com" (or leave it empty to use Postfix's myhostname)`, s, r)
			break
		}
	}
	return s
}

// DaemonNameProblem checks one sign.daemon_names value as the
// configuration's parser does: "" when it takes it, else what is wrong.
// Postfix's {daemon_name} is the master.cf service name or the
// milter_macro_daemon_name given with -o: one word.
func DaemonNameProblem(n string) string {
	switch {
	case n == "":
		return `is empty; write a Postfix service name as {daemon_name} gives it, e.g. "ORIGINATING" (master.cf: -o milter_macro_daemon_name=ORIGINATING)`
	case strings.IndexFunc(n, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0:
		return fmt.Sprintf(`%q: Postfix's {daemon_name} is one word of printable ASCII; write it as milter_macro_daemon_name says, e.g. "ORIGINATING"`, n)
	}
	return ""
}

func (c *checker) sign(out *Sign, f *fileSign, md *toml.MetaData) {
	p := keyPath("sign")
	out.SignAuthenticated = f.SignAuthenticated
	c.senderBinding(out, f)
	out.InternalHosts = c.hosts(p.child("internal_hosts"), f.InternalHosts)
	out.DaemonNames = make([]string, 0, len(f.DaemonNames))
	for i, n := range f.DaemonNames {
		switch prob := DaemonNameProblem(n); {
		case prob != "":
			c.errf(p.child("daemon_names").elem(i+1), "%s", prob)
		case slices.Contains(out.DaemonNames, n):
			c.errf(p.child("daemon_names").elem(i+1), "%q is listed twice", n)
		default:
			out.DaemonNames = append(out.DaemonNames, n)
		}
	}

	// c= semantics: a single word sets the header canonicalization and
	// leaves the body "simple", RFC 6376 §3.5.
	// https://www.rfc-editor.org/rfc/rfc6376#section-3.5
	var err error
	out.HeaderCanon, out.BodyCanon, err = dkim.ParseCanon(f.Canonicalization)
	if err != nil || f.Canonicalization == "" {
		out.HeaderCanon, out.BodyCanon = dkim.Relaxed, dkim.Relaxed
		c.errf(p.child("canonicalization"), `%q: write "HEADER/BODY", each "simple" or "relaxed", e.g. "relaxed/relaxed" (a single word sets the header and leaves the body "simple")`, f.Canonicalization)
	}

	var ok bool
	out.Expire, ok = c.duration(p.child("expire"), f.Expire.v, "168h")
	switch {
	case !ok:
	case out.Expire < 0:
		c.errf(p.child("expire"), `must not be negative; write "0" to leave x= out`)
	case out.Expire > 0 && out.Expire < time.Second:
		c.errf(p.child("expire"), `%v is less than a second, and x= counts seconds; write "0" to leave x= out, or a duration such as "168h"`, out.Expire)
	}

	hp := p.child("headers")
	out.Headers = c.fieldNames(hp, f.Headers, "; to sign that a field is absent or appears once, list it in oversign", func(h string) string {
		if why := unsignable(h); why != "" {
			return fmt.Sprintf("must not list %q: %s; remove it", h, why)
		}
		return ""
	})
	if !slices.Contains(out.Headers, "from") {
		c.errf(hp, `must contain "from": RFC 6376 §5.4 requires the From field to be signed`)
	}
	// A default list is cut down to the signed fields, and to the fields
	// the other list does not name: narrowing headers, or moving a field
	// from one list to the other, should not force writing out both.
	always, present := md.IsDefined("sign", "oversign"), md.IsDefined("sign", "oversign_if_present")
	lower := func(l []string) []string {
		out := make([]string, len(l))
		for i, h := range l {
			out[i] = strings.ToLower(h)
		}
		return out
	}
	if !always {
		f.Oversign = slices.DeleteFunc(f.Oversign, func(h string) bool {
			return !slices.Contains(out.Headers, h) || present && slices.Contains(lower(f.OversignIfPresent), h)
		})
	}
	if !present {
		f.OversignIfPresent = slices.DeleteFunc(f.OversignIfPresent, func(h string) bool {
			return !slices.Contains(out.Headers, h) || slices.Contains(lower(f.Oversign), h)
		})
	}
	signed := func(h string) string {
		if !slices.Contains(out.Headers, h) {
			return fmt.Sprintf("%q is not in sign.headers: only signed fields can be oversigned; add it to headers or remove it here", h)
		}
		return ""
	}
	out.Oversign = c.fieldNames(p.child("oversign"), f.Oversign, "", signed)
	out.OversignIfPresent = c.fieldNames(p.child("oversign_if_present"), f.OversignIfPresent, "", func(h string) string {
		if why := signed(h); why != "" {
			return why
		}
		if slices.Contains(out.Oversign, h) {
			return fmt.Sprintf("%q is in sign.oversign too: a field is oversigned always (oversign) or only when the message has it (oversign_if_present); remove it from one", h)
		}
		return ""
	})
}

// hosts reads sign.internal_hosts or peers (see Hosts).
func (c *checker) hosts(p path, list []string) Hosts {
	out := make(Hosts, 0, len(list))
	seen := map[string]int{}
	for i, s := range list {
		h, prob := parseHost(s)
		if prob != "" {
			c.errf(p.elem(i+1), `%q %s; write an IP address ("192.0.2.1", "2001:db8::1"), a network in CIDR notation ("10.0.0.0/8", "2001:db8::/32"), a host name ("mail.example.com"), ".example.com" for the hosts under example.com, or any of these after "!" to exclude it`, s, prob)
			continue
		}
		if j, dup := seen[Host{Exclude: !h.Exclude, Prefix: h.Prefix, Name: h.Name}.String()]; dup {
			c.errf(p.elem(i+1), "%q contradicts entry %d (%q); keep one of them", s, j, list[j-1])
			continue
		}
		if _, dup := seen[h.String()]; !dup {
			seen[h.String()] = i + 1
		}
		out = append(out, h)
	}
	return out
}

// fieldNames lower-cases and checks a list of header field names; check
// adds the list's own rule. It returns the good names.
func (c *checker) fieldNames(p path, list []string, dupHint string, check func(string) string) []string {
	names := make([]string, 0, len(list))
	seen := map[string]int{}
	for i, h := range list {
		name := strings.ToLower(h)
		if prob := fieldNameProblem(name); prob != "" {
			c.errf(p.elem(i+1), "%q is not a header field name: %s", h, prob)
			continue
		}
		if j, dup := seen[name]; dup {
			c.errf(p.elem(i+1), "%q is listed twice (also entry %d)%s", h, j, dupHint)
			continue
		}
		if msg := check(name); msg != "" {
			c.errf(p.elem(i+1), "%s", msg)
			continue
		}
		seen[name] = i + 1
		names = append(names, name)
	}
	return names
}

// fieldNameProblem checks RFC 5322 §3.6.8 ftext: printable ASCII but ':'.
func fieldNameProblem(s string) string {
	if s == "" {
		return "it is empty"
	}
	for _, r := range s {
		if r < 33 || r > 126 || r == ':' {
			return fmt.Sprintf("%q is not allowed (printable ASCII except ':')", r)
		}
	}
	return ""
}

// unsignable says why a field must not be signed: it is added or changed
// after signing, so signing it would break the signature in transit.
// https://www.rfc-editor.org/rfc/rfc6376#section-5.4.1
func unsignable(name string) string {
	switch {
	case name == "received" || name == "return-path":
		return "relays add it in transit, which would break the signature (RFC 6376 §5.4.1)"
	case name == "authentication-results":
		return "receivers add it after signing"
	case name == "dkim-signature":
		return "signatures are added after signing, by this milter and by others"
	case strings.HasPrefix(name, "arc-"):
		return "ARC sealers add the ARC fields after signing"
	}
	return ""
}

// duration reads a duration setting. Only strings are accepted: the toml
// package would read an integer as nanoseconds.
func (c *checker) duration(p path, v any, example string) (time.Duration, bool) {
	switch v := v.(type) {
	case string:
		d, err := parseDuration(v)
		if err == nil {
			return d, true
		}
		c.errf(p, "%q is not a duration; write a number with a unit (d, h, m, s, ms) such as %q or %q", v, example, "1d12h")
	case int64, float64:
		c.errf(p, "a bare number would be read as nanoseconds; write a duration string such as %q", example)
	default:
		c.errf(p, "must be a duration string such as %q, not %s", example, words(goType(v)))
	}
	return 0, false
}

// parseDuration is time.ParseDuration with a day unit in front, as
// OpenDKIM's "14d" and the "1d12h" admins write: a day is 24 hours here
// (durations are elapsed time, not calendar days).
func parseDuration(s string) (time.Duration, error) {
	neg := strings.HasPrefix(s, "-")
	rest := strings.TrimLeft(s, "+-")
	i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if i <= 0 || rest[i] != 'd' {
		return time.ParseDuration(s)
	}
	days, err := strconv.ParseInt(rest[:i], 10, 64)
	const maxDays = int64(math.MaxInt64 / (24 * time.Hour))
	if err != nil || days > maxDays {
		return 0, fmt.Errorf("%q: too many days", s)
	}
	d := time.Duration(days) * 24 * time.Hour
	if tail := rest[i+1:]; tail != "" {
		if strings.ContainsAny(tail[:1], "+-") {
			return 0, fmt.Errorf("%q: a sign after the days", s)
		}
		t, err := time.ParseDuration(tail)
		if err != nil {
			return 0, err
		}
		if t > math.MaxInt64-d {
			return 0, fmt.Errorf("%q: too long", s)
		}
		d += t
	}
	if neg {
		d = -d
	}
	return d, nil
}

func goType(v any) string { return strings.ReplaceAll(fmt.Sprintf("%T", v), "interface {}", "any") }

func (c *checker) verify(f fileVerify) Verify {
	p := keyPath("verify")
	switch {
	case f.MinRSABits < dkim.MinRSABits:
		// https://www.rfc-editor.org/rfc/rfc8301#section-3.2
		c.errf(p.child("min_rsa_bits"), "%d is below %d: RFC 8301 §3.2 forbids accepting smaller RSA keys; write a number from %[2]d to %d",
			f.MinRSABits, dkim.MinRSABits, dkim.MaxRSABits)
	case f.MinRSABits > dkim.MaxRSABits:
		c.errf(p.child("min_rsa_bits"), "%d is above %d; write a number from %d to %[2]d", f.MinRSABits, dkim.MaxRSABits, dkim.MinRSABits)
	}
	if f.MaxSignatures < 1 || f.MaxSignatures > 64 {
		c.errf(p.child("max_signatures"), "%d is out of range; write a number from 1 to 64", f.MaxSignatures)
	}
	return Verify(f)
}

// dns checks the name servers' syntax only: resolving a name server's
// name would need a name server. They come out as "IP:port".
func (c *checker) dns(f fileDNS) DNS {
	p := keyPath("dns")
	out := DNS{Nameservers: make([]string, 0, len(f.Nameservers))}
	for i, ns := range f.Nameservers {
		if a, err := netip.ParseAddr(ns); err == nil {
			out.Nameservers = append(out.Nameservers, netip.AddrPortFrom(a, 53).String())
		} else if ap, err := netip.ParseAddrPort(ns); err == nil && ap.Port() != 0 {
			out.Nameservers = append(out.Nameservers, ap.String())
		} else {
			c.errf(p.child("nameservers").elem(i+1), `%q is not a name server address; write an IP address with an optional port: "192.0.2.53", "127.0.0.1:5353", "[2001:db8::53]:53" (names are not resolved)`, ns)
		}
	}
	var ok bool
	out.Timeout, ok = c.duration(p.child("timeout"), f.Timeout.v, "5s")
	if ok && (out.Timeout <= 0 || out.Timeout > time.Minute) {
		c.errf(p.child("timeout"), `%q is out of range; write a duration from "1ms" to "60s", such as "5s"`, f.Timeout.v)
	}
	// RFC 8767 §5 suggests 1 to 3 days; a week is plenty for an outage,
	// and past it a revoked key could pass for too long.
	out.MaxStale, ok = c.duration(p.child("max_stale"), f.MaxStale.v, "1d")
	if ok && (out.MaxStale < 0 || out.MaxStale > 7*24*time.Hour) {
		c.errf(p.child("max_stale"), `%q is out of range; write a duration from "0s" (no serve-stale) to "7d", such as "1d"`, f.MaxStale.v)
	}
	return out
}

func (c *checker) limits(f fileLimits) Limits {
	p := keyPath("limits")
	out := Limits{MaxSessions: f.MaxSessions, MaxHeaders: f.MaxHeaders, MaxHeaderBytes: f.MaxHeaderBytes}
	if f.MaxSessions < 1 || f.MaxSessions > 100000 {
		c.errf(p.child("max_sessions"), "%d is out of range; write a number from 1 to 100000 (Postfix opens one milter connection per smtpd process)", f.MaxSessions)
	}
	if f.MaxHeaders < 50 || f.MaxHeaders > 1000000 {
		c.errf(p.child("max_headers"), "%d is out of range; write a number of header fields from 50 to 1000000, such as 1000 (Postfix alone allows 50 Received fields)", f.MaxHeaders)
	}
	if f.MaxHeaderBytes < 16384 || f.MaxHeaderBytes > 1<<28 {
		c.errf(p.child("max_header_bytes"), "%d is out of range; write a number of bytes from 16384 to 268435456, such as 1048576 (1 MiB)", f.MaxHeaderBytes)
	}
	for _, d := range []struct {
		name     string
		v        any
		dst      *time.Duration
		example  string
		min, max time.Duration
	}{
		{"idle_timeout", f.IdleTimeout.v, &out.IdleTimeout, "10m", time.Second, 24 * time.Hour},
		{"message_timeout", f.MessageTimeout.v, &out.MessageTimeout, "30m", time.Second, 24 * time.Hour},
		{"shutdown_timeout", f.ShutdownTimeout.v, &out.ShutdownTimeout, "20s", 0, time.Hour},
	} {
		v, ok := c.duration(p.child(d.name), d.v, d.example)
		if ok && (v < d.min || v > d.max) {
			c.errf(p.child(d.name), "%q is out of range; write a duration from %q to %q, such as %q", d.v, d.min.String(), d.max.String(), d.example)
		}
		*d.dst = v
	}
	return out
}

// metricsListen takes "host:port" for the Prometheus endpoint, or "".
func (c *checker) metricsListen(s string) string {
	if s == "" {
		return ""
	}
	_, port, err := net.SplitHostPort(s)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
		c.errf(keyPath("metrics_listen"), `%q is not host:port; write e.g. "127.0.0.1:9180" (or "" for no metrics)`, s)
		return ""
	}
	return s
}

func (c *checker) action(p path, v string, allowed ...Action) Action {
	words := make([]string, len(allowed))
	for i, a := range allowed {
		if v == a.String() {
			return a
		}
		words[i] = a.String()
	}
	c.errf(p, "%q is not an action; write %s", v, orList(words))
	return allowed[0]
}

// orList renders `"a", "b" or "c"`.
func orList(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = strconv.Quote(w)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// parsePrefix reads an address or a CIDR network. Addresses become
// single-address prefixes, networks are masked ("10.0.0.1/8" is
// 10.0.0.0/8), and IPv4-mapped IPv6 becomes IPv4: Go's netip never matches
// an IPv4 address against an IPv6 prefix.
func parsePrefix(s string) (netip.Prefix, string) {
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return pfx, "is not a network in CIDR notation"
		}
		pfx = p
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return pfx, "is not an IP address"
		}
		if a.Zone() != "" {
			return pfx, "has a zone, which cannot be matched"
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if pfx.Addr().Is4In6() {
		if pfx.Bits() < 96 {
			return pfx, "is an IPv4-mapped network shorter than /96"
		}
		pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
	}
	return pfx.Masked(), ""
}

// hostnameProblem checks a host or domain name in the LDH syntax of RFC
// 1123 §2.1 and says what is wrong, or returns "".
func hostnameProblem(s string) string {
	switch {
	case s == "":
		return "it is empty"
	case strings.HasSuffix(s, "."):
		return "remove the trailing dot"
	case len(s) > 253:
		return "it is longer than 253 characters"
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return "it has an empty label (two dots in a row?)"
		case len(l) > 63:
			return fmt.Sprintf("the label %q is longer than 63 characters", l)
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Sprintf("the label %q starts or ends with '-'", l)
		}
		for _, r := range l {
			if r >= utf8.RuneSelf {
				return "write internationalised names in their ASCII form (xn--…)"
			}
			if !isBare(byte(r)) || r == '_' {
				return fmt.Sprintf("%q is not allowed (letters, digits, '-' and dots only)", r)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "the last label is all digits (a mistyped IP address?)"
	}
	return ""
}

// CheckListen checks a milter socket address given on the command line
// (serve -listen) as the file's listen is checked.
func CheckListen(s string) error {
	c := &checker{ix: &lineIndex{}}
	c.listen(s)
	if len(c.errs) > 0 {
		return errors.New(c.errs[0].Msg)
	}
	return nil
}
