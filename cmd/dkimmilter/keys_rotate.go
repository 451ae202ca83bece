package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/keystore/rotation"
)

const keysRotateHelp = `
Rotate a domain's key safely, in the five steps of the usual guides:
  1. generate a new key under a new selector (the date, as keys gen) in the
     directory of the current key (or DIR/DOMAIN with -dir), of the same
     type as the current key unless -t, and at least 2048 bits for RSA;
  2. print its DNS record, to publish next to the old one;
  3. print the configuration lines: the new [keys.NAME] table, and the
     [[signing]] lines that switch from the old key to the new one;
  4. say to run 'dkimmilter keys check NEWNAME' and to switch only once it
     reports the record published and matching (the DNS gate);
  5. say until which date to keep the old record (sign.expire, at least 7
     days, plus 2 days for delayed mail, counted from the switch), then to
     revoke it with an empty p= rather than delete it, and to remove the
     old key.
It changes nothing but the new key file: the configuration and DNS are
yours to edit. Run as root, the new file gets the old key's owner, group
and mode when the user the daemon runs as can read the old key that way,
and is otherwise given to that user with mode 0600 (-user, or as for
'dkimmilter check': the owner of the socket's directory, else the user
dkimmilter), so that the next reload can load it. With several keys for the domain (an RSA and an Ed25519 key),
-t or -key says which one to replace.

A key that rotates itself (rotate set) is not rotated by hand: the command
says so, prints where its rotation stands (as 'dkimmilter keys rotation'),
and exits 64. -force makes a key by hand anyway, for a key that must go
now; the selectors of its rotation are then avoided, and the output says
to move its rotation state away after the switch.

Exit status: 0 done; 1 the key file exists or cannot be written; 64 usage
(no key for the domain, an unknown -key, a bad -t, -b or -s, a key that
rotates itself without -force); 78 the configuration cannot be loaded.`

const keysRotateUsage = "-d DOMAIN [-config FILE] [-t rsa|ed25519] [-b BITS] [-s SELECTOR] [-dir DIR] [-key NAME] [-user NAME] [-force]"

// Minimum time to keep a retired key's record published after the
// switch, whatever sign.expire says: a message may wait 5 days in a
// sending queue (Postfix's maximal_queue_lifetime) and be verified only
// when it arrives, and receivers may hold it longer (greylisting, a
// backup MX). https://www.postfix.org/postconf.5.html#maximal_queue_lifetime
const (
	retireFloor  = 7 * 24 * time.Hour
	retireMargin = 2 * 24 * time.Hour
)

func runKeysRotate(args []string, stdout, stderr io.Writer) int {
	return keysRotate(args, stdout, stderr, time.Now())
}

// keysRotate is keys rotate with the clock for the selector and dates.
func keysRotate(args []string, stdout, stderr io.Writer, now time.Time) int {
	fl := newKeysFlagSet("rotate", keysRotateUsage, keysRotateHelp, stderr)
	domain := fl.String("d", "", "the domain whose key to rotate (required)")
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+")")
	kind := fl.String("t", "", "type of the new key: rsa or ed25519 (default: the current key's)")
	bits := fl.Int("b", 0, "RSA key size in bits (default: the current key's, at least 2048)")
	selector := fl.String("s", "", "selector of the new key (default sYYYYMM from today's date)")
	dir := fl.String("dir", "", "write the new key to DIR/DOMAIN/SELECTOR.pem (default: the current key's directory)")
	keyName := fl.String("key", "", "the key to replace, when the domain has several")
	userName := fl.String("user", "", "when run as root, give the new key to this user, the one dkimmilter runs as (default: as for 'dkimmilter check')")
	force := fl.Bool("force", false, "make a key by hand for a key that rotates itself (a compromised key, say)")
	if code, ok := parseFlags(fl, args, false, stderr); !ok {
		return code
	}
	if *domain == "" {
		fmt.Fprintln(stderr, "dkimmilter keys rotate: -d DOMAIN is required, e.g. dkimmilter keys rotate -d example.com")
		return exitUsage
	}
	req := genRequest{domain: *domain, selector: *selector, kind: *kind, bits: *bits, now: now}
	if !req.checkDomain(stderr) {
		return exitUsage
	}
	cfg, ok := loadKeysConfig(*cfgPath, stderr)
	if !ok {
		return exitConfig
	}
	old, ok := keyToRotate(cfg, req.domain, *kind, *keyName, stderr)
	if !ok {
		return exitUsage
	}
	if k := cfg.Keys[old.name]; k.Rotate > 0 && !*force {
		// The daemon makes every step: steps by hand would race with it,
		// and a configuration switch would leave its state behind.
		fmt.Fprintf(stderr, "dkimmilter keys rotate: keys.%s rotates itself (rotate = %s, %s): the daemon makes the next key, publishes it, switches once every authoritative server serves it, and retires the old one; there is nothing to do by hand. Where it stands:\n",
			old.name, formatDays(k.Rotate), cfg.Where(k.Line))
		r := old.rot
		if r == nil {
			r = &rotated{name: old.name, kc: k, file: rotation.StatePath(cfg.Rotation.StateDir, old.name)}
		}
		writeRotation(stderr, cfg, r, now, true)
		fmt.Fprintf(stderr, "('dkimmilter keys rotation%s %s' shows it again; -force makes a key by hand anyway, for a key that must go now)\n", keysConfigArg(cfg), old.name)
		return exitUsage
	}
	if old.rot != nil && old.rot.err != nil {
		// The key to replace is the one its state names.
		fmt.Fprintf(stderr, "dkimmilter keys rotate: keys.%s: %v\n", old.name, old.rot.err)
		if errors.Is(old.rot.err, fs.ErrPermission) {
			return exitNoPerm
		}
		return exitConfig
	}
	acct, ok := keyOwner(cfg, *userName, stderr)
	if !ok {
		return exitUsage
	}
	if req.kind == "" {
		if old.status.Key == nil {
			fmt.Fprintf(stderr, "dkimmilter keys rotate: cannot tell the type of keys.%s: %v (hint: give -t rsa or -t ed25519)\n", old.name, old.status.Err)
			return exitUsage
		}
		req.kind = old.status.Key.KeyType
	}
	if req.bits == 0 && req.kind == "rsa" && old.status.Key != nil && old.status.Key.KeyType == "rsa" {
		req.bits = min(max(old.status.Key.Bits, dkim.RecommendedRSABits), dkim.MaxRSABits)
	}
	req.keyDir = filepath.Dir(old.path)
	if *dir != "" {
		req.keyDir = filepath.Join(*dir, req.domain)
	}
	for _, k := range cfg.Keys {
		if k.Domain == req.domain {
			req.used = append(req.used, k.Selector)
		}
	}
	if r := old.rot; r != nil && r.st != nil {
		// The selectors of its rotation are taken too, their records
		// still published or soon reused by the daemon.
		for _, ks := range append(append([]rotation.KeyState{r.st.Active}, r.st.Retiring...), r.st.Revoked...) {
			req.used = append(req.used, ks.Selector)
		}
		if r.st.Pending != nil {
			req.used = append(req.used, r.st.Pending.Selector)
		}
	}
	if req.selector != "" && slices.ContainsFunc(req.used, func(s string) bool { return strings.EqualFold(s, req.selector) }) {
		fmt.Fprintf(stderr, "dkimmilter keys rotate: selector %q is already used by a key for %s in %s; a new key needs a new selector, or mail in transit signed with the old key fails (hint: leave out -s)\n", req.selector, req.domain, cfg.File)
		return exitUsage
	}
	inDNS := selectorInDNS(cfg, req.domain, stderr)
	if req.selector != "" && inDNS(req.selector) {
		fmt.Fprintf(stderr, "dkimmilter keys rotate: selector %q already has a record at %s; a new key needs a name with no record, or receivers may see the old one (hint: leave out -s)\n", req.selector, dkim.DNSName(req.selector, req.domain))
		return exitUsage
	}
	if req.selector == "" {
		// Chosen here, not by generateKey, so that the key name is known
		// to be free before the key is made.
		req.selector = keystore.SelectorFor(now, req.keyDir, req.kind, req.used, inDNS)
	}
	newName := config.KeyName(req.domain, req.selector)
	for i := 2; cfg.Keys[newName] != nil; i++ {
		newName = fmt.Sprintf("%s-%d", config.KeyName(req.domain, req.selector), i)
	}
	g, code := generateKey(req, stderr)
	if g == nil {
		return code
	}
	owned, fixes := giveKey(g, acct, &old)
	printRotation(stdout, cfg, old, g, newName, now, owned, fixes)
	if r := old.rot; r != nil {
		fmt.Fprintf(stdout, "\nkeys.%s has a rotation state, %s", old.name, r.file)
		if cfg.Keys[old.name].Rotate > 0 {
			fmt.Fprint(stdout, ", and rotates itself while its table has rotate")
		}
		fmt.Fprintf(stdout, ": once the switch is made and its table removed (step 5), move the state away, and with it what the daemon would still revoke or delete; 'dkimmilter keys rotation%s %s' lists the records it holds.\n", keysConfigArg(cfg), old.name)
	}
	return exitOK
}

// selectorInDNS returns a check that SELECTOR._domainkey.DOMAIN has a TXT
// record, through the configured resolvers: a new key must not take a
// name that has one (a revoked key's p= left after a quick rotation,
// another system's key), or receivers could get that record, or a cached
// copy of it, for mail signed with the new key. A lookup that fails counts
// as no record, with a warning: rotating must not depend on DNS working.
func selectorInDNS(cfg *config.Config, domain string, stderr io.Writer) func(string) bool {
	r, err := dns.NewClient(cfg.DNS.Nameservers, cfg.DNS.Timeout)
	return func(sel string) bool {
		name := dkim.DNSName(sel, domain)
		if err != nil {
			fmt.Fprintf(stderr, "warning: could not check that %s has no record: %v\n", name, err)
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*cfg.DNS.Timeout)
		defer cancel()
		res, lerr := r.LookupTXT(ctx, name)
		var de *net.DNSError
		switch {
		case lerr == nil:
			return len(res.Records) > 0
		case errors.As(lerr, &de) && de.IsNotFound:
			return false
		}
		fmt.Fprintf(stderr, "warning: could not check that %s has no record (%v): check it before publishing\n", name, lerr)
		return false
	}
}

// keyToRotate finds the configured key that a rotation for domain
// replaces: the domain's only key; else the one of type kind; else the
// one the [[signing]] rules use; else the one named by -key.
func keyToRotate(cfg *config.Config, domain, kind, name string, stderr io.Writer) (keyFile, bool) {
	var cands []keyFile
	for _, kf := range configuredKeyFiles(cfg, cfg.KeyNames()) {
		if k := cfg.Keys[kf.name]; kf.domain == domain && !strings.Contains(k.File+k.Domain, "%") && (name == "" || kf.name == name) {
			cands = append(cands, kf)
		}
	}
	if name != "" && len(cands) == 0 {
		k := cfg.Keys[name]
		switch {
		case k == nil:
			selectKeys(cfg, []string{name}, "keys rotate -key", stderr)
		case strings.Contains(k.File+k.Domain, "%"):
			fmt.Fprintf(stderr, "dkimmilter keys rotate: keys.%s has '%%' in its domain or file name: such a key is rotated for all its domains at once, with 'dkimmilter keys gen -s SELECTOR' for each domain and a new [keys.NAME] table for the new selector\n", name)
		default:
			fmt.Fprintf(stderr, "dkimmilter keys rotate: keys.%s is for %s, not %s\n", name, k.Domain, domain)
		}
		return keyFile{}, false
	}
	if len(cands) == 0 {
		fmt.Fprintf(stderr, "dkimmilter keys rotate: no key for %s in %s%s (hint: 'dkimmilter keys gen -d %s' makes a first key)\n",
			domain, cfg.File, configuredDomains(cfg), domain)
		for _, kf := range configuredKeyFiles(cfg, cfg.KeyNames()) {
			if kf.domain == domain && !kf.noMatch {
				fmt.Fprintf(stderr, "keys.%s signs for %s through '%%' (%s): such a key is rotated for all its domains at once, with 'dkimmilter keys gen -s SELECTOR' for each domain and a new [keys.NAME] table for the new selector\n", kf.name, domain, kf.path)
			}
		}
		return keyFile{}, false
	}
	if kind != "" {
		var same []keyFile
		for _, kf := range cands {
			if kf.status.Key != nil && kf.status.Key.KeyType == kind {
				same = append(same, kf)
			}
		}
		if len(same) > 0 {
			cands = same
		}
	}
	if len(cands) > 1 {
		var used []keyFile
		for _, kf := range cands {
			if keyUsers(cfg, kf.name) != "not used" {
				used = append(used, kf)
			}
		}
		if len(used) > 0 {
			cands = used
		}
	}
	if len(cands) > 1 {
		var list []string
		for _, kf := range cands {
			typ := "?"
			if kf.status.Key != nil {
				typ = kf.status.Key.KeyType
			}
			list = append(list, fmt.Sprintf("%s (%s, %s)", kf.name, typ, keyUsers(cfg, kf.name)))
		}
		fmt.Fprintf(stderr, "dkimmilter keys rotate: %s has several keys: %s; say which one to replace with -t rsa, -t ed25519 or -key NAME\n", domain, strings.Join(list, "; "))
		return keyFile{}, false
	}
	return cands[0], true
}

// configuredDomains is "; the configured domains are a, b" for an error.
func configuredDomains(cfg *config.Config) string {
	var ds []string
	for _, k := range cfg.Keys {
		if !strings.Contains(k.Domain, "%") && !slices.Contains(ds, k.Domain) {
			ds = append(ds, k.Domain)
		}
	}
	if len(ds) == 0 {
		return "; it has no keys"
	}
	slices.Sort(ds)
	return "; the configured domains are " + strings.Join(ds, ", ")
}

func printRotation(w io.Writer, cfg *config.Config, old keyFile, g *generated, newName string, now time.Time, owned string, fixes []string) {
	oldDesc := "unreadable"
	oldType := g.pk.KeyType
	if k := old.status.Key; k != nil {
		oldDesc, oldType = fmt.Sprintf("%s %d bits", k.KeyType, k.Bits), k.KeyType
	}
	cf := keysConfigArg(cfg)
	fmt.Fprintf(w, "Rotating the key of %s, today %s:\n  old: keys.%s, selector %s, %s, %s\n  new: keys.%s, selector %s, %s %d bits, %s\n",
		g.domain, now.Format(time.DateOnly), old.name, old.selector, oldDesc, old.path, newName, g.selector, g.pk.KeyType, g.pk.Bits, g.path)

	fmt.Fprintf(w, "\nStep 1 of 5: the new key\nWrote %s (%s).\n", g.path, owned)
	for _, l := range fixes {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w, "The old key and its record stay as they are: mail is signed with the old key\nuntil you switch (steps 3 and 4).")

	fmt.Fprintf(w, "\nStep 2 of 5: publish the new record now, next to the old one (leave %s as it is)\n", old.selector)
	fmt.Fprintln(w, keystore.ZoneLine(dkim.DNSName(g.selector, g.domain), g.value))
	writePanelHint(w, "on one line, for DNS web panels", g.selector, g.domain)
	fmt.Fprintln(w, g.value)

	fmt.Fprintf(w, "\nStep 3 of 5: the configuration (%s)\n", cfg.File)
	fmt.Fprintln(w, "Add this table now; it signs nothing until a rule names it:")
	fmt.Fprintln(w)
	fmt.Fprint(w, config.KeyTOML(newName, g.domain, g.selector, g.path))
	fmt.Fprintln(w)
	rules := 0
	for i, r := range cfg.Signing {
		if !slices.Contains(r.Keys, old.name) {
			continue
		}
		if rules == 0 {
			fmt.Fprintln(w, "The switch, to make only after step 4, changes these lines:")
		}
		rules++
		oldLine, newLine, where := switchLines(cfg, r, old.name, newName)
		fmt.Fprintf(w, "%s (signing[%d], from = %q):\n-%s\n+%s\n", where, i+1, r.From, oldLine, newLine)
		if g.pk.KeyType == "ed25519" && !ruleKeepsRSA(cfg, r, old.name) {
			fmt.Fprintf(w, "Note: signing[%d] then signs with Ed25519 only, which many receivers do not\nverify yet: to them the mail looks unsigned. Keep an RSA key in the rule\nnext to the Ed25519 one.\n", i+1)
		}
	}
	if rules == 0 {
		fmt.Fprintf(w, "No [[signing]] rule uses keys.%s, so nothing switches. To sign with the new key, after step 4, add:\n\n%s\n", old.name, config.SigningTOML("*@"+g.domain, []string{newName}))
	}
	fmt.Fprintf(w, "After each change, run 'dkimmilter check%s',\nthen reload dkimmilter (systemctl reload dkimmilter, or restart it).\n", cf)

	fmt.Fprintf(w, "\nStep 4 of 5: the DNS gate\nWith the table of step 3 added, run\n  dkimmilter keys check%s %s\n", cf, newName)
	fmt.Fprintln(w, "and make the switch of step 3 only once it reports the record published and")
	fmt.Fprintln(w, "matching the key. Switching earlier makes receivers that do not see the")
	fmt.Fprintln(w, "record yet fail the new signatures with \"no key for signature\".")

	keep, why := retireAfter(cfg.Sign.Expire)
	days := int(math.Ceil(keep.Hours() / 24))
	oldDNS := dkim.DNSName(old.selector, old.domain)
	fmt.Fprintf(w, "\nStep 5 of 5: retire the old key\nKeep %s published for %d days after the switch:\n%s\n", oldDNS, days, why)
	fmt.Fprintf(w, "If you switch today, that is until %s; switching later moves the date\nby as many days. Then:\n", now.AddDate(0, 0, days).Format(time.DateOnly))
	fmt.Fprintln(w, "- revoke the old key by publishing an empty p= rather than deleting the record")
	fmt.Fprintln(w, "  (RFC 6376 §3.6.1: verifiers then report \"key revoked\", not a DNS error or a typo):")
	fmt.Fprintln(w, keystore.ZoneLine(oldDNS, keystore.RevokedRecord(oldType)))
	fmt.Fprintf(w, "- remove the [keys.%s] table (%s),\n  run 'dkimmilter check%s' and reload dkimmilter;\n", old.name, cfg.Where(cfg.Keys[old.name].Line), cf)
	fmt.Fprintf(w, "- then delete the old key file: rm %s\n", old.path)
}

// ruleKeepsRSA reports whether rule r still has an RSA key once old is
// replaced.
func ruleKeepsRSA(cfg *config.Config, r *config.SigningRule, old string) bool {
	for _, kf := range configuredKeyFiles(cfg, r.Keys) {
		if kf.name != old && kf.status.Key != nil && kf.status.Key.KeyType == "rsa" {
			return true
		}
	}
	return false
}

// retireAfter is how long to keep a retired key's record after the
// switch, and why: until the last signature made with it has expired
// (x= is t= plus sign.expire), and at least retireFloor, plus
// retireMargin for mail delayed on the way.
func retireAfter(expire time.Duration) (time.Duration, string) {
	switch {
	case expire == 0:
		return retireFloor + retireMargin, `sign.expire is 0, so signatures carry no x= and nothing says when one made
with the old key stops being checked. 7 days cover a message that waits out
a sending queue (Postfix retries for 5 days), 2 more mail delayed at the
receiver.`
	case expire < retireFloor:
		return retireFloor + retireMargin, fmt.Sprintf(`signatures expire after sign.expire (%s), but a message can wait in a
sending queue for 5 days (Postfix's maximal_queue_lifetime) and be verified
only then: 7 days, and 2 more for mail delayed at the receiver.`, formatDays(expire))
	}
	return expire + retireMargin, fmt.Sprintf(`signatures made with it are valid until their x=, sign.expire (%s) after
signing, and 2 more days cover mail delayed at the receiver.`, formatDays(expire))
}

// formatDays writes a duration in days when it is whole days: "7 days".
func formatDays(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return formatAge(d)
	}
	// "200h0m0s" reads "200h", "1h30m0s" "1h30m": drop zero units only.
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

// keysArrayRE finds the keys array on the line config says it starts on:
// "keys = [ ... ]", alone or inside an inline table.
var keysArrayRE = regexp.MustCompile(`\bkeys\s*=\s*\[[^\]]*\]`)

// switchLines returns the keys = line of rule r as written in the config
// file and with old replaced by new, and where it is ("FILE:LINE"). The
// line is the one config found the array on (SigningRule.KeysLine); when
// the array spans several lines, it returns the rule's keys as TOML and
// the rule's place.
func switchLines(cfg *config.Config, r *config.SigningRule, old, new string) (before, after, where string) {
	renamed := make([]string, len(r.Keys))
	for i, k := range r.Keys {
		renamed[i] = k
		if k == old {
			renamed[i] = new
		}
	}
	before, after, where = "keys = "+config.TOMLList(r.Keys), "keys = "+config.TOMLList(renamed), cfg.Where(r.Line)
	data, err := os.ReadFile(cfg.File)
	if err != nil || r.KeysLine <= 0 {
		return
	}
	lines := strings.Split(string(data), "\n")
	if r.KeysLine > len(lines) {
		return
	}
	l := lines[r.KeysLine-1]
	loc := keysArrayRE.FindStringIndex(l)
	if loc == nil {
		return // the array goes on below
	}
	repl := strings.NewReplacer(`"`+old+`"`, `"`+new+`"`, `'`+old+`'`, `"`+new+`"`)
	if arr := repl.Replace(l[loc[0]:loc[1]]); arr != l[loc[0]:loc[1]] {
		return l, l[:loc[0]] + arr + l[loc[1]:], cfg.Where(r.KeysLine)
	}
	return
}

// keysConfigArg is " -config FILE" for a command the user is told to
// run, unless FILE is the default.
func keysConfigArg(cfg *config.Config) string {
	if cfg.File == config.DefaultPath {
		return ""
	}
	return " -config " + cfg.File
}
