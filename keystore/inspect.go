package keystore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// KeyFileStatus is what a listing says about a key file. Unlike
// ReadPrivateKey, which stops at the first problem, it reports the
// permissions and the key separately, so that an admin sees both the
// algorithm of a group-readable key and the fix.
type KeyFileStatus struct {
	Key     *PrivateKey // nil when the file cannot be read or parsed
	Mode    fs.FileMode // permission bits
	ModTime time.Time
	// Unsafe says who besides the owner may read or write the file
	// ("its group", "others", "group or others"); "" when only the owner,
	// or the owner and a group the daemon runs with, may read it.
	Unsafe string
	// Err is the problem ReadPrivateKey would report, permissions
	// included: a missing or unreadable file, not a key, a key too
	// short to sign with (Key is then still set).
	Err error
}

// InspectKeyFile looks at a key file without the refusals of
// ReadPrivateKey getting in the way of saying what it holds.
func InspectKeyFile(path string) KeyFileStatus {
	return InspectKeyFileFor(path, nil)
}

// InspectKeyFileFor is InspectKeyFile judging the file's group by the
// groups of acct (nil: this process).
func InspectKeyFileFor(path string, acct *Account) KeyFileStatus {
	if acct == nil {
		acct = processIDs()
	}
	var st KeyFileStatus
	fi, err := os.Stat(path)
	if err != nil {
		st.Err = fileError(path, err, acct)
		return st
	}
	if !fi.Mode().IsRegular() {
		st.Err = fmt.Errorf("%s is not a regular file", path)
		return st
	}
	st.Mode, st.ModTime = fi.Mode().Perm(), fi.ModTime()
	if err := permError(path, fi, acct); err != nil {
		st.Err = err
		if errors.Is(err, ErrUnsafePermissions) {
			st.Unsafe = unsafeWho(st.Mode)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if st.Err == nil {
			st.Err = fileError(path, err, acct)
		}
		return st
	}
	k, err := decodeKey(data)
	if err == nil {
		st.Key = k
		err = sizeError(k)
	}
	if err != nil && st.Err == nil {
		st.Err = fmt.Errorf("%s: %w", path, err)
	}
	return st
}
