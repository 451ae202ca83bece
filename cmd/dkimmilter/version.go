package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

const versionHelp = `
Print the version: the module version, the revision and time of the source
it was built from (when the build recorded them), and the Go version.`

func runVersion(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("version", flag.ContinueOnError)
	fl.SetOutput(stderr)
	if code, ok := parseFlags(fl, args, false, stderr); !ok {
		return code
	}
	fmt.Fprintln(stdout, version())
	return exitOK
}

// Set by the linker (-ldflags "-X main.linkVersion=…") when a package
// build stamps the binary: the Debian package's version and the revision
// it was built from. The go command records the revision only when it
// builds inside a git checkout with -buildvcs on, which a package build
// cannot count on (GOFLAGS=-buildvcs=false, or a source tarball).
var (
	linkVersion  string // "0.0~git20261207.ffcf23f-1"
	linkRevision string // the full commit hash
	linkTime     string // the commit's time, RFC 3339
	linkModified string // "true" when the tree had uncommitted changes
)

// version is the one-line version, also in the daemon's ready line.
func version() string {
	bi, _ := debug.ReadBuildInfo()
	return versionString(stamped(bi, linkVersion, linkRevision, linkTime, linkModified))
}

// stamped returns bi with the values the linker set in place of the ones
// the go command recorded: a packaged binary reports the package's
// version, whatever module version the build saw.
func stamped(bi *debug.BuildInfo, ver, rev, when, modified string) *debug.BuildInfo {
	if ver == "" && rev == "" {
		return bi
	}
	out := &debug.BuildInfo{GoVersion: runtime.Version()}
	if bi != nil {
		c := *bi
		out = &c
	}
	if ver != "" {
		out.Main.Version = ver
	}
	if rev != "" {
		out.Settings = []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: when}, {Key: "vcs.modified", Value: modified}}
	}
	return out
}

// versionString says what the binary was built from: "dkimmilter v1.2.0
// (go1.25.5 linux/amd64)" for a release installed with go install, or
// "dkimmilter devel, revision 5ea3589c1d2e 2026-12-07T03:00:00Z, with
// local changes (…)" for a build from a checkout. The revision is there
// only when the go command could read it (a git checkout, and
// -buildvcs not false).
func versionString(bi *debug.BuildInfo) string {
	v := "devel"
	goVersion := runtime.Version()
	var rev, when, modified string
	if bi != nil {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	out := versionLabel + " " + v
	switch {
	case rev != "" && strings.Contains(v, rev):
		// A pseudo-version made from the checkout (go 1.24 and later)
		// already has the revision, its time, and +dirty.
	case rev != "":
		out += ", revision " + rev
		if when != "" {
			out += " " + when
		}
		if modified == "true" {
			out += ", with local changes"
		}
	case v == "devel":
		out += ", revision unknown (built outside a git checkout, or with -buildvcs=false)"
	}
	return out + " (" + goVersion + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}
