package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// checkDBAsEnv marks the child process of checkDatabaseAs: it checks the
// database only, as the service user, and prints what it found.
const checkDBAsEnv = "DKIMMILTER_CHECK_DATABASE_AS_SERVICE_USER"

// checkDBAsExe is the program the child runs: this one (tests put a copy
// where the service user may run it).
var checkDBAsExe = os.Executable

// checkDatabaseAs runs checkDatabase as acct. The server decides who may
// connect by the system user at the other end of its unix socket (peer
// authentication, the usual `local mail dkimmilter peer` line) and
// libpq's password file is that user's ~/.pgpass: run as root, check
// would be refused, or let in, where the daemon would not. So when this
// process is root and the daemon's user is not, the queries run in a
// child process with that user's uid, groups and home.
func checkDatabaseAs(cfg *config.Config, acct *keystore.Account) (errs []error, lines []string) {
	if cfg.Database.DSN == "" || os.Geteuid() != 0 || acct == nil || acct.UID == 0 || cfg.File == "" || len(acct.Groups) == 0 {
		return checkDatabase(cfg, acct)
	}
	exe, err := checkDBAsExe()
	if err != nil {
		return []error{fmt.Errorf("%s: database: cannot check as user %s: %v", cfg.Where(0), acct.Name, err)}, nil
	}
	file, err := filepath.Abs(cfg.File)
	if err != nil {
		file = cfg.File
	}
	cmd := exec.Command(exe, "check", "-config", file)
	home := "/nonexistent"
	if u, err := user.LookupId(strconv.Itoa(acct.UID)); err == nil && u.HomeDir != "" {
		home = u.HomeDir
	}
	cmd.Env = append(os.Environ(), checkDBAsEnv+"="+acct.Name, "HOME="+home, "USER="+acct.Name, "LOGNAME="+acct.Name)
	groups := make([]uint32, 0, len(acct.Groups))
	for _, g := range acct.Groups {
		groups = append(groups, uint32(g))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(acct.UID), Gid: groups[0], Groups: groups}}
	cmd.Dir = "/"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return []error{fmt.Errorf("%s: database: checking as user %s failed: %v: %s (that user must be able to read %s)",
			cfg.Where(0), acct.Name, err, strings.TrimSpace(stderr.String()), cfg.File)}, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		kind, text, _ := strings.Cut(sc.Text(), "\t")
		text = strings.ReplaceAll(text, `\n`, "\n")
		switch kind {
		case "error":
			errs = append(errs, errors.New(text))
		case "line":
			lines = append(lines, text)
		}
	}
	for i := range lines {
		lines[i] += " (as user " + acct.Name + ")"
	}
	return errs, lines
}

// checkDatabaseChild is the child's side: the database check alone, each
// problem and summary line on a line of its own, tab-separated from its
// kind.
func checkDatabaseChild(cfg *config.Config) int {
	errs, lines := checkDatabase(cfg, keystore.ProcessAccount())
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	put := func(kind, text string) { fmt.Fprintf(w, "%s\t%s\n", kind, strings.ReplaceAll(text, "\n", `\n`)) }
	for _, err := range errs {
		eachProblem(err, func(e error) { put("error", e.Error()) })
	}
	for _, l := range lines {
		put("line", l)
	}
	return exitOK
}
