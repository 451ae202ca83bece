package opendkim

import (
	"fmt"
	"strings"

	"github.com/dkimmilter/dkimmilter/config"
)

// output is the dkimmilter configuration being built, with the comments
// that say where each value came from.
type output struct {
	listen          string
	listenComment   []string
	mode            string
	modeComment     string
	authservID      string
	authservComment string
	peers           []string

	internalHosts   []string
	internalComment string
	daemonNames     []string
	canon           string
	canonComment    string
	expire          string
	expireComment   string
	headers         []string
	headersComment  string
	oversign        []string

	keys  []outKey
	rules []outRule

	minRSA         int
	maxSigs        int
	maxSigsComment string

	nameservers []string
	timeout     string

	maxHeaderBytes   int
	maxHeaderComment string

	actions []kv
}

type outKey struct {
	name, domain, selector, file string
	comment                      []string
}

type outRule struct {
	from     string
	keys     []string
	identity string
	comment  []string
}

type kv struct{ key, value, comment string }

func newOutput() *output { return &output{} }

// render writes the configuration: first every OpenDKIM setting found and
// what became of it, then the TOML, each value with where it came from.
func (o *output) render(source string, notes []Note) []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	comment := func(lines ...string) {
		for _, l := range lines {
			l = clean(l)
			if l == "" || strings.HasPrefix(l, "  ") {
				w("%s\n", strings.TrimRight("# "+l, " "))
				continue
			}
			for _, p := range wrap(l, 76) {
				w("# %s\n", p)
			}
		}
	}
	comment("dkimmilter configuration translated from OpenDKIM's "+source+" by `dkimmilter import-opendkim`.",
		"It signs with the same key files and selectors: no DNS record changes. Check it with `dkimmilter check -config FILE`.",
		"",
		"Every OpenDKIM setting found, and what became of it:")
	if len(notes) == 0 {
		comment("  (none)")
	}
	affects := 0
	for _, n := range notes {
		w("#\n")
		v := n.Value
		if v != "" {
			v = " " + v
		}
		// Whole, however long: it is what an admin searches for.
		w("# %s\n", clean(fmt.Sprintf("%s: %s%s", n.Where(), n.Name, v)))
		d := n.Disposition.String()
		switch {
		case n.Affects && n.Disposition == NotSupported:
			d = "NOT SUPPORTED, changes mail"
		case n.Affects:
			d += " in part, the rest NOT SUPPORTED and changing mail (below)"
		}
		if n.Affects {
			affects++
		}
		for i, l := range wrap(clean(d+": "+n.Text), 72) {
			if i == 0 {
				w("#     %s\n", l)
			} else {
				w("#       %s\n", l)
			}
		}
		for _, det := range n.Details {
			for i, l := range wrap(clean(det), 70) {
				if i == 0 {
					w("#       - %s\n", l)
				} else {
					w("#         %s\n", l)
				}
			}
		}
	}
	w("#\n")
	if affects > 0 {
		comment(fmt.Sprintf("%d setting(s) NOT SUPPORTED that change which mail is signed, how, or what happens to inbound mail: read them above before switching.", affects))
	} else {
		comment("Nothing that decides which mail is signed, how, or what happens to inbound mail was left out.")
	}
	w("\n")

	comment(o.listenComment...)
	w("listen = %s\n\n", config.TOMLString(o.listen))
	if o.modeComment != "" {
		comment(o.modeComment)
	}
	w("mode = %s\n\n", config.TOMLString(o.mode))
	if o.authservComment != "" {
		comment(o.authservComment)
	}
	w("authserv_id = %s\n\n", config.TOMLString(o.authservID))
	comment("Clients whose mail is passed through untouched (OpenDKIM's PeerList).")
	w("peers = %s\n\n", strList(o.peers, 0))

	w("[sign]\n")
	if o.internalComment != "" {
		comment(o.internalComment)
	}
	w("internal_hosts = %s\n", strList(o.internalHosts, 2))
	comment("Postfix listeners (milter_macro_daemon_name) whose mail is signed: OpenDKIM's MTA and MacroList daemon_name.")
	w("daemon_names = %s\n", strList(o.daemonNames, 2))
	comment("OpenDKIM signs mail from SASL-authenticated clients (the auth_type macro), always.")
	w("sign_authenticated = true\n")
	comment("Unlike OpenDKIM, which signs any From for any authenticated client, dkimmilter binds each SASL login to the From domains it may use: its own domain and subdomains, and what [sign.senders] lists for it; a login without a domain part may use any From only when the signing rules sign for one domain. `dkimmilter check` says what applies here; \"off\" signs as OpenDKIM did.")
	w("sender_binding = \"domain\"\n")
	if o.canonComment != "" {
		comment(o.canonComment)
	}
	w("canonicalization = %s\n", config.TOMLString(o.canon))
	if o.expireComment != "" {
		comment(o.expireComment)
	}
	w("expire = %s\n", config.TOMLString(o.expire))
	if o.headersComment != "" {
		comment(o.headersComment)
	}
	w("headers = %s\n", strList(o.headers, 2))
	comment("Listed in h= once more than they occur, present or not (OpenDKIM's OversignHeaders).")
	w("oversign = %s\n", strList(o.oversign, 2))
	comment("OpenDKIM has no oversigning of fields only when present: empty keeps its h= as it was. dkimmilter's default oversigns Date, Message-ID, MIME-Version, Content-Type and more when present (remove this line to use it).")
	w("oversign_if_present = []\n")

	if len(o.keys) > 0 {
		w("\n")
		comment("The key files are OpenDKIM's: the user dkimmilter runs as must be able to read them, and nobody else: chown them to it, or put it in their group (mode 0640). `dkimmilter check` says which file needs what.")
	}
	for _, k := range o.keys {
		w("\n")
		comment(k.comment...)
		w("[keys.%s]\n", tomlKey(k.name))
		w("domain   = %s\nselector = %s\nfile     = %s\n", config.TOMLString(k.domain), config.TOMLString(k.selector), config.TOMLString(k.file))
	}
	if len(o.rules) == 0 {
		w("\n")
		comment("No signing: OpenDKIM had no key table or key to sign with.")
	}
	for _, r := range o.rules {
		w("\n")
		comment(r.comment...)
		w("[[signing]]\nfrom = %s\nkeys = %s\n", config.TOMLString(r.from), strList(r.keys, 0))
		if r.identity != "" {
			w("identity = %s\n", config.TOMLString(r.identity))
		}
	}

	w("\n[verify]\n")
	w("min_rsa_bits = %d\n", o.minRSA)
	if o.maxSigsComment != "" {
		comment(o.maxSigsComment)
	}
	w("max_signatures = %d\n", o.maxSigs)

	w("\n[dns]\n")
	if o.nameservers == nil {
		comment("Empty: the resolvers in /etc/resolv.conf, as OpenDKIM without Nameservers.")
	}
	w("nameservers = %s\n", strList(o.nameservers, 0))
	w("timeout = %s\n", config.TOMLString(o.timeout))

	w("\n[limits]\n")
	if o.maxHeaderComment != "" {
		comment(o.maxHeaderComment)
	}
	w("max_header_bytes = %d\n", o.maxHeaderBytes)

	w("\n[actions]\n")
	for _, a := range o.actions {
		if a.comment != "" {
			comment(a.comment)
		}
		w("%s = %s\n", a.key, config.TOMLString(a.value))
	}
	return []byte(b.String())
}

// wrap breaks text at spaces into lines of at most width characters
// (longer words stay whole).
func wrap(s string, width int) []string {
	if s == "" {
		return []string{""}
	}
	var out []string
	line := ""
	for _, word := range strings.Split(s, " ") {
		switch {
		case line == "":
			line = word
		case len(line)+1+len(word) <= width:
			line += " " + word
		default:
			out = append(out, line)
			line = word
		}
	}
	return append(out, line)
}

// strList renders a TOML array, one element per line when it is long.
func strList(l []string, indent int) string {
	q := make([]string, len(l))
	total := 0
	for i, s := range l {
		q[i] = config.TOMLString(s)
		total += len(q[i]) + 2
	}
	if total+indent <= 60 {
		return "[" + strings.Join(q, ", ") + "]"
	}
	var b strings.Builder
	b.WriteString("[\n")
	line := ""
	for _, s := range q {
		if line != "" && len(line)+len(s)+2 > 72 {
			b.WriteString("  " + strings.TrimSuffix(line, " ") + "\n")
			line = ""
		}
		line += s + ", "
	}
	if line != "" {
		b.WriteString("  " + strings.TrimSuffix(line, " ") + "\n")
	}
	b.WriteString("]")
	return b.String()
}

// tomlKey writes a table key bare when TOML allows it, quoted otherwise.
func tomlKey(k string) string {
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return config.TOMLString(k)
		}
	}
	if k == "" {
		return `""`
	}
	return k
}

// clean makes text from the OpenDKIM files fit in a TOML comment, which
// takes no control characters but tab, and only UTF-8: others are written
// as Go escapes.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r < ' ' && r != '\t' || r == 0x7f {
			fmt.Fprintf(&b, "\\x%02x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
