package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/keystore"
)

const keysGenHelp = `
Generate a DKIM key and print what to publish and configure:
  1. its DNS record in zone-file syntax, p= split into quoted strings of at
     most 255 bytes, which resolvers join (RFC 6376 §3.6.2.2);
  2. the same value on one line, for DNS web panels that split it themselves;
  3. the [keys.NAME] table and a [[signing]] rule for the configuration.
The key goes to DIR/DOMAIN/SELECTOR.pem: PKCS#8 PEM, mode 0600, in
directories made with mode 0700. An existing file is never replaced.
Run as root, the key and the directories made for it are given to the
user the daemon runs as (-user; by default the user dkimmilter when it
exists), so that the daemon can read it; a directory on the way that the
user cannot search is named, with the command that fixes it.
RSA keys are 2048 bits unless -b says otherwise: 1024 to 8192, with a
warning under 2048 and over 4096 (RFC 8301 §3.2). Ed25519 keys (RFC 8463)
are smaller and faster, but not every verifier knows them yet: sign with
both an RSA and an Ed25519 key when you use one.
The default selector is the date, sYYYYMM (s202611), so selectors sort by
age; when DIR/DOMAIN already has a key of that name (the other algorithm,
made the same month), an "r" or "e" suffix is added.

Exit status: 0 done; 1 the key file exists or cannot be written; 64 usage
(a bad domain, selector, type or size).`

const keysGenUsage = "-d DOMAIN [-s SELECTOR] [-t rsa|ed25519] [-b BITS] [-dir DIR] [-user NAME]"

func runKeysGen(args []string, stdout, stderr io.Writer) int {
	return keysGen(args, stdout, stderr, time.Now())
}

// keysGen is keys gen with the clock that picks the default selector.
func keysGen(args []string, stdout, stderr io.Writer, now time.Time) int {
	fl := newKeysFlagSet("gen", keysGenUsage, keysGenHelp, stderr)
	domain := fl.String("d", "", "the signing domain (d=), e.g. example.com (required)")
	selector := fl.String("s", "", "the selector (s=) (default sYYYYMM from today's date)")
	kind := fl.String("t", "rsa", "key type: rsa or ed25519")
	bits := fl.Int("b", 0, "RSA key size in bits, 1024 to 8192 (default 2048)")
	dir := fl.String("dir", keystore.DefaultKeyDir, "key directory: the key is written to DIR/DOMAIN/SELECTOR.pem")
	userName := fl.String("user", "", "when run as root, give the key to this user, the one dkimmilter runs as (default "+serviceUser+" when it exists)")
	if code, ok := parseFlags(fl, args, false, stderr); !ok {
		return code
	}
	acct, ok := keyOwner(nil, *userName, stderr)
	if !ok {
		return exitUsage
	}
	if *domain == "" {
		fmt.Fprintln(stderr, "dkimmilter keys gen: -d DOMAIN is required, e.g. dkimmilter keys gen -d example.com")
		return exitUsage
	}
	req := genRequest{domain: *domain, selector: *selector, kind: *kind, bits: *bits, now: now}
	if !req.checkDomain(stderr) {
		return exitUsage
	}
	req.keyDir = filepath.Join(*dir, req.domain)
	g, code := generateKey(req, stderr)
	if g == nil {
		return code
	}
	name := config.KeyName(g.domain, g.selector)
	owned, fixes := giveKey(g, acct, nil)
	fmt.Fprintf(stdout, "# Wrote %s: %s, %d bits, %s.\n", g.path, g.pk.KeyType, g.pk.Bits, owned)
	for _, l := range fixes {
		fmt.Fprintf(stdout, "# %s\n", l)
	}
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "; 1. The DNS record, in zone-file syntax (p= is split into quoted strings of at")
	fmt.Fprintln(stdout, ";    most 255 bytes, which resolvers join):")
	fmt.Fprintln(stdout, keystore.ZoneLine(dkim.DNSName(g.selector, g.domain), g.value))
	fmt.Fprintln(stdout)
	writePanelHint(stdout, "2. The same record on one line, for DNS web panels that split it themselves", g.selector, g.domain)
	fmt.Fprintln(stdout, g.value)
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "# 3. The configuration: the key, and a rule that signs with it (or add")
	fmt.Fprintf(stdout, "#    %q to the keys of the rule that signs %s now):\n", name, g.domain)
	fmt.Fprint(stdout, config.KeyTOML(name, g.domain, g.selector, g.path))
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, config.SigningTOML("*@"+g.domain, []string{name}))
	fmt.Fprintln(stdout)
	fmt.Fprintf(stdout, `# Then, in this order:
# - publish the record;
# - add the [keys.%[1]s] table (it signs nothing until a rule names it);
# - run 'dkimmilter keys check %[1]s' until it reports the record
#   published and matching the key (signing before receivers see the record
#   makes them fail the signatures with "no key for signature");
# - add the [[signing]] rule, run 'dkimmilter check' and reload dkimmilter.
`, name)
	return exitOK
}

// newKeysFlagSet makes the flag set of a keys subcommand; -h prints its
// usage line, its help and its flags.
func newKeysFlagSet(name, synopsis, help string, stderr io.Writer) *flag.FlagSet {
	fl := flag.NewFlagSet("keys "+name, flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprintf(stderr, "usage: dkimmilter keys %s %s\n%s\n\nFlags:\n", name, synopsis, help)
		fl.PrintDefaults()
	}
	return fl
}

// writePanelHint tells, in zone-file comments, what to type into a DNS
// web panel, whose name field is often relative to the zone.
func writePanelHint(w io.Writer, intro, selector, domain string) {
	fmt.Fprintf(w, "; %s:\n;   type TXT, name %s\n", intro, dkim.DNSName(selector, domain))
	fmt.Fprintf(w, ";   (%s._domainkey in the zone %s, where the panel adds the zone), value:\n", selector, domain)
}

// genRequest is a key to make: keys gen and keys rotate share it.
type genRequest struct {
	domain, selector, kind string
	bits                   int
	keyDir                 string   // the directory the file goes in
	used                   []string // selectors the default must avoid
	now                    time.Time
}

// generated is a key made and written.
type generated struct {
	domain, selector, path string
	pk                     *keystore.PrivateKey
	value                  string // its DNS record
	created                string // the topmost directory made for it, or ""
}

// checkDomain normalises r.domain and says what is wrong with it.
func (r *genRequest) checkDomain(stderr io.Writer) bool {
	r.domain = strings.ToLower(strings.TrimSuffix(r.domain, "."))
	if p := dkim.NameProblem(r.domain); p != "" {
		fmt.Fprintf(stderr, "dkimmilter keys: -d %q is not a domain name: %s\n", r.domain, p)
		return false
	}
	return true
}

// generateKey checks the request, picks the selector, refuses to replace
// a file before spending time on an RSA key, then makes and writes the
// key. It returns nil and the exit code on failure, having said why.
func generateKey(r genRequest, stderr io.Writer) (*generated, int) {
	bits, err := keystore.KeySize(r.kind, r.bits)
	if err != nil {
		fmt.Fprintf(stderr, "dkimmilter keys: %v\n", err)
		return nil, exitUsage
	}
	if r.selector == "" {
		r.selector = keystore.SelectorFor(r.now, r.keyDir, r.kind, r.used, nil)
	} else if p := dkim.NameProblem(r.selector); p != "" {
		fmt.Fprintf(stderr, "dkimmilter keys: -s %q is not a selector: %s; write DNS labels (letters, digits, '-', '_') separated by dots, e.g. s202611\n", r.selector, p)
		return nil, exitUsage
	}
	path, err := filepath.Abs(filepath.Join(r.keyDir, r.selector+".pem"))
	if err != nil {
		fmt.Fprintf(stderr, "dkimmilter keys: %v\n", err)
		return nil, exitFailure
	}
	if _, err := os.Lstat(path); err == nil {
		fmt.Fprintf(stderr, "dkimmilter keys: %s already exists; a key is never overwritten (hint: choose another selector with -s, or leave out -s for a new one)\n", path)
		return nil, exitFailure
	}
	switch {
	case r.kind == "rsa" && bits < dkim.RecommendedRSABits:
		fmt.Fprintf(stderr, "warning: a %d-bit RSA key: RFC 8301 §3.2 says signers should use %d bits, and some receivers ignore signatures made with less\n", bits, dkim.RecommendedRSABits)
	case r.kind == "rsa" && bits > dkim.VerifiableRSABits:
		fmt.Fprintf(stderr, "warning: a %d-bit RSA key: verifiers need only accept keys up to %d bits (RFC 8301 §3.2), and some treat larger ones as no key\n", bits, dkim.VerifiableRSABits)
	}
	pk, err := keystore.Generate(r.kind, bits)
	if err != nil {
		fmt.Fprintf(stderr, "dkimmilter keys: %v\n", err)
		return nil, exitFailure
	}
	created := ""
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		created = d
	}
	if err := keystore.WriteKeyFile(path, pk); err != nil {
		fmt.Fprintf(stderr, "dkimmilter keys: %v\n", err)
		return nil, exitFailure
	}
	return &generated{domain: r.domain, selector: r.selector, path: path, pk: pk, value: keystore.Record(pk), created: created}, exitOK
}

// keyOwner is the account keys gen and rotate give new keys to, as
// check judges them (serviceAccount); false when -user names no user, or
// another user than this process's when not root.
func keyOwner(cfg *config.Config, name string, stderr io.Writer) (*keystore.Account, bool) {
	acct, _, err := serviceAccount(cfg, name)
	if err != nil {
		fmt.Fprintf(stderr, "dkimmilter keys: -user: %v\n", err)
		return nil, false
	}
	if os.Geteuid() != 0 && acct.UID != os.Geteuid() {
		fmt.Fprintf(stderr, "dkimmilter keys: -user %s: only root can give a key to another user; run the command as %s, or as root\n", acct.Name, acct.Name)
		return nil, false
	}
	return acct, true
}

// giveKey makes a new key readable by the user the daemon runs as, so
// that the next reload can load it: run as root, the file and the
// directories this run made go to acct with their modes (0600, 0700). With
// ref, the key it replaces, the new file takes ref's owner, group and mode
// instead when acct can use those: a group-readable layout shared with
// another daemon (root:opendkim 0640) stays as it is. It returns what the
// file is now ("mode 0600, owner dkimmilter") and, when a directory on the
// way still keeps acct out, the lines that say how to fix it.
func giveKey(g *generated, acct *keystore.Account, ref *keyFile) (owned string, fixes []string) {
	describe := func() string {
		fi, err := os.Stat(g.path)
		if err != nil {
			return "mode 0600"
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		if st == nil {
			return fmt.Sprintf("mode %04o", fi.Mode().Perm())
		}
		return fmt.Sprintf("mode %04o, owner %s:%s", fi.Mode().Perm(), lookupUser(int(st.Uid)), lookupGroup(int(st.Gid)))
	}
	if os.Geteuid() != 0 || acct.UID == 0 {
		return describe(), nil
	}
	uid, gid, mode := acct.UID, acct.Groups[0], os.FileMode(0o600)
	if ref != nil && keystore.InspectKeyFileFor(ref.path, acct).Err == nil && len(acct.ReadProblems(ref.path)) == 0 {
		if fi, err := os.Stat(ref.path); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				uid, gid, mode = int(st.Uid), int(st.Gid), fi.Mode().Perm()
			}
		}
	}
	var errs []string
	if g.created != "" {
		// The directories made for the key, from the top one down.
		for d := filepath.Dir(g.path); ; d = filepath.Dir(d) {
			if err := os.Chown(d, acct.UID, acct.Groups[0]); err != nil {
				errs = append(errs, err.Error())
			}
			if d == g.created || d == filepath.Dir(d) {
				break
			}
		}
	}
	if err := os.Chown(g.path, uid, gid); err != nil {
		errs = append(errs, err.Error())
	}
	if err := os.Chmod(g.path, mode); err != nil {
		errs = append(errs, err.Error())
	}
	for _, e := range errs {
		fixes = append(fixes, "warning: "+e)
	}
	if ps := acct.ReadProblems(g.path); len(ps) > 0 {
		text, fix := keystore.DescribeProblems(ps)
		fixes = append(fixes, fmt.Sprintf("User %s, who runs dkimmilter, cannot read it yet: %s. Fix it with:", acct.Name, text))
		for _, c := range strings.Split(fix, "; then ") {
			fixes = append(fixes, "  "+c)
		}
	}
	return describe(), fixes
}

// lookupUser and lookupGroup name an owner, or give its number.
func lookupUser(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func lookupGroup(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}
