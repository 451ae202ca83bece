package opendkim

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// A dataset is OpenDKIM's name for a table given in a setting: a flat file
// ("file:/path" or a bare absolute path), a wildcard pattern file
// ("refile:/path"), or a comma-separated list ("csl:a,b", also the form of
// anything without a known prefix). Other types (BerkeleyDB, SQL, LDAP,
// Lua, memcache, LMDB) are not read: their contents are not in the files.
type dataset struct {
	kind    string // "file", "refile" or "csl"
	path    string // of a file or refile, absolute
	entries []entry
	// relative is set when the path was relative: OpenDKIM resolved it
	// against its working directory, the import against opendkim.conf's.
	relative bool
}

// entry is one key and its value: "key value" on a line of a file, "key"
// or "key=value" in a csl list.
type entry struct {
	key, value string
	where      string // FILE:LINE, or the setting's place for a csl
}

// ErrDatasetType marks a data set whose type the import cannot read.
var ErrDatasetType = errors.New("data set type not supported")

var otherTypes = []string{"db", "dsn", "ldap", "ldaps", "ldapi", "lua", "memcache", "mdb", "erlang"}

// openDataset reads the data set a setting names; dir resolves relative
// file names.
func openDataset(s Setting, root, dir string) (*dataset, error) {
	spec := s.Value
	prefix, rest, hasColon := strings.Cut(spec, ":")
	switch {
	case hasColon && prefix == "file", hasColon && prefix == "refile":
		return readDatasetFile(root, prefix, rest, dir)
	case hasColon && prefix == "csl":
		return cslDataset(rest, s.Where()), nil
	case strings.HasPrefix(spec, "/"):
		if strings.HasSuffix(spec, ".db") {
			return nil, fmt.Errorf("%w: a path ending in .db is a Berkeley DB; dump it to a flat file (\"key value\" lines) and name that file", ErrDatasetType)
		}
		return readDatasetFile(root, "file", spec, dir)
	case hasColon:
		for _, t := range otherTypes {
			if prefix == t {
				return nil, fmt.Errorf("%w: %s: data sets are not read; write its contents to a flat file (\"key value\" lines) and name that file", ErrDatasetType, t)
			}
		}
	}
	return cslDataset(spec, s.Where()), nil
}

func cslDataset(list, where string) *dataset {
	d := &dataset{kind: "csl"}
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, _ := strings.Cut(item, "=")
		d.entries = append(d.entries, entry{key: strings.TrimSpace(k), value: strings.TrimSpace(v), where: where})
	}
	return d
}

func readDatasetFile(root, kind, path, dir string) (*dataset, error) {
	d := &dataset{kind: kind, path: path}
	if !filepath.IsAbs(path) {
		d.relative = true
		d.path = filepath.Join(dir, path)
	}
	err := readLines(root, d.path, func(n int, k, v string) error {
		d.entries = append(d.entries, entry{key: k, value: v, where: fmt.Sprintf("%s:%d", d.path, n)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}
