package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/keystore"
)

const keysDNSHelp = `
Print the DNS records to publish for the configured keys (all, or the ones
named), in the two forms 'dkimmilter keys gen' prints: a zone-file line
with p= split into quoted strings of at most 255 bytes (RFC 6376
§3.6.2.2), and the value on one line for DNS web panels. A key whose file
name has '%' gets one record per file that matches it, and a shared key
(domain "%", one file) one per domain of the [[signing]] rules that name
it. A key with a query gets one record per row of its list_query. With
-d DOMAIN, the records of the keys that sign for that From domain, with
'%' filled in, or as the key's query finds it.

For a key that rotates itself, the record is that of the key that signs
now, as its rotation state in [rotation] state_dir says, and, while the
next key is pending, its record too (the daemon publishes both: these are
for reference, or to put a record back by hand).

Exit status: 0 printed; 64 a NAME is not a configured key; 77 a rotation
state this user cannot read (run as root or as the daemon's user); 78 the
configuration cannot be loaded or a key file cannot be read.`

func runKeysDNS(args []string, stdout, stderr io.Writer) int {
	fl := newKeysFlagSet("dns", "[-config FILE] [-d DOMAIN] [NAME...]", keysDNSHelp, stderr)
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+")")
	domain := fl.String("d", "", "only the keys that sign for this From `DOMAIN`, with '%' filled in")
	nameArgs, code, ok := parseNamesAndFlags(fl, args, stderr)
	if !ok {
		return code
	}
	if *domain != "" && !normaliseDomain(domain, "keys dns", stderr) {
		return exitUsage
	}
	cfg, ok := loadKeysConfig(*cfgPath, stderr)
	if !ok {
		return exitConfig
	}
	names, ok := selectKeys(cfg, nameArgs, "keys dns", stderr)
	if !ok {
		return exitUsage
	}
	if len(names) == 0 {
		fmt.Fprintf(stdout, "; no keys in %s (hint: dkimmilter keys gen -d example.com)\n", cfg.File)
		return exitOK
	}
	files := configuredKeyFiles(cfg, names)
	if *domain != "" {
		files = keyFilesForDomain(cfg, names, *domain)
		if len(files) == 0 {
			fmt.Fprintf(stderr, "dkimmilter keys dns: no key %s signs for %s: a key for it, or one with '%%' in its domain or file name\n", keysIn(cfg, names), *domain)
			return exitUsage
		}
	}
	code = exitOK
	first := true
	for _, kf := range files {
		st := kf.status
		switch {
		case kf.dbErr != nil:
			fmt.Fprintf(stderr, "dkimmilter keys dns: %v\n", kf.dbErr)
			code = exitConfig
			continue
		case kf.note != "":
			fmt.Fprintf(stderr, "dkimmilter keys dns: keys.%s: %s: no record to print\n", kf.name, kf.note)
			continue
		case kf.noMatch:
			fmt.Fprintf(stderr, "dkimmilter keys dns: keys.%s: no file matches %s: no record to publish\n", kf.name, kf.path)
			continue
		case kf.rot != nil && kf.rot.err != nil:
			// The configured key's record may be one rotation revoked.
			fmt.Fprintf(stderr, "dkimmilter keys dns: keys.%s: no record printed: its rotation state says which key signs, and %v\n", kf.name, kf.rot.err)
			if errors.Is(kf.rot.err, fs.ErrPermission) {
				code = worseExit(code, exitNoPerm)
			} else {
				code = exitConfig
			}
			continue
		case st.Key == nil && kf.db:
			fmt.Fprintf(stderr, "dkimmilter keys dns: keys.%s, domain %s: %v\n", kf.name, kf.domain, st.Err)
			code = exitConfig
			continue
		case st.Key == nil:
			fmt.Fprintf(stderr, "dkimmilter keys dns: %s: keys.%s: %v\n", cfg.Where(cfg.Keys[kf.name].Line), kf.name, st.Err)
			code = exitConfig
			continue
		case st.Err != nil:
			// The public key is right whatever the file's mode or size;
			// say what the daemon will refuse.
			fmt.Fprintf(stderr, "warning: keys.%s: %v\n", kf.name, st.Err)
		}
		if !first {
			fmt.Fprintln(stdout)
		}
		first = false
		fmt.Fprintf(stdout, "; keys.%s: %s %d bits, %s\n", kf.name, st.Key.KeyType, st.Key.Bits, kf.path)
		value := keystore.Record(st.Key)
		if strings.Contains(kf.domain, "%") {
			// One shared key for From domains that the rules do not
			// list: the same record at each domain's name.
			if len(kf.unlisted) > 0 {
				fmt.Fprintf(stdout, "; %s also sign with this key for From domains that cannot be listed:\n", strings.Join(kf.unlisted, ", "))
			}
			fmt.Fprintf(stdout, "; publish at %s for each From domain D this key signs ('dkimmilter keys dns%s -d D %s' prints it), e.g.\n",
				dkim.DNSName(kf.selector, strings.ReplaceAll(kf.domain, "%", "D")), keysConfigArg(cfg), kf.name)
			fmt.Fprintln(stdout, keystore.ZoneLine(dkim.DNSName(kf.selector, strings.ReplaceAll(kf.domain, "%", "example.com")), value))
			fmt.Fprintln(stdout, "; the value, on one line:")
			fmt.Fprintln(stdout, value)
			continue
		}
		if kf.rot.signs() {
			fmt.Fprintf(stdout, "; the key that signs now (since %s), as the rotation state %s says\n", stamp(kf.rot.st.Active.Since), kf.rot.file)
		}
		fmt.Fprintln(stdout, keystore.ZoneLine(dkim.DNSName(kf.selector, kf.domain), value))
		writePanelHint(stdout, "on one line, for DNS web panels", kf.selector, kf.domain)
		fmt.Fprintln(stdout, value)
		if kf.rot.signs() && kf.rot.st.Pending != nil {
			p := kf.rot.st.Pending
			state := "made " + stamp(p.Created) + ", not published yet"
			if !p.PublishedAt.IsZero() {
				state = "published " + stamp(p.PublishedAt)
			}
			fmt.Fprintf(stdout, "\n; keys.%s: the next key, pending (%s), %s\n", kf.name, state, p.File)
			fmt.Fprintln(stdout, "; the daemon publishes it and signs with it once every authoritative server serves it")
			fmt.Fprintln(stdout, keystore.ZoneLine(dkim.DNSName(p.Selector, kf.domain), p.Record))
			fmt.Fprintln(stdout, "; the value, on one line:")
			fmt.Fprintln(stdout, p.Record)
		}
	}
	return code
}

// parseNamesAndFlags parses flags that may come before, between or after
// the key names ("keys check NAME -resolver 1.1.1.1") and returns the
// names; when it returns false, the command exits with code.
func parseNamesAndFlags(fl *flag.FlagSet, args []string, stderr io.Writer) (names []string, code int, ok bool) {
	for {
		if code, ok := parseFlags(fl, args, true, stderr); !ok {
			return nil, code, false
		}
		if fl.NArg() == 0 {
			return names, 0, true
		}
		names, args = append(names, fl.Arg(0)), fl.Args()[1:]
	}
}

// selectKeys checks NAME arguments against the KeyTable: all keys when
// there are none, each named key once otherwise. An unknown name is a
// usage error with the closest name, or the list of names.
func selectKeys(cfg *config.Config, args []string, cmd string, stderr io.Writer) ([]string, bool) {
	all := cfg.KeyNames()
	if len(args) == 0 {
		return all, true
	}
	var names []string
	ok := true
	for _, a := range args {
		if _, found := cfg.Keys[a]; !found {
			hint := config.Suggest(a, all)
			switch {
			case hint != "":
			case len(all) > 0:
				hint = "; the keys are " + strings.Join(all, ", ")
			}
			fmt.Fprintf(stderr, "dkimmilter %s: no key %q in %s%s\n", cmd, a, cfg.File, hint)
			ok = false
			continue
		}
		if !slices.Contains(names, a) {
			names = append(names, a)
		}
	}
	return names, ok
}
