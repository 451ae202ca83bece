package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// The KeyTable ([keys.NAME]) and the SigningTable ([[signing]]), checked
// against each other here so that a dangling name fails at start, not
// when the first message needs it (OpenDKIM's trap).

func (c *checker) keys(f map[string]*fileKey, md *toml.MetaData) map[string]*Key {
	keys := make(map[string]*Key, len(f))
	for name, fk := range f {
		if fk == nil {
			fk = &fileKey{}
		}
		p := keyPath("keys", name)
		if prob := keyNameProblem(name); prob != "" {
			c.errf(p, "the key name %s; use letters, digits, '-', '_' and '.'", prob)
		}
		k := &Key{Name: name, Line: c.ix.line(p)}
		required := func(key, value, what string) bool {
			if md.IsDefined("keys", name, key) {
				return true
			}
			// A value with the key in another case ("Selector") was
			// decoded anyway and is reported as an unknown key; a key
			// table that is really a dotted name is reported as such.
			if value == "" && !c.dotted[name] {
				c.errf(p.child(key), "missing: %s", what)
			}
			return false
		}
		if md.IsDefined("keys", name, "query") || md.IsDefined("keys", name, "list_query") {
			// Selector and private key come from the database.
			c.queryKey(p, k, fk, md)
			c.keyRotation(p, k, fk)
			keys[name] = k
			continue
		}
		if required("domain", fk.Domain, `the signing domain (d=), e.g. domain = "example.com"`) {
			k.Domain = strings.ToLower(fk.Domain)
			// '%' is the From domain, filled in per message.
			if prob := hostnameProblem(strings.ReplaceAll(k.Domain, "%", "example.com")); prob != "" {
				c.errf(p.child("domain"), "%q is not a domain name: %s", fk.Domain, prob)
			}
		}
		if required("selector", fk.Selector, `the selector (s=) the public key is published under, e.g. selector = "s2026r"`) {
			k.Selector = fk.Selector
			if prob := dkim.NameProblem(k.Selector); prob != "" { // RFC 6376 §3.1, '_' allowed as in DNS
				c.errf(p.child("selector"), "%q is not a selector: %s; write one or more DNS labels (letters, digits, '-', '_') separated by dots, e.g. \"s2026r\"", fk.Selector, prob)
			} else if !strings.Contains(k.Domain, "%") && len(k.Selector)+len("._domainkey.")+len(k.Domain) > 253 {
				c.errf(p.child("selector"), "%s._domainkey.%s is longer than the 253 characters of a DNS name", k.Selector, k.Domain)
			}
		}
		if required("file", fk.File, `the private key file, e.g. file = "/etc/dkimmilter/keys/example.com/s2026r.pem" (or query = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1" with [database])`) {
			switch {
			case fk.File == "":
				c.errf(p.child("file"), "must not be empty")
			case filepath.IsAbs(fk.File):
				k.File = filepath.Clean(fk.File)
			default:
				// Relative to the config file, so that the file can be
				// moved with its keys; never to the working directory.
				k.File = filepath.Join(c.dir, fk.File)
			}
		}
		c.keyRotation(p, k, fk)
		keys[name] = k
	}
	return keys
}

func keyNameProblem(name string) string {
	if name == "" {
		return "is empty"
	}
	for _, r := range name {
		if !(r < utf8.RuneSelf && isBare(byte(r)) || r == '.') {
			return fmt.Sprintf("%q contains %q", name, r)
		}
	}
	return ""
}

const fromForms = `write "*" (every address), "*@example.com" (one domain), "*@*.example.com" (its subdomains), "user@example.com" (one address), or put '*' (any run of characters) anywhere, as in "x-*@example.com" or "*@example.*"`

func (c *checker) signing(f []*fileRule, keys map[string]*Key) []*SigningRule {
	rules := make([]*SigningRule, 0, len(f))
	names := make([]string, 0, len(keys))
	for n := range keys {
		names = append(names, n)
	}
	slices.Sort(names)
	sh := shadowing{}
	for i, fr := range f {
		if fr == nil {
			fr = &fileRule{}
		}
		p := keyPath("signing").elem(i + 1)
		r := &SigningRule{Line: c.ix.line(p), Identity: fr.Identity}
		fromOK := c.from(p.child("from"), fr.From)
		r.From = strings.ToLower(fr.From)

		kp := p.child("keys")
		r.KeysLine = c.ix.at(kp)
		if len(fr.Keys) == 0 {
			c.errf(kp, `%s needs at least one key: keys = ["NAME", ...], each naming a [keys.NAME] table`, ruleName(fr.From))
		}
		for j, kn := range fr.Keys {
			switch {
			case slices.Contains(fr.Keys[:j], kn):
				c.errf(kp.elem(j+1), "%q is listed twice; each key makes one signature", kn)
				continue
			case keys[kn] == nil:
				hint := Suggest(kn, names)
				if hint == "" && len(names) > 0 {
					hint = "; the keys are " + orList(names)
				} else if hint == "" {
					hint = "; no keys are defined"
				}
				c.errf(kp.elem(j+1), "%s names key %q, but there is no [keys.%s] table%s", ruleName(fr.From), kn, toml.Key{kn}, hint)
				continue
			}
			r.Keys = append(r.Keys, kn)
		}

		if r.Identity != "" {
			c.identity(p.child("identity"), r.Identity, r.Keys, keys)
		}
		if fromOK {
			c.shadowed(p.child("from"), r.From, &sh)
			sh.add(i+1, r, keys)
		}
		rules = append(rules, r)
	}
	return rules
}

func ruleName(from string) string {
	if from == "" {
		return "this rule"
	}
	return fmt.Sprintf("the rule for %q", from)
}

// from checks a SigningTable pattern. Patterns are OpenDKIM's refile
// patterns without their trap: matched against the whole lower-cased
// address, '*' matches any run of characters (none included), and every
// other character stands for itself. OpenDKIM passes the rest into a
// POSIX regular expression ('?', '[', '(', '|' are live there), which is
// easy to get wrong, so those characters are refused here.
func (c *checker) from(p path, s string) bool {
	if prob := FromProblem(s); prob != "" {
		c.errf(p, "%s", prob)
		return false
	}
	return true
}

// FromProblem checks a [[signing]] from pattern as the configuration
// does, and says what is wrong with it, or "". import-opendkim checks
// what it translates with it.
func FromProblem(s string) string {
	if s == "" {
		return "missing: which From addresses this rule signs; " + fromForms
	}
	s = strings.ToLower(s)
	if strings.Trim(s, "*") == "" {
		return ""
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok {
		if hostnameProblem(strings.ReplaceAll(s, "*", "x")) == "" {
			// "*example.com" in an OpenDKIM refile table matches the
			// addresses whose domain ends in example.com, and so does
			// "*@*example.com" (with one '*' and no '@', the '@' can
			// only be inside the '*'); "*@example.com" would be the
			// domain alone.
			return fmt.Sprintf("%q has no '@' (did you mean %q?); %s", s, "*@"+s, fromForms)
		}
		return fmt.Sprintf("%q is not a From pattern; %s", s, fromForms)
	}
	if strings.Contains(domain, "@") {
		return fmt.Sprintf("%q has more than one '@'; %s", s, fromForms)
	}
	// A '*' stands for some characters; what is around it must still
	// be able to make an address.
	if strings.Trim(local, "*") != "" {
		if prob := localPartProblem(strings.ReplaceAll(local, "*", "x"), false); prob != "" {
			return fmt.Sprintf("%q: %s; %s", s, prob, fromForms)
		}
	}
	if strings.Trim(domain, "*") != "" {
		if prob := hostnameProblem(strings.ReplaceAll(domain, "*", "x")); prob != "" {
			return fmt.Sprintf("%q: the domain is not valid: %s; %s", s, prob, fromForms)
		}
	}
	return ""
}

// GlobMatch reports whether a SigningTable pattern (lower-case) matches
// s, the whole lower-cased address: anchored at both ends, '*' matching
// any run of characters. Bytes are compared: a literal never matches
// part of a UTF-8 sequence, since no sequence starts inside another.
func GlobMatch(pattern, s string) bool {
	px, sx := 0, 0
	star, next := -1, 0 // the last '*' seen, and where its run would end next
	for px < len(pattern) || sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; {
			case c == '*':
				star, next = px, sx+1
				px++
				continue
			case sx < len(s) && c == s[sx]:
				px++
				sx++
				continue
			}
		}
		// Mismatch: let the last '*' take one more byte. Earlier stars
		// need not: any longer run they took, the last can take too.
		if star < 0 || next > len(s) {
			return false
		}
		px, sx = star+1, next
		next++
	}
	return true
}

// localPartProblem checks a dot-atom local part (RFC 5322 §3.4.1), minus
// the characters that mean something in regular expressions: in a
// pattern they are far more likely a mistake than an address.
func localPartProblem(s string, percent bool) string {
	if s == "" {
		return "the local part is empty"
	}
	if strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return "the local part has a misplaced dot"
	}
	for _, r := range s {
		switch {
		case strings.ContainsRune(`^$|?()[]{}\`, r):
			return fmt.Sprintf("%q is not allowed: patterns are not regular expressions, '*' (any run of characters) is the only wildcard", r)
		case r == '*':
			return fmt.Sprintf("%q is not allowed here", r)
		case r == '%' && percent:
		case r >= utf8.RuneSelf, r < utf8.RuneSelf && isBare(byte(r)), strings.ContainsRune("!#&'+/=`~.", r):
		default:
			return fmt.Sprintf("%q is not allowed in a local part", r)
		}
	}
	return ""
}

// identity checks i=: "[local]@domain" whose domain is d= or a subdomain
// of it, RFC 6376 §3.5, or every signature of the rule fails to verify.
// https://www.rfc-editor.org/rfc/rfc6376#section-3.5
func (c *checker) identity(p path, id string, names []string, keys map[string]*Key) {
	at := strings.LastIndexByte(id, '@')
	if at < 0 {
		c.errf(p, `%q: write "@domain" or "user@domain" (the i= tag); '%%' stands for the From domain`, id)
		return
	}
	local, domain := id[:at], strings.ToLower(id[at+1:])
	if local != "" {
		if prob := localPartProblem(local, true); prob != "" {
			c.errf(p, "%q: %s", id, prob)
			return
		}
	}
	if prob := hostnameProblem(strings.ReplaceAll(domain, "%", "example.com")); prob != "" {
		c.errf(p, "%q: the domain is not valid: %s", id, prob)
		return
	}
	for _, n := range names {
		d := keys[n].Domain
		if strings.Contains(d, "%") != strings.Contains(domain, "%") {
			continue // which domains meet is only known per message
		}
		if domain != d && !strings.HasSuffix(domain, "."+d) {
			c.errf(p, "the domain of %q must be %q or a subdomain of it, the domain of key %q (RFC 6376 §3.5)", id, d, n)
		}
	}
}

// shadowing records the rules that win over any later rule their pattern
// covers: the SigningTable is first match wins. A rule lets mail through
// to later rules only when a key file named with '%' is missing for the
// From domain, or a key's query finds no row for it (see keystore), so
// only rules without such keys shadow.
type shadowing struct {
	first map[string]shadower // by pattern, the first rule with it
	globs []shadower          // the first rule of each pattern of none of the four fixed shapes
	all   []shadower          // the first rule of each pattern
}

type shadower struct {
	n    int // signing[n], from 1
	rule *SigningRule
}

func (sh *shadowing) add(n int, r *SigningRule, keys map[string]*Key) {
	for _, k := range r.Keys {
		if strings.Contains(keys[k].File, "%") || keys[k].Query != "" {
			return
		}
	}
	if sh.first == nil {
		sh.first = map[string]shadower{}
	}
	if _, ok := sh.first[r.From]; ok {
		return
	}
	e := shadower{n, r}
	sh.first[r.From] = e
	sh.all = append(sh.all, e)
	if !fixedShape(r.From) {
		sh.globs = append(sh.globs, e)
	}
}

// fixedShape: "*", "*@dom", "*@*.dom" or "local@dom", with no other '*'.
func fixedShape(from string) bool {
	if from == "*" {
		return true
	}
	local, domain, _ := strings.Cut(from, "@")
	domain = strings.TrimPrefix(domain, "*.")
	return local == "*" && !strings.Contains(domain, "*") || !strings.Contains(from, "*")
}

// shadowed reports a rule that an earlier rule always wins over, when
// that can be proven; it never reports a rule that can be reached. For a
// pattern of the fixed shapes, the fixed patterns that match every
// address it matches are few: "*", from itself, "*@dom" for "user@dom",
// and "*@*.parent" for each parent domain; looking them up keeps this
// linear in the number of rules. Beyond those, an earlier pattern covers
// from when it matches from's text, its '*' taken as a character: each
// '*' of from is then inside a run one of the earlier pattern's '*'
// matches, which can match whatever from's '*' does.
func (c *checker) shadowed(p path, from string, sh *shadowing) {
	var first shadower
	consider := func(e shadower) {
		if first.rule == nil || e.n < first.n {
			first = e
		}
	}
	if fixedShape(from) {
		cands := []string{"*", from}
		local, domain, _ := strings.Cut(from, "@")
		if local != "*" {
			cands = append(cands, "*@"+domain)
		}
		domain = strings.TrimPrefix(domain, "*.")
		for {
			_, parent, ok := strings.Cut(domain, ".")
			if !ok {
				break
			}
			cands = append(cands, "*@*."+parent)
			domain = parent
		}
		for _, cand := range cands {
			if e, ok := sh.first[cand]; ok {
				consider(e)
			}
		}
		for _, e := range sh.globs {
			if GlobMatch(e.rule.From, from) {
				consider(e)
			}
		}
	} else {
		for _, e := range sh.all {
			if GlobMatch(e.rule.From, from) {
				consider(e)
			}
		}
	}
	if first.rule != nil {
		c.errf(p, "%q is never used: signing[%d] (%s, from = %q) matches first, and the first match wins; move this rule above it",
			from, first.n, c.where(first.rule.Line), first.rule.From)
	}
}

func (c *checker) where(line int) string {
	if line == 0 {
		return c.file
	}
	return fmt.Sprintf("line %d", line)
}
