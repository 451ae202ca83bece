package opendkim

import (
	"net/netip"
	"strings"

	"github.com/dkimmilter/dkimmilter/config"
)

// hosts translates who is signed for and who is passed through.
func (t *translator) hosts() {
	o := t.out
	o.internalHosts = []string{"127.0.0.1", "::1"}
	o.internalComment = "OpenDKIM's default InternalHosts."
	if n := t.get("InternalHosts"); n != nil {
		if d := t.dataset(n); d != nil {
			o.internalHosts, o.internalComment = t.hostList(n, d), ""
			n.set(Translated, "sign.internal_hosts (%d entries)", len(o.internalHosts))
		}
	}
	if n := t.get("PeerList"); n != nil {
		if d := t.dataset(n); d != nil {
			o.peers = t.hostList(n, d)
			n.set(Translated, "peers (%d entries): passed through, neither signed nor verified", len(o.peers))
		}
	}
	if n := t.get("MTA"); n != nil {
		if d := t.dataset(n); d != nil {
			for _, e := range d.entries {
				if daemonNameOK(n, e.where, e.key) {
					o.daemonNames = appendNew(o.daemonNames, e.key)
				}
			}
			n.set(Translated, "sign.daemon_names %s", list(o.daemonNames))
		}
	}
	if n := t.get("MacroList"); n != nil {
		if d := t.dataset(n); d != nil {
			t.macroList(n, d)
		}
	}
}

// hostList copies InternalHosts or PeerList entries in the forms
// dkimmilter takes (dkimf_checkhost and dkimf_checkip's): addresses,
// networks, host names, ".domain", each optionally "!"-negated. Entries
// OpenDKIM looked up as strings that can never match are left out:
// dkimmilter would match them.
func (t *translator) hostList(n *Note, d *dataset) []string {
	var out []string
	for _, e := range d.entries {
		s, neg := strings.CutPrefix(strings.ToLower(e.key), "!")
		if d.kind == "refile" {
			// A pattern: "*.example.com" matches the host names under
			// example.com, which ".example.com" says in dkimmilter.
			if rest, ok := strings.CutPrefix(s, "*."); ok && !strings.Contains(rest, "*") {
				s = "." + rest
			} else if strings.Contains(s, "*") {
				n.detail(true, "%s: the pattern %q: only *.DOMAIN patterns are translated; left out", e.where, e.key)
				continue
			}
		}
		if strings.HasPrefix(s, "[") {
			// [v6] and [v6]/len: OpenDKIM's bracket forms.
			s = strings.Replace(strings.TrimPrefix(s, "["), "]", "", 1)
		}
		canon, why := hostEntry(s)
		if why != "" {
			n.detail(false, "%s: %q left out: %s", e.where, e.key, why)
			continue
		}
		// What dkimmilter's configuration refuses would stop the whole
		// file from loading. An all-digit entry ("192.0.2") is neither an
		// address OpenDKIM compared equal nor a client's verified name;
		// a name that is (one with '_', say) may have matched a client.
		if prob := config.HostEntryProblem(canon); prob != "" {
			if strings.Trim(canon, "0123456789.") == "" {
				n.detail(false, "%s: %q left out: OpenDKIM never matched it (no client address or verified name is written so); dkimmilter's configuration refuses it: it %s", e.where, e.key, prob)
			} else {
				n.detail(true, "%s: %q left out: dkimmilter's configuration cannot express it (it %s); a client OpenDKIM matched by it is not matched now", e.where, e.key, prob)
			}
			continue
		}
		if neg {
			canon = "!" + canon
		}
		out = appendNew(out, canon)
	}
	if out == nil {
		out = []string{}
	}
	return out
}

// hostEntry checks one entry; why says why OpenDKIM never matched it.
func hostEntry(s string) (string, string) {
	if addr, bits, ok := strings.Cut(s, "/"); ok {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			return "", "not a network OpenDKIM can match (it compares the written text; write the whole address, e.g. 192.0.2.0/24)"
		case p.Masked() != p:
			return "", "OpenDKIM never matched a network written with host bits set; write " + p.Masked().String() + " if that is what you meant"
		case p.Addr().String() != addr:
			return "", "OpenDKIM compares the text: write the address as " + p.Addr().String() + "/" + bits
		}
		return s, ""
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.String() != s {
			return "", "OpenDKIM compares the text: write " + a.String()
		}
		return s, ""
	}
	name := strings.TrimPrefix(s, ".")
	for _, label := range strings.Split(name, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return "", "not an address, network or host name: OpenDKIM never matched it"
		}
	}
	return s, ""
}

// macroList translates MacroList entries on {daemon_name}, Postfix's
// milter_macro_daemon_name, into sign.daemon_names. Other macros decide
// signing by things dkimmilter does not look at.
func (t *translator) macroList(n *Note, d *dataset) {
	o := t.out
	var names []string
	for _, e := range d.entries {
		macro, values := e.key, e.value
		if m, v, ok := strings.Cut(e.key, "="); ok {
			macro, values = m, v
		}
		macro = strings.TrimSuffix(strings.TrimPrefix(macro, "{"), "}")
		switch {
		case macro != "daemon_name":
			n.detail(true, "%s: the macro %q: dkimmilter does not sign by it; mail OpenDKIM signed because of it is verified instead", e.where, macro)
		case values == "":
			n.detail(true, "%s: daemon_name without values matched every message (Postfix always sends it): to sign all mail, list every client in sign.internal_hosts", e.where)
		default:
			for _, v := range strings.Split(values, "|") {
				if v = strings.TrimSpace(v); v != "" && daemonNameOK(n, e.where, v) {
					names = appendNew(names, v)
				}
			}
		}
	}
	for _, v := range names {
		o.daemonNames = appendNew(o.daemonNames, v)
	}
	if n.Affects {
		n.set(NotSupported, "only daemon_name entries are translated (to sign.daemon_names %s)", list(names))
		return
	}
	n.set(Translated, "sign.daemon_names %s", list(names))
}

// daemonNameOK checks a {daemon_name} value as dkimmilter's configuration
// does. Postfix sends the master.cf service name or the -o
// milter_macro_daemon_name, one word of printable ASCII: a value it
// refuses OpenDKIM never saw, so leaving it out changes no mail.
func daemonNameOK(n *Note, where, v string) bool {
	if prob := config.DaemonNameProblem(v); prob != "" {
		n.detail(false, "%s: %q left out: OpenDKIM never matched it (%s)", where, v, prob)
		return false
	}
	return true
}

func appendNew(l []string, s string) []string {
	for _, x := range l {
		if x == s {
			return l
		}
	}
	return append(l, s)
}
