package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// Hosts is a list of SMTP clients, sign.internal_hosts or peers, with
// OpenDKIM's InternalHosts and PeerList semantics (its dkimf_checkhost and
// dkimf_checkip), so that a list moves over unchanged:
//
//   - an IP address or a CIDR network matches the client's address;
//   - "mail.example.com" matches that client host name exactly;
//   - ".example.com" matches host names under example.com, not
//     example.com itself;
//   - "!entry" excludes what entry would match.
//
// The most specific entry decides: the longest network containing the
// address, the longest name or suffix of the host name; an exclusion wins
// over an inclusion of the same. Names and addresses are looked at
// separately, and either including the client is enough, as in OpenDKIM:
// "!mail.example.com" keeps that name from matching ".example.com", not
// its address from matching "10.0.0.0/8".
type Hosts []Host

// Host is one entry of a Hosts list.
type Host struct {
	Exclude bool
	// Prefix is the network of an address or CIDR entry: masked
	// ("10.0.0.1/8" is 10.0.0.0/8), IPv4-mapped IPv6 unmapped. Zero for
	// a name.
	Prefix netip.Prefix
	// Name is a host name ("mail.example.com") or a suffix
	// (".example.com"), lower-case; "" for an address.
	Name string
}

// String is the entry as the file writes it.
func (h Host) String() string {
	s := h.Name
	switch {
	case h.Name != "":
	case h.Prefix.IsSingleIP():
		s = h.Prefix.Addr().String()
	default:
		s = h.Prefix.String()
	}
	if h.Exclude {
		s = "!" + s
	}
	return s
}

// Strings returns the entries as the file writes them.
func (hs Hosts) Strings() []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

// Match reports whether the client is in the list, and the entry that
// decided ("" when none matched, or an exclusion decided). name is the
// client's host name as Postfix reports it in the milter connect event: a
// name it has verified (forward-confirmed reverse DNS), or "unknown" or
// "[ip]" when it has none, which never match a name entry; ip may be the
// zero Addr (a unix-socket client with no address).
func (hs Hosts) Match(name string, ip netip.Addr) (bool, string) {
	if ok, e := hs.matchName(name); ok {
		return true, e
	}
	return hs.matchIP(ip)
}

func (hs Hosts) matchIP(ip netip.Addr) (bool, string) {
	if !ip.IsValid() {
		return false, ""
	}
	ip = ip.Unmap()
	var best *Host
	for i := range hs {
		h := &hs[i]
		if h.Name != "" || !h.Prefix.Contains(ip) {
			continue
		}
		if best == nil || h.Prefix.Bits() > best.Prefix.Bits() || h.Prefix.Bits() == best.Prefix.Bits() && h.Exclude {
			best = h
		}
	}
	return decided(best)
}

// decided: the most specific entry decides, and an exclusion decides
// against.
func decided(h *Host) (bool, string) {
	if h == nil || h.Exclude {
		return false, ""
	}
	return true, h.String()
}

func (hs Hosts) matchName(name string) (bool, string) {
	if !verifiedName(name) {
		return false, ""
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	var best *Host
	for i := range hs {
		h := &hs[i]
		if h.Name == "" {
			continue
		}
		// ".example.com" matches below example.com only, as OpenDKIM
		// tries the name and then each suffix from a dot on.
		if h.Name != name && !(h.Name[0] == '.' && strings.HasSuffix(name, h.Name)) {
			continue
		}
		if best == nil || len(h.Name) > len(best.Name) || len(h.Name) == len(best.Name) && h.Exclude {
			best = h
		}
	}
	return decided(best)
}

// verifiedName: Postfix sends "unknown" as the client name when reverse
// DNS gave none or it did not resolve back to the address, and its milter
// code then sends "[ip]" instead; neither names the client.
func verifiedName(name string) bool {
	return name != "" && name != "unknown" && !strings.HasPrefix(name, "[")
}

// HostEntryProblem checks one sign.internal_hosts or peers entry as the
// configuration's parser does: "" when it takes it, else what is wrong,
// completing "%q ...". Translations use it to leave out what would make
// the file refuse to load.
func HostEntryProblem(s string) string {
	_, prob := parseHost(s)
	return prob
}

// parseHost reads one entry; the problem, if any, completes "%q ...".
func parseHost(s string) (Host, string) {
	var h Host
	v, excl := strings.CutPrefix(s, "!")
	h.Exclude = excl
	if v == "" {
		return h, "is empty"
	}
	if a, rest, ok := strings.Cut(strings.TrimPrefix(v, "["), "]"); ok && strings.HasPrefix(v, "[") {
		// OpenDKIM's bracketed form: "[192.0.2.1]", "[2001:db8::]/32".
		v = a + rest
	}
	if pfx, prob := parsePrefix(v); prob == "" {
		h.Prefix = pfx
		return h, ""
	} else if strings.ContainsAny(v, ":/[]") || strings.Trim(v, "0123456789.") == "" {
		return h, prob
	}
	name := strings.ToLower(v)
	if suffix, ok := strings.CutPrefix(name, "*."); ok {
		return h, fmt.Sprintf("is not an entry: write %q for the hosts under %s", "."+suffix, suffix)
	}
	if name == "unknown" {
		return h, `is what Postfix calls a client whose name it could not verify, so it would match no client`
	}
	if prob := hostnameProblem(strings.TrimPrefix(name, ".")); prob != "" {
		return h, "is not an IP address, a network or a host name: " + prob
	}
	h.Name = name
	return h, ""
}
