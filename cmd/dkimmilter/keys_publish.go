package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/dnsupdate"
	"github.com/dkimmilter/dkimmilter/keystore"
)

const keysPublishHelp = `
Publish the DNS record of each named key through the [publish.NAME] table
its publish names: an RFC 2136 update signed with TSIG, or your command.
The record goes to SELECTOR._domainkey.DOMAIN, or, for a key with delegate,
to SELECTOR.DOMAIN-WITH-DASHES._domainkey.DELEGATE in the provider's zone.
The update only adds: it requires that the name has no TXT record yet, so
that nothing published by hand or by another system is overwritten. When
the name already has exactly this key's record, it says so and exits 0.
With -n, it prints what it would send (nsupdate(1) input, or the command
line) and sends nothing. Then 'dkimmilter keys check -authoritative NAME'
shows when every name server of the zone serves it. For a key that
rotates itself, this publishes the record of the key that signs now, as
its rotation state in [rotation] state_dir says (the configured key's
before the first rotation): the daemon publishes the keys rotation makes,
so this is for putting back a record removed by hand, which resumes a
paused rotation. A state this user cannot read sends nothing (exit 77):
run as root or as the daemon's user.

Exit status: 0 published, or already there; 1 the update failed or the
name has another record (nothing was changed); 64 usage (no NAME, an
unknown NAME); 77 a rotation state this user cannot read; 78 the configuration cannot be loaded, the key has no
publish, its file cannot be read, or the [publish.NAME] table cannot be
used (its tsig_key file, say).`

const keysRevokeHelp = `
Revoke the DNS record of each named key through the [publish.NAME] table
its publish names: replace it with a record with an empty p= (RFC 6376
§3.6.1), so that verifiers report "key revoked" for signatures made with
it rather than a DNS error. The update requires that the name holds this
key's record now, so that a record changed by hand, or another key's, is
never replaced; -force replaces whatever is there. A key that a [[signing]]
rule uses is refused without -force: mail it signs would fail to verify.
For a key that rotates itself, the record is that of the key that signs
now, as its rotation state says; the daemon revokes the old keys itself
('dkimmilter keys rotation' says when). When the
name already has the revoked record, it says so and exits 0. With -n, it
prints what it would send and sends nothing.

Exit status: 0 revoked, or already revoked; 1 the update failed or the
name holds another record (nothing was changed); 64 usage (no NAME, an
unknown NAME, a key still in use without -force); 77 a rotation state this
user cannot read; 78 the configuration
cannot be loaded, the key has no publish, its file cannot be read, or the
[publish.NAME] table cannot be used.`

// newPublisher makes the Publisher of a [publish.NAME] table. Tests
// replace it with a fake: the commands' logic does not depend on DNS.
var newPublisher = func(cfg *config.Config, p *config.Publisher) (dnsupdate.Publisher, error) {
	return dnsupdate.New(p, cfg.DNS.Nameservers, cfg.DNS.Timeout)
}

// publishOptions are the flags of keys publish and keys revoke.
type publishOptions struct {
	dryRun bool
	force  bool // revoke: whatever the name holds, and a key in use
	// authPort is the port the zone's name servers are asked on when a
	// change is refused and the command looks at what is there (0: 53);
	// tests point it at an in-process server.
	authPort int
}

func runKeysPublish(args []string, stdout, stderr io.Writer) int {
	return keysPublish(args, dnsupdate.Add, publishOptions{}, stdout, stderr)
}

func runKeysRevoke(args []string, stdout, stderr io.Writer) int {
	return keysPublish(args, dnsupdate.Revoke, publishOptions{}, stdout, stderr)
}

// keysPublish is keys publish (dnsupdate.Add) and keys revoke.
func keysPublish(args []string, action dnsupdate.Action, opts publishOptions, stdout, stderr io.Writer) int {
	cmd, help := "publish", keysPublishHelp
	if action == dnsupdate.Revoke {
		cmd, help = "revoke", keysRevokeHelp
	}
	synopsis := "[-config FILE] [-n] NAME..."
	if action == dnsupdate.Revoke {
		synopsis = "[-config FILE] [-n] [-force] NAME..."
	}
	fl := newKeysFlagSet(cmd, synopsis, help, stderr)
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+")")
	fl.BoolVar(&opts.dryRun, "n", false, "print what would be sent, and send nothing")
	if action == dnsupdate.Revoke {
		fl.BoolVar(&opts.force, "force", false, "replace whatever record the name holds, and revoke a key that a [[signing]] rule uses")
	}
	nameArgs, code, ok := parseNamesAndFlags(fl, args, stderr)
	if !ok {
		return code
	}
	if len(nameArgs) == 0 {
		fmt.Fprintf(stderr, "dkimmilter keys %s: name the keys, e.g. dkimmilter keys %s example-rsa ('dkimmilter keys list' lists them)\n", cmd, cmd)
		return exitUsage
	}
	cfg, ok := loadKeysConfig(*cfgPath, stderr)
	if !ok {
		return exitConfig
	}
	names, ok := selectKeys(cfg, nameArgs, "keys "+cmd, stderr)
	if !ok {
		return exitUsage
	}
	code = exitOK
	for _, name := range names {
		c := publishKey(cfg, name, action, opts, stdout, stderr)
		code = worseExit(code, c)
	}
	return code
}

// worseExit keeps the exit status that says more: configuration errors
// over usage errors over failures over success.
func worseExit(a, b int) int {
	rank := func(c int) int {
		switch c {
		case exitOK:
			return 0
		case exitConfig:
			return 3
		case exitUsage:
			return 2
		}
		return 1
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// publishKey publishes or revokes one key's record and returns the exit
// status for it.
func publishKey(cfg *config.Config, name string, action dnsupdate.Action, opts publishOptions, stdout, stderr io.Writer) int {
	cmd := "keys " + action.String()
	if action == dnsupdate.Add {
		cmd = "keys publish"
	}
	k := cfg.Keys[name]
	where := fmt.Sprintf("%s: keys.%s", cfg.Where(k.Line), name)
	switch {
	case k.Query != "":
		// Its domains' records are rotation's: the rotating host
		// publishes, revokes and deletes them, per domain.
		fmt.Fprintf(stderr, "dkimmilter %s: %s: a key with a query has its records published per domain by its rotation (rotate and publish on it: the daemon that holds the rotation lock makes every change); 'dkimmilter keys dns %s' prints them to publish by hand\n", cmd, where, name)
		return exitConfig
	case strings.Contains(k.Domain+k.File, "%"):
		fmt.Fprintf(stderr, "dkimmilter %s: %s: a key with '%%' in its domain or file name is not published by dkimmilter: 'dkimmilter keys dns %s' prints its records to publish by hand\n", cmd, where, name)
		return exitConfig
	case k.Publish == "":
		fmt.Fprintf(stderr, "dkimmilter %s: %s has no publish: add publish = \"NAME\" to it, naming a [publish.NAME] table that says how records are published (see dkimmilter.toml(5))\n", cmd, where)
		return exitConfig
	}
	p := cfg.Publishers[k.Publish] // config checked that it exists
	// The key whose record to change: the one that signs now, which for
	// a key that rotates is the active key of its state.
	selector, file, which := k.Selector, k.File, ""
	switch r := keyRotation(cfg, name); {
	case r != nil && r.err != nil:
		fmt.Fprintf(stderr, "dkimmilter %s: keys.%s: nothing sent: its rotation state says which key signs, and %v\n", cmd, name, r.err)
		if errors.Is(r.err, fs.ErrPermission) {
			return exitNoPerm
		}
		return exitConfig
	case r.signs():
		selector, file = r.st.Active.Selector, r.st.Active.File
		which = fmt.Sprintf(", the key that signs now as the rotation state %s says", r.file)
	}
	st := keystore.InspectKeyFile(file)
	if st.Key == nil {
		fmt.Fprintf(stderr, "dkimmilter %s: %s: %v\n", cmd, where, st.Err)
		return exitConfig
	}
	if st.Err != nil {
		// The public key is right whatever the file's mode; say what
		// the daemon will refuse.
		fmt.Fprintf(stderr, "warning: %s: %v\n", where, st.Err)
	}
	record := keystore.Record(st.Key)
	c := dnsupdate.Change{Action: action, Name: k.RecordName(selector), Value: record}
	if action == dnsupdate.Revoke {
		c.Value, c.Expect = keystore.RevokedRecord(st.Key.KeyType), record
		if opts.force {
			c.Expect = ""
		}
		if users := keyUsers(cfg, name); users != "not used" && !opts.force {
			fmt.Fprintf(stderr, "dkimmilter %s: keys.%s (selector %s%s) is used by %s: revoking its record makes receivers fail every message it signs (\"key revoked\"); switch the rules to another key, reload dkimmilter, wait until mail signed with it has been delivered (sign.expire), then revoke; or give -force\n",
				cmd, name, selector, which, users)
			return exitUsage
		}
	}
	via := fmt.Sprintf("[publish.%s] (%s, %s)", p.Name, p.Method, cfg.Where(p.Line))
	pub, err := newPublisher(cfg, p)
	if err != nil {
		fmt.Fprintf(stderr, "dkimmilter %s: %s: %v\n", cmd, via, err)
		return exitConfig
	}
	verb, done := "publish", "published"
	if action == dnsupdate.Revoke {
		verb, done = "revoke", "revoked"
	}
	if opts.dryRun {
		fmt.Fprintf(stdout, "; keys.%s: would %s %s (selector %s%s) through %s; nothing sent\n", name, verb, c.Name, selector, which, via)
		fmt.Fprintln(stdout, strings.TrimRight(pub.Describe(c), "\n"))
		return exitOK
	}
	// The publisher bounds each try by the table's timeout; this bounds
	// the whole, lookups of the zone's primary included.
	ctx, cancel := context.WithTimeout(context.Background(), 2*p.Timeout+2*cfg.DNS.Timeout)
	defer cancel()
	// A provider's command runs in a process group of its own, out of
	// reach of the terminal's ^C: an interrupt stops it through ctx.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	out, err := pub.Apply(ctx, c)
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "keys.%s: %s %s (selector %s%s) through %s\n", name, done, c.Name, selector, which, via)
		printOutput(stdout, out)
		if action == dnsupdate.Add {
			fmt.Fprintf(stdout, "Sign with it only once every name server of the zone serves it: 'dkimmilter keys check%s -authoritative %s' says when.\n", keysConfigArg(cfg), name)
		}
		return exitOK
	case errors.Is(err, dnsupdate.ErrChanged):
		return changedElsewhere(ctx, cfg, name, c, opts, err, stdout, stderr)
	}
	fmt.Fprintf(stderr, "dkimmilter %s: keys.%s: %s %s through %s failed, nothing was changed: %v\n", cmd, name, verb, c.Name, via, err)
	printOutput(stderr, out)
	return exitFailure
}

// changedElsewhere handles an update refused because the name did not
// hold what it expected: when the name already holds what the update
// would have put there, the work is done; otherwise it says what is there.
func changedElsewhere(ctx context.Context, cfg *config.Config, name string, c dnsupdate.Change, opts publishOptions, err error, stdout, stderr io.Writer) int {
	cmd := "keys publish"
	if c.Action == dnsupdate.Revoke {
		cmd = "keys revoke"
	}
	recs, server, lerr := publishedTXT(ctx, cfg, c.Name, opts.authPort)
	if lerr == nil && len(recs) == 1 && sameKeyRecord(recs[0], c.Value) {
		what := "this key's record"
		if c.Action == dnsupdate.Revoke {
			what = "the revoked record"
		}
		fmt.Fprintf(stdout, "keys.%s: %s already has %s (%s): nothing to change\n", name, c.Name, what, server)
		return exitOK
	}
	there := "the records there could not be read: " + fmt.Sprint(lerr)
	if lerr == nil {
		there = server + " serves " + quoteRecords(recs)
	}
	problem := "already holds another TXT record"
	hint := "it belongs to someone else, or holds an old key: remove it by hand if it is yours to remove, or give the key another selector"
	if c.Action == dnsupdate.Revoke {
		problem = "does not hold this key's record"
		hint = "someone changed it by hand, or it holds another key: check it, or give -force to replace whatever is there"
	}
	fmt.Fprintf(stderr, "dkimmilter %s: keys.%s: %s %s (%v); %s; nothing was changed (hint: %s)\n", cmd, name, c.Name, problem, err, there, hint)
	return exitFailure
}

// sameKeyRecord reports whether the record published (have) says what
// the one dkimmilter would publish (want) says: the same key type and
// public key, or both revoked. The text may differ: a record made by
// opendkim-genkey carries h=sha256, a panel may reorder tags or add
// spaces, and none of that changes what verifiers do with it (RFC 6376
// §3.6.1).
// https://www.rfc-editor.org/rfc/rfc6376#section-3.6.1
func sameKeyRecord(have, want string) bool {
	if have == want {
		return true
	}
	h, herr := dkim.ParseKeyRecord(have)
	w, werr := dkim.ParseKeyRecord(want)
	switch {
	case errors.Is(werr, dkim.ErrKeyRevoked):
		return errors.Is(herr, dkim.ErrKeyRevoked)
	case herr != nil || werr != nil:
		return false
	}
	return h.KeyType == w.KeyType && h.P == w.P
}

// publishedTXT asks the zone's own name servers (RD=0) what TXT records
// name has now: a resolver's cache could show an older answer. The first
// server that answers wins; records is nil when the name has none.
func publishedTXT(ctx context.Context, cfg *config.Config, name string, port int) (records []string, server string, err error) {
	res, err := dns.NewClient(cfg.DNS.Nameservers, cfg.DNS.Timeout)
	if err != nil {
		return nil, "", err
	}
	zone, err := dns.FindZone(ctx, res, name, port)
	if err != nil {
		return nil, "", err
	}
	var last error
	for _, ns := range zone.Servers {
		zr, err := dns.NewZoneResolver(ns.Addr, cfg.DNS.Timeout, nil)
		if err != nil {
			last = err
			continue
		}
		r, err := zr.LookupTXT(ctx, name)
		var de *net.DNSError
		switch {
		case err == nil:
			return r.Records, ns.Host, nil
		case errors.As(err, &de) && de.IsNotFound:
			return nil, ns.Host, nil
		}
		last = err
	}
	return nil, "", last
}

// quoteRecords shows TXT records for a message: "no TXT record", or each
// quoted.
func quoteRecords(recs []string) string {
	if len(recs) == 0 {
		return "no TXT record"
	}
	q := slices.Clone(recs)
	for i, r := range q {
		q[i] = fmt.Sprintf("%q", r)
	}
	return strings.Join(q, ", ")
}

// printOutput prints what a publisher's command said, indented.
func printOutput(w io.Writer, out string) {
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if l != "" {
			fmt.Fprintf(w, "  | %s\n", l)
		}
	}
}
