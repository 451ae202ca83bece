package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionString(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	tail := " (go1.25.5 " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"release", &debug.BuildInfo{GoVersion: "go1.25.5", Main: debug.Module{Version: "v1.2.0"}},
			"dkimmilter v1.2.0" + tail},
		{"checkout", &debug.BuildInfo{GoVersion: "go1.25.5", Main: debug.Module{Version: "(devel)"},
			Settings: settings("vcs.revision", "5ea3589c1d2e0f9a8b7c6d5e4f3a2b1c0d9e8f7a", "vcs.time", "2026-12-07T03:00:00Z", "vcs.modified", "true")},
			"dkimmilter devel, revision 5ea3589c1d2e 2026-12-07T03:00:00Z, with local changes" + tail},
		{"pseudo-version", &debug.BuildInfo{GoVersion: "go1.25.5", Main: debug.Module{Version: "v0.0.0-20261207030000-5ea3589c1d2e"},
			Settings: settings("vcs.revision", "5ea3589c1d2e0f9a8b7c6d5e4f3a2b1c0d9e8f7a")},
			"dkimmilter v0.0.0-20261207030000-5ea3589c1d2e" + tail},
		{"no vcs", &debug.BuildInfo{GoVersion: "go1.25.5", Main: debug.Module{Version: "(devel)"}},
			"dkimmilter devel, revision unknown (built outside a git checkout, or with -buildvcs=false)" + tail},
	}
	for _, tt := range tests {
		if got := versionString(tt.bi); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}
}

// Values stamped by the linker replace what the go command recorded, and
// only when a package build set them.
func TestStamped(t *testing.T) {
	tail := " (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	checkout := &debug.BuildInfo{GoVersion: runtime.Version(), Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "1111111111111111"}, {Key: "vcs.modified", Value: "true"}}}
	tests := []struct {
		name                  string
		bi                    *debug.BuildInfo
		ver, rev, when, dirty string
		want                  string
	}{
		{"nothing stamped", checkout, "", "", "", "",
			"dkimmilter devel, revision 111111111111, with local changes" + tail},
		{"package build", checkout, "0.0~git20261207.ffcf23f-1", "ffcf23f1a2b3c4d5e6f7", "2026-12-07T03:00:00Z", "false",
			"dkimmilter 0.0~git20261207.ffcf23f-1, revision ffcf23f1a2b3 2026-12-07T03:00:00Z" + tail},
		{"package build, uncommitted changes", nil, "1.2.0-1", "ffcf23f1a2b3c4d5e6f7", "2026-12-07T03:00:00Z", "true",
			"dkimmilter 1.2.0-1, revision ffcf23f1a2b3 2026-12-07T03:00:00Z, with local changes" + tail},
		{"version only", nil, "1.2.0-1", "", "", "",
			"dkimmilter 1.2.0-1" + tail},
	}
	for _, tt := range tests {
		if got := versionString(stamped(tt.bi, tt.ver, tt.rev, tt.when, tt.dirty)); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}
	if checkout.Main.Version != "(devel)" || len(checkout.Settings) != 2 {
		t.Error("stamped changed the BuildInfo it was given")
	}
}

// The -X names the package build uses (contrib/deb) reach the binary: a
// renamed variable would leave a packaged binary saying "devel".
func TestVersionLinkerStamp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the daemon: not with -short")
	}
	bin := filepath.Join(t.TempDir(), "dkimmilter")
	ldflags := "-X main.linkVersion=9.8.7-1 -X main.linkRevision=0123456789abcdef0123 -X main.linkTime=2026-12-07T03:00:00Z -X main.linkModified=false"
	build := exec.Command("go", "build", "-ldflags", ldflags, "-o", bin, ".")
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	want := "dkimmilter 9.8.7-1, revision 0123456789ab 2026-12-07T03:00:00Z (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if string(out) != want {
		t.Errorf("version:\n got %s\nwant %s", out, want)
	}
}

// "dkimmilter version" and "-version" print one line; the ready line
// carries it too.
func TestVersionCommand(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"-version"}} {
		code, out, errs := runCmd(args...)
		if code != exitOK || !strings.HasPrefix(out, "dkimmilter ") || !strings.Contains(out, runtime.Version()) || strings.Count(out, "\n") != 1 {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errs)
		}
	}
	f := newFixture(t, "")
	p := startProc(t, "serve", "-config", f.cfg)
	p.waitLog(t, `msg="dkimmilter ready" version="dkimmilter `)
}

// "dkimmilter -h" lists every command, not only serve's flags.
func TestHelpListsCommands(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "help"} {
		code, out, _ := runCmd(arg)
		if code != exitOK {
			t.Errorf("%s: exit %d", arg, code)
		}
		for _, c := range commands {
			if !strings.Contains(out, "  dkimmilter "+c.name) {
				t.Errorf("%s does not list %s:\n%s", arg, c.name, out)
			}
		}
		if !strings.Contains(out, "-listen ADDR") {
			t.Errorf("%s does not show serve's -listen:\n%s", arg, out)
		}
	}
}
