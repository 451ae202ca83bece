package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/keystore/keycheck"
	"github.com/dkimmilter/dkimmilter/keystore/rotation"
)

const keysListHelp = `
List every configured key: its name, domain, selector, type and size, file,
whether the file's permissions are safe (only its owner may read it, and
its group when that is one the daemon runs with; run as root, judged for
the user 'dkimmilter check' checks as), its
age (from the file's modification time) and the [[signing]] rules that use
it, numbered from 1 as 'dkimmilter check' prints them. For a key that
rotates itself, the row is the key that signs now, as the rotation state
in [rotation] state_dir says; below the table, each such key's rotation:
the active key and since when it signs, the pending, retiring and
revoked keys with the date of their next step, and whether the rotation is
paused (what it expects, what a server served) or failing ('dkimmilter keys
rotation' says the same, with what to do). The states are readable only by
the daemon's user: run as root or as that user. A key whose file
name has '%' is listed once per file that matches it, with the domain each
file is for. A key with a query is listed once per row of its list_query
(FILE "database" for a key held in the column), judged as the daemon
judges the row. Problems with a file or row are listed below the table.

Exit status: 0 listed (even with problems: 'dkimmilter check' is the
command that fails on them); 78 the configuration cannot be loaded.`

func runKeysList(args []string, stdout, stderr io.Writer) int {
	return keysList(args, stdout, stderr, time.Now())
}

// keysList is keys list with the clock that ages the files.
func keysList(args []string, stdout, stderr io.Writer, now time.Time) int {
	fl := newKeysFlagSet("list", "[-config FILE]", keysListHelp, stderr)
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+")")
	if code, ok := parseFlags(fl, args, false, stderr); !ok {
		return code
	}
	cfg, ok := loadKeysConfig(*cfgPath, stderr)
	if !ok {
		return exitConfig
	}
	if len(cfg.Keys) == 0 {
		fmt.Fprintf(stdout, "no keys in %s (hint: dkimmilter keys gen -d example.com)\n", cfg.File)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDOMAIN\tSELECTOR\tTYPE\tBITS\tFILE\tPERMISSIONS\tAGE\tUSED BY")
	var problems []string
	var rotations []*rotated
	for _, kf := range configuredKeyFiles(cfg, cfg.KeyNames()) {
		if kf.rot != nil {
			rotations = append(rotations, kf.rot)
		}
		switch {
		case kf.dbErr != nil:
			problems = append(problems, kf.dbErr.Error())
			continue
		case kf.note != "":
			problems = append(problems, fmt.Sprintf("keys.%s: %s", kf.name, kf.note))
			continue
		}
		typ, bits, perm, age := "-", "-", "-", "-"
		st := kf.status
		if k := st.Key; k != nil {
			typ, bits = k.KeyType, fmt.Sprint(k.Bits)
		}
		if !st.ModTime.IsZero() {
			age = formatAge(now.Sub(st.ModTime))
			perm = fmt.Sprintf("%04o ok", st.Mode)
			if st.Unsafe != "" {
				perm = fmt.Sprintf("%04o BAD: open to %s (chmod 600)", st.Mode, st.Unsafe)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			kf.name, kf.domain, kf.selector, typ, bits, kf.path, perm, age, keyUsers(cfg, kf.name))
		switch {
		case kf.noMatch:
			problems = append(problems, fmt.Sprintf("keys.%s: no file matches %s, so the key signs nothing", kf.name, kf.path))
		case st.Err != nil && kf.db:
			problems = append(problems, fmt.Sprintf("keys.%s, domain %s: %v", kf.name, kf.domain, st.Err))
		case st.Err != nil && !errors.Is(st.Err, keystore.ErrUnsafePermissions):
			problems = append(problems, fmt.Sprintf("keys.%s: %v", kf.name, st.Err))
		}
	}
	tw.Flush()
	// The keys that rotate: the row above is the key that signs now; the
	// others of the rotation, and what comes next, are here.
	for _, r := range rotations {
		fmt.Fprintln(stdout)
		writeRotation(stdout, cfg, r, now, false)
	}
	if len(problems) > 0 {
		fmt.Fprintln(stdout)
		for _, p := range problems {
			fmt.Fprintln(stdout, p)
		}
	}
	return exitOK
}

// loadKeysConfig loads the configuration for a keys subcommand. These
// commands are about configured keys, so a missing default file is an
// error here, where serve and check fall back to the built-in defaults.
func loadKeysConfig(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, defaulted, err := loadConfig(path)
	if err != nil {
		printErrors(stderr, err)
		return nil, false
	}
	if defaulted {
		fmt.Fprintf(stderr, "dkimmilter keys: no configuration file at %s: no keys are configured (hint: -config FILE, or 'dkimmilter keys gen -d example.com' to make a first key)\n", config.DefaultPath)
		return nil, false
	}
	return cfg, true
}

// keyFile is one key file that a configured key uses, for one domain: its
// file; for a key whose file name has '%', each existing file that the
// name matches; for a shared key (domain "%", one file), the file once per
// domain that the signing rules give it.
type keyFile struct {
	name, domain, selector, path string // domain and path with '%' filled in
	status                       keystore.KeyFileStatus
	noMatch                      bool // a '%' key that no file matches; path is the pattern
	// unlisted, for a shared key's row whose domain still has '%': the
	// rules that sign with it for From domains that cannot be listed
	// ("signing[3] (from = \"*\")"); empty when no rule names the key.
	unlisted []string

	// For a key with a query, whose rows come from the database: db is
	// set; note says why there is nothing to show (no list_query, no
	// row for -d DOMAIN), dbErr why the database could not tell.
	db    bool
	note  string
	dbErr error

	// rot is the rotation state of a key that rotates (nil otherwise):
	// when its active key signs, selector, path and status are that
	// key's, not the configured one's.
	rot *rotated
}

// withRotation makes kf, a key with a fixed domain and file, the key that
// signs now: the active key of its rotation state when there is one.
func withRotation(cfg *config.Config, kf keyFile, acct *keystore.Account) keyFile {
	kf.rot = keyRotation(cfg, kf.name)
	if kf.rot.signs() {
		a := kf.rot.st.Active
		kf.selector, kf.path, kf.status = a.Selector, a.File, keystore.InspectKeyFileFor(a.File, acct)
	}
	return kf
}

// configuredKeyFiles returns the files of the named keys, in order, each
// judged as the daemon's user will read it (inspectAccount). For a key
// whose rotation state names another key that signs, the file is that
// key's (withRotation).
func configuredKeyFiles(cfg *config.Config, names []string) []keyFile {
	var out []keyFile
	acct := inspectAccount(cfg)
	for _, name := range names {
		k := cfg.Keys[name]
		if k.Query != "" {
			out = append(out, databaseKeyFiles(cfg, name, "", acct)...)
			continue
		}
		if !strings.Contains(k.File, "%") {
			st := keystore.InspectKeyFileFor(k.File, acct)
			if !strings.Contains(k.Domain, "%") {
				out = append(out, withRotation(cfg, keyFile{name: name, domain: k.Domain, selector: k.Selector, path: k.File, status: st}, acct))
				continue
			}
			domains, unlisted := sharedKeyDomains(cfg, name)
			for _, d := range domains {
				out = append(out, keyFile{name: name, domain: strings.ReplaceAll(k.Domain, "%", d), selector: k.Selector, path: k.File, status: st})
			}
			if len(unlisted) > 0 || len(domains) == 0 {
				out = append(out, keyFile{name: name, domain: k.Domain, selector: k.Selector, path: k.File, status: st, unlisted: unlisted})
			}
			continue
		}
		matches := percentMatches(k.File, fixedKeyFiles(cfg))
		if len(matches) == 0 {
			out = append(out, keyFile{name: name, domain: k.Domain, selector: k.Selector, path: k.File, noMatch: true})
		}
		for _, m := range matches {
			out = append(out, keyFile{name: name, domain: strings.ReplaceAll(k.Domain, "%", m.domain), selector: k.Selector,
				path: m.path, status: keystore.InspectKeyFileFor(m.path, acct)})
		}
	}
	return out
}

// inspectAccount is the account the keys commands judge key files for:
// run as root, the daemon's user (as check finds it), so that a key its
// group may read (root:opendkim 0640, with the daemon in that group) is
// not reported unsafe because root is not in the group; otherwise, or when
// that user cannot be found, this process (nil).
func inspectAccount(cfg *config.Config) *keystore.Account {
	if os.Geteuid() != 0 {
		return nil
	}
	acct, _, err := serviceAccount(cfg, "")
	if err != nil {
		return nil
	}
	return acct
}

// keyFilesForDomain returns the files of the named keys that sign for
// the From domain domain: a key for that domain, and a key with '%' in its
// domain or file name with the domain filled in (noMatch when its file
// name has '%' and no such file exists).
func keyFilesForDomain(cfg *config.Config, names []string, domain string) []keyFile {
	var out []keyFile
	for _, name := range names {
		k := cfg.Keys[name]
		if !strings.Contains(k.Domain, "%") && k.Domain != domain {
			continue
		}
		if k.Query != "" {
			out = append(out, databaseKeyFiles(cfg, name, domain, inspectAccount(cfg))...)
			continue
		}
		path := strings.ReplaceAll(k.File, "%", domain)
		kf := keyFile{name: name, domain: strings.ReplaceAll(k.Domain, "%", domain), selector: k.Selector, path: path, status: keystore.InspectKeyFileFor(path, inspectAccount(cfg))}
		if strings.Contains(k.File, "%") && errors.Is(kf.status.Err, fs.ErrNotExist) {
			kf.noMatch = true
		}
		if !strings.Contains(k.Domain+k.File, "%") {
			kf = withRotation(cfg, kf, inspectAccount(cfg))
		}
		out = append(out, kf)
	}
	return out
}

// sharedKeyDomains returns the From domains that the [[signing]] rules
// naming a shared key (domain "%", one file) give it: the literal domain
// of each rule's from pattern, in rule order, once each. The rules whose
// pattern has no literal domain ("*", "*@*.example.com") are returned as
// unlisted, "signing[N] (from = "PATTERN")": the domains they sign for
// cannot be known from the configuration.
func sharedKeyDomains(cfg *config.Config, name string) (domains, unlisted []string) {
	for i, r := range cfg.Signing {
		if !slices.Contains(r.Keys, name) {
			continue
		}
		d := literalDomain(r.From)
		switch {
		case d == "":
			unlisted = append(unlisted, fmt.Sprintf("signing[%d] (from = %q)", i+1, r.From))
		case !slices.Contains(domains, d):
			domains = append(domains, d)
		}
	}
	return domains, unlisted
}

// literalDomain is the domain a from pattern names without a wildcard:
// example.com for "*@example.com", "user@example.com" and
// "x-*@example.com"; "" for "*", "*@*.example.com" or "*@example.*".
func literalDomain(pattern string) string {
	i := strings.LastIndexByte(pattern, '@')
	if i < 0 {
		return ""
	}
	d := pattern[i+1:]
	if d == "" || strings.Contains(d, "*") || dkim.NameProblem(d) != "" {
		return ""
	}
	return d
}

type percentMatch struct{ path, domain string }

// fixedKeyFiles are the key files named without '%'.
func fixedKeyFiles(cfg *config.Config) map[string]bool {
	m := map[string]bool{}
	for _, k := range cfg.Keys {
		if !strings.Contains(k.File, "%") {
			m[k.File] = true
		}
	}
	return m
}

// percentMatches returns the existing files that a key file name with
// '%' matches, and the domain each is for. '%' is one path element part,
// never a '/', and every '%' in the name stands for the same domain, as
// when the milter fills it in from a From address.
//
// A pattern such as keys/%.pem also matches files that are not for a
// domain: another key's file (keys/rsa.pem) or a name that is not a
// domain at all. Those are skipped: the milter would never look them up,
// and checking them would report keys that do not exist.
func percentMatches(pattern string, skip map[string]bool) []percentMatch {
	var glob, re strings.Builder
	re.WriteString("^")
	for i, part := range strings.Split(pattern, "%") {
		if i > 0 {
			glob.WriteString("*")
			re.WriteString("([^/]+)")
		}
		// Escape glob characters that are part of the name itself.
		for _, r := range part {
			if strings.ContainsRune(`*?[\`, r) {
				glob.WriteByte('\\')
			}
			glob.WriteRune(r)
		}
		re.WriteString(regexp.QuoteMeta(part))
	}
	re.WriteString("$")
	rx := regexp.MustCompile(re.String())
	files, _ := filepath.Glob(glob.String())
	var out []percentMatch
	for _, f := range files {
		m := rx.FindStringSubmatch(f)
		if m == nil || skip[f] || !strings.Contains(m[1], ".") || dkim.NameProblem(m[1]) != "" {
			continue
		}
		same := true
		for _, d := range m[2:] {
			same = same && d == m[1]
		}
		if same {
			out = append(out, percentMatch{f, m[1]})
		}
	}
	return out
}

// checkOptions tells keys check what the configuration says of a key.
func checkOptions(cfg *config.Config, name string) []keycheck.Option {
	if !slices.ContainsFunc(cfg.Signing, func(r *config.SigningRule) bool { return slices.Contains(r.Keys, name) }) {
		return []keycheck.Option{keycheck.Unused()}
	}
	return nil
}

// keyUsers lists the [[signing]] rules that name a key, numbered from 1
// as check prints them: "signing[1] *@example.com".
func keyUsers(cfg *config.Config, name string) string {
	var used []string
	for i, r := range cfg.Signing {
		for _, k := range r.Keys {
			if k == name {
				used = append(used, fmt.Sprintf("signing[%d] %s", i+1, r.From))
			}
		}
	}
	if len(used) == 0 {
		return "not used"
	}
	return strings.Join(used, ", ")
}

// formatAge says how old a file is in whole days: "412 days".
func formatAge(d time.Duration) string {
	days := int(d.Hours() / 24)
	switch {
	case days <= 0:
		return "today"
	case days == 1:
		return "1 day"
	}
	return fmt.Sprintf("%d days", days)
}

// databaseKeyFiles returns the rows of key name, which has a query: the
// one for domain, or, with domain "", every row of its list_query.
// Without a list_query, or without a row for domain, the one keyFile
// says so in note; when the database fails, in dbErr.
func databaseKeyFiles(cfg *config.Config, name, domain string, acct *keystore.Account) []keyFile {
	k := cfg.Keys[name]
	one := keyFile{name: name, domain: k.Domain, path: "database", db: true}
	if domain == "" && k.ListQuery == "" {
		one.note = fmt.Sprintf("the domains of a key with a query are listed by its list_query, which keys.%s has not (%s): name one with -d DOMAIN, or add list_query = \"SELECT domain, selector, private_key FROM ...\"",
			name, cfg.Where(k.Line))
		return []keyFile{one}
	}
	db, err := keystore.OpenDB(cfg)
	if err != nil {
		one.dbErr = err
		return []keyFile{one}
	}
	defer db.Close()
	var rows []keystore.KeyRow
	if domain != "" {
		var row *keystore.KeyRow
		row, err = db.Key(context.Background(), name, domain, acct)
		if row != nil {
			rows = append(rows, *row)
		} else if err == nil {
			one.domain = domain
			one.note = fmt.Sprintf("the query finds no key for %s in PostgreSQL (%s), so the rule does not sign its mail", domain, db.Target())
			return []keyFile{one}
		}
	} else {
		rows, err = db.List(context.Background(), name, acct)
	}
	if err != nil {
		one.dbErr = err
		return []keyFile{one}
	}
	if len(rows) == 0 {
		one.note = fmt.Sprintf("the list_query finds no key in PostgreSQL (%s)", db.Target())
		return []keyFile{one}
	}
	out := make([]keyFile, 0, len(rows))
	for _, r := range rows {
		path := r.File
		if path == "" {
			path = "database"
		}
		out = append(out, keyFile{name: name, domain: r.Domain, selector: r.Selector, path: path, status: r.Status, db: true})
	}
	if k.Rotate > 0 {
		withDBRotation(cfg, db, name, out)
	}
	return out
}

// withDBRotation makes each of kfs, the rows of keys.NAME, a key with a
// query that rotates, the key that signs now: the active key of the
// domain's rotation state when rotation has switched it, as the daemon's
// lookups decide. A table that cannot be read leaves every row
// unknown (rot.err): the commands then cannot tell which key signs.
func withDBRotation(cfg *config.Config, db *keystore.DB, name string, kfs []keyFile) {
	states, bad, err := rotation.ReadDBStates(context.Background(), db, name)
	if err != nil {
		err = fmt.Errorf("reading %s: %w", keystore.RotationTable, err)
	}
	for i := range kfs {
		kf := &kfs[i]
		kc := *cfg.Keys[name]
		kc.Domain = kf.domain
		r := &rotated{name: name, kc: &kc, file: "in table " + keystore.RotationTable + " (key " + name + ", domain " + kf.domain + ")",
			st: states[kf.domain], err: bad[kf.domain]}
		if err != nil {
			r.err = err
		}
		if r.st == nil && r.err == nil {
			continue // not rotated yet: the key table's key signs
		}
		kf.rot = r
		if r.st != nil && r.st.Active.PEM != "" {
			pk, perr := keystore.ParsePrivateKey([]byte(r.st.Active.PEM))
			kf.selector, kf.path, kf.status = r.st.Active.Selector, "database (rotation)", keystore.KeyFileStatus{Key: pk, Err: perr}
		}
	}
}
