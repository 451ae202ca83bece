// Command deb builds the Debian package of dkimmilter from the source tree:
//
//	go run -C contrib/deb .                   # dist/dkimmilter_VERSION_ARCH.deb
//	go run -C contrib/deb . -o /tmp/pkg -arch arm64 -version 1.2.0-1
//
// It cross-compiles the daemon with its version and revision stamped in,
// and packs it with the unit, the configuration, the man pages and the
// maintainer scripts of this directory, using nfpm as a library: no dpkg
// toolchain is needed to build, only Go. Relative paths given to -o are
// relative to the top of the source tree.
//
// This directory is a Go module of its own, so that nfpm and what it
// needs (and the newer Go it requires) stay out of the daemon's module.
package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the "deb" packager
	"github.com/goreleaser/nfpm/v2/files"
)

const (
	pkgName = "dkimmilter"
	module  = "module github.com/dkimmilter/dkimmilter\n"
	// The packaged daemon: section 8, next to the other mail daemons.
	binPath = "/usr/sbin/dkimmilter"
	// Where contrib/systemd/dkimmilter.service, written for a manual
	// install, expects the binary.
	manualBinPath = "/usr/local/bin/dkimmilter"
	unitPath      = "/usr/lib/systemd/system/dkimmilter.service"
	// Shipped, not enabled: the admin opts in (README, "Running it").
	socketUnitPath = "/usr/lib/systemd/system/dkimmilter.socket"
	docDir         = "/usr/share/doc/dkimmilter"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "contrib/deb:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("deb", flag.ContinueOnError)
	fl.SetOutput(stderr)
	out := fl.String("o", "dist", "directory to write the .deb to (relative: to the top of the source tree)")
	arch := fl.String("arch", runtime.GOARCH, "target architecture, as GOARCH: amd64, arm64, 386, arm, ppc64le, riscv64, s390x")
	ver := fl.String("version", "", "package version, e.g. 1.2.0-1 (default: from git describe, or 0.0~gitDATE.REV-1)")
	maint := fl.String("maintainer", "", `Maintainer field, "Name <address>" (default: $DEBFULLNAME <$DEBEMAIL>, else the author of the commit built)`)
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags: -o, -arch, -version, -maintainer)", fl.Arg(0))
	}
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	root, err := findRoot(cwd)
	if err != nil {
		return err
	}
	path, err := build(options{root: root, outDir: *out, goarch: *arch, version: *ver, maintainer: *maint})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, path)
	return nil
}

type options struct {
	root, outDir, goarch, version, maintainer string
}

// findRoot walks up from dir to the directory whose go.mod is the
// daemon's module.
func findRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte(module)) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no dkimmilter source tree above %s: run this inside it (a go.mod starting %q)", dir, strings.TrimSpace(module))
		}
	}
}

// debArch maps GOARCH to the Debian architecture name, and the GOARM a
// build for it needs.
var debArch = map[string]struct{ arch, goarm string }{
	"amd64":   {"amd64", ""},
	"arm64":   {"arm64", ""},
	"386":     {"i386", ""},
	"arm":     {"armhf", "7"},
	"ppc64le": {"ppc64el", ""},
	"riscv64": {"riscv64", ""},
	"s390x":   {"s390x", ""},
}

// vcs is what git says about the tree being packaged.
type vcs struct {
	revision string    // full hash
	time     time.Time // commit time
	modified bool      // uncommitted changes
	describe string    // git describe --tags --long --match 'v[0-9]*', or ""
	author   string    // "Name <address>" of the commit
}

func gitInfo(root string) (vcs, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-C", root}, args...)...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
		}
		return strings.TrimSpace(string(out)), nil
	}
	var v vcs
	line, err := git("log", "-1", "--format=%H %ct %an <%ae>")
	if err != nil {
		return v, fmt.Errorf("the package's version and revision come from git, and %w (give -version to build from a tree without history)", err)
	}
	fields := strings.SplitN(line, " ", 3)
	if len(fields) != 3 {
		return v, fmt.Errorf("git log: unexpected output %q", line)
	}
	v.revision, v.author = fields[0], fields[2]
	secs, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return v, fmt.Errorf("git log: commit time %q: %v", fields[1], err)
	}
	v.time = time.Unix(secs, 0).UTC()
	status, err := git("status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return v, err
	}
	v.modified = status != ""
	// No tag is not an error: the version is then a snapshot's.
	v.describe, _ = git("describe", "--tags", "--long", "--match", "v[0-9]*")
	return v, nil
}

// debianVersion is the whole Debian version: upstream version, '-', and
// the Debian revision. Debian's own conventions for a build from version
// control: "1.2.0-1" for a tagged release, "1.2.0+git20261207.ffcf23f-1"
// after it, and "0.0~git20261207.ffcf23f-1" before any release ('~' sorts
// before anything, so the first release supersedes every snapshot).
func debianVersion(describe string, rev string, when time.Time) (string, error) {
	short := rev
	if len(short) > 7 {
		short = short[:7]
	}
	snapshot := "git" + when.UTC().Format("20060102") + "." + short
	if describe == "" {
		return "0.0~" + snapshot + "-1", nil
	}
	m := regexp.MustCompile(`^v([0-9][0-9A-Za-z.+~-]*)-([0-9]+)-g[0-9a-f]+$`).FindStringSubmatch(describe)
	if m == nil {
		return "", fmt.Errorf("git describe gave %q, not vVERSION-N-gREV: give -version", describe)
	}
	upstream := strings.ReplaceAll(m[1], "-", "~") // v1.2.0-rc1: 1.2.0~rc1 sorts before 1.2.0
	if m[2] != "0" {
		upstream += "+" + snapshot
	}
	return upstream + "-1", nil
}

var debVersionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~-]*-[A-Za-z0-9.+~]+$`)

// splitVersion checks a Debian version (without epoch) and splits it at
// its last '-'; a version without one gets Debian revision 1.
func splitVersion(v string) (upstream, revision string, err error) {
	if !strings.Contains(v, "-") {
		v += "-1"
	}
	if !debVersionRE.MatchString(v) {
		return "", "", fmt.Errorf("version %q is not a Debian version: a digit first, then letters, digits and . + ~ -, and a -REVISION (e.g. 1.2.0-1)", v)
	}
	i := strings.LastIndex(v, "-")
	return v[:i], v[i+1:], nil
}

// packagedUnit is the systemd unit of contrib/systemd, pointed at the
// packaged binary.
func packagedUnit(unit []byte) ([]byte, error) {
	start := "ExecStart=" + manualBinPath + " "
	if n := bytes.Count(unit, []byte(start)); n != 1 {
		return nil, fmt.Errorf("contrib/systemd/dkimmilter.service: want one %q line to point at %s, found %d", start+"…", binPath, n)
	}
	return bytes.Replace(unit, []byte(start), []byte("ExecStart="+binPath+" "), 1), nil
}

// gzipped compresses as gzip -9n does: best compression, no name, no
// time, so that the output depends on the input only (lintian checks the
// level of man pages and changelogs).
func gzipped(data []byte) ([]byte, error) {
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// changelog is the one-entry Debian changelog of a build from the tree.
func changelog(version, maintainer, revision string, modified bool, when time.Time) string {
	what := "Built from revision " + revision
	if modified {
		what += ", with uncommitted changes"
	}
	return fmt.Sprintf("%s (%s) unstable; urgency=medium\n\n  * %s.\n\n -- %s  %s\n",
		pkgName, version, what, maintainer, when.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
}

// build writes the package and returns its path.
func build(o options) (string, error) {
	a, ok := debArch[o.goarch]
	if !ok {
		var known []string
		for k := range debArch {
			known = append(known, k)
		}
		sort.Strings(known)
		return "", fmt.Errorf("-arch %s: no Debian architecture known for it (known: %s)", o.goarch, strings.Join(known, ", "))
	}
	info, err := gitInfo(o.root)
	if err != nil && o.version == "" {
		return "", err
	}
	if err != nil {
		// -version given, no git: a build from a source tarball.
		info = vcs{time: time.Now().UTC(), author: ""}
	}
	version := o.version
	if version == "" {
		if version, err = debianVersion(info.describe, info.revision, info.time); err != nil {
			return "", err
		}
	}
	upstream, revision, err := splitVersion(version)
	if err != nil {
		return "", err
	}
	version = upstream + "-" + revision
	maintainer := o.maintainer
	if maintainer == "" && os.Getenv("DEBEMAIL") != "" {
		maintainer = strings.TrimSpace(os.Getenv("DEBFULLNAME") + " <" + os.Getenv("DEBEMAIL") + ">")
	}
	if maintainer == "" {
		maintainer = info.author
	}
	if !regexp.MustCompile(`^[^<>]+ <[^<>@\s]+@[^<>@\s]+>$`).MatchString(maintainer) {
		return "", fmt.Errorf("maintainer %q is not \"Name <address>\": give -maintainer, or set DEBFULLNAME and DEBEMAIL", maintainer)
	}

	stage, err := os.MkdirTemp("", "dkimmilter-deb")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)

	// The daemon, static and position-independent, with the version and
	// revision stamped in: -buildvcs cannot be counted on (see
	// cmd/dkimmilter/version.go).
	bin := filepath.Join(stage, "dkimmilter")
	ldflags := []string{"-s", "-w",
		"-X", "main.linkVersion=" + version,
		"-X", "main.linkRevision=" + info.revision,
		"-X", "main.linkModified=" + strconv.FormatBool(info.modified),
	}
	if info.revision != "" {
		ldflags = append(ldflags, "-X", "main.linkTime="+info.time.Format(time.RFC3339))
	}
	gobuild := exec.Command("go", "build", "-trimpath", "-buildmode=pie", "-ldflags", strings.Join(ldflags, " "), "-o", bin, "./cmd/dkimmilter")
	gobuild.Dir = o.root
	gobuild.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+o.goarch, "CGO_ENABLED=0")
	if a.goarm != "" {
		gobuild.Env = append(gobuild.Env, "GOARM="+a.goarm)
	}
	if out, err := gobuild.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/dkimmilter for linux/%s: %v\n%s", o.goarch, err, out)
	}

	src := func(p string) string { return filepath.Join(o.root, filepath.FromSlash(p)) }
	generated := map[string][]byte{}
	unit, err := os.ReadFile(src("contrib/systemd/dkimmilter.service"))
	if err != nil {
		return "", err
	}
	if generated["dkimmilter.service"], err = packagedUnit(unit); err != nil {
		return "", err
	}
	for name, from := range map[string]string{
		"dkimmilter.8.gz":      "doc/man/dkimmilter.8",
		"dkimmilter.toml.5.gz": "doc/man/dkimmilter.toml.5",
	} {
		page, err := os.ReadFile(src(from))
		if err != nil {
			return "", err
		}
		if generated[name], err = gzipped(page); err != nil {
			return "", err
		}
	}
	if generated["changelog.Debian.gz"], err = gzipped([]byte(changelog(version, maintainer, info.revision, info.modified, info.time))); err != nil {
		return "", err
	}
	for name, data := range generated {
		if err := os.WriteFile(filepath.Join(stage, name), data, 0o644); err != nil {
			return "", err
		}
	}

	file := func(from, to string, mode os.FileMode) *files.Content {
		return &files.Content{Source: from, Destination: to,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: info.time}}
	}
	conffile := file(src("contrib/deb/dkimmilter.toml"), "/etc/dkimmilter/dkimmilter.toml", 0o644)
	conffile.Type = files.TypeConfig
	contents := files.Contents{
		{Destination: "/etc/dkimmilter", Type: files.TypeDir,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: 0o755, MTime: info.time}},
		conffile,
		file(bin, binPath, 0o755),
		file(filepath.Join(stage, "dkimmilter.service"), unitPath, 0o644),
		file(src("contrib/systemd/dkimmilter.socket"), socketUnitPath, 0o644),
		file(filepath.Join(stage, "dkimmilter.8.gz"), "/usr/share/man/man8/dkimmilter.8.gz", 0o644),
		file(filepath.Join(stage, "dkimmilter.toml.5.gz"), "/usr/share/man/man5/dkimmilter.toml.5.gz", 0o644),
		file(src("contrib/deb/copyright"), docDir+"/copyright", 0o644),
		file(filepath.Join(stage, "changelog.Debian.gz"), docDir+"/changelog.Debian.gz", 0o644),
		// The unit's Documentation= points here.
		file(src("README.md"), docDir+"/README.md", 0o644),
		file(src("config/example.toml"), docDir+"/examples/dkimmilter.toml", 0o644),
		file(src("contrib/postfix/main.cf"), docDir+"/examples/postfix-main.cf", 0o644),
		file(src("contrib/deb/lintian-overrides"), "/usr/share/lintian/overrides/"+pkgName, 0o644),
	}

	pkg := &nfpm.Info{
		Name:          pkgName,
		Arch:          a.arch,
		Platform:      "linux",
		Version:       upstream,
		Release:       revision,
		VersionSchema: "none",
		Section:       "mail",
		Priority:      "optional",
		Maintainer:    maintainer,
		Description: "DKIM signing and verifying milter for Postfix\n" +
			"dkimmilter signs outbound mail with the keys its signing table picks,\n" +
			"verifies the DKIM signatures of inbound mail, and adds an\n" +
			"Authentication-Results field that says what passed and what did not.\n" +
			"It keeps OpenDKIM's model (key table, signing table, internal hosts)\n" +
			"in one TOML file, loads OpenDKIM's keys as they are, and checks the\n" +
			"configuration, the keys and their DNS records before the first message.",
		MTime: info.time,
		Overridables: nfpm.Overridables{
			Depends:    []string{"adduser"},
			Recommends: []string{"postfix"},
			Contents:   contents,
			Umask:      0o022,
			Scripts: nfpm.Scripts{
				PostInstall: src("contrib/deb/postinst"),
				PreRemove:   src("contrib/deb/prerm"),
				PostRemove:  src("contrib/deb/postrm"),
			},
		},
	}
	packager, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	pkg = nfpm.WithDefaults(pkg)
	if err := nfpm.Validate(pkg); err != nil {
		return "", err
	}
	outDir := o.outDir
	if !filepath.IsAbs(outDir) {
		outDir = filepath.Join(o.root, outDir)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(outDir, packager.ConventionalFileName(pkg))
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if err := packager.Package(pkg, f); err != nil {
		f.Close()
		return "", fmt.Errorf("packing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return path, os.Rename(f.Name(), path)
}
