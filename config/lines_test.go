package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestIndexLines(t *testing.T) {
	doc := `# comment with [brackets] and key = "value"
top = "a # not a comment"   # comment
multi = """
[not.a.table]
x = 1
"""""
lit = '''
still = "a string" ]
'''
arr = [
  "one",   # a comment with ]
  [2, 3],
  { a = 1 },
  "[four]",
]
"quoted.key" = 1
dotted . key = true
when = 1979-05-27 07:32:00Z
[tab]
n = -1.5e3
inl = { a = 1, b = { c = "}" },
        d = [1] }
[[aot]]
x = 0x1F
[[aot]]
x = 2
[aot.sub]
y = 3
[[aot.list]]
z = 4
['lit key'."q\"k"]
v = 07:32:00
`
	var m map[string]any
	if _, err := toml.Decode(doc, &m); err != nil {
		t.Fatalf("the test document is not TOML: %v", err)
	}
	ix := indexLines([]byte(doc))
	for _, tc := range []struct {
		key  string
		line int
		kind string
	}{
		{"top", 2, kindString},
		{"multi", 3, kindString},
		{"lit", 7, kindString},
		{"arr", 10, kindArray},
		{"arr[1]", 11, kindString},
		{"arr[2]", 12, kindArray},
		{"arr[3]", 13, kindTable},
		{"arr[3].a", 13, kindInteger},
		{"arr[4]", 14, kindString},
		{`"quoted.key"`, 16, kindInteger},
		{"dotted", 17, kindTable},
		{"dotted.key", 17, kindBool},
		{"when", 18, kindDatetime},
		{"tab", 19, kindTable},
		{"tab.n", 20, kindFloat},
		{"tab.inl.b.c", 21, kindString},
		{"tab.inl.d", 22, kindArray},
		{"aot[1]", 23, kindTables},
		{"aot[1].x", 24, kindInteger},
		{"aot[2].x", 26, kindInteger},
		{"aot[2].sub.y", 28, kindInteger},
		{"aot[2].list[1].z", 30, kindInteger},
		{`"lit key"."q\"k".v`, 32, kindDatetime},
	} {
		var got *keyPos
		for i := range ix.keys {
			if ix.keys[i].path.String() == tc.key {
				got = &ix.keys[i]
				break
			}
		}
		if got == nil {
			t.Errorf("%s: not indexed", tc.key)
			continue
		}
		if got.line != tc.line || got.kind != tc.kind {
			t.Errorf("%s: line %d kind %s, want line %d kind %s", tc.key, got.line, got.kind, tc.line, tc.kind)
		}
	}
	for _, k := range ix.keys {
		if k.path[0].name == "not" || k.path[0].name == "still" || k.path[0].name == "x" {
			t.Errorf("indexed %s from inside a string", k.path)
		}
	}
	if t.Failed() {
		for _, k := range ix.keys {
			t.Logf("%d %s %s", k.line, k.path, k.kind)
		}
	}
	if got := ix.line(keyPath("aot", "missing").elem(0)); got != 0 {
		t.Errorf("line(aot.missing) = %d, want 0 (aot itself has no plain entry)", got)
	}
	if got := ix.line(path{{name: "aot", index: 2}, {name: "missing"}}); got != 25 {
		t.Errorf("line(aot[2].missing) = %d, want 25", got)
	}
}

// FuzzParse checks that no input makes Parse or the line index panic or
// hang, that every error names the file and says something (the admin
// must be able to find and fix it), and that a file parses the same every
// time. The seeds are the test configs and testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.toml")
	bad, _ := filepath.Glob("testdata/bad/*.toml")
	for _, file := range append(append(files, bad...), "example.toml") {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		indexLines(data)
		cfg, err := Parse("fuzz.toml", data)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", cfg, err)
		}
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %T %v is not a non-empty Errors", err, err)
			}
			for _, e := range errs {
				if e.File != "fuzz.toml" || strings.TrimSpace(e.Msg) == "" || e.Line < 0 {
					t.Fatalf("error without a file, a line or a message: %#v", e)
				}
			}
			return
		}
		again, err := Parse("fuzz.toml", data)
		if err != nil || !reflect.DeepEqual(cfg, again) {
			t.Fatalf("a second Parse differs: %v", err)
		}
	})
}
