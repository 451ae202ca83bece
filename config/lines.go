package config

import (
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// The toml package gives no positions for keys (MetaData has none) and, for
// arrays of tables, remembers only the position of the last element's key:
// a type error in the first of two [[signing]] tables is reported at the
// line of the second. So this file indexes the file itself: every key, with
// the line it is on and the TOML type of its value.
//
// It runs only on files the toml package has parsed without a syntax error,
// so it can be small; on anything else it must still end and not panic
// (the fuzz test checks), but its answers do not matter.

// pathPart is one component of a key path. index is set on the elements of
// arrays, counting from 1; 0 means the part is not an array element.
type pathPart struct {
	name  string
	index int
}

// path is a key path such as keys.example-rsa.selector or signing[2].keys.
type path []pathPart

func keyPath(names ...string) path {
	p := make(path, len(names))
	for i, n := range names {
		p[i].name = n
	}
	return p
}

// child returns p.name, leaving p alone.
func (p path) child(name string) path {
	return append(p[:len(p):len(p)], pathPart{name: name})
}

// elem returns p[i], the i-th element (from 1) of the array p names.
func (p path) elem(i int) path {
	q := append(path(nil), p...)
	q[len(q)-1].index = i
	return q
}

// String renders the path the way Error.Key shows it; names that are not
// bare keys are quoted, as toml.Key does.
func (p path) String() string {
	var b strings.Builder
	for i, part := range p {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(toml.Key{part.name}.String())
		if part.index > 0 {
			b.WriteString("[" + strconv.Itoa(part.index) + "]")
		}
	}
	return b.String()
}

// plain renders the path without indexes, as toml.Key and the toml
// package's error messages do.
func (p path) plain() string {
	k := make(toml.Key, len(p))
	for i, part := range p {
		k[i] = part.name
	}
	return k.String()
}

// Value kinds, named after the Go types the toml package decodes them to,
// because that is how its type errors name them.
const (
	kindString   = "string"
	kindInteger  = "int64"
	kindFloat    = "float64"
	kindBool     = "bool"
	kindDatetime = "time.Time"
	kindArray    = "[]any"
	kindTable    = "map[string]any"
	kindTables   = "[]map[string]any" // an element of [[array]]: the array's type
)

// keyPos is one key as written: table headers, keys, the implicit tables
// of dotted keys, and the elements of arrays.
type keyPos struct {
	path path
	line int
	kind string
}

type lineIndex struct {
	keys    []keyPos         // in file order
	first   map[string]int   // path.String() → line of its first mention
	byPlain map[string][]int // path.plain() → indexes in keys
	// deep is the first line with a key nested deeper than maxKeyDepth,
	// 0 if none; such keys are not indexed.
	deep int
}

// maxKeyDepth bounds key paths. The schema is three levels deep at most
// (keys.NAME.file), and the toml package, like the index, takes time
// quadratic in the depth: "a.a.a…" ten thousand bytes long took seconds.
const maxKeyDepth = 8

// deeper reports whether p may not grow, noting the line if so.
func (ix *lineIndex) deeper(p path, line int) bool {
	if len(p) < maxKeyDepth {
		return false
	}
	if ix.deep == 0 {
		ix.deep = line
	}
	return true
}

// line returns the line of p, or else of its nearest ancestor that is in
// the file; 0 when there is none.
func (ix *lineIndex) line(p path) int {
	for len(p) > 0 {
		if l, ok := ix.first[p.String()]; ok {
			return l
		}
		if p[len(p)-1].index > 0 {
			p = p.elem(0)
		} else {
			p = p[:len(p)-1]
		}
	}
	return 0
}

// at returns the line of p, or 0 when p is not in the file.
func (ix *lineIndex) at(p path) int { return ix.first[p.String()] }

// find returns the first key whose unindexed path is plain and whose value
// has the given kind ("" for any).
func (ix *lineIndex) find(plain, kind string) (keyPos, bool) {
	for _, i := range ix.byPlain[plain] {
		if kind == "" || ix.keys[i].kind == kind {
			return ix.keys[i], true
		}
	}
	return keyPos{}, false
}

func (ix *lineIndex) add(p path, line int, kind string) {
	ix.byPlain[p.plain()] = append(ix.byPlain[p.plain()], len(ix.keys))
	ix.keys = append(ix.keys, keyPos{path: append(path(nil), p...), line: line, kind: kind})
	if _, ok := ix.first[p.String()]; !ok {
		ix.first[p.String()] = line
	}
}

// scanner walks the TOML text. i is the offset, line the current line.
type scanner struct {
	s    string
	i    int
	line int
	ix   *lineIndex
	aot  map[string]int // path.String() of an array of tables → elements so far
}

func indexLines(data []byte) *lineIndex {
	sc := &scanner{s: string(data), line: 1, ix: &lineIndex{first: map[string]int{}, byPlain: map[string][]int{}}, aot: map[string]int{}}
	var table path
	for {
		sc.skipBlank(true)
		if sc.eof() {
			return sc.ix
		}
		start := sc.i
		if sc.s[sc.i] == '[' {
			table = sc.header()
		} else {
			sc.keyValue(table)
		}
		sc.skipLine()
		if sc.i == start { // never loop on input that is not TOML
			sc.next()
		}
	}
}

// header reads [a.b] or [[a.b]] and returns the table it opens, with the
// element index of every array of tables on the way.
func (sc *scanner) header() path {
	line := sc.line
	sc.i++
	array := sc.peek() == '['
	if array {
		sc.i++
	}
	names := sc.key()
	var p path
	for n, name := range names {
		if sc.ix.deeper(p, line) {
			break
		}
		p = p.child(name)
		last := n == len(names)-1
		if array && last {
			sc.aot[p.String()]++
		}
		if c := sc.aot[p.String()]; c > 0 {
			p = p.elem(c)
		}
		switch {
		case array && last:
			sc.ix.add(p, line, kindTables)
		default:
			sc.ix.add(p, line, kindTable)
		}
	}
	return p
}

// keyValue reads key = value inside table.
func (sc *scanner) keyValue(table path) {
	line := sc.line
	p := table
	names := sc.key()
	for n, name := range names {
		if sc.ix.deeper(p, line) {
			break
		}
		p = p.child(name)
		if n < len(names)-1 {
			sc.ix.add(p, line, kindTable) // dotted keys make tables
		}
	}
	sc.skipBlank(false)
	if sc.peek() != '=' {
		return
	}
	sc.i++
	sc.skipBlank(false)
	sc.value(p, line, true)
}

// value reads one value and records p with its kind. Elements of arrays
// are recorded too (sign.headers[3]), but only one level deep.
func (sc *scanner) value(p path, line int, record bool) {
	kind := kindString
	switch c := sc.peek(); {
	case c == '"' || c == '\'':
		sc.str()
	case c == '[':
		kind = kindArray
		if record {
			sc.ix.add(p, line, kind)
			record = false
		}
		sc.array(p, p[len(p)-1].index == 0)
	case c == '{':
		kind = kindTable
		if record {
			sc.ix.add(p, line, kind)
			record = false
		}
		sc.inlineTable(p)
	default:
		kind = sc.scalar()
	}
	if record {
		sc.ix.add(p, line, kind)
	}
}

func (sc *scanner) array(p path, recordElems bool) {
	sc.i++
	for n := 1; ; n++ {
		sc.skipBlank(true)
		if sc.eof() || sc.peek() == ']' {
			sc.i++
			return
		}
		start := sc.i
		sc.value(p.elem(n), sc.line, recordElems)
		sc.skipBlank(true)
		if sc.peek() == ',' {
			sc.i++
		} else if sc.i == start {
			sc.next()
		}
	}
}

// inlineTable reads { k = v, ... }. TOML 1.1, which the toml package
// speaks, lets inline tables span lines, so newlines are skipped here.
func (sc *scanner) inlineTable(p path) {
	sc.i++
	for {
		sc.skipBlank(true)
		if sc.eof() || sc.peek() == '}' {
			sc.i++
			return
		}
		start := sc.i
		sc.keyValue(p)
		sc.skipBlank(true)
		if sc.peek() == ',' {
			sc.i++
		} else if sc.i == start {
			sc.next()
		}
	}
}

// key reads a possibly dotted, possibly quoted key and returns its parts.
// It stops after the closing bracket of a header, or before the '='.
func (sc *scanner) key() []string {
	var names []string
	for {
		sc.skipBlank(false)
		switch c := sc.peek(); {
		case c == '"' || c == '\'':
			names = append(names, sc.str())
		default:
			start := sc.i
			for !sc.eof() && isBare(sc.s[sc.i]) {
				sc.i++
			}
			names = append(names, sc.s[start:sc.i])
		}
		sc.skipBlank(false)
		if sc.peek() != '.' {
			break
		}
		sc.i++
	}
	for sc.peek() == ']' {
		sc.i++
	}
	return names
}

// str reads a string in any of TOML's four forms and returns its value
// (escapes are decoded for the common cases; only keys need the value).
func (sc *scanner) str() string {
	q := sc.s[sc.i]
	if strings.HasPrefix(sc.s[sc.i:], strings.Repeat(string(q), 3)) {
		sc.i += 3
		var b strings.Builder
		for !sc.eof() {
			if q == '"' && sc.s[sc.i] == '\\' {
				sc.next()
				if !sc.eof() {
					sc.next()
				}
				continue
			}
			if strings.HasPrefix(sc.s[sc.i:], strings.Repeat(string(q), 3)) {
				sc.i += 3
				// """a"""" ends with up to two quotes that belong to the
				// value.
				for n := 0; n < 2 && sc.peek() == q; n++ {
					sc.i++
				}
				break
			}
			b.WriteByte(sc.s[sc.i])
			sc.next()
		}
		return b.String()
	}
	sc.i++
	var b strings.Builder
	for !sc.eof() && sc.s[sc.i] != q && sc.s[sc.i] != '\n' {
		c := sc.s[sc.i]
		if q == '"' && c == '\\' && sc.i+1 < len(sc.s) {
			sc.i++
			switch e := sc.s[sc.i]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'u', 'U':
				n := 4
				if e == 'U' {
					n = 8
				}
				if sc.i+n < len(sc.s) {
					if r, err := strconv.ParseUint(sc.s[sc.i+1:sc.i+1+n], 16, 32); err == nil {
						b.WriteRune(rune(r))
						sc.i += n
					}
				}
			default:
				b.WriteByte(e)
			}
			sc.i++
			continue
		}
		b.WriteByte(c)
		sc.i++
	}
	if sc.peek() == q {
		sc.i++
	}
	return b.String()
}

// scalar reads a number, boolean or date and returns its kind.
func (sc *scanner) scalar() string {
	start := sc.i
	for !sc.eof() && !strings.ContainsRune(" \t\r\n,]}#", rune(sc.s[sc.i])) {
		sc.i++
	}
	tok := sc.s[start:sc.i]
	// A date and a time may be separated by a space.
	if len(tok) == 10 && tok[4] == '-' && sc.i+1 < len(sc.s) && sc.s[sc.i] == ' ' && isDigit(sc.s[sc.i+1]) {
		sc.i++
		for !sc.eof() && !strings.ContainsRune(" \t\r\n,]}#", rune(sc.s[sc.i])) {
			sc.i++
		}
	}
	switch {
	case tok == "true" || tok == "false":
		return kindBool
	case len(tok) >= 5 && (tok[4] == '-' || tok[2] == ':') && isDigit(tok[0]):
		return kindDatetime
	case strings.HasPrefix(tok, "0x") || strings.HasPrefix(tok, "0o") || strings.HasPrefix(tok, "0b"):
		return kindInteger
	case strings.ContainsAny(tok, ".eE") || strings.Contains(tok, "inf") || strings.Contains(tok, "nan"):
		return kindFloat
	}
	return kindInteger
}

// skipBlank skips spaces, tabs and comments, and newlines too if nl.
func (sc *scanner) skipBlank(nl bool) {
	for !sc.eof() {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r':
			sc.i++
		case '\n':
			if !nl {
				return
			}
			sc.next()
		case '#':
			for !sc.eof() && sc.s[sc.i] != '\n' {
				sc.i++
			}
		default:
			return
		}
	}
}

// skipLine skips the rest of the line, comment included.
func (sc *scanner) skipLine() {
	for !sc.eof() && sc.s[sc.i] != '\n' {
		sc.i++
	}
}

func (sc *scanner) eof() bool { return sc.i >= len(sc.s) }

func (sc *scanner) peek() byte {
	if sc.eof() {
		return 0
	}
	return sc.s[sc.i]
}

// next moves one byte on, counting lines.
func (sc *scanner) next() {
	if sc.s[sc.i] == '\n' {
		sc.line++
	}
	sc.i++
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || c == '_' || c == '-'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
