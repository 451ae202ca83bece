package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// serviceUser is the user contrib/systemd/dkimmilter.service runs the
// daemon as (User=), and the one the README's install makes.
const serviceUser = "dkimmilter"

// serviceAccount is the account the daemon will run as, for check to
// judge the files by and for keys gen and rotate to give new keys to:
// name when given; else, when not root, this process's own (the user who
// runs the command is the one who runs the daemon); else the owner of the
// unix socket's directory when it exists and is not root (the systemd
// unit makes it for the daemon's user); else the user dkimmilter when it
// exists; else root. why says which, for the report. cfg may be nil.
func serviceAccount(cfg *config.Config, name string) (acct *keystore.Account, why string, err error) {
	if name != "" {
		acct, err = keystore.LookupAccount(name)
		return acct, "given by -user", err
	}
	if os.Geteuid() != 0 {
		return keystore.ProcessAccount(), "the user running this command", nil
	}
	if dir := socketDir(cfg); dir != "" {
		if uid, ok := keystore.Owner(dir); ok && uid != 0 {
			if acct, err := keystore.LookupAccountID(uid); err == nil {
				return acct, "the owner of the socket's directory " + dir, nil
			}
		}
	}
	if acct, err := keystore.LookupAccount(serviceUser); err == nil {
		return acct, "the user of the systemd unit", nil
	}
	return keystore.ProcessAccount(), "no user " + serviceUser + " on this system, so the daemon would run as root", nil
}

// socketDir is the directory of the unix socket the configuration listens
// on, or "" for a TCP socket.
func socketDir(cfg *config.Config) string {
	if cfg == nil {
		return ""
	}
	path, ok := strings.CutPrefix(cfg.Listen, "unix:")
	if !ok {
		return ""
	}
	return filepath.Dir(path)
}

// checkAccess checks, as acct, every key file, the directory of every
// "%" key and the files in it that the daemon would open, and the unix
// socket's directory. Run as root, opening them proves nothing: the
// daemon runs as its own user and would fail on the first message (a key
// in a per-domain directory made by root with mode 0700) or at the next
// reload. The errors name the path component to change and the command.
func checkAccess(cfg *config.Config, acct *keystore.Account) (errs []error, warnings []string) {
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		where := fmt.Sprintf("%s: keys.%s", cfg.Where(k.Line), name)
		if k.Query != "" {
			continue // checkDatabase
		}
		if !strings.Contains(k.File, "%") {
			if err := readError(where, acct, k.File); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		matches := percentMatches(k.File, fixedKeyFiles(cfg))
		if len(matches) == 0 {
			// The daemon looks the file up in this directory for
			// every From domain.
			dir := percentDir(k.File)
			if ps := acct.SearchProblems(dir); len(ps) > 0 {
				text, fixes := keystore.DescribeProblems(ps)
				errs = append(errs, fmt.Errorf("%s: user %s cannot reach the files of %s: %s (hint: %s)", where, acct.Name, k.File, text, fixes))
			}
		}
		for _, m := range matches {
			if err := readError(where, acct, m.path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	dir := socketDir(cfg)
	if dir == "" {
		return errs, warnings
	}
	switch _, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		warnings = append(warnings, fmt.Sprintf("%s: listen: the socket's directory %s does not exist, and the daemon does not make it: make it before the daemon starts, owned by %s (contrib/systemd/dkimmilter.service does, in ExecStartPre)",
			cfg.Where(0), dir, acct.Name))
	case err != nil:
		errs = append(errs, fmt.Errorf("%s: listen: %w", cfg.Where(0), err))
	default:
		if ps := acct.CreateProblems(dir); len(ps) > 0 {
			text, fixes := keystore.DescribeProblems(ps)
			errs = append(errs, fmt.Errorf("%s: listen: user %s cannot create the socket in %s: %s (hint: %s)", cfg.Where(0), acct.Name, dir, text, fixes))
		}
	}
	return errs, warnings
}

// readError is an error when acct cannot read the key file at path.
func readError(where string, acct *keystore.Account, path string) error {
	if err := keystore.UnreadableError(path, acct); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

// percentDir is the directory of a "%" key file name that does not
// depend on the From domain: keys/%/s1.pem and keys/%.pem give keys.
func percentDir(pattern string) string {
	prefix, _, _ := strings.Cut(pattern, "%")
	return filepath.Dir(prefix + "x")
}

// emptyKeyWarnings warns of each "%" key that no file matches, naming
// the rules that use it, and of each rule whose keys all are such keys:
// the configuration is valid, but the rule signs nothing, which is rarely
// what was meant (keys in the wrong directory, or a typo in the pattern).
func emptyKeyWarnings(cfg *config.Config) []string {
	empty := map[string]bool{}
	var out []string
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		if !strings.Contains(k.File, "%") || len(percentMatches(k.File, fixedKeyFiles(cfg))) > 0 {
			continue
		}
		empty[name] = true
		var users []string
		for i, r := range cfg.Signing {
			for _, kn := range r.Keys {
				if kn == name {
					users = append(users, fmt.Sprintf("signing[%d] (%s, from = %q)", i+1, cfg.Where(r.Line), r.From))
				}
			}
		}
		used := "no [[signing]] rule uses it"
		if len(users) > 0 {
			used = "used by " + strings.Join(users, ", ")
		}
		out = append(out, fmt.Sprintf("%s: keys.%s: no file matches %s, so the key signs for no domain; %s (hint: 'dkimmilter keys gen -d DOMAIN -s %s -dir DIR' writes DIR/DOMAIN/%s.pem)",
			cfg.Where(k.Line), name, k.File, used, k.Selector, k.Selector))
	}
	for i, r := range cfg.Signing {
		all := len(r.Keys) > 0
		for _, kn := range r.Keys {
			all = all && empty[kn]
		}
		if all {
			out = append(out, fmt.Sprintf("%s: signing[%d] (from = %q): no key of the rule (%s) has a file, so the rule signs nothing",
				cfg.Where(r.Line), i+1, r.From, strings.Join(r.Keys, ", ")))
		}
	}
	return out
}
