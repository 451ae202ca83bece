package config

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode"
)

// Sender binding: sign.sender_binding and [sign.senders]. A client that
// authenticated with SASL and is not an internal host is a user, and a user
// may have mail signed only for the From domains its login may use;
// otherwise one tenant of a shared host (or anyone holding one stolen
// password) gets any other tenant's domain signed, and that domain's DMARC
// policy no longer protects it. Postfix's reject_sender_login_mismatch
// binds the envelope sender only, not the From field DKIM and DMARC
// are about.

// SenderBinding is sign.sender_binding.
type SenderBinding uint8

const (
	// BindDomain (the default): an authenticated login may have mail
	// signed for its own domain and its subdomains ("alice@a.example":
	// a.example, x.a.example), and for what [sign.senders] lists for it.
	// A login without a domain part may use any From when the signing
	// rules sign for one domain only, else only what [sign.senders]
	// lists for it.
	BindDomain SenderBinding = iota
	// BindOff: any From a [[signing]] rule matches, as before the
	// binding existed.
	BindOff
)

var bindingWords = [...]string{BindDomain: "domain", BindOff: "off"}

// String is the value as the file writes it.
func (b SenderBinding) String() string {
	if int(b) < len(bindingWords) {
		return bindingWords[b]
	}
	return fmt.Sprintf("binding%d", b)
}

// senderBinding reads sign.sender_binding and [sign.senders] into out.
func (c *checker) senderBinding(out *Sign, f *fileSign) {
	p := keyPath("sign", "sender_binding")
	switch f.SenderBinding {
	case "domain":
		out.SenderBinding = BindDomain
	case "off":
		out.SenderBinding = BindOff
	default:
		c.errf(p, `%q is not a sender binding; write "domain" (an authenticated login may have mail signed only for its own domain, its subdomains and what [sign.senders] lists for it) or "off" (for any From a [[signing]] rule matches)`, f.SenderBinding)
	}

	if len(f.Senders) == 0 {
		return
	}
	out.Senders = make(map[string][]string, len(f.Senders))
	logins := make([]string, 0, len(f.Senders))
	for l := range f.Senders {
		logins = append(logins, l)
	}
	// In file order, so that a duplicate is reported where it is
	// repeated; by name where lines are not known.
	sort.Strings(logins)
	sort.SliceStable(logins, func(i, j int) bool {
		return c.ix.line(keyPath("sign", "senders", logins[i])) < c.ix.line(keyPath("sign", "senders", logins[j]))
	})
	seen := map[string]string{}
	for _, login := range logins {
		lp := keyPath("sign", "senders", login)
		if prob := loginProblem(login); prob != "" {
			c.errf(lp, "%s", prob)
			continue
		}
		key := strings.ToLower(login)
		if other, dup := seen[key]; dup {
			c.errf(lp, "%q is login %q again: logins are matched without regard to case; keep one", login, other)
			continue
		}
		seen[key] = login
		list := f.Senders[login]
		if len(list) == 0 {
			c.errf(lp, `is empty; list the From addresses or domains login %q may use besides its own domain, e.g. ["sales@example.com", "example.org"], or remove it`, login)
			continue
		}
		allowed := make([]string, 0, len(list))
		for i, e := range list {
			if prob := senderProblem(e); prob != "" {
				c.errf(lp.elem(i+1), "%q %s", e, prob)
				continue
			}
			e = strings.ToLower(strings.TrimSuffix(e, "."))
			if slices.Contains(allowed, e) {
				c.errf(lp.elem(i+1), "%q is listed twice", list[i])
				continue
			}
			allowed = append(allowed, e)
		}
		out.Senders[key] = allowed
	}
}

// loginProblem checks a [sign.senders] login as Postfix passes it in
// {auth_authen}: one word, with or without a domain part. It returns ""
// when the login is usable, else what is wrong.
func loginProblem(login string) string {
	switch {
	case login == "":
		return `the login is empty; write the SASL login as Postfix logs it (sasl_username=), e.g. "alice@example.com" or "alice"`
	case strings.IndexFunc(login, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Sprintf("the login %q has a space or a control character; write it as Postfix logs it (sasl_username=)", login)
	case strings.HasSuffix(login, "@"):
		return fmt.Sprintf("the login %q has an empty domain part; write %q for a login without one", login, strings.TrimRight(login, "@"))
	}
	return ""
}

// senderForms is the hint for a [sign.senders] entry.
const senderForms = `write a From address ("sales@example.com"), a domain ("example.com", which covers its subdomains too) or "*" (any From a [[signing]] rule matches)`

// senderProblem checks one [sign.senders] entry; "" when it is usable.
func senderProblem(e string) string {
	if e == "*" {
		return ""
	}
	d := strings.TrimSuffix(e, ".")
	if i := strings.LastIndexByte(d, '@'); i >= 0 {
		local, domain := d[:i], d[i+1:]
		switch {
		case local == "" || local == "*":
			return fmt.Sprintf("is not an address; write %q for every address of the domain (and its subdomains)", domain)
		case strings.Contains(local, "*"):
			return "has a wildcard: only whole addresses and domains are allowed; " + senderForms
		}
		if prob := localPartProblem(local, false); prob != "" {
			return "is not an address: " + prob + "; " + senderForms
		}
		if prob := hostnameProblem(domain); prob != "" {
			return "is not an address: the domain is not valid: " + prob + "; " + senderForms
		}
		return ""
	}
	if rest, ok := strings.CutPrefix(d, "*."); ok {
		return fmt.Sprintf("has a wildcard; write %q: a domain covers its subdomains", rest)
	}
	if strings.Contains(d, "*") {
		return "has a wildcard: only whole addresses and domains are allowed; " + senderForms
	}
	if prob := hostnameProblem(d); prob != "" {
		return "is not a domain: " + prob + "; " + senderForms
	}
	return ""
}

// SenderEntry checks one entry of what a login may use, coming from
// elsewhere than this file (a row of database.senders_query), as
// [sign.senders] checks its own: it returns the entry as the binding
// compares it (lower-case, without a trailing dot), or, when it is not
// one of the forms, what is wrong with it and how to write it.
func SenderEntry(e string) (entry, problem string) {
	if prob := senderProblem(e); prob != "" {
		return "", fmt.Sprintf("%q %s", e, prob)
	}
	return strings.ToLower(strings.TrimSuffix(e, ".")), ""
}
