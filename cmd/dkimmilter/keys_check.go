package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/keystore/keycheck"
)

const keysCheckHelp = `
Look up each key's record (SELECTOR._domainkey.DOMAIN) in DNS and check it
against the private key: found, NXDOMAIN or timeout; the record parses;
p= is the key's public key (RSA and Ed25519); not revoked; t=y; k=, h= and
s= allow the key; the RSA key size; a second TXT record at the name; the
DNSSEC status (AD bit from a resolver on this host); and answers that
differ between resolvers. One line per key, then each problem with a hint
saying what to do. With NAMEs, only those keys; a key whose file name has
'%' is checked for each key file that matches it, and a shared key (domain
"%", one file) for each domain of the [[signing]] rules that name it (the
domain of "*@example.com" or "user@example.com"; the domains of "*" or
"*@*.example.com" cannot be listed). With -d DOMAIN, only the keys that
can sign for that From domain: its own, and those with '%' in their
domain or file name, filled in with it. A key with a query is checked for
each row of its list_query, or, with -d DOMAIN, for the row its query
finds; a row the daemon cannot sign with fails the check (exit 78). For
a key with delegate, the customer's CNAME of each of its selectors is
checked too: SELECTOR._domainkey.DOMAIN must be an alias of the provider's
SELECTOR.DOMAIN-WITH-DASHES._domainkey.DELEGATE; one missing or pointing
elsewhere fails, with the line the customer is to publish.

For a key that rotates itself, the key checked is the one that signs now,
as its rotation state in [rotation] state_dir says, and the other keys of
the rotation are looked up with the same resolvers: a pending key's
record not yet visible is reported, not failed (the daemon switches only
once every authoritative server serves it); a retiring key's record must
still be there until its revocation (mail signed before the switch is
checked with it), or the key fails; a revoked key's record is expected
revoked (p= empty) or gone. A rotation paused on a record changed by hand
fails, with the record to put back. A state this user cannot read is not
checked (exit 2): run as root or as the daemon's user.

The resolvers are [dns] nameservers (default /etc/resolv.conf), each
asked on its own, or those given with -resolver. With -authoritative, the
zone's own name servers are found through them and asked directly (RD=0),
which shows what is published now rather than what resolvers cached.

Exit status:
   0  every key is published and matches (warnings allowed)
   1  at least one key fails: verifiers would answer permerror or fail
   2  at least one key could not be checked (timeout, SERVFAIL): try again
  64  usage error (an unknown NAME, a bad -resolver)
  78  configuration error, or a key file that cannot be used
When several apply, 78 wins over 1, and 1 over 2.`

// Exit codes of keys check beyond those of main.go.
const (
	exitKeysFail = 1
	exitKeysTemp = 2
)

// keysCheckOptions is how keys check asks DNS.
type keysCheckOptions struct {
	resolvers     []string      // -resolver; empty: [dns] nameservers
	authoritative bool          // ask the zone's servers with RD=0
	timeout       time.Duration // 0: [dns] timeout
	verbose       bool          // print every resolver's answer
	domain        string        // -d: only the keys for this From domain
	// authPort is the port the zone's name servers are asked on (0: 53);
	// tests point it at an in-process server.
	authPort int
}

func runKeysCheck(args []string, stdout, stderr io.Writer) int {
	fl := newKeysFlagSet("check", "[-config FILE] [-resolver IP[:PORT]]... [-authoritative] [-timeout D] [-v] [-d DOMAIN] [NAME...]", keysCheckHelp, stderr)
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+")")
	var opts keysCheckOptions
	var resolvers stringsFlag
	fl.Var(&resolvers, "resolver", "ask this resolver, `IP[:PORT]`, instead of [dns] nameservers (repeatable: each is asked and compared)")
	fl.BoolVar(&opts.authoritative, "authoritative", false, "ask each key's zone's own name servers directly (RD=0), found through the resolvers")
	fl.DurationVar(&opts.timeout, "timeout", 0, "bound on each lookup (default [dns] timeout)")
	fl.BoolVar(&opts.verbose, "v", false, "print what each resolver answered, also when they agree")
	fl.StringVar(&opts.domain, "d", "", "only the keys that sign for this From `DOMAIN`, with '%' filled in (a shared '%' key for a domain its rules cannot list)")
	nameArgs, code, ok := parseNamesAndFlags(fl, args, stderr)
	if !ok {
		return code
	}
	opts.resolvers = resolvers
	if opts.domain != "" && !normaliseDomain(&opts.domain, "keys check", stderr) {
		return exitUsage
	}
	if opts.timeout < 0 {
		fmt.Fprintln(stderr, "dkimmilter keys check: -timeout must not be negative")
		return exitUsage
	}
	if len(opts.resolvers) > 0 {
		if _, err := dns.NewClient(opts.resolvers, 0); err != nil {
			fmt.Fprintf(stderr, "dkimmilter keys check: -resolver: %v\n", err)
			return exitUsage
		}
	}
	cfg, ok := loadKeysConfig(*cfgPath, stderr)
	if !ok {
		return exitConfig
	}
	names, ok := selectKeys(cfg, nameArgs, "keys check", stderr)
	if !ok {
		return exitUsage
	}
	if len(names) == 0 {
		fmt.Fprintf(stdout, "no keys in %s: nothing to check\n", cfg.File)
		return exitOK
	}
	return checkKeysDNS(context.Background(), cfg, names, opts, stdout, stderr)
}

// keyCheck is one key file to check, and what came of it.
type keyCheck struct {
	label   string // "NAME", or "NAME (DOMAIN)" for a '%' file
	key     *keystore.Key
	fileErr error // the key file (or database row) cannot be used as it is
	db      bool  // the key is a database row
	opts    []keycheck.Option
	res     *keycheck.Result
	// rot: the key's rotation state names the key checked; rotLines
	// report on the other keys of the rotation.
	rot      *rotated
	rotLines []string
}

// checkKeysDNS checks the named keys in DNS, prints one report per key
// and a tally, and returns the exit status documented in keysCheckHelp.
func checkKeysDNS(ctx context.Context, cfg *config.Config, names []string, opts keysCheckOptions, stdout, stderr io.Writer) int {
	timeout := opts.timeout
	if timeout == 0 {
		timeout = cfg.DNS.Timeout
	}
	servers, where := opts.resolvers, "-resolver"
	if len(servers) == 0 {
		servers, where = cfg.DNS.Nameservers, cfg.Where(0)+": dns"
	}
	resolvers, err := keycheck.Resolvers(servers, timeout)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", where, err)
		return exitConfig
	}
	// With -authoritative, the zones' servers are found through these.
	recursive, err := dns.NewClient(servers, timeout)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", where, err)
		return exitConfig
	}

	files := configuredKeyFiles(cfg, names)
	if opts.domain != "" {
		files = keyFilesForDomain(cfg, names, opts.domain)
		if len(files) == 0 {
			fmt.Fprintf(stderr, "dkimmilter keys check: no key %s signs for %s: a key for it, or one with '%%' in its domain or file name\n", keysIn(cfg, names), opts.domain)
			return exitUsage
		}
	}
	var checks []*keyCheck
	dbFailed := false
	notChecked := 0 // keys whose rotation state cannot be read
	for _, kf := range files {
		label := kf.name
		if k := cfg.Keys[kf.name]; strings.Contains(k.File+k.Domain, "%") && !kf.noMatch && !strings.Contains(kf.domain, "%") {
			label += " (" + kf.domain + ")"
		}
		if kf.db && kf.note == "" && kf.dbErr == nil {
			label = kf.name + " (" + kf.domain + ")"
		}
		switch {
		case kf.dbErr != nil:
			fmt.Fprintf(stdout, "FAIL %s: %v\n", label, kf.dbErr)
			dbFailed = true
			continue
		case kf.note != "":
			fmt.Fprintf(stdout, "none %s: %s\n", label, kf.note)
			continue
		case kf.noMatch:
			fmt.Fprintf(stdout, "none %s: no key file matches %s: nothing to check\n", label, kf.path)
			continue
		case strings.Contains(kf.domain, "%") && len(kf.unlisted) > 0:
			fmt.Fprintf(stdout, "none %s: %s %s with this shared key for From domains that cannot be listed: check one with 'dkimmilter keys check%s -d DOMAIN %s'\n",
				label, strings.Join(kf.unlisted, ", "), map[bool]string{true: "signs", false: "sign"}[len(kf.unlisted) == 1], keysConfigArg(cfg), kf.name)
			continue
		case strings.Contains(kf.domain, "%"):
			fmt.Fprintf(stdout, "none %s: no [[signing]] rule names this shared key, so it has no domain to check: 'dkimmilter keys check%s -d DOMAIN %s' checks one\n",
				label, keysConfigArg(cfg), kf.name)
			continue
		case kf.rot != nil && kf.rot.err != nil:
			// Which key signs is in the state: checking the configured
			// one would report a key rotation may have revoked.
			fmt.Fprintf(stdout, "TEMP %s: not checked: its rotation state says which key signs, and %v\n", label, kf.rot.err)
			notChecked++
			continue
		}
		k := &keystore.Key{Name: kf.name, Domain: kf.domain, Selector: kf.selector, File: kf.path, PrivateKey: kf.status.Key}
		checks = append(checks, &keyCheck{label: label, key: k, fileErr: kf.status.Err, db: kf.db, opts: checkOptions(cfg, kf.name), rot: kf.rot})
	}

	// A few keys at a time, each asking all its resolvers at once.
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, c := range checks {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if opts.authoritative {
				c.res = keycheck.CheckNameServers(ctx, c.key, recursive, timeout, opts.authPort, c.opts...)
			} else {
				c.res = keycheck.Check(ctx, c.key, resolvers, c.opts...)
			}
			if k := cfg.Keys[c.key.Name]; k.Delegate != "" {
				addProblems(c.res, delegationProblems(ctx, recursive, k))
			}
			if c.rot != nil && c.rot.st != nil {
				rep := checkRotationRecords(cfg, c.rot, func(sel string) *keycheck.Result {
					k := &keystore.Key{Name: c.key.Name, Domain: c.key.Domain, Selector: sel}
					if opts.authoritative {
						return keycheck.CheckNameServers(ctx, k, recursive, timeout, opts.authPort)
					}
					return keycheck.Check(ctx, k, resolvers)
				})
				c.rotLines = rep.lines
				addProblems(c.res, rep.problems)
			}
		})
	}
	wg.Wait()

	code := exitOK
	if dbFailed {
		code = exitConfig
	}
	tally := map[keycheck.Status]int{}
	for _, c := range checks {
		if c.fileErr != nil {
			// The daemon would refuse the file. A key too short to sign
			// with is already a problem of the check itself.
			if !errors.Is(c.fileErr, dkim.ErrKeyTooShort) {
				p := fileProblem(c.fileErr)
				if c.db {
					p.Text = "database row: " + strings.TrimPrefix(p.Text, "key file: ")
					p.Hints = []string{"fix the row in the database: the daemon answers actions.sign_error for this domain until then"}
				}
				c.res.Problems = append([]keycheck.Problem{p}, c.res.Problems...)
			}
			c.res.Status = keycheck.Fail
			code = exitConfig
		}
		tally[c.res.Status]++
		printKeyCheck(stdout, c, opts.verbose)
	}
	plural := "s"
	tally[keycheck.Temp] += notChecked
	if len(checks)+notChecked == 1 {
		plural = ""
	}
	fmt.Fprintf(stdout, "%d key%s checked: %d ok, %d with warnings, %d failing, %d not checked\n",
		len(checks)+notChecked, plural, tally[keycheck.OK], tally[keycheck.Warn], tally[keycheck.Fail], tally[keycheck.Temp])
	switch {
	case code != exitOK:
	case tally[keycheck.Fail] > 0:
		code = exitKeysFail
	case tally[keycheck.Temp] > 0:
		code = exitKeysTemp
	}
	return code
}

// normaliseDomain checks a -d DOMAIN flag and lower-cases it.
func normaliseDomain(d *string, cmd string, stderr io.Writer) bool {
	*d = strings.ToLower(strings.TrimSuffix(*d, "."))
	if p := dkim.NameProblem(*d); p != "" {
		fmt.Fprintf(stderr, "dkimmilter %s: -d %q is not a domain name: %s\n", cmd, *d, p)
		return false
	}
	return true
}

// keysIn is "in FILE", or "among NAME, NAME" when names are a selection.
func keysIn(cfg *config.Config, names []string) string {
	if len(names) == len(cfg.Keys) {
		return "in " + cfg.File
	}
	return "among " + strings.Join(names, ", ")
}

// fileProblem reports a key file that the daemon would refuse, with the
// hint keystore's error carries on a line of its own.
func fileProblem(err error) keycheck.Problem {
	text, hint := keystore.SplitHint(err)
	if hint == "" {
		hint = "fix the key file: 'dkimmilter check' lists every problem of the configuration"
	}
	return keycheck.Problem{Status: keycheck.Fail, Text: "key file: " + text, Hints: []string{hint}}
}

// statusWords are the first column of a report: short, and loud when
// something is wrong.
var statusWords = map[keycheck.Status]string{
	keycheck.OK: "ok  ", keycheck.Warn: "WARN", keycheck.Temp: "TEMP", keycheck.Fail: "FAIL",
}

// printKeyCheck prints one key: a line with its status, name, DNS name and
// what the resolvers see, then each problem with its hints, indented.
func printKeyCheck(w io.Writer, c *keyCheck, verbose bool) {
	r := c.res
	line := fmt.Sprintf("%s %s %s: %s", statusWords[r.Status], c.label, r.DNSName, r.Summary)
	// DNSSEC matters for a record that is used, not for one to fix.
	if r.DNSSEC != "" && r.Status <= keycheck.Warn {
		line += "; DNSSEC: " + r.DNSSEC
	}
	fmt.Fprintln(w, line)
	if verbose || len(distinctSummaries(r.Answers)) > 1 {
		if r.Zone != "" {
			fmt.Fprintf(w, "     name servers of %s:\n", r.Zone)
		}
		for _, a := range r.Answers {
			extra := ""
			if a.Err == nil {
				extra = fmt.Sprintf(" (TTL %s%s)", a.TTL, map[bool]string{true: ", AD"}[a.AD])
			}
			fmt.Fprintf(w, "     %s: %s%s\n", a.Resolver, a.Summary, extra)
		}
		for _, s := range r.NotAsked {
			fmt.Fprintf(w, "     %s: not asked (no route from this host)\n", s)
		}
	}
	for _, l := range c.rotLines {
		fmt.Fprintf(w, "     %s\n", l)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  %s: %s\n", p.Status, p.Text)
		for _, h := range p.Hints {
			first, rest, _ := strings.Cut(h, "\n")
			fmt.Fprintf(w, "     hint: %s\n", first)
			for _, l := range strings.Split(rest, "\n") {
				if l != "" {
					fmt.Fprintf(w, "       %s\n", l)
				}
			}
		}
	}
}

func distinctSummaries(answers []keycheck.Answer) []string {
	var s []string
	for _, a := range answers {
		if !slices.Contains(s, a.Summary) {
			s = append(s, a.Summary)
		}
	}
	return s
}

// delegationProblems checks the CNAMEs a customer publishes once for a
// key delegated to a provider's zone (config.Key.Delegate): for each of
// the key's selectors, SELECTOR._domainkey.DOMAIN must be an alias of the
// provider's name. Rotation changes only the provider's records, so a
// CNAME missing for a selector not in use today breaks signing at the
// rotation that reaches it: each is checked now.
func delegationProblems(ctx context.Context, res *dns.Client, k *config.Key) []keycheck.Problem {
	sels := k.Selectors
	if !slices.Contains(sels, k.Selector) {
		sels = append([]string{k.Selector}, sels...)
	}
	var out []keycheck.Problem
	for _, sel := range sels {
		name, want := dkim.DNSName(sel, k.Domain), k.RecordName(sel)
		line := fmt.Sprintf("the owner of %s publishes, once:\n%s. IN CNAME %s.", k.Domain, name, want)
		got, err := res.LookupCNAME(ctx, name)
		var de *net.DNSError
		switch {
		case err != nil && errors.As(err, &de) && de.IsNotFound:
			out = append(out, keycheck.Problem{Status: keycheck.Fail,
				Text:  fmt.Sprintf("the customer's CNAME is missing: %s does not exist, so verifiers cannot reach %s", name, want),
				Hints: []string{line}})
		case err != nil:
			out = append(out, keycheck.Problem{Status: keycheck.Temp,
				Text:  fmt.Sprintf("the customer's CNAME at %s could not be looked up: %v", name, err),
				Hints: []string{"check again later"}})
		case got == "":
			out = append(out, keycheck.Problem{Status: keycheck.Fail,
				Text:  fmt.Sprintf("%s is not a CNAME: its own records are used, and the records rotation publishes at %s are not", name, want),
				Hints: []string{"replace the records at " + name + " with the CNAME: " + line}})
		case got != want:
			out = append(out, keycheck.Problem{Status: keycheck.Fail,
				Text:  fmt.Sprintf("%s is a CNAME to %s, not to %s", name, got, want),
				Hints: []string{"change the CNAME: " + line}})
		}
	}
	return out
}

// addProblems puts problems first in r's list and makes r's status the
// worst of them.
func addProblems(r *keycheck.Result, ps []keycheck.Problem) {
	for _, p := range ps {
		r.Status = max(r.Status, p.Status)
	}
	r.Problems = append(ps, r.Problems...)
}
