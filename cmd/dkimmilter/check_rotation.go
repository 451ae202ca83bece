package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnsupdate"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// minRotate is the shortest rotation period check does not warn about:
// each rotation keeps the old record for sign.expire plus the margin, so
// a shorter period piles up retiring keys, and receivers cache records
// for their TTL. Shorter periods are for tests, which compress days into
// seconds.
const minRotate = 7 * 24 * time.Hour

// rotatingKeys are the names of the keys that rotate, sorted.
func rotatingKeys(cfg *config.Config) []string {
	var out []string
	for _, name := range cfg.KeyNames() {
		if cfg.Keys[name].Rotate > 0 {
			out = append(out, name)
		}
	}
	return out
}

// checkRotation checks, as acct, what the daemon needs for the keys that
// rotate: the TSIG key files of their publishers, which it reads for
// every update, and rotation.state_dir, where it writes each key's state
// and the keys it makes. A file root can read proves nothing: the daemon
// would fail at its first rotation step, days after the reload.
func checkRotation(cfg *config.Config, acct *keystore.Account) (errs []error, warnings []string) {
	names := rotatingKeys(cfg)
	if len(names) == 0 {
		return nil, nil
	}
	checked := map[string]bool{}
	for _, name := range names {
		k := cfg.Keys[name]
		p := cfg.Publishers[k.Publish]
		if p == nil || checked[p.Name] {
			continue
		}
		checked[p.Name] = true
		if p.Method == config.MethodCommand && len(p.Command) > 0 {
			errs = append(errs, commandErrors(cfg, p, acct)...)
		}
		if p.TSIGKey == "" {
			continue
		}
		where := fmt.Sprintf("%s: publish.%s.tsig_key", cfg.Where(p.Line), p.Name)
		fi, err := os.Stat(p.TSIGKey)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("%s: %s does not exist (hint: make it with 'tsig-keygen -a hmac-sha256 NAME > %s', give the server the same key statement, and chown %s %s)", where, p.TSIGKey, p.TSIGKey, acct.Name, p.TSIGKey))
			continue
		case err != nil:
			if rerr := readError(where, acct, p.TSIGKey); rerr != nil {
				errs = append(errs, rerr)
			} else {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
			continue
		case fi.IsDir():
			errs = append(errs, fmt.Errorf("%s: %s is a directory; name the key file tsig-keygen wrote", where, p.TSIGKey))
			continue
		}
		if err := readError(where, acct, p.TSIGKey); err != nil {
			errs = append(errs, err)
		} else if _, err := dnsupdate.ReadTSIGKey(p.TSIGKey); err != nil {
			// Readable is not enough: the daemon parses it at its
			// first rotation step.
			errs = append(errs, fmt.Errorf("%s: %v (hint: write it as tsig-keygen does: key \"NAME\" { algorithm hmac-sha256; secret \"...\"; };)", where, err))
		}
		if fi.Mode().Perm()&0o004 != 0 {
			// The secret lets anyone change the zone's records.
			warnings = append(warnings, fmt.Sprintf("%s: every user of this host can read the TSIG secret in %s, and with it change the zone: chmod o-r %s", where, p.TSIGKey, p.TSIGKey))
		}
	}

	files := false
	for _, name := range names {
		files = files || cfg.Keys[name].Query == ""
	}
	if !files {
		// Keys with a query keep their states in the database
		// (checkDatabase checks the table).
		return errs, warnings
	}
	dir := cfg.Rotation.StateDir
	where := cfg.Where(0) + ": rotation.state_dir"
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		warnings = append(warnings, fmt.Sprintf("%s: %s does not exist: make it, owned by %s with mode 0700, before the daemon starts (contrib/systemd/dkimmilter.service does, with StateDirectory=)", where, dir, acct.Name))
	case err != nil:
		errs = append(errs, fmt.Errorf("%s: %w", where, err))
	case !fi.IsDir():
		errs = append(errs, fmt.Errorf("%s: %s is not a directory", where, dir))
	default:
		if ps := acct.CreateProblems(dir); len(ps) > 0 {
			text, fixes := keystore.DescribeProblems(ps)
			errs = append(errs, fmt.Errorf("%s: user %s cannot write the rotation state in %s: %s (hint: %s)", where, acct.Name, dir, text, fixes))
		}
	}
	return errs, warnings
}

// rotationWarnings are the settings of rotating keys that work but are
// likely mistakes.
func rotationWarnings(cfg *config.Config) []string {
	names := rotatingKeys(cfg)
	var out []string
	for _, name := range names {
		k := cfg.Keys[name]
		if k.Rotate < minRotate {
			out = append(out, fmt.Sprintf("%s: keys.%s.rotate = %s: a new key every %s keeps several old records published at once (each for sign.expire plus rotation.margin); rotate every few months, such as \"90d\" (periods this short are for tests)",
				cfg.Where(k.Line), name, formatDays(k.Rotate), formatDays(k.Rotate)))
		}
	}
	if len(names) > 0 && cfg.Sign.Expire == 0 {
		// Without x= no signature says when it stops being checked.
		out = append(out, fmt.Sprintf("%s: sign.expire is 0, so signatures carry no x=, and rotation revokes an old key's record rotation.margin (%s) after the switch: mail signed just before it that waits longer in a queue fails with \"key revoked\"; set sign.expire (\"7d\"), or a margin of a week or more",
			cfg.Where(0), formatDays(cfg.Rotation.Margin)))
	}
	return out
}

// rotationSummary is the summary line of a rotating or publishing key.
func rotationSummary(cfg *config.Config, k *config.Key) string {
	if k.Publish == "" {
		return ""
	}
	p := cfg.Publishers[k.Publish]
	s := fmt.Sprintf("records published through [publish.%s] (%s)", p.Name, p.Method)
	if k.Rotate > 0 {
		where := cfg.Rotation.StateDir
		if k.Query != "" {
			where = "table " + keystore.RotationTable + ", each domain of list_query on its own, one host at a time"
		}
		s = fmt.Sprintf("rotates every %s, %s, state in %s", formatDays(k.Rotate), s, where)
	}
	if k.Delegate != "" {
		s += fmt.Sprintf("; delegated: selectors %s at %s", strings.Join(k.Selectors, ", "), k.RecordName("SELECTOR"))
	}
	return s
}

// commandErrors says why acct could not run the program of a "command"
// publisher: the daemon runs it as its own user at each rotation step.
func commandErrors(cfg *config.Config, p *config.Publisher, acct *keystore.Account) []error {
	where := fmt.Sprintf("%s: publish.%s.command", cfg.Where(p.Line), p.Name)
	prog := p.Command[0]
	fi, err := os.Stat(prog)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return []error{fmt.Errorf("%s: %s does not exist (hint: install it, or fix the path)", where, prog)}
	case err != nil:
		return []error{fmt.Errorf("%s: %w", where, err)}
	case !fi.Mode().IsRegular():
		return []error{fmt.Errorf("%s: %s is not a program file", where, prog)}
	case fi.Mode().Perm()&0o111 == 0:
		return []error{fmt.Errorf("%s: %s is not executable (hint: chmod +x %s)", where, prog, prog)}
	}
	// The search (x) bit of the last component is the file's execute bit.
	if ps := acct.SearchProblems(prog); len(ps) > 0 {
		text, fixes := keystore.DescribeProblems(ps)
		return []error{fmt.Errorf("%s: user %s cannot run %s: %s (hint: %s)", where, acct.Name, prog, text, fixes)}
	}
	return nil
}

// printRotationSummary says, under a key's summary line, which key signs
// when its rotation state names another than the configured one, and
// whether the rotation waits on someone.
func printRotationSummary(w io.Writer, cfg *config.Config, name string) {
	r := keyRotation(cfg, name)
	switch {
	case r == nil:
		return
	case r.err != nil:
		fmt.Fprintf(w, "  rotation state: %v\n", r.err)
		return
	case r.st == nil:
		return
	case r.ignored != "":
		fmt.Fprintf(w, "  rotation state left alone: %s\n", r.ignored)
		return
	}
	st := r.st
	fmt.Fprintf(w, "  signs with %s (%s) since %s, as its rotation state says\n", st.Active.Selector, st.Active.File, stamp(st.Active.Since))
	switch {
	case st.Paused != nil:
		fmt.Fprintf(w, "  rotation PAUSED since %s at %s: 'dkimmilter keys rotation%s %s' says why and what to do\n", stamp(st.Paused.Since), st.Paused.Name, keysConfigArg(cfg), name)
	case st.Failures > 0:
		fmt.Fprintf(w, "  rotation FAILING (%d in a row; next try %s): 'dkimmilter keys rotation%s %s' says why\n", st.Failures, stamp(st.RetryAt), keysConfigArg(cfg), name)
	}
}
