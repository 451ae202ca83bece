package opendkim

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dkimmilter/dkimmilter/config"
)

// signingSetup translates who signs with which key: the KeyTable and
// SigningTable, or the single key of Domain, Selector and KeyFile.
func (t *translator) signingSetup() {
	kt, st := t.get("KeyTable"), t.get("SigningTable")
	multi := false
	if n := t.get("MultipleSignatures"); n != nil {
		multi, _ = boolValue(n.Value)
		switch {
		case kt == nil:
			n.set(NotNeeded, "OpenDKIM applies it to KeyTable signing only")
		case multi:
			n.set(Translated, "every SigningTable line that matches a From address signs it: [[signing]] rules carry the keys of every line they stand for")
		default:
			n.set(NotNeeded, "off: the first match wins, as in dkimmilter")
		}
	}
	if kt != nil {
		for _, name := range []string{"Domain", "Selector", "KeyFile", "SubDomains"} {
			if n := t.get(name); n != nil {
				n.set(NotNeeded, "OpenDKIM ignores it when KeyTable is set")
			}
		}
		keys := t.keyTable(kt)
		if st == nil {
			kt.unsupported("a KeyTable without SigningTable signs only through a SetupPolicyScript; no [[signing]] rules written")
			return
		}
		t.signingTable(st, keys, multi)
		return
	}
	if st != nil {
		st.unsupported("a SigningTable without KeyTable: OpenDKIM refuses to start; no [[signing]] rules written")
		return
	}
	t.singleKey()
}

// keyTable reads the KeyTable into [keys.NAME] tables and returns the
// dkimmilter name of each usable OpenDKIM key name, by lower-cased name
// (OpenDKIM's tables are case-insensitive).
func (t *translator) keyTable(n *Note) map[string]string {
	names := map[string]string{}
	d := t.dataset(n)
	if d == nil {
		return names
	}
	if d.kind == "refile" {
		// Tutorials write refile: here. Names without '*' or regular
		// expression characters match only themselves, as in a file.
		n.detail(false, "refile: for a KeyTable works as file: while no name has a pattern character (opendkim-testkey refuses it: write file:)")
	}
	used := map[string]bool{}
	seen := map[string]string{}
	for _, e := range d.entries {
		lname := strings.ToLower(e.key)
		if d.kind == "refile" && strings.ContainsAny(lname, `*?[](){}|^$\+`) {
			n.detail(true, "%s: key name %q is a pattern in a refile: KeyTable, which no SigningTable key name can be relied on to match; left out", e.where, e.key)
			continue
		}
		if w, dup := seen[lname]; dup {
			n.detail(false, "%s: key %q is named before, at %s, which OpenDKIM uses; this line is left out", e.where, e.key, w)
			continue
		}
		seen[lname] = e.where
		f := strings.Split(e.value, ":")
		if len(f) < 3 || f[0] == "" || f[1] == "" || f[2] == "" {
			n.detail(true, "%s: key %q: %q is not domain:selector:keyfile; OpenDKIM tempfailed mail signed with it (\"KeyTable entry corrupt\"), it is left out", e.where, e.key, e.value)
			continue
		}
		if len(f) > 3 {
			n.detail(false, "%s: key %q: the fields after the key file (%s) are left out: dkimmilter takes the algorithm from the key", e.where, e.key, strings.Join(f[3:], ":"))
		}
		domain, selector, file := strings.ToLower(f[0]), f[1], f[2]
		switch {
		case strings.HasPrefix(file, "/"):
		case strings.HasPrefix(file, "./") || strings.HasPrefix(file, "../"):
			abs := filepath.Join(t.dir, file)
			n.detail(false, "%s: key %q: %s is relative: OpenDKIM read it from its working directory, the import from opendkim.conf's: %s", e.where, e.key, file, abs)
			file = abs
		default:
			n.detail(true, "%s: key %q: the key data is written inline, not a file name: write the key to a file (mode 0600) and name it in [keys] yourself; mail signed with it is not signed", e.where, e.key)
			continue
		}
		if strings.Contains(file, "%") {
			n.detail(false, "%s: key %q: OpenDKIM tempfailed mail from a domain without a key file here; dkimmilter leaves it unsigned (a later rule may sign it)", e.where, e.key)
		}
		name := keyName(e.key, used)
		names[lname] = name
		comment := []string{fmt.Sprintf("KeyTable %s", e.where)}
		if name != e.key {
			comment = append(comment, fmt.Sprintf("OpenDKIM's name %q has characters dkimmilter's names do not take", e.key))
		}
		t.out.keys = append(t.out.keys, outKey{name: name, domain: domain, selector: selector, file: file, comment: comment})
	}
	n.set(Translated, "%d [keys.NAME] tables", len(names))
	return names
}

// keyName makes a dkimmilter key name from an OpenDKIM one: letters,
// digits, '-', '_' and '.' are kept, anything else becomes '-', and a
// name already taken gets a number.
func keyName(s string, used map[string]bool) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '-'
		}
	}
	name := string(b)
	if name == "" {
		name = "key"
	}
	for i := 2; used[name]; i++ {
		name = fmt.Sprintf("%s-%d", string(b), i)
	}
	used[name] = true
	return name
}

// sigLine is one SigningTable line, as a dkimmilter from pattern.
type sigLine struct {
	from     string
	keys     []string // dkimmilter key names
	identity string
	where    []string // the lines it stands for
	rank     [3]int   // lookup precedence of a non-refile line
}

// signingTable translates the SigningTable into [[signing]] rules, which
// dkimmilter tries in order, the first match winning.
func (t *translator) signingTable(n *Note, keys map[string]string, multi bool) {
	d := t.dataset(n)
	if d == nil {
		return
	}
	refile := d.kind == "refile"
	keyDomain := map[string]string{}
	for _, k := range t.out.keys {
		keyDomain[k.name] = k.domain
	}
	var lines []sigLine
	seen := map[string]string{}
	for _, e := range d.entries {
		var l sigLine
		pat := strings.ToLower(e.key)
		if refile {
			if strings.ContainsAny(pat, `?[](){}|^$\`) {
				n.detail(true, "%s: %q uses regular expression characters, which dkimmilter's patterns do not have: mail it matched is not signed", e.where, e.key)
				continue
			}
			if !strings.ContainsAny(pat, "@*") {
				n.detail(false, "%s: %q never matched (refile patterns match the whole address; did you mean *@%s?); left out", e.where, e.key, pat)
				continue
			}
			if !strings.Contains(pat, "@") {
				from, ok := atlessPattern(pat)
				if !ok {
					n.detail(true, "%s: %q has no '@' and more than one '*': OpenDKIM matched it against the whole address, the '@' inside any of its '*'s, which no one dkimmilter pattern says; mail it matched is not signed", e.where, e.key)
					continue
				}
				n.detail(false, "%s: %q has no '@': OpenDKIM matched it against the whole address, its '*' taking the '@'; written %q, which matches the same addresses", e.where, e.key, from)
				pat = from
			}
			if pat == "*@*" {
				// Every From address has a local part and a domain
				// (OpenDKIM consults the table for no other).
				pat = "*"
			}
			l.from = pat
		} else {
			if w, dup := seen[pat]; dup {
				n.detail(false, "%s: %q is listed before, at %s, which OpenDKIM uses; left out", e.where, e.key, w)
				continue
			}
			seen[pat] = e.where
			from, rank, why := lookupPattern(pat)
			if why != "" {
				n.detail(false, "%s: %q %s; left out", e.where, e.key, why)
				continue
			}
			l.from, l.rank = from, rank
		}
		if prob := config.FromProblem(l.from); prob != "" {
			// What config would refuse would make the whole file fail
			// to load: leave the line out, and say so.
			n.detail(true, "%s: %q cannot be written as a dkimmilter pattern (%s): mail it matched is not signed", e.where, e.key, prob)
			continue
		}
		l.where = []string{e.where}
		kname, signer, _ := strings.Cut(e.value, ":")
		l.identity = signer
		if kname == "%" {
			lines = append(lines, t.expandPercent(n, e, l, keys)...)
			continue
		}
		name, ok := keys[strings.ToLower(kname)]
		if !ok {
			n.detail(true, "%s: key %q is not in the KeyTable (or was left out): OpenDKIM tempfailed mail this line matched; left out", e.where, kname)
			continue
		}
		l.keys = []string{name}
		lines = append(lines, l)
	}
	for i := range lines {
		t.checkSigner(n, &lines[i], keyDomain)
	}
	if !refile {
		// dkimf_apply_signtable's order: user@domain, domain, then each
		// parent (user@.parent, .parent), user@*, *.
		slices.SortStableFunc(lines, func(a, b sigLine) int {
			for i := range a.rank {
				if c := cmp.Compare(a.rank[i], b.rank[i]); c != 0 {
					return c
				}
			}
			return 0
		})
	}
	var rules []sigLine
	if multi {
		rules = t.multiple(n, lines, refile)
	} else {
		rules = t.firstMatch(n, lines)
	}
	for _, r := range rules {
		t.out.rules = append(t.out.rules, outRule{from: r.from, keys: r.keys, identity: r.identity,
			comment: []string{"SigningTable " + strings.Join(r.where, ", ")}})
	}
	how := "in file order"
	if !refile {
		how = "in OpenDKIM's lookup order (address, domain, parent domains, user@*, *)"
	}
	n.set(Translated, "%d [[signing]] rules, %s", len(rules), how)
}

// atlessPattern translates a refile pattern that has a '*' but no '@'.
// OpenDKIM matched it against the whole "local@domain", so the address's
// '@' fell inside one of its '*'s. With one '*' (after runs of them are
// merged), P = A*B with no '@' in A or B: an address matches when it
// starts with A and ends with B. A, having no '@', can only be a prefix
// of the local part, and B only a suffix of the domain, so the addresses
// are exactly those A*@*B matches. With more '*'s the '@' may fall in any
// of them, a union no single pattern says: ok is false.
func atlessPattern(p string) (from string, ok bool) {
	for strings.Contains(p, "**") {
		p = strings.ReplaceAll(p, "**", "*")
	}
	if strings.Count(p, "*") != 1 {
		return "", false
	}
	i := strings.IndexByte(p, '*')
	return p[:i+1] + "@*" + p[i+1:], true
}

// lookupPattern turns a key of a non-refile SigningTable into a pattern,
// and ranks it in dkimf_apply_signtable's lookup order. Keys are looked up
// literally: a '*' anywhere but "*" and "user@*" never matched.
func lookupPattern(k string) (string, [3]int, string) {
	never := "never matched: in a " + "non-refile SigningTable only the forms user@domain, domain, user@.domain, .domain, user@* and * are looked up (use refile: for patterns)"
	if k == "*" {
		return "*", [3]int{3, 0, 0}, ""
	}
	if local, dom, ok := cutLast(k, "@"); ok {
		switch {
		case local == "" || strings.Contains(local, "*"):
			return "", [3]int{}, never
		case dom == "*":
			return local + "@*", [3]int{2, 0, 0}, ""
		case strings.Contains(dom, "*") || dom == "" || dom == ".":
			return "", [3]int{}, never
		case strings.HasPrefix(dom, "."):
			return local + "@*" + dom, [3]int{1, -strings.Count(dom, "."), 0}, ""
		}
		return k, [3]int{0, 0, 0}, ""
	}
	switch {
	case strings.Contains(k, "*") || k == ".":
		return "", [3]int{}, never
	case strings.HasPrefix(k, "."):
		return "*@*" + k, [3]int{1, -strings.Count(k, "."), 1}, ""
	}
	return "*@" + k, [3]int{0, 0, 1}, ""
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// expandPercent translates a line whose key name is "%": OpenDKIM signs
// with the KeyTable entry named like the From domain. dkimmilter gets one
// rule per KeyTable entry whose name is a domain the pattern matches.
func (t *translator) expandPercent(n *Note, e entry, l sigLine, keys map[string]string) []sigLine {
	var out []sigLine
	var names []string
	for lname := range keys {
		names = append(names, lname)
	}
	slices.Sort(names)
	for _, lname := range names {
		if !strings.Contains(lname, ".") || strings.ContainsAny(lname, "@*/ ") {
			continue
		}
		from, ok := restrict(l.from, lname)
		if !ok {
			continue
		}
		r := l
		r.from, r.keys = from, []string{keys[lname]}
		r.where = []string{e.where + " (key %)"}
		out = append(out, r)
	}
	if len(out) == 0 {
		n.detail(true, "%s: key name %%: no KeyTable entry is named like a domain %q matches; OpenDKIM tempfailed such mail, left out", e.where, e.key)
	} else {
		n.detail(false, "%s: key name %% becomes one rule per KeyTable entry named like a domain; mail from other domains, which OpenDKIM tempfailed (unknown key), is not signed", e.where)
	}
	return out
}

// restrict narrows a pattern to the addresses of one domain.
func restrict(p, domain string) (string, bool) {
	if local, dom, ok := cutLast(p, "@"); ok {
		if !strings.Contains(domain, "*") && config.GlobMatch(dom, domain) {
			return local + "@" + domain, true
		}
		return "", false
	}
	if config.GlobMatch(p, "*@"+domain) {
		return "*@" + domain, true
	}
	return "", false
}

// checkSigner applies libopendkim's DROPSIGNER: an i= outside d= is
// silently left out of the signature.
func (t *translator) checkSigner(n *Note, l *sigLine, keyDomain map[string]string) {
	if l.identity == "" {
		return
	}
	_, dom, ok := cutLast(strings.ToLower(l.identity), "@")
	if !ok {
		n.detail(false, "%s: signer %q has no '@'; OpenDKIM left i= out, and so does this", l.where[0], l.identity)
		l.identity = ""
		return
	}
	for _, k := range l.keys {
		kd := keyDomain[k]
		if strings.Contains(kd, "%") || strings.Contains(dom, "%") {
			continue
		}
		if dom != kd && !strings.HasSuffix(dom, "."+kd) {
			n.detail(false, "%s: signer %q is outside d=%s: OpenDKIM left i= out, and so does this", l.where[0], l.identity, kd)
			l.identity = ""
			return
		}
	}
}

// firstMatch keeps the lines a From address can reach: the first match
// wins in OpenDKIM as in dkimmilter, and dkimmilter refuses a rule that an
// earlier one always wins over.
func (t *translator) firstMatch(n *Note, lines []sigLine) []sigLine {
	var out []sigLine
	for _, l := range lines {
		shadow := -1
		for i, r := range out {
			if config.GlobMatch(r.from, l.from) {
				shadow = i
				break
			}
		}
		if shadow >= 0 {
			n.detail(false, "%s: never used: %s (%q) matches every address it does, first; left out", l.where[0], out[shadow].where[0], out[shadow].from)
			continue
		}
		out = append(out, l)
	}
	return out
}

// multiple translates MultipleSignatures: an address is signed by every
// line that matches it. dkimmilter signs with the keys of the first rule
// that matches, so each rule gets the keys of every line whose pattern
// covers its own, and more specific rules go first. That is exact when
// any two patterns are either nested or disjoint; lines that overlap only
// partly are reported.
func (t *translator) multiple(n *Note, lines []sigLine, refile bool) []sigLine {
	// Identical patterns become one rule.
	var rules []sigLine
	for _, l := range lines {
		j := slices.IndexFunc(rules, func(r sigLine) bool { return r.from == l.from })
		if j < 0 {
			rules = append(rules, l)
			continue
		}
		rules[j].keys = appendKeys(rules[j].keys, l.keys)
		rules[j].where = append(rules[j].where, l.where...)
		if rules[j].identity != l.identity {
			n.detail(true, "%s and %s: the same pattern with different signers (i=); dkimmilter has one i= per rule: %q is kept", rules[j].where[0], l.where[0], rules[j].identity)
		}
	}
	for i := range rules {
		for j := i + 1; j < len(rules); j++ {
			a, b := rules[i], rules[j]
			if !config.GlobMatch(a.from, b.from) && !config.GlobMatch(b.from, a.from) && !disjoint(a.from, b.from) {
				n.detail(true, "%s (%q) and %s (%q) both match some addresses but neither matches all the other does: such mail gets only the first rule's keys", a.where[0], a.from, b.where[0], b.from)
			}
		}
	}
	out := make([]sigLine, len(rules))
	coveredBy := make([]int, len(rules))
	for i, r := range rules {
		out[i] = r
		out[i].keys = nil
		for j, k := range rules {
			if j != i && !config.GlobMatch(k.from, r.from) {
				continue
			}
			if j != i {
				coveredBy[i]++
				out[i].where = append(out[i].where, "with the keys of "+k.where[0])
				if k.identity != r.identity {
					n.detail(true, "%s and %s: both sign the same mail with different signers (i=); dkimmilter has one i= per rule: %q is kept", r.where[0], k.where[0], r.identity)
				}
			}
			out[i].keys = appendKeys(out[i].keys, k.keys)
		}
		if refile && len(out[i].keys) >= 3 {
			n.detail(false, "%s: %d lines sign this mail; OpenDKIM 2.11 signed with only the first and last of them (a bug), dkimmilter signs with all", r.where[0], len(out[i].keys))
		}
	}
	// A rule covered by more others is more specific: it goes first.
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(coveredBy[b], coveredBy[a]) })
	sorted := make([]sigLine, len(out))
	for i, j := range idx {
		sorted[i] = out[j]
	}
	return sorted
}

func appendKeys(l, add []string) []string {
	for _, k := range add {
		l = appendNew(l, k)
	}
	return l
}

// singleKey translates OpenDKIM's simple mode: the domains of Domain are
// signed with KeyFile and Selector, d= being the From domain.
func (t *translator) singleKey() {
	kf, sel, dom, sub := t.get("KeyFile"), t.get("Selector"), t.get("Domain"), t.get("SubDomains")
	if kf == nil && sel == nil {
		if dom != nil {
			dom.set(NotNeeded, "without KeyFile and Selector OpenDKIM signs nothing")
		}
		if sub != nil {
			sub.set(NotNeeded, "without KeyFile and Selector OpenDKIM signs nothing")
		}
		return
	}
	if kf == nil || sel == nil {
		for _, n := range []*Note{kf, sel} {
			if n != nil {
				n.unsupported("KeyFile and Selector must both be set: OpenDKIM refuses to start; nothing is signed")
			}
		}
		return
	}
	file := kf.Value
	if !filepath.IsAbs(file) {
		file = filepath.Join(t.dir, file)
		kf.detail(false, "%s is relative: OpenDKIM read it from its working directory, the import from opendkim.conf's: %s", kf.Value, file)
	}
	o := t.out
	o.keys = append(o.keys, outKey{name: "default", domain: "%", selector: sel.Value, file: file,
		comment: []string{"KeyFile " + kf.Where() + ", Selector " + sel.Where(), "d= is the From domain, as in OpenDKIM's single-key mode: one key for every domain below."}})
	kf.set(Translated, "[keys.default] file")
	sel.set(Translated, "[keys.default] selector = %q", sel.Value)
	subdomains := false
	if sub != nil {
		subdomains, _ = boolValue(sub.Value)
	}
	if dom == nil {
		kf.Text += "; no Domain: OpenDKIM signed nothing, and no [[signing]] rule is written"
		if sub != nil {
			sub.set(NotNeeded, "no Domain")
		}
		return
	}
	d := t.dataset(dom)
	if d == nil {
		return
	}
	var domains []string
	star := false
	for _, e := range d.entries {
		D := strings.ToLower(strings.TrimSuffix(e.key, "."))
		if D == "*" {
			star = true
			continue
		}
		domains = appendNew(domains, D)
	}
	for _, D := range domains {
		o.rules = append(o.rules, outRule{from: "*@" + D, keys: []string{"default"}, comment: []string{"Domain " + dom.Where()}})
	}
	var subRules []outRule
	if subdomains && !star {
		for _, D := range domains {
			o.keys = append(o.keys, outKey{name: D, domain: D, selector: sel.Value, file: file,
				comment: []string{"SubDomains " + sub.Where() + ": mail from subdomains of " + D + " is signed with d=" + D}})
			subRules = append(subRules, outRule{from: "*@*." + D, keys: []string{D}, identity: "@" + D,
				comment: []string{"SubDomains " + sub.Where() + ": d= and i= are the parent domain, as OpenDKIM signs"}})
		}
		// The deepest parent first, as OpenDKIM walks up from the From
		// domain.
		slices.SortStableFunc(subRules, func(a, b outRule) int {
			return cmp.Compare(strings.Count(b.from, "."), strings.Count(a.from, "."))
		})
		o.rules = append(o.rules, subRules...)
		sub.set(Translated, "one [keys.DOMAIN] and one \"*@*.DOMAIN\" rule per domain")
	} else if sub != nil {
		if star {
			sub.set(NotNeeded, "Domain * signs every domain already")
		} else {
			sub.set(NotNeeded, "off: only the listed domains themselves are signed, as in dkimmilter")
		}
	}
	if star {
		o.rules = append(o.rules, outRule{from: "*", keys: []string{"default"}, comment: []string{"Domain " + dom.Where() + ": * signs every From domain"}})
	}
	n := len(domains)
	if star {
		n++
	}
	dom.set(Translated, "%d [[signing]] rules with [keys.default]", n)
}
