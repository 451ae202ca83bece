package dkim

import (
	"fmt"
	"strings"
)

// NameProblem checks a domain or selector that we name: in s=, d=, a DNS
// name, a key file name. It says what is wrong, or "" when nothing is: one or more labels of letters, digits, '-' and '_'
// (RFC 6376 §3.1 with '_' as DNS allows), so that nothing like "../" or
// '%' reaches the path. https://www.rfc-editor.org/rfc/rfc6376#section-3.1
func NameProblem(s string) string {
	if s == "" {
		return "it is empty"
	}
	if len(s) > 253 {
		return "it is longer than the 253 characters of a DNS name"
	}
	for _, l := range strings.Split(s, ".") {
		switch {
		case l == "":
			return "it has an empty label"
		case len(l) > 63:
			return fmt.Sprintf("the label %q is longer than 63 characters", l)
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Sprintf("the label %q starts or ends with '-'", l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Sprintf("%q is not allowed", r)
			}
		}
	}
	return ""
}

// DNSName is the name a key record is published at, RFC 6376 §3.6.2.1:
// SELECTOR._domainkey.DOMAIN, without the final dot.
// https://www.rfc-editor.org/rfc/rfc6376#section-3.6.2.1
func DNSName(selector, domain string) string {
	return selector + "._domainkey." + strings.TrimSuffix(domain, ".")
}
