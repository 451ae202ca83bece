package main

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// manSections splits a roff page at its .SH and .SS lines: heading (as
// written, quotes removed) to the text up to the next heading.
func manSections(page string) map[string]string {
	out := map[string]string{}
	heading := ""
	for _, line := range strings.SplitAfter(page, "\n") {
		if h, ok := strings.CutPrefix(line, ".SS "); ok {
			heading = strings.Trim(strings.TrimSpace(h), `"`)
			continue
		}
		if h, ok := strings.CutPrefix(line, ".SH "); ok {
			heading = strings.Trim(strings.TrimSpace(h), `"`)
			continue
		}
		out[heading] += line
	}
	return out
}

// flagNames lists the flags a command's -h prints ("  -name type").
func flagNames(args ...string) []string {
	_, out, errs := runCmd(append(args, "-h")...)
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z][a-z-]*)`).FindAllStringSubmatch(out+errs, -1) {
		names = append(names, m[1])
	}
	return names
}

// manCommands is what dkimmilter.8 must document: each command (keys by
// subcommand) under a heading of its own, with every flag it takes.
func manCommands() map[string][]string {
	want := map[string][]string{}
	for _, c := range commands {
		if c.name == "keys" {
			for _, k := range keysCommands() {
				want["dkimmilter keys "+k.name] = flagNames("keys", k.name)
			}
			continue
		}
		want["dkimmilter "+c.name] = flagNames(c.name)
	}
	return want
}

// missingFromPage8 names every command and flag that page does not
// document.
func missingFromPage8(page string, want map[string][]string) []string {
	sections := manSections(page)
	var missing []string
	for heading, flags := range want {
		text, ok := sections[heading]
		if !ok {
			missing = append(missing, fmt.Sprintf(`command %q: no .SS "%s" section`, heading, heading))
			continue
		}
		for _, f := range flags {
			roff := `\-` + strings.ReplaceAll(f, "-", `\-`)
			if !regexp.MustCompile(`(?m)^\.[BI]*R?[BI]* ` + regexp.QuoteMeta(roff) + `(\s|$)`).MatchString(text) {
				missing = append(missing, fmt.Sprintf("%s: flag -%s has no .TP item (%s)", heading, f, roff))
			}
		}
	}
	sort.Strings(missing)
	return missing
}

// exampleKeys lists each option config/example.toml shows, commented out
// or not, by the heading it belongs under in dkimmilter.toml.5: "Top
// level", "[sign]", "[keys.NAME]", "[[signing]]", …
func exampleKeys(example string) map[string][]string {
	table := regexp.MustCompile(`^#?(\[\[?[a-z_]+)(\.[^\]]+)?(\]\]?)\s*(#.*)?$`)
	key := regexp.MustCompile(`^#?([a-z_]+) *=`)
	out := map[string][]string{}
	heading := "Top level"
	for _, line := range strings.Split(example, "\n") {
		if m := table.FindStringSubmatch(line); m != nil {
			heading = m[1] + m[3]
			if m[2] != "" {
				heading = m[1] + ".NAME" + m[3]
			}
			continue
		}
		if m := key.FindStringSubmatch(line); m != nil && !contains(out[heading], m[1]) {
			out[heading] = append(out[heading], m[1])
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// missingFromPage5 names every option that page does not document as a
// .TP item under its table's heading.
func missingFromPage5(page string, want map[string][]string) []string {
	sections := manSections(page)
	var missing []string
	for heading, keys := range want {
		text, ok := sections[heading]
		if !ok {
			missing = append(missing, fmt.Sprintf(`no .SS "%s" section for %s`, heading, strings.Join(keys, ", ")))
			continue
		}
		for _, k := range keys {
			if !regexp.MustCompile(`(?m)^\.TP\n\.BR? ` + regexp.QuoteMeta(k) + `(\s|$)`).MatchString(text) {
				missing = append(missing, fmt.Sprintf("%s %s: no .TP item", heading, k))
			}
		}
	}
	sort.Strings(missing)
	return missing
}

// The man pages stay true: every command and flag is in dkimmilter(8),
// every option of config/example.toml in dkimmilter.toml(5), each where
// a reader looks for it.
func TestManPages(t *testing.T) {
	page8, err := os.ReadFile("../../doc/man/dkimmilter.8")
	if err != nil {
		t.Fatal(err)
	}
	page5, err := os.ReadFile("../../doc/man/dkimmilter.toml.5")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("../../config/example.toml")
	if err != nil {
		t.Fatal(err)
	}
	cmds := manCommands()
	if len(cmds["dkimmilter serve"]) < 4 || len(cmds["dkimmilter keys check"]) < 5 {
		t.Fatalf("flags not found in the -h output: %v", cmds)
	}
	for _, m := range missingFromPage8(string(page8), cmds) {
		t.Errorf("doc/man/dkimmilter.8: %s", m)
	}
	keys := exampleKeys(string(example))
	if n := len(keys["Top level"]) + len(keys["[sign]"]) + len(keys["[keys.NAME]"]) + len(keys["[[signing]]"]); n < 15 {
		t.Fatalf("only %d options found in config/example.toml: %v", n, keys)
	}
	for _, m := range missingFromPage5(string(page5), keys) {
		t.Errorf("doc/man/dkimmilter.toml.5: %s", m)
	}
}

// The checks above find what is missing: a page without a command, a
// flag or an option fails them.
func TestManPagesCheckFails(t *testing.T) {
	page8 := ".SH COMMANDS\n.SS \"dkimmilter serve\"\n.TP\n.BI \\-config \" file\"\n.SS \"dkimmilter check\"\n"
	got := missingFromPage8(page8, map[string][]string{
		"dkimmilter serve":   {"config", "log-level"},
		"dkimmilter check":   {"dns"},
		"dkimmilter version": nil,
	})
	want := []string{
		`command "dkimmilter version": no .SS "dkimmilter version" section`,
		`dkimmilter check: flag -dns has no .TP item (\-dns)`,
		`dkimmilter serve: flag -log-level has no .TP item (\-log\-level)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("page 8:\n got %q\nwant %q", got, want)
	}

	example := "listen = \"x\"\n#mode = \"sv\"\n[sign]\n#expire = \"168h\"\n#[keys.hosted]\n#domain = \"%\"\n[[signing]]\nfrom = \"*\"\n"
	keys := exampleKeys(example)
	if fmt.Sprint(keys) != "map[Top level:[listen mode] [[signing]]:[from] [keys.NAME]:[domain] [sign]:[expire]]" {
		t.Errorf("exampleKeys = %v", keys)
	}
	page5 := ".SS \"Top level\"\n.TP\n.B listen\nWhere.\n.SS \"[sign]\"\nexpire is mentioned, not an item\n.SS \"[[signing]]\"\n.TP\n.B from\n"
	got = missingFromPage5(page5, keys)
	want = []string{
		"Top level mode: no .TP item",
		`[sign] expire: no .TP item`,
		`no .SS "[keys.NAME]" section for domain`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("page 5:\n got %q\nwant %q", got, want)
	}
}
