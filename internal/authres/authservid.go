package authres

import "strings"

// ClaimsAuthservID reports whether an Authentication-Results field value
// claims to come from authserv-id id (RFC 8601 §2.2: the value starts with
// the authserv-id, possibly after comments, and it may be a quoted-string).
// The comparison ignores case, and also matches OpenDKIM's "id/queue-id"
// form, so that a forged field cannot slip through by spelling. A value we
// cannot parse claims nothing: other hosts' fields are not ours to delete.
func ClaimsAuthservID(value, id string) bool {
	got, ok := authservID(value)
	if !ok || id == "" {
		return false
	}
	if sameID(got, id) {
		return true
	}
	// OpenDKIM's "id/queue-id": a '/' where our id (give or take a final
	// dot) would end.
	for i := max(len(id)-1, 0); i <= len(id)+1 && i < len(got); i++ {
		if got[i] == '/' && sameID(got[:i], id) {
			return true
		}
	}
	return false
}

// sameID compares authserv-ids as host names: without regard to case or
// to a final dot, which a lenient reader downstream would also ignore.
func sameID(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

// authservID extracts the authserv-id from an A-R value.
func authservID(v string) (string, bool) {
	i := skipCFWS(v, 0)
	if i < 0 || i >= len(v) {
		return "", false
	}
	if v[i] == '"' {
		var b strings.Builder
		for i++; i < len(v); i++ {
			switch c := v[i]; c {
			case '\\':
				if i+1 < len(v) {
					i++
					b.WriteByte(v[i])
				}
			case '"':
				return b.String(), b.Len() > 0
			case '\r', '\n':
			default:
				b.WriteByte(c)
			}
		}
		return "", false
	}
	j := i
	for j < len(v) && !strings.ContainsRune(" \t\r\n;(", rune(v[j])) {
		j++
	}
	return v[i:j], j > i
}

// skipCFWS skips white space and (nested, escaped) comments from i; -1 for
// an unterminated comment.
func skipCFWS(v string, i int) int {
	depth := 0
	for ; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0, c == ' ', c == '\t', c == '\r', c == '\n':
		default:
			return i
		}
	}
	if depth > 0 {
		return -1
	}
	return i
}
