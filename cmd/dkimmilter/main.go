// Command dkimmilter is a DKIM signing and verifying milter for Postfix.
//
//	dkimmilter [serve] [-config FILE]   run the milter (the default)
//	dkimmilter check   [-config FILE]   validate the config and keys, as the service user (-dns: and their DNS records)
//	dkimmilter keys …                   generate, list, publish, check and rotate keys
//	dkimmilter verify  [FILE]           verify a saved message and explain every signature
//	dkimmilter import-opendkim [FILE]   translate an OpenDKIM configuration
//	dkimmilter version                  print the version and the revision built from
//
// main only parses flags and wires the packages together.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/dkimmilter/dkimmilter/internal/logging"
)

// Exit codes, from sysexits.h: 78 (EX_CONFIG) for any configuration
// problem, so that systemd's RestartPreventExitStatus can stop a restart
// loop on a config error.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 64
	exitConfig   = 78
	defaultInet  = "inet:127.0.0.1:8891"
	versionLabel = "dkimmilter"
)

type command struct {
	name, args, help string
	run              func(args []string, stdout, stderr io.Writer) int
}

var commands []command

func init() {
	commands = []command{
		{"serve", "[-config FILE] [-listen ADDR] [-pidfile FILE] [-log-format text|json] [-log-level debug|info|warn|error]", serveHelp, runServe},
		{"check", "[-config FILE] [-dns] [-user NAME]", checkHelp, runCheck},
		{"keys", "gen|list|dns|check|rotate|publish|revoke|rotation [flags]", keysHelp, runKeys},
		{"verify", "[-config FILE] [-dns HOST:PORT] [-json] [FILE|-]", verifyHelp, runVerify},
		{"import-opendkim", "[-o FILE [-f]] [/etc/opendkim.conf]", importHelp, runImportOpenDKIM},
		{"version", "", versionHelp, runVersion},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	name := "serve"
	switch {
	case len(args) == 0:
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help":
		// Every command, not only serve's flags: the first thing a
		// newcomer types.
		usage(stdout)
		return exitOK
	case args[0] == "-version" || args[0] == "--version":
		name, args = "version", args[1:]
	case !strings.HasPrefix(args[0], "-"):
		name, args = args[0], args[1:]
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(args, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "dkimmilter: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: dkimmilter [command] [flags]")
	fmt.Fprintln(w)
	for _, c := range commands {
		fmt.Fprintln(w, strings.TrimRight("  dkimmilter "+c.name+" "+c.args, " "))
		for _, l := range strings.Split(strings.TrimSpace(c.help), "\n") {
			fmt.Fprintf(w, "      %s\n", l)
		}
	}
	fmt.Fprintln(w, "\nWith no command, dkimmilter serves. Run 'dkimmilter COMMAND -h' for a command's flags.")
}

// parseFlags parses a command's flags, and refuses arguments after them
// unless allowArgs ("dkimmilter check /etc/x.toml" would otherwise check
// the default file and say OK). When it returns false, the command exits
// with code: 0 after -h, 64 for a usage error.
func parseFlags(fl *flag.FlagSet, args []string, allowArgs bool, stderr io.Writer) (code int, ok bool) {
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fl.NArg() > 0 && !allowArgs {
		hint := "flags go before it? run 'dkimmilter " + fl.Name() + " -h'"
		if strings.HasSuffix(fl.Arg(0), ".toml") {
			hint = "did you mean -config " + fl.Arg(0) + "?"
		}
		fmt.Fprintf(stderr, "dkimmilter %s: unexpected argument %q (%s)\n", fl.Name(), fl.Arg(0), hint)
		return exitUsage, false
	}
	return 0, true
}

// newLogger is the daemon's logger on w; on the process's own stderr
// under systemd, lines carry their journal priority.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	return logging.New(w, format, level, w == io.Writer(os.Stderr) && logging.StderrIsJournal())
}
