package keystore

import (
	"fmt"
	"strings"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// maxTXTString is the longest character-string a TXT record holds: one
// length octet, RFC 1035 §3.3. https://www.rfc-editor.org/rfc/rfc1035#section-3.3
const maxTXTString = 255

// Record returns the key record to publish for pk, RFC 6376 §3.6.1:
// "v=DKIM1; k=rsa; p=…" with p= the base64 SubjectPublicKeyInfo, or
// "v=DKIM1; k=ed25519; p=…" with p= the raw 32-byte public key, RFC 8463
// §4.2 (https://www.rfc-editor.org/rfc/rfc8463#section-4.2), not the SPKI
// that openssl prints and that opendkim-genkey's --ed25519 gets wrong.
// k= is written even for RSA, its default, so the record says what it is.
// It panics for a key type that this package never makes.
func Record(pk *PrivateKey) string {
	kt, p, err := dkim.EncodePublicKey(pk.Signer.Public())
	if err != nil {
		panic("keystore: " + err.Error())
	}
	return "v=DKIM1; k=" + kt + "; p=" + p
}

// RevokedRecord is the record that retires a key of type kt: an empty p=
// means "revoked" (RFC 6376 §3.6.1), which verifiers report as such,
// where a deleted record looks like a typo or a DNS failure.
// https://www.rfc-editor.org/rfc/rfc6376#section-3.6.1
func RevokedRecord(kt string) string {
	return "v=DKIM1; k=" + kt + "; p="
}

// txtStrings splits a record value into the character-strings of a TXT
// record, each at most 255 bytes (RFC 1035 §3.3). Verifiers join them with
// nothing in between, RFC 6376 §3.6.2.2
// (https://www.rfc-editor.org/rfc/rfc6376#section-3.6.2.2), so any split
// is valid; a value that fits stays whole, and a longer one is split
// before "p=" and then every 255 bytes, so that the tags read on their own
// and the key is in as few strings as possible. (opendkim-genkey splits
// every 250 characters from the start.)
func txtStrings(value string) []string {
	if len(value) <= maxTXTString {
		return []string{value}
	}
	var out []string
	head, p := value, ""
	if i := pTagStart(value); i > 0 {
		head, p = value[:i], value[i:]
	}
	for _, part := range []string{head, p} {
		for len(part) > maxTXTString {
			out = append(out, part[:maxTXTString])
			part = part[maxTXTString:]
		}
		if part != "" {
			out = append(out, part)
		}
	}
	return out
}

// pTagStart is the offset of the p= tag in a key record, or -1.
func pTagStart(value string) int {
	for i := 0; i < len(value); {
		j := strings.IndexByte(value[i:], ';')
		tag := value[i:]
		if j >= 0 {
			tag = value[i : i+j]
		}
		trimmed := strings.TrimLeft(tag, " \t\r\n")
		name, _, _ := strings.Cut(trimmed, "=")
		if strings.TrimSpace(name) == "p" {
			return i + len(tag) - len(trimmed)
		}
		if j < 0 {
			break
		}
		i += j + 1
	}
	return -1
}

// ZoneLine renders a TXT record as one zone-file line (RFC 1035 §5.1):
//
//	s202611._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; " "p=MIIB…" "…" )
//
// name is made absolute. The value is split by txtStrings before quoting,
// so the 255-byte limit applies to the bytes the resolver sees and an
// escape (\" \\ \DDD) is never cut in two.
// https://www.rfc-editor.org/rfc/rfc1035#section-5.1
func ZoneLine(name, value string) string {
	var b strings.Builder
	b.WriteString(strings.TrimSuffix(name, ".") + ". IN TXT (")
	for _, s := range txtStrings(value) {
		b.WriteString(" ")
		b.WriteString(quoteTXT(s))
	}
	b.WriteString(" )")
	return b.String()
}

// quoteTXT quotes one character-string for a zone file.
func quoteTXT(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
