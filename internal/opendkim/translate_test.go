package opendkim

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/dkimmilter/dkimmilter/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*/want.toml from the translation")

// Each directory of testdata stands for / on a host running OpenDKIM;
// want.toml is the translation of its /etc/opendkim.conf.
var translateCases = []struct {
	dir string
	// unsupported names the settings reported as not supported and
	// changing mail, in file order.
	unsupported []string
}{
	{"debian-default", nil},
	{"tutorial-tables", nil},
	{"single-key", nil},
	{"single-key-subdomains", nil},
	{"docker-mailserver", nil},
	{"long-lived", nil},
	{"multiple", nil},
	{"unsupported", []string{
		"KeyTable", "SigningTable", "ExemptDomains", "SignatureAlgorithm", "RequestReports",
		"MacroList", "PeerList", "SetupPolicyScript", "BogusOption", "On-Security",
	}},
}

func testOptions(dir string) Options {
	return Options{Root: filepath.Join("testdata", dir), Hostname: func() (string, error) { return "mx.example.com", nil }}
}

func TestTranslate(t *testing.T) {
	for _, tc := range translateCases {
		t.Run(tc.dir, func(t *testing.T) {
			res, err := Translate("/etc/opendkim.conf", testOptions(tc.dir))
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.dir, "want.toml")
			if *update {
				if err := os.WriteFile(golden, res.TOML, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if string(res.TOML) != string(want) {
				t.Errorf("translation differs from %s (go test -update rewrites it):\n%s", golden, res.TOML)
			}
			var got []string
			for _, n := range res.Unsupported() {
				got = append(got, n.Name)
			}
			if !slices.Equal(got, tc.unsupported) {
				t.Errorf("not supported and changing mail: %q, want %q", got, tc.unsupported)
			}
			// Every setting in the files has its note, and the output
			// lists each.
			for _, n := range res.Notes {
				if n.Text == "" {
					t.Errorf("%s: %s has no disposition", n.Where(), n.Name)
				}
				if !strings.Contains(string(res.TOML), "# "+n.Where()+": "+n.Name) {
					t.Errorf("%s: %s is not listed in the output", n.Where(), n.Name)
				}
			}
			if len(res.Notes) != countSettings(t, filepath.Join("testdata", tc.dir)) {
				t.Errorf("%d notes for %d settings", len(res.Notes), countSettings(t, filepath.Join("testdata", tc.dir)))
			}
			// The TOML is well formed whatever the config package knows.
			var m map[string]any
			if _, err := toml.Decode(string(res.TOML), &m); err != nil {
				t.Errorf("output is not TOML: %v", err)
			}
		})
	}
}

// countSettings counts the lines that are settings in the .conf files of
// a test host.
func countSettings(t *testing.T, root string) int {
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".conf") {
			return err
		}
		data, err := os.ReadFile(p)
		for _, l := range strings.Split(string(data), "\n") {
			l, _, _ = strings.Cut(l, "#")
			if strings.TrimSpace(l) != "" {
				n++
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The translation is a configuration dkimmilter loads, with the keys and
// rules the golden file shows.
func TestTranslationParses(t *testing.T) {
	for _, tc := range translateCases {
		t.Run(tc.dir, func(t *testing.T) {
			res, err := Translate("/etc/opendkim.conf", testOptions(tc.dir))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Parse("/etc/dkimmilter/dkimmilter.toml", res.TOML)
			if err != nil {
				var ce config.Errors
				errors.As(err, &ce)
				t.Fatalf("config.Parse: %v", err)
			}
			if got, want := len(cfg.Keys), strings.Count(string(res.TOML), "\n[keys."); got != want {
				t.Errorf("%d keys, want %d", got, want)
			}
			if got, want := len(cfg.Signing), strings.Count(string(res.TOML), "\n[[signing]]"); got != want {
				t.Errorf("%d signing rules, want %d", got, want)
			}
		})
	}
}
