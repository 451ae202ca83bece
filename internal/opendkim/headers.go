package opendkim

import (
	"slices"
	"strings"
)

// OpenDKIM's default SignHeaders: RFC 6376 §5.4's "SHOULD sign" list
// (libopendkim's dkim_should_signhdrs). Message-ID, MIME-Version and
// Content-Type are not in it.
var defaultSignHeaders = []string{
	"from", "reply-to", "subject", "date", "to", "cc", "resent-date",
	"resent-from", "resent-sender", "resent-to", "resent-cc", "in-reply-to",
	"references", "list-id", "list-help", "list-unsubscribe", "list-subscribe",
	"list-post", "list-owner", "list-archive",
}

// OpenDKIM's default OmitHeaders, as the code has it.
var defaultOmitHeaders = []string{"return-path", "received", "comments", "keywords"}

// headerList reads a header list setting: a plain list replaces the
// default, "*" stands for the default, "+X" adds and "-X" removes.
func (t *translator) headerList(n *Note, def []string) []string {
	d := t.dataset(n)
	if d == nil {
		return slices.Clone(def)
	}
	var out []string
	for _, e := range d.entries {
		h := strings.ToLower(e.key)
		switch {
		case h == "*":
			for _, x := range def {
				out = appendNew(out, x)
			}
		case h == ".":
			// OmitHeaders "." omits nothing.
		case strings.HasPrefix(h, "+"):
			out = appendNew(out, h[1:])
		case strings.HasPrefix(h, "-"):
			out = slices.DeleteFunc(out, func(x string) bool { return x == h[1:] })
		default:
			out = appendNew(out, h)
		}
	}
	return out
}

// unsignable names fields dkimmilter refuses to sign: they change in
// transit (RFC 6376 §5.4.1).
func unsignable(h string) bool {
	switch {
	case h == "received", h == "return-path", h == "authentication-results", h == "dkim-signature", strings.HasPrefix(h, "arc-"):
		return true
	}
	return false
}

func (t *translator) headers() {
	o := t.out
	sign := slices.Clone(defaultSignHeaders)
	o.headersComment = "OpenDKIM's default list (RFC 6376 §5.4's). dkimmilter's default also signs Message-ID, MIME-Version, Content-Type and more: remove this line to use it."
	sn := t.get("SignHeaders")
	if sn != nil {
		sign = t.headerList(sn, defaultSignHeaders)
		o.headersComment = ""
	}
	omit := defaultOmitHeaders
	on := t.get("OmitHeaders")
	if on != nil {
		omit = t.headerList(on, defaultOmitHeaders)
	}
	var oversign []string
	ovn := t.get("OversignHeaders")
	if ovn != nil {
		oversign = t.headerList(ovn, nil)
	}
	// From is always signed (RFC 6376 §5.4); omitted fields are never.
	if !slices.Contains(sign, "from") {
		sign = append([]string{"from"}, sign...)
	}
	var dropped []string
	sign = slices.DeleteFunc(sign, func(h string) bool {
		if slices.Contains(omit, h) && h != "from" {
			dropped = append(dropped, h)
			return true
		}
		return false
	})
	// OversignHeaders lists a field in h= once more than it occurs: the
	// field is signed, so it belongs in headers too.
	for _, h := range oversign {
		if !slices.Contains(sign, h) && !unsignable(h) {
			sign = append(sign, h)
		}
	}
	var refused []string
	keep := func(h string) bool {
		if unsignable(h) {
			refused = appendNew(refused, h)
			return false
		}
		return true
	}
	sign = slices.DeleteFunc(sign, func(h string) bool { return !keep(h) })
	oversign = slices.DeleteFunc(oversign, func(h string) bool { return !keep(h) })
	o.headers, o.oversign = sign, oversign
	if oversign == nil {
		o.oversign = []string{}
	}
	refusedText := ""
	if len(refused) > 0 {
		refusedText = "; left out " + list(refused) + ": they change in transit and break the signature (RFC 6376 §5.4.1)"
	}
	if sn != nil && !sn.Affects {
		omitted := ""
		if on == nil && len(dropped) > 0 {
			omitted = "; " + list(dropped) + " left out: OpenDKIM's default OmitHeaders kept them unsigned"
		}
		sn.set(Translated, "sign.headers%s%s", omitted, refusedText)
		if len(refused) > 0 {
			sn.Affects = true
			sn.Disposition = NotSupported
		}
	}
	if on != nil && !on.Affects {
		if len(dropped) > 0 {
			on.set(Translated, "the omitted fields %s are left out of sign.headers", list(dropped))
		} else {
			on.set(NotNeeded, "none of these fields is in sign.headers")
		}
	}
	if ovn != nil && !ovn.Affects {
		ovn.set(Translated, "sign.oversign %s%s", list(oversign), refusedText)
	}
}
