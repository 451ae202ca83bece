package dkim

import (
	"net/mail"
	"strings"
)

// FromAddresses returns the addresses of the mailboxes in a From field
// value (RFC 5322 §3.6.2), in order. Real mail is not always valid: when
// the value does not parse, it falls back to the last <...> holding an
// '@', then to the first word with an '@', and returns that one address;
// nil when there is none. The signer signs for the first address, like
// OpenDKIM; DMARC needs them all in one domain.
// https://www.rfc-editor.org/rfc/rfc5322#section-3.6.2
func FromAddresses(value string) []string {
	v := strings.TrimSpace(value)
	if list, err := mail.ParseAddressList(v); err == nil && len(list) > 0 {
		addrs := make([]string, len(list))
		for i, a := range list {
			addrs[i] = a.Address
		}
		return addrs
	}
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			a := strings.TrimSpace(v[i+1 : i+j])
			if strings.Contains(a, "@") {
				return []string{a}
			}
		}
	}
	for _, w := range strings.Fields(v) {
		w = strings.Trim(w, "<>,;\"")
		if strings.Contains(w, "@") {
			return []string{w}
		}
	}
	return nil
}
