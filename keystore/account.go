package keystore

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Account is a user the daemon runs as: who opens the key files. Key file
// checks take one because a file's safety and readability depend on it: a
// key readable by its group is safe when that group is one of the daemon's
// own (root:opendkim 0640 with the daemon in group opendkim, Debian's
// OpenDKIM layout), and `dkimmilter check`, run as root, must judge the
// files as the service user will meet them, not as root.
type Account struct {
	Name   string // user name; the uid in decimal when it has none
	UID    int
	Groups []int // every group: the primary one first, then the supplementary ones
}

// ProcessAccount is the account this process runs as: its effective uid,
// effective gid and supplementary groups, as the kernel applies them when
// it opens a file.
func ProcessAccount() *Account {
	a := processIDs()
	a.Name = userName(a.UID)
	return a
}

// processIDs is ProcessAccount without the name, which takes a look-up in
// the user database: the daemon judges every key file it loads by its
// groups, and needs the name only to report a problem.
func processIDs() *Account {
	a := &Account{UID: os.Geteuid(), Groups: []int{os.Getegid()}}
	if gs, err := os.Getgroups(); err == nil {
		for _, g := range gs {
			if !slices.Contains(a.Groups, g) {
				a.Groups = append(a.Groups, g)
			}
		}
	}
	return a
}

// named is a with its name filled in.
func (a *Account) named() *Account {
	if a.Name == "" {
		a.Name = userName(a.UID)
	}
	return a
}

// LookupAccount is the account of a user by name (or uid), with the groups
// the system's group database gives it, as initgroups(3) does when a
// service manager starts the daemon as that user.
func LookupAccount(name string) (*Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("no user %q on this system: %w", name, err)
	}
	return accountOf(u)
}

// LookupAccountID is LookupAccount by uid.
func LookupAccountID(uid int) (*Account, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nil, fmt.Errorf("no user with uid %d on this system: %w", uid, err)
	}
	return accountOf(u)
}

func accountOf(u *user.User) (*Account, error) {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q is not a number", u.Username, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("user %s: gid %q is not a number", u.Username, u.Gid)
	}
	a := &Account{Name: u.Username, UID: uid, Groups: []int{gid}}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("user %s: its groups: %w", u.Username, err)
	}
	for _, s := range ids {
		if g, err := strconv.Atoi(s); err == nil && !slices.Contains(a.Groups, g) {
			a.Groups = append(a.Groups, g)
		}
	}
	return a, nil
}

// InGroup reports whether gid is one of the account's groups.
func (a *Account) InGroup(gid int) bool { return slices.Contains(a.Groups, gid) }

// groupName is a group's name, or its number when it has none.
func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}

// userName is a user's name, or its number when it has none.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// owner returns a file's owner and group.
func owner(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// Owner returns the uid that owns path, and false when it cannot be
// told (no such file, or a system without owners).
func Owner(path string) (int, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	uid, _, ok := owner(fi)
	return uid, ok
}

// Access needs, as the permission bits of one class (owner, group, other).
const (
	needRead   fs.FileMode = 4
	needWrite  fs.FileMode = 2
	needSearch fs.FileMode = 1
)

// AccessProblem is one component of a path that keeps an account from
// opening it, and the command that fixes that component.
type AccessProblem struct {
	Path  string      // the directory or file that refuses the account
	User  string      // the account's name
	Owner string      // "user:group"
	Mode  fs.FileMode // its permission bits
	Need  string      // what the account lacks: "search (x)", "read (r)", "write and search (wx)"
	Fix   string      // a shell command that gives it, targeting Path
}

func (p AccessProblem) String() string {
	return fmt.Sprintf("%s (%s %04o) gives %s no %s", p.Path, p.Owner, p.Mode, p.User, p.Need)
}

// ReadProblems says why the account cannot open the file at path for
// reading: each directory on the way must let it search (x), and the file
// let it read (r). It judges from the owners, groups and modes only, as
// the kernel does without ACLs, so that it works for another user than
// the caller's and names the component to fix. A missing component ends
// the walk: that is another error, reported where the file is loaded.
// Root is never refused.
func (a *Account) ReadProblems(path string) []AccessProblem {
	return a.problems(path, needRead)
}

// SearchProblems says why the account cannot reach names inside dir:
// dir and each directory above it must let it search (x).
func (a *Account) SearchProblems(dir string) []AccessProblem {
	return a.problems(dir, needSearch)
}

// CreateProblems says why the account cannot create a file (such as the
// milter's unix socket) in dir: the directories above must let it search,
// and dir must let it write and search.
func (a *Account) CreateProblems(dir string) []AccessProblem {
	return a.problems(dir, needWrite|needSearch)
}

func (a *Account) problems(path string, last fs.FileMode) []AccessProblem {
	if a.UID == 0 {
		return nil
	}
	path = filepath.Clean(path)
	if real, err := filepath.EvalSymlinks(path); err == nil {
		// The kernel checks the directories of the target, not of the link.
		path = real
	}
	var comps []string
	for p := path; ; p = filepath.Dir(p) {
		comps = append(comps, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	slices.Reverse(comps)
	var out []AccessProblem
	for i, p := range comps {
		fi, err := os.Stat(p)
		if err != nil {
			break
		}
		need := needSearch
		if i == len(comps)-1 {
			need = last
		}
		uid, gid, ok := owner(fi)
		if !ok {
			break
		}
		if a.may(fi.Mode().Perm(), uid, gid, need) {
			continue
		}
		out = append(out, AccessProblem{
			Path: p, User: a.Name, Owner: userName(uid) + ":" + groupName(gid), Mode: fi.Mode().Perm(),
			Need: needWords(need), Fix: a.fix(p, fi, uid, gid, need),
		})
	}
	return out
}

// may applies the permission bits as the kernel does: the owner's class
// when the account owns the file (even if the group's bits would allow
// more), else the group's when it is in the group, else the others'.
func (a *Account) may(perm fs.FileMode, uid, gid int, need fs.FileMode) bool {
	var bits fs.FileMode
	switch {
	case uid == a.UID:
		bits = perm >> 6
	case a.InGroup(gid):
		bits = perm >> 3
	default:
		bits = perm
	}
	return bits&7&need == need
}

func needWords(need fs.FileMode) string {
	switch need {
	case needRead:
		return "read (r)"
	case needSearch:
		return "search (x)"
	}
	return "write and search (wx)"
}

func needLetters(need fs.FileMode) string {
	s := ""
	if need&needRead != 0 {
		s += "r"
	}
	if need&needWrite != 0 {
		s += "w"
	}
	if need&needSearch != 0 {
		s += "x"
	}
	return s
}

// fix is the command that gives the account what it needs on one path
// component, changing as little as possible: its own bit when it owns the
// component or is in its group; membership of a group that has the
// access already (another daemon's group, such as opendkim's, whose
// layout stays as it is); else the component is handed to the account's
// own group (a directory) or to the account (a key file, which must stay
// unreadable to groups it does not run with).
func (a *Account) fix(path string, fi fs.FileInfo, uid, gid int, need fs.FileMode) string {
	perm, l := fi.Mode().Perm(), needLetters(need)
	switch {
	case uid == a.UID:
		return "chmod u+" + l + " " + path
	case a.InGroup(gid):
		return "chmod g+" + l + " " + path
	case gid != 0 && (perm>>3)&need == need:
		return fmt.Sprintf("usermod -aG %s %s (then restart dkimmilter)", groupName(gid), a.Name)
	case !fi.IsDir():
		return "chown " + a.Name + " " + path
	case gid == 0 && len(a.Groups) > 0:
		g := groupName(a.Groups[0])
		return fmt.Sprintf("chgrp %s %s && chmod g+%s %s", g, path, l, path)
	case need == needSearch:
		// Another group's directory: leave its group alone. Search
		// alone lets others open names they know, not list them; the
		// key files below stay protected by their own mode.
		return "chmod o+x " + path
	}
	return "chown " + a.Name + " " + path
}

// DescribeProblems joins problems for an error message, and their fixes
// for its hint.
func DescribeProblems(ps []AccessProblem) (text, fixes string) {
	var t, f []string
	for _, p := range ps {
		t = append(t, p.String())
		// One fix often mends several components (usermod -aG for a
		// group that every directory on the way shares): say it once.
		if !slices.Contains(f, p.Fix) {
			f = append(f, p.Fix)
		}
	}
	return strings.Join(t, "; "), strings.Join(f, "; then ")
}
