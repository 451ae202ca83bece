package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/keystore"
)

const checkHelp = `
Validate the configuration, load every key (also each file a "%" key name
matches), resolve every reference, and print what would run. Exit 0 when all
is well, 78 (EX_CONFIG) with every problem listed otherwise. With -dns, a
valid configuration's keys are then looked up in DNS as 'dkimmilter keys
check' does, and its exit status is that of keys check: 1 when a key fails,
2 when one could not be checked.

The key files, the directories of "%" keys and the unix socket's directory
are checked as the user the daemon runs as, from the owner, group and mode
of each directory on the way: a key that user cannot read, or a socket
directory it cannot create the socket in, is an error naming the directory
or file to change and the chown, chgrp or chmod that fixes it. For keys
that rotate, so are the TSIG key files of their [publish.NAME] tables,
which that user must read, the programs of their "command" publishers,
which it must run, and rotation.state_dir, where it must write;
a TSIG secret every user can read, a rotation period under a week, and
sign.expire "0" with rotation are warned about. A key whose rotation
state (in rotation.state_dir) names the key that signs now has a line
saying which, since when, and whether its rotation is paused or failing;
-dns checks that key. The user is
-user NAME; by default, when run as root, the owner of the socket's
directory when it exists and is not root, else the user dkimmilter when it
exists; when not root, the user running the check.

With [database], check connects to the server and runs each key's query
once (for the domain of its first [[signing]] rule that names one, else
for a domain that cannot exist), and its list_query for one row, and
runs database.senders_query for a login that cannot exist (a row for it
is an error: every login would get it): an error names the server (host,
port, database, user; never the password) and the key or query. Run as
root, it does that as the user it checks as (see above), in a process of
that user: the server's peer authentication and the ~/.pgpass it reads
are that user's.`

// configCheckOptions are the flags of check, for checkConfig.
type configCheckOptions struct {
	dns  bool   // also check the keys in DNS
	user string // -user: check access as this user; "" for the default
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("check", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+")")
	var opts configCheckOptions
	fl.BoolVar(&opts.dns, "dns", false, "also look every key up in DNS and check it (see 'dkimmilter keys check -h')")
	fl.StringVar(&opts.user, "user", "", "check key files and the socket directory as this user (default: see above)")
	if code, ok := parseFlags(fl, args, false, stderr); !ok {
		return code
	}
	cfg, defaulted, err := loadConfig(*cfgPath)
	if err != nil {
		printErrors(stderr, err)
		return exitConfig
	}
	if defaulted {
		fmt.Fprintf(stdout, "no configuration file at %s: dkimmilter serve would verify only, on %s, and sign nothing\n", config.DefaultPath, cfg.Listen)
		return exitOK
	}
	if os.Getenv(checkDBAsEnv) != "" {
		return checkDatabaseChild(cfg)
	}
	return checkConfig(cfg, opts, stdout, stderr)
}

// checkConfig checks a loaded configuration as check does, prints the
// summary, the warnings and every problem, and returns check's exit
// status. Commands that write a configuration check it with this too.
func checkConfig(cfg *config.Config, opts configCheckOptions, stdout, stderr io.Writer) int {
	acct, why, err := serviceAccount(cfg, opts.user)
	if err != nil {
		fmt.Fprintf(stderr, "dkimmilter check: -user: %v\n", err)
		return exitUsage
	}
	var errs []error
	_, warnings, err := keystore.LoadFor(cfg, acct)
	if err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkPercentKeys(cfg, acct)...)
	dbErrs, dbLines := checkDatabaseAs(cfg, acct)
	errs = append(errs, dbErrs...)
	accessErrs, accessWarnings := checkAccess(cfg, acct)
	errs = append(errs, accessErrs...)
	warnings = append(warnings, accessWarnings...)
	warnings = append(warnings, emptyKeyWarnings(cfg)...)
	warnings = append(warnings, stopWarnings(cfg)...)
	warnings = append(warnings, senderBindingWarnings(cfg)...)
	rotErrs, rotWarnings := checkRotation(cfg, acct)
	errs = append(errs, rotErrs...)
	warnings = append(warnings, rotWarnings...)
	warnings = append(warnings, rotationWarnings(cfg)...)
	if _, err := dns.NewClient(cfg.DNS.Nameservers, cfg.DNS.Timeout); err != nil {
		errs = append(errs, fmt.Errorf("%s: dns: %w", cfg.Where(0), err))
	}
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if len(errs) > 0 {
		// The load and the access check judge the same key files: a
		// file the service user cannot read is one problem, said once.
		var uniq []error
		seen := map[string]bool{}
		eachProblem(errors.Join(errs...), func(e error) {
			if !seen[e.Error()] {
				seen[e.Error()] = true
				uniq = append(uniq, e)
			}
		})
		printErrors(stderr, errors.Join(uniq...))
		fmt.Fprintf(stderr, "%s: FAILED (checked as user %s, %s; -user NAME checks as another)\n", cfg.File, acct.Name, why)
		return exitConfig
	}
	printSummary(stdout, cfg)
	for _, l := range dbLines {
		fmt.Fprintln(stdout, l)
	}
	fmt.Fprintf(stdout, "files checked as user %s, %s; -user NAME checks as another\n", acct.Name, why)
	if opts.dns && len(cfg.Keys) > 0 {
		if code := checkKeysDNS(context.Background(), cfg, cfg.KeyNames(), keysCheckOptions{}, stdout, stderr); code != exitOK {
			fmt.Fprintf(stderr, "%s: configuration OK, DNS check FAILED\n", cfg.File)
			return code
		}
	}
	fmt.Fprintf(stdout, "%s: OK\n", cfg.File)
	return exitOK
}

// checkPercentKeys loads every existing file that a key name with '%'
// matches, so that a bad key is found now and not by the first message.
func checkPercentKeys(cfg *config.Config, acct *keystore.Account) []error {
	var errs []error
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		if !strings.Contains(k.File, "%") {
			continue
		}
		for _, m := range percentMatches(k.File, fixedKeyFiles(cfg)) {
			if _, err := keystore.ReadPrivateKeyFor(m.path, acct); err != nil {
				errs = append(errs, fmt.Errorf("%s: keys.%s: %w", cfg.Where(k.Line), name, err))
			}
		}
	}
	return errs
}

// checkDatabase connects to [database] and runs the queries of each key
// with one once: query for a domain its signing rules name (or one that
// cannot exist: the query runs, and no row is fine), list_query for its
// first row. The errors name the server, never the password; a row that
// cannot sign is an error too. lines say what was found, for the summary.
func checkDatabase(cfg *config.Config, acct *keystore.Account) (errs []error, lines []string) {
	db, err := keystore.OpenDB(cfg)
	if err != nil || db == nil {
		// A DSN that does not parse is LoadFor's error already.
		return nil, nil
	}
	defer db.Close()
	ctx := context.Background()
	if err := db.Ping(ctx); err != nil {
		return []error{fmt.Errorf("%s: database.dsn: %w (hint: check that the server runs and that the DSN's host, port, dbname and user are right; put the password in ~/.pgpass of the daemon's user, or passfile=)", cfg.Where(0), err)}, nil
	}
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		if k.Query == "" {
			continue
		}
		domain := "dkimmilter-check.invalid"
		if ds, _ := sharedKeyDomains(cfg, name); len(ds) > 0 {
			domain = ds[0]
		}
		row, err := db.Probe(ctx, name, domain, acct)
		switch {
		case err != nil:
			errs = append(errs, err)
		case row != nil && row.Status.Err != nil:
			errs = append(errs, fmt.Errorf("%s: keys.%s: PostgreSQL (%s): domain %s: %w", cfg.Where(k.Line), name, db.Target(), domain, row.Status.Err))
		case row != nil:
			lines = append(lines, fmt.Sprintf("key %s: the query answers for %s: s=%s, %s %d bits", name, domain, row.Selector, row.Status.Key.KeyType, row.Status.Key.Bits))
		default:
			lines = append(lines, fmt.Sprintf("key %s: the query runs (no row for %s)", name, domain))
		}
	}
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		if k.Query == "" || k.Rotate > 0 {
			continue
		}
		// rotate removed: the key table's keys would sign again.
		n, err := db.RotatedDomains(ctx, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: keys.%s: %w", cfg.Where(k.Line), name, err))
		} else if n > 0 {
			errs = append(errs, fmt.Errorf("%s: keys.%s does not rotate, but rotation switched %d of its domains to keys it made (in %s): without rotate, the daemon signs with your table's keys again, whose records rotation may have revoked and deleted (hint: put rotate back; or first copy each domain's active key into your table: SELECT domain, active_selector, active_private_key FROM %s WHERE key = '%s' AND active_selector IS NOT NULL, check their records with 'dkimmilter keys check', then delete those rows)",
				cfg.Where(k.Line), name, n, keystore.RotationTable, keystore.RotationTable, name))
		}
	}
	for _, name := range rotatingKeys(cfg) {
		if cfg.Keys[name].Query == "" {
			continue
		}
		if err := db.CheckRotationTable(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: keys.%s.rotate: %w", cfg.Where(cfg.Keys[name].Line), name, err))
		} else {
			lines = append(lines, "rotation: table "+keystore.RotationTable+" ready (SELECT, INSERT, UPDATE)")
		}
		break // one table for every key
	}
	if cfg.Database.SendersQuery != "" {
		e, l := checkSendersQuery(ctx, cfg, db)
		errs, lines = append(errs, e...), append(lines, l...)
	}
	return errs, lines
}

// checkSenderLogin is the login check asks database.senders_query for: it
// cannot be a real one, so no row is the answer to expect.
const checkSenderLogin = "dkimmilter-check@dkimmilter-check.invalid"

// checkSendersQuery runs database.senders_query once, for a login that
// cannot exist: the query runs and has the right shape, and it does not
// give a login it does not know anything (a WHERE lost, an OR too many),
// which every login would then get.
func checkSendersQuery(ctx context.Context, cfg *config.Config, db *keystore.DB) (errs []error, lines []string) {
	allowed, err := db.Senders(ctx, checkSenderLogin)
	switch {
	case err != nil:
		return []error{err}, nil
	case len(allowed) > 0:
		return []error{fmt.Errorf("%s: database.senders_query: PostgreSQL (%s): for login %s, which cannot exist, the query returns %s: every login would get these too; check its WHERE (e.g. \"SELECT allowed FROM dkim_senders WHERE login = $1\")",
			cfg.Where(0), db.Target(), checkSenderLogin, strings.Join(allowed, ", "))}, nil
	}
	return nil, []string{fmt.Sprintf("sender binding: database.senders_query runs (no row for %s)", checkSenderLogin)}
}

// printErrors prints each problem err holds on a line of its own.
func printErrors(w io.Writer, err error) {
	eachProblem(err, func(e error) { fmt.Fprintln(w, e) })
}

// eachProblem calls f with each problem err holds: the errors that
// errors.Join and config.Errors put together (every one of a config file's
// problems, every unusable key), one by one, however they are nested.
func eachProblem(err error, f func(error)) {
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range multi.Unwrap() {
			eachProblem(e, f)
		}
		return
	}
	f(err)
}

func printSummary(w io.Writer, cfg *config.Config) {
	fmt.Fprintf(w, "listen %s, mode %s\n", cfg.Listen, cfg.Mode)
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		if k.Query != "" {
			list := "no list_query: the keys commands take -d DOMAIN"
			if k.ListQuery != "" {
				list = "list_query for the keys commands"
			}
			fmt.Fprintf(w, "key %s: d=%s, selector and key from PostgreSQL (%s) per From domain; %s\n", name, k.Domain, databaseTarget(cfg), list)
			if r := rotationSummary(cfg, k); r != "" {
				fmt.Fprintf(w, "  %s\n", r)
			}
			continue
		}
		if strings.Contains(k.File, "%") {
			n := len(percentMatches(k.File, fixedKeyFiles(cfg)))
			fmt.Fprintf(w, "key %s: d=%s s=%s, %s (per From domain; %d key files found)\n", name, k.Domain, k.Selector, k.File, n)
			continue
		}
		st := keystore.InspectKeyFile(k.File)
		pk := st.Key
		if pk == nil {
			continue
		}
		shared := ""
		if strings.Contains(k.Domain, "%") {
			// One file for several From domains.
			domains, unlisted := sharedKeyDomains(cfg, name)
			shared = " (shared: " + strings.Join(append(domains, unlisted...), ", ") + ")"
			if len(domains)+len(unlisted) == 0 {
				shared = " (shared; no rule uses it)"
			}
		}
		fmt.Fprintf(w, "key %s: d=%s s=%s, %s %d bits, %s%s\n", name, k.Domain, k.Selector, pk.KeyType, pk.Bits, k.File, shared)
		if r := rotationSummary(cfg, k); r != "" {
			fmt.Fprintf(w, "  %s\n", r)
		}
		printRotationSummary(w, cfg, name)
	}
	for i, r := range cfg.Signing {
		// 1-based, as config errors count rules.
		fmt.Fprintf(w, "signing[%d]: %s -> %s\n", i+1, r.From, strings.Join(r.Keys, ", "))
	}
	printSenderBinding(w, cfg)
}

// maxActivatedStop is the longest limits.shutdown_timeout that leaves a
// restart on dkimmilter.socket within Postfix's default
// milter_command_timeout (30s), with room for the new process to start.
const maxActivatedStop = 25 * time.Second

// stopWarnings: a restart waits for the old process's drain, which a
// silent SMTP session keeps to limits.shutdown_timeout. On a socket systemd
// holds, a session that starts meanwhile has its milter connection wait in
// the backlog, and Postfix applies milter_default_action to that whole
// session when no answer comes within milter_command_timeout
// (doc/postfix.md).
func stopWarnings(cfg *config.Config) []string {
	if cfg.Limits.ShutdownTimeout <= maxActivatedStop {
		return nil
	}
	return []string{fmt.Sprintf("%s: limits.shutdown_timeout = %s: during a restart on dkimmilter.socket, an SMTP session that starts while the old process drains waits that long for its milter connection to be answered, and Postfix gives up after milter_command_timeout (30s by default) and applies milter_default_action to the session: keep shutdown_timeout at most %s, or set milter_command_timeout in Postfix's main.cf above it",
		cfg.Where(0), cfg.Limits.ShutdownTimeout, maxActivatedStop)}
}

// databaseTarget names cfg's database server without the password.
func databaseTarget(cfg *config.Config) string {
	db, err := keystore.OpenDB(cfg)
	if err != nil || db == nil {
		return "?"
	}
	defer db.Close()
	return db.Target()
}
