package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dkimmilter/dkimmilter/internal/opendkim"
)

const importHelp = `
Translate an OpenDKIM configuration (default /etc/opendkim.conf, with what
it includes and the tables it names) into a dkimmilter configuration that
signs with the same key files and selectors, so no DNS record changes. It
starts with every OpenDKIM setting found and what became of it. Without -o
it goes to stdout; -o writes FILE with mode 0640 (group dkimmilter when
run as root and that group exists; an existing file only with -f). The
result is then checked as 'dkimmilter check' does, and a summary goes to
stderr. Exit 0 when everything that decides which mail is signed, how, or
what happens to inbound mail was translated and the check passed; 3 when
such settings could not be translated (they are named) and the check
passed; 78 when the check of the result failed, whatever else (the file
will not load; untranslated settings are still named); 1 when the OpenDKIM
configuration could not be read or the file not written.`

// exitUntranslated says that the configuration was written, but settings
// that change mail were left out: the switch needs a look first.
const exitUntranslated = 3

// serviceGroup is the group the daemon reads its configuration through.
const serviceGroup = "dkimmilter"

func runImportOpenDKIM(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("import-opendkim", flag.ContinueOnError)
	fl.SetOutput(stderr)
	out := fl.String("o", "", "write the configuration to FILE (mode 0640) instead of stdout")
	force := fl.Bool("f", false, "with -o, overwrite FILE if it exists")
	if code, ok := parseFlags(fl, args, true, stderr); !ok {
		return code
	}
	if fl.NArg() > 1 {
		fmt.Fprintf(stderr, "dkimmilter import-opendkim: one opendkim.conf at most, not %d arguments (flags go before it)\n", fl.NArg())
		return exitUsage
	}
	src := "/etc/opendkim.conf"
	if fl.NArg() == 1 {
		src = fl.Arg(0)
	}
	res, err := opendkim.Translate(src, opendkim.Options{})
	if err != nil {
		fmt.Fprintf(stderr, "dkimmilter import-opendkim: %v\n", err)
		return exitFailure
	}
	if *out == "" {
		if _, err := stdout.Write(res.TOML); err != nil {
			fmt.Fprintf(stderr, "dkimmilter import-opendkim: %v\n", err)
			return exitFailure
		}
	} else if err := writeImported(*out, res.TOML, *force); err != nil {
		fmt.Fprintf(stderr, "dkimmilter import-opendkim: %v\n", err)
		return exitFailure
	}
	summarizeImport(stderr, res, *out)
	checkCode := checkImported(res.TOML, *out, stderr)
	// A failing check wins: the file will not load, which matters before
	// what it leaves out. The untranslated settings are named above
	// either way.
	un := len(res.Unsupported())
	switch {
	case checkCode != exitOK && un > 0:
		fmt.Fprintf(stderr, "import incomplete, and dkimmilter check fails on the result: fix what it says; %d setting(s) that change mail were not translated either (exit %d)\n", un, exitConfig)
		return exitConfig
	case checkCode != exitOK:
		fmt.Fprintf(stderr, "import complete, but dkimmilter check fails on the result: fix what it says (exit %d)\n", exitConfig)
		return exitConfig
	case un > 0:
		fmt.Fprintf(stderr, "import incomplete: %d setting(s) that change mail were not translated (exit %d)\n", un, exitUntranslated)
		return exitUntranslated
	}
	fmt.Fprintln(stderr, "import complete: dkimmilter check passes")
	return exitOK
}

// writeImported writes the configuration readable by its group (the
// service's) and nobody else: it names the key files.
func writeImported(path string, data []byte, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o640)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; add -f to overwrite it, or write elsewhere with -o", path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (create the directory first: install -d -m 755 %s)", err, filepath.Dir(path))
	}
	if err != nil {
		return err
	}
	if err := f.Chmod(0o640); err != nil {
		f.Close()
		return err
	}
	// The daemon runs as dkimmilter (contrib/systemd) and reads the file
	// through its group, as the install steps set it up.
	if g, err := user.LookupGroup(serviceGroup); err == nil && os.Geteuid() == 0 {
		gid, _ := strconv.Atoi(g.Gid)
		if err := f.Chown(-1, gid); err != nil {
			f.Close()
			return err
		}
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func summarizeImport(w io.Writer, res *opendkim.Result, out string) {
	counts := map[opendkim.Disposition]int{}
	for _, n := range res.Notes {
		counts[n.Disposition]++
	}
	dest := "stdout"
	if out != "" {
		dest = out
	}
	fmt.Fprintf(w, "%s: %d settings: %d translated, %d not needed, %d not supported; written to %s\n",
		res.Source, len(res.Notes), counts[opendkim.Translated], counts[opendkim.NotNeeded], counts[opendkim.NotSupported], dest)
	un := res.Unsupported()
	if len(un) == 0 {
		fmt.Fprintln(w, "everything that decides which mail is signed, how, and what happens to inbound mail was translated")
		return
	}
	fmt.Fprintf(w, "NOT translated, and it changes mail (%d; details in the comments at the top of the configuration):\n", len(un))
	for _, n := range un {
		fmt.Fprintf(w, "  %s: %s: %s\n", n.Where(), n.Name, n.Text)
		for _, d := range n.Details {
			fmt.Fprintf(w, "    - %s\n", d)
		}
	}
}

// checkImported runs dkimmilter check on the translation, its report on
// w, and returns check's exit status. Without a file (stdout) a temporary
// copy is checked, named "<stdout>" in the report.
func checkImported(data []byte, path string, w io.Writer) int {
	name := path
	if path == "" {
		f, err := os.CreateTemp("", "dkimmilter-import-*.toml")
		if err != nil {
			fmt.Fprintf(w, "cannot check the translation: %v\n", err)
			return exitFailure
		}
		defer os.Remove(f.Name())
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fmt.Fprintf(w, "cannot check the translation: %v\n", err)
			return exitFailure
		}
		path, name = f.Name(), "<stdout>"
	}
	fmt.Fprintf(w, "dkimmilter check -config %s:\n", name)
	var report bytes.Buffer
	code := runCheck([]string{"-config", path}, &report, &report)
	for _, l := range strings.SplitAfter(report.String(), "\n") {
		if l != "" {
			fmt.Fprint(w, "  "+strings.ReplaceAll(l, path, name))
		}
	}
	return code
}
