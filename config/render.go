package config

import (
	"fmt"
	"strings"
)

// The TOML that commands print for an admin to paste into the file:
// keys gen and keys rotate. It is rendered here, next to the parser that
// reads it back, and a test parses what it renders.

// KeyName suggests a [keys.NAME] for a key: DOMAIN-SELECTOR with dots
// replaced by '-' ("example-com-s202611"), so that it needs no quoting in
// TOML and says which record it is.
func KeyName(domain, selector string) string {
	return strings.ReplaceAll(strings.TrimSuffix(domain, ".")+"-"+selector, ".", "-")
}

// KeyTOML returns the [keys.NAME] table for a key, as Parse reads it
// (see Key).
func KeyTOML(name, domain, selector, file string) string {
	return fmt.Sprintf("[keys.%s]\ndomain   = %s\nselector = %s\nfile     = %s\n",
		tomlKey(name), TOMLString(domain), TOMLString(selector), TOMLString(file))
}

// SigningTOML returns a [[signing]] table that signs mail from the
// pattern from with keys (see SigningRule).
func SigningTOML(from string, keys []string) string {
	return fmt.Sprintf("[[signing]]\nfrom = %s\nkeys = %s\n", TOMLString(from), TOMLList(keys))
}

// TOMLList renders strings as a TOML array: ["a", "b"].
func TOMLList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = TOMLString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// tomlKey writes a table key bare when TOML allows it, quoted otherwise.
func tomlKey(k string) string {
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return TOMLString(k)
		}
	}
	if k == "" {
		return `""`
	}
	return k
}

// TOMLString quotes s as a TOML basic string: Go's quoting is the same for
// printable text; other characters become \uXXXX, which TOML has and Go's
// \x escapes are not.
func TOMLString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < ' ' || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
