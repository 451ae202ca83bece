package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	osuser "os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/keystore/keycheck"
	"github.com/dkimmilter/dkimmilter/keystore/rotation"
)

const keysRotationHelp = `
Print the state of each key that rotates itself (all, or the ones named),
as the daemon keeps it in [rotation] state_dir: the key that signs now
(selector, file, since when), the next key while it is pending (published,
waiting until every authoritative server of the zone serves it), the old
keys whose records are still published (retiring, until their revocation)
or revoked (until their deletion), the next step and its date, and, when
the rotation is stuck, why: a pause (a record changed by hand: the name,
what rotation expects there and what a server served), or the failed
step's last error and when it is tried again. This is the command to run
when a rotation alert fires. It only reads the states: the daemon makes
every step.

A key with a query rotates each domain of its list_query on its own, its
state in the database's dkimmilter_rotation table: one entry per domain,
or only DOMAIN's with -d DOMAIN.

The states are readable only by the daemon's user (0600): run it as root
or as that user.

Exit status: 0 every rotation goes on; 1 at least one is paused or its
last step failed; 64 usage (an unknown NAME, or a NAME that does not
rotate); 77 a state cannot be read by this user; 78 the configuration
cannot be loaded or a state file is damaged.`

// exitNoPerm is sysexits.h's EX_NOPERM: a state this user cannot read.
const exitNoPerm = 77

// readRotationState reads a key's rotation state; tests replace it to
// make it fail as for a user who may not read the state directory.
var readRotationState = rotation.ReadState

// rotated is what the rotation state says of a configured key.
type rotated struct {
	name string
	kc   *config.Key
	file string          // the state file
	st   *rotation.State // nil when err is set
	// err: the state cannot be read (by this user, or at all); the
	// commands cannot tell which key signs.
	err error
	// ignored says why the daemon leaves the state alone and signs with
	// the configured key ("" when the state's active key signs).
	ignored string
}

// signs reports whether the state's active key signs in place of the
// configured one.
func (r *rotated) signs() bool { return r != nil && r.st != nil && r.ignored == "" }

// keyRotation reads the rotation state of keys.NAME: nil when the key
// cannot rotate (a query, '%' in its domain or file) or has no state and
// does not rotate. A key whose rotate was removed keeps the key rotation
// made last signing, as the daemon does (doc/rotation.md), so its state
// is read too.
func keyRotation(cfg *config.Config, name string) *rotated {
	kc := cfg.Keys[name]
	if kc == nil || cfg.Rotation.StateDir == "" || kc.Query != "" || kc.File == "" || strings.Contains(kc.Domain+kc.File, "%") {
		return nil
	}
	r := &rotated{name: name, kc: kc, file: rotation.StatePath(cfg.Rotation.StateDir, name)}
	st, err := readRotationState(cfg.Rotation.StateDir, name)
	switch {
	case err != nil && errors.Is(err, fs.ErrPermission) && kc.Rotate <= 0 && kc.Publish == "":
		// A key that neither rotates nor publishes has no state
		// unless both were removed after it rotated: a user who may
		// not read the state directory (which systemd makes for
		// the daemon whether anything rotates or not) is not told
		// about it for every key.
		return nil
	case err != nil:
		r.err = stateReadError(cfg, err)
		return r
	case st == nil && kc.Rotate <= 0:
		return nil
	case st == nil:
		return r // rotates, has not stepped yet: the configured key signs
	}
	r.st = st
	// As the daemon decides at start (rotation.Engine), so that the
	// commands name the key it signs with.
	switch _, err := os.Stat(st.Active.File); {
	case st.Domain != kc.Domain:
		r.ignored = fmt.Sprintf("the state is for domain %s and keys.%s signs for %s: the daemon leaves it alone and signs with the configured key (move %s away, or put the domain back)",
			st.Domain, name, kc.Domain, r.file)
	case errors.Is(err, fs.ErrNotExist):
		r.ignored = fmt.Sprintf("the key rotation made active, %s, is gone: the daemon signs with the configured key and rotation waits (restore the file, its record is published; or move %s away to start over)",
			st.Active.File, r.file)
	}
	return r
}

// stateReadError says why a state cannot be read, and, for a user who
// may not read the state directory, how to run the command so that it
// can.
func stateReadError(cfg *config.Config, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	// The daemon's user owns the state directory (it made it, or
	// systemd's StateDirectory= did for it).
	user := "dkimmilter"
	if fi, serr := os.Stat(cfg.Rotation.StateDir); serr == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if u, lerr := osuser.LookupId(strconv.FormatUint(uint64(st.Uid), 10)); lerr == nil {
				user = u.Username
			}
		}
	}
	return fmt.Errorf("%w: the rotation states in %s are readable only by the daemon's user: run this command as root, or as that user (sudo -u %s dkimmilter keys ...), to know which key signs",
		err, cfg.Rotation.StateDir, user)
}

// stamp writes a date of the rotation, in UTC to the second (rotation
// periods in tests are seconds).
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// due is stamp, marked when the date has passed: a step overdue says the
// daemon is not running, or is failing.
func due(t, now time.Time) string {
	if !t.IsZero() && !t.After(now) {
		return stamp(t) + " (due now)"
	}
	return stamp(t)
}

// nextStep is what the daemon does next for r's key, and when (zero:
// when a condition holds, said in what).
func nextStep(cfg *config.Config, r *rotated, now time.Time) (what string, at time.Time) {
	st, kc := r.st, r.kc
	if st == nil {
		if kc.Rotate <= 0 {
			return "", time.Time{}
		}
		// As the engine counts a configured key's age.
		what = "make the next key and publish its record (the configured key's age counts from its file's modification time)"
		if fi, err := os.Stat(kc.File); err == nil {
			return what, fi.ModTime().Add(kc.Rotate)
		}
		return what, time.Time{}
	}
	defer func() {
		if st.Failures > 0 && st.RetryAt.After(at) && st.Paused == nil && r.ignored == "" && kc.Rotate > 0 {
			what, at = what+", tried again", st.RetryAt
		}
	}()
	switch {
	case r.ignored != "":
		return "nothing: " + r.ignored, time.Time{}
	case st.Paused != nil:
		return "nothing until " + st.Paused.Name + " holds what rotation expects again: then it resumes by itself", time.Time{}
	case kc.Rotate <= 0:
		return "nothing: keys." + r.name + " no longer rotates (rotate is not set); the key rotation made last goes on signing", time.Time{}
	case st.Pending != nil && st.Pending.PublishedAt.IsZero():
		return "publish the record of " + st.Pending.Selector + " at " + kc.RecordName(st.Pending.Selector), now
	case st.Pending != nil:
		what = "switch to " + st.Pending.Selector + " once every authoritative server of the zone serves its record (checked every " + formatDays(checkInterval(cfg)) + ")"
		if p := cfg.Publishers[kc.Publish]; p != nil && p.TTL > 0 {
			// The daemon also waits the publisher's TTL after the
			// publication (rotation.Engine).
			if t := st.Pending.PublishedAt.Add(p.TTL); t.After(now) {
				return what, t
			}
		}
		return what, time.Time{}
	}
	what, at = "make the next key and publish its record", st.Active.Since.Add(kc.Rotate)
	for _, k := range st.Retiring {
		if k.RevokeAt.Before(at) {
			what, at = "revoke the record of "+k.Selector+" (p= empty)", k.RevokeAt
		}
	}
	for _, k := range st.Revoked {
		if k.DeleteAt.Before(at) {
			what, at = "delete the revoked record of "+k.Selector, k.DeleteAt
		}
	}
	return what, at
}

func checkInterval(cfg *config.Config) time.Duration {
	if cfg.Rotation.CheckInterval > 0 {
		return cfg.Rotation.CheckInterval
	}
	return time.Minute
}

// stuck reports whether r's rotation waits on someone: paused, or its
// last step failed.
func (r *rotated) stuck() bool {
	return r.err != nil || r.st != nil && (r.st.Paused != nil || r.st.Failures > 0)
}

// writeRotation prints r's state: one line per key (active, pending,
// retiring, revoked) with its date, the next step, a pause and the last
// failure; with hints, what to do about them.
func writeRotation(w io.Writer, cfg *config.Config, r *rotated, now time.Time, hints bool) {
	kc := r.kc
	every := "does not rotate any more (rotate is not set)"
	if kc.Rotate > 0 {
		every = "rotates every " + formatDays(kc.Rotate)
	}
	fmt.Fprintf(w, "keys.%s (%s) %s; state %s\n", r.name, kc.Domain, every, r.file)
	if r.err != nil {
		fmt.Fprintf(w, "  cannot read the state: %v\n", r.err)
		return
	}
	if r.st == nil && kc.Query != "" {
		fmt.Fprintf(w, "  no state yet: the key table's key signs; the host that rotates starts the domain's rotation when list_query returns it\n")
		return
	}
	if r.st == nil {
		fmt.Fprintf(w, "  no state yet: the configured key signs (selector %s, %s)\n", kc.Selector, kc.File)
		writeNext(w, cfg, r, now)
		return
	}
	st := r.st
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	active := fmt.Sprintf("signs since %s", stamp(st.Active.Since))
	if r.ignored != "" {
		active = "does NOT sign: " + r.ignored
	}
	fmt.Fprintf(tw, "  active\t%s\t%s\t%s\n", st.Active.Selector, st.Active.File, active)
	if p := st.Pending; p != nil {
		what := "made " + stamp(p.Created) + ", not published yet"
		if !p.PublishedAt.IsZero() {
			what = "published " + stamp(p.PublishedAt) + ", not yet served by every authoritative server"
			if !p.FirstSeenAt.IsZero() {
				what += " (first seen " + stamp(p.FirstSeenAt) + ")"
			}
		}
		fmt.Fprintf(tw, "  pending\t%s\t%s\t%s\n", p.Selector, p.File, what)
	}
	for _, k := range st.Retiring {
		fmt.Fprintf(tw, "  retiring\t%s\t%s\tsigned until %s; record kept until its revocation at %s\n", k.Selector, k.File, stamp(k.SwitchedAt), due(k.RevokeAt, now))
	}
	for _, k := range st.Revoked {
		fmt.Fprintf(tw, "  revoked\t%s\t%s\trevoked %s; record deleted at %s\n", k.Selector, k.File, stamp(k.RevokedAt), due(k.DeleteAt, now))
	}
	tw.Flush()
	if r.signs() && st.Active.Selector != kc.Selector && kc.Query == "" {
		fmt.Fprintf(w, "  configured: selector %s, %s (where the rotation started; the active key signs)\n", kc.Selector, kc.File)
	}
	if p := st.Paused; p != nil {
		fmt.Fprintf(w, "  PAUSED since %s: %s (%s's record, at step %s): rotation expects %s; %s served %s\n",
			stamp(p.Since), p.Name, p.Selector, p.Step, expectedRecords(p.Expected), p.Server, quoteFound(p.Found))
		if hints {
			fmt.Fprintf(w, "     hint: %s\n", pauseHint(cfg, r))
		}
	}
	if st.Failures > 0 {
		fmt.Fprintf(w, "  FAILING: %d failed %s in a row; last error: %s\n", st.Failures, map[bool]string{true: "attempt", false: "attempts"}[st.Failures == 1], st.LastError)
		fmt.Fprintf(w, "  next try at %s; the active key signs meanwhile\n", due(st.RetryAt, now))
		if hints {
			fmt.Fprintln(w, "     hint: fix what the error names (the log's \"rotation: step failed\" lines say the same); the daemon retries by itself")
		}
	}
	writeNext(w, cfg, r, now)
}

// writeNext prints the next step of r's rotation and its date.
func writeNext(w io.Writer, cfg *config.Config, r *rotated, now time.Time) {
	if what, at := nextStep(cfg, r, now); what != "" {
		when := ""
		if !at.IsZero() {
			when = " at " + due(at, now)
		}
		fmt.Fprintf(w, "  next: %s%s\n", what, when)
	}
}

// expectedRecords says what rotation accepts at a paused name.
func expectedRecords(values []string) string {
	var out []string
	for _, v := range values {
		if v == "" {
			out = append(out, "no TXT record")
			continue
		}
		out = append(out, fmt.Sprintf("%q", v))
	}
	return strings.Join(out, " or ")
}

// quoteFound quotes what a server served, unless it says there was none.
func quoteFound(found string) string {
	if found == "no TXT record" {
		return found
	}
	return fmt.Sprintf("%q", found)
}

// pauseHint says how to resume a paused rotation.
func pauseHint(cfg *config.Config, r *rotated) string {
	p := r.st.Paused
	want := ""
	if len(p.Expected) > 0 {
		want = p.Expected[0]
	}
	put := "remove the record at " + p.Name
	if want != "" {
		put = "put the record back: " + p.Name + ". TXT \"" + want + "\" (in strings of at most 255 bytes)"
		if p.Selector == r.st.Active.Selector {
			put += "; 'dkimmilter keys publish" + keysConfigArg(cfg) + " " + r.name + "' does it when the name has no record"
		}
	}
	start := "move " + r.file + " away and reload the daemon"
	if r.kc.Query != "" {
		start = fmt.Sprintf("delete its row (DELETE FROM %s WHERE key = '%s' AND domain = '%s'); the key table's key signs again within database.cache_ttl", keystore.RotationTable, r.name, r.st.Domain)
	}
	return put + "; rotation resumes by itself once every server serves it. To start over from the configured key instead, " + start
}

// dbKeyRotations reads the rotation states of keys.NAME, a key with a
// query that rotates, from the database's rotation table: one per domain
// (only domain's when it is not ""). A database that cannot be read is
// one entry with err.
func dbKeyRotations(cfg *config.Config, name, domain string) []*rotated {
	kc := cfg.Keys[name]
	table := "in table " + keystore.RotationTable
	fail := func(err error) []*rotated { return []*rotated{{name: name, kc: kc, file: table, err: err}} }
	db, err := keystore.OpenDB(cfg)
	if err != nil {
		return fail(err)
	}
	defer db.Close()
	states, bad, err := rotation.ReadDBStates(context.Background(), db, name)
	if err != nil {
		return fail(fmt.Errorf("reading %s: %w", keystore.RotationTable, err))
	}
	var domains []string
	for d := range states {
		domains = append(domains, d)
	}
	for d := range bad {
		domains = append(domains, d)
	}
	slices.Sort(domains)
	var out []*rotated
	for _, d := range domains {
		if domain != "" && d != domain {
			continue
		}
		k := *kc
		k.Domain = d
		out = append(out, &rotated{name: name, kc: &k, file: table + " (key " + name + ", domain " + d + ")", st: states[d], err: bad[d]})
	}
	if len(out) == 0 && domain != "" {
		k := *kc
		k.Domain = domain
		out = append(out, &rotated{name: name, kc: &k, file: table + " (key " + name + ", domain " + domain + ")"})
	}
	return out
}

func runKeysRotation(args []string, stdout, stderr io.Writer) int {
	return keysRotation(args, stdout, stderr, time.Now())
}

// keysRotation is keys rotation with the clock that says what is due.
func keysRotation(args []string, stdout, stderr io.Writer, now time.Time) int {
	fl := newKeysFlagSet("rotation", "[-config FILE] [NAME...]", keysRotationHelp, stderr)
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+")")
	domain := fl.String("d", "", "for a key with a query, only this domain's rotation")
	nameArgs, code, ok := parseNamesAndFlags(fl, args, stderr)
	if !ok {
		return code
	}
	cfg, ok := loadKeysConfig(*cfgPath, stderr)
	if !ok {
		return exitConfig
	}
	names, ok := selectKeys(cfg, nameArgs, "keys rotation", stderr)
	if !ok {
		return exitUsage
	}
	var list []*rotated
	for _, name := range names {
		if kc := cfg.Keys[name]; kc.Query != "" && kc.Rotate > 0 {
			list = append(list, dbKeyRotations(cfg, name, strings.ToLower(strings.TrimSuffix(*domain, ".")))...)
			continue
		}
		r := keyRotation(cfg, name)
		if r == nil {
			if len(nameArgs) > 0 {
				fmt.Fprintf(stderr, "dkimmilter keys rotation: keys.%s does not rotate (%s): set rotate and publish on it (see dkimmilter.toml(5))\n", name, cfg.Where(cfg.Keys[name].Line))
				code = exitUsage
			}
			continue
		}
		list = append(list, r)
	}
	if code != exitOK {
		return code
	}
	if len(list) == 0 {
		fmt.Fprintf(stdout, "no key in %s rotates (a key rotates with rotate and publish set; see dkimmilter.toml(5))\n", cfg.File)
		return exitOK
	}
	code = exitOK
	for i, r := range list {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		writeRotation(stdout, cfg, r, now, true)
		switch {
		case r.err != nil && errors.Is(r.err, fs.ErrPermission):
			code = max(code, exitNoPerm)
		case r.err != nil:
			code = exitConfig
		case r.stuck() && code == exitOK:
			code = exitFailure
		}
	}
	return code
}

// rotationReport is what keys check adds for a key whose rotation state
// names the key that signs: a line per other key of the rotation, and the
// problems: a pause fails (the daemon changes none of the key's records
// until it is resolved), as does a retiring key's record that is gone
// while mail signed with it may still be checked.
type rotationReport struct {
	lines    []string
	problems []keycheck.Problem
}

// checkRotationRecords looks up the records of the pending, retiring and revoked
// keys of r with look (the same resolvers, or the zone's servers, as the
// active key) and judges each against what rotation published.
func checkRotationRecords(cfg *config.Config, r *rotated, look func(selector string) *keycheck.Result) rotationReport {
	var rep rotationReport
	st, now := r.st, time.Now()
	if r.ignored != "" {
		rep.lines = append(rep.lines, "rotation: state left alone: "+r.ignored)
		return rep
	}
	rep.lines = append(rep.lines, fmt.Sprintf("rotation: %s signs since %s (state %s)", st.Active.Selector, stamp(st.Active.Since), r.file))
	if p := st.Paused; p != nil {
		rep.problems = append(rep.problems, keycheck.Problem{Status: keycheck.Fail,
			Text: fmt.Sprintf("rotation paused since %s: %s (%s's record) is not what rotation published: it expects %s, %s served %s; the daemon changes none of keys.%s's records until it is",
				stamp(p.Since), p.Name, p.Selector, expectedRecords(p.Expected), p.Server, quoteFound(p.Found), r.name),
			Hints: []string{pauseHint(cfg, r)}})
	}
	if st.Failures > 0 {
		rep.problems = append(rep.problems, keycheck.Problem{Status: keycheck.Warn,
			Text:  fmt.Sprintf("rotation's last step failed (%d in a row): %s; next try at %s", st.Failures, st.LastError, stamp(st.RetryAt)),
			Hints: []string{"fix what the error names; the daemon retries by itself ('dkimmilter keys rotation" + keysConfigArg(cfg) + " " + r.name + "' shows the state)"}})
	}
	if p := st.Pending; p != nil {
		if p.PublishedAt.IsZero() {
			rep.lines = append(rep.lines, fmt.Sprintf("pending  %s: made %s, its record not published yet", p.Selector, stamp(p.Created)))
		} else {
			res := look(p.Selector)
			s := classify(res, p.Record)
			switch {
			case len(s.other) > 0:
				rep.problems = append(rep.problems, keycheck.Problem{Status: keycheck.Warn,
					Text:  fmt.Sprintf("pending %s: %s serves another record at %s than rotation published (%s): rotation pauses rather than overwrite it", p.Selector, strings.Join(s.other, ", "), res.DNSName, quoteFound(s.otherRecord)),
					Hints: []string{"remove that record, or check who else publishes at " + res.DNSName}})
			case len(s.want) > 0 && len(s.want) == len(res.Answers):
				rep.lines = append(rep.lines, fmt.Sprintf("pending  %s: %s served by every server asked; the daemon switches to it once every authoritative server serves it", p.Selector, res.DNSName))
			default:
				rep.lines = append(rep.lines, fmt.Sprintf("pending  %s: not yet visible at %s (published %s); the daemon switches to it once every authoritative server serves it",
					p.Selector, strings.Join(append(s.none, s.unknown...), ", "), stamp(p.PublishedAt)))
			}
		}
	}
	for _, k := range st.Retiring {
		res := look(k.Selector)
		s := classify(res, k.Record)
		switch {
		case len(s.none)+len(s.other) > 0:
			where := strings.Join(append(s.none, s.other...), ", ")
			rep.problems = append(rep.problems, keycheck.Problem{Status: keycheck.Fail,
				Text: fmt.Sprintf("retiring %s: %s does not serve its record at %s: mail signed with %s until the switch (%s) fails (\"no key for signature\") until %s, when rotation revokes it",
					k.Selector, where, res.DNSName, k.Selector, stamp(k.SwitchedAt), stamp(k.RevokeAt)),
				Hints: []string{"put it back: " + res.DNSName + ". TXT \"" + k.Record + "\" (in strings of at most 255 bytes)"}})
		case len(s.unknown) > 0:
			rep.problems = append(rep.problems, keycheck.Problem{Status: keycheck.Temp,
				Text:  fmt.Sprintf("retiring %s: %s could not be asked for %s", k.Selector, strings.Join(s.unknown, ", "), res.DNSName),
				Hints: []string{"check again later"}})
		default:
			rep.lines = append(rep.lines, fmt.Sprintf("retiring %s: %s still published, as needed until its revocation at %s", k.Selector, res.DNSName, due(k.RevokeAt, now)))
		}
	}
	for _, k := range st.Revoked {
		res := look(k.Selector)
		s := classify(res, k.RevokedRecord, k.Record)
		switch {
		case len(s.other) > 0:
			rep.problems = append(rep.problems, keycheck.Problem{Status: keycheck.Warn,
				Text:  fmt.Sprintf("revoked %s: %s serves another record at %s than the revoked one (%s): rotation pauses rather than delete it", k.Selector, strings.Join(s.other, ", "), res.DNSName, quoteFound(s.otherRecord)),
				Hints: []string{"put the revoked record back: " + res.DNSName + ". TXT \"" + k.RevokedRecord + "\""}})
		case len(s.none) > 0 && len(s.want)+len(s.lag) == 0:
			rep.lines = append(rep.lines, fmt.Sprintf("revoked  %s: %s has no record any more: deleted, as rotation does at %s", k.Selector, res.DNSName, stamp(k.DeleteAt)))
		case len(s.lag) > 0:
			rep.lines = append(rep.lines, fmt.Sprintf("revoked  %s: %s still serves the record as it was before the revocation at %s (a server that lags)", k.Selector, strings.Join(s.lag, ", "), res.DNSName))
		default:
			rep.lines = append(rep.lines, fmt.Sprintf("revoked  %s: %s revoked (p= empty), as expected; deleted at %s", k.Selector, res.DNSName, due(k.DeleteAt, now)))
		}
	}
	return rep
}

// served sorts the servers asked by what they serve at a name.
type served struct {
	want, lag, none, other, unknown []string
	otherRecord                     string // the first other record, for the message
}

// classify sorts res's answers: the record want, one of lag (a server
// not updated yet), no record, another record, or no answer.
func classify(res *keycheck.Result, want string, lag ...string) served {
	var s served
	for _, a := range res.Answers {
		var de *net.DNSError
		switch {
		case a.Err != nil && errors.As(a.Err, &de) && de.IsNotFound, a.Err == nil && len(a.Records) == 0:
			s.none = append(s.none, a.Resolver)
		case a.Err != nil:
			s.unknown = append(s.unknown, a.Resolver)
		case len(a.Records) == 1 && sameRecord(a.Records[0], want):
			s.want = append(s.want, a.Resolver)
		case len(a.Records) == 1 && slices.ContainsFunc(lag, func(l string) bool { return sameRecord(a.Records[0], l) }):
			s.lag = append(s.lag, a.Resolver)
		default:
			s.other = append(s.other, a.Resolver)
			if s.otherRecord == "" {
				s.otherRecord = strings.Join(a.Records, " | ")
			}
		}
	}
	return s
}

// sameRecord compares two key records as verifiers read them: white space
// is not significant in a DKIM record's tags or in p='s base64 (RFC 6376
// §3.2, §3.6.1).
func sameRecord(a, b string) bool {
	squash := func(s string) string { return strings.Join(strings.Fields(s), "") }
	return squash(a) == squash(b)
}
