// Package opendkim reads an OpenDKIM configuration (opendkim.conf and the
// tables it names) and translates it into a dkimmilter configuration that
// signs with the same keys and selectors, so that no DNS record changes.
//
// Every setting found gets a disposition: translated (to what), not needed
// (why), or not supported (and whether that changes which mail is signed,
// how, or what happens to inbound mail). The translation follows what
// OpenDKIM 2.11.0-Beta2, the version distributions ship, does: its lookup
// orders, its defaults, and its bugs where an admin relied on them.
package opendkim

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Setting is one line of opendkim.conf (or of a file it includes).
type Setting struct {
	Name  string // as OpenDKIM spells it when known ("KeyTable"), else as written
	Value string // the rest of the line, trimmed
	File  string
	Line  int
}

// Where is "FILE:LINE".
func (s Setting) Where() string { return fmt.Sprintf("%s:%d", s.File, s.Line) }

// maxInclude is OpenDKIM's nesting limit for Include.
const maxInclude = 5

// ErrInclude is returned for an Include nested deeper than OpenDKIM allows
// or one that includes itself.
var ErrInclude = errors.New("include nested too deeply")

// readConf reads an opendkim.conf and every file it includes, in order.
// As in OpenDKIM, names are case-insensitive, '#' starts a comment, and a
// name is followed by whitespace and its value. Files are read under root
// (see Options.Root); path and the names in messages are as written.
func readConf(root, path string) ([]Setting, error) {
	var out []Setting
	err := readConfDepth(root, path, 0, &out)
	return out, err
}

func readConfDepth(root, path string, depth int, out *[]Setting) error {
	if depth > maxInclude {
		return fmt.Errorf("%s: %w (OpenDKIM allows %d levels; does it include itself?)", path, ErrInclude, maxInclude)
	}
	return readLines(root, path, func(n int, name, value string) error {
		s := Setting{Name: canonicalName(name), Value: value, File: path, Line: n}
		if strings.EqualFold(name, "Include") {
			inc := s.Value
			if inc == "" {
				return fmt.Errorf("%s: Include without a file name", s.Where())
			}
			if !filepath.IsAbs(inc) {
				inc = filepath.Join(filepath.Dir(path), inc)
			}
			*out = append(*out, s)
			if err := readConfDepth(root, inc, depth+1, out); err != nil {
				return fmt.Errorf("%s: Include: %w", s.Where(), err)
			}
			return nil
		}
		*out = append(*out, s)
		return nil
	})
}

// readLines reads a file the way OpenDKIM reads both opendkim.conf and its
// flat data sets: '#' to the end of the line is a comment, blank lines are
// skipped, and a line is a key, whitespace, then a value (trimmed; "" when
// there is none). fn gets each with its line number; an error from it
// stops the reading and is returned as it is.
func readLines(root, path string, fn func(n int, key, value string) error) error {
	f, err := os.Open(underRoot(root, path))
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v := line, ""
		if i := strings.IndexAny(line, " \t"); i >= 0 {
			k, v = line[:i], strings.TrimSpace(line[i+1:])
		}
		if err := fn(n, k, v); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// boolValue reads an OpenDKIM boolean: only the first character counts.
func boolValue(s string) (value, ok bool) {
	if s == "" {
		return false, false
	}
	switch s[0] {
	case 'T', 't', 'Y', 'y', '1':
		return true, true
	case 'F', 'f', 'N', 'n', '0':
		return false, true
	}
	return false, false
}

// underRoot is where a path of the OpenDKIM configuration is read.
func underRoot(root, path string) string {
	if root == "" {
		return path
	}
	// Cleaned as an absolute path first, so that ".." stays under root.
	return filepath.Join(root, filepath.Clean("/"+path))
}
