package keystore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// maxKeyFile bounds what is read of a key file a database row names: a
// PEM RSA key of 8192 bits is under 7 KiB, and the path comes from
// whoever writes the table, not from the configuration.
const maxKeyFile = 64 << 10

// fileFailure is a key file the file system failed to give (missing,
// unreadable, an I/O error): a failure like a database outage, not an
// answer about the row, so it is not cached; the next message tries again.
type fileFailure struct{ err error }

func (e fileFailure) Error() string { return e.err.Error() }
func (e fileFailure) Unwrap() error { return e.err }

// readKeyPath reads the key file a row of a key query names, checking it
// before a byte is read: not a symbolic link (the row names the file
// itself, so that a link cannot point the daemon at another file), a
// regular file, the permissions of a key file, at most maxKeyFile bytes.
// The checks run on the open file, so the file judged is the file read.
func readKeyPath(path string) (*PrivateKey, error) {
	acct := processIDs()
	if fi, err := os.Lstat(path); err != nil {
		return nil, fileFailure{fileError(path, err, acct)}
	} else if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s is a symbolic link; the private_key column must name the key file itself", path)
	}
	// O_NONBLOCK: opening a FIFO put there does not wait for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link; the private_key column must name the key file itself", path)
		}
		return nil, fileFailure{fileError(path, err, acct)}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileFailure{fileError(path, err, acct)}
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if err := permError(path, fi, acct); err != nil {
		return nil, err
	}
	if fi.Size() > maxKeyFile {
		return nil, fmt.Errorf("%s has %d bytes; a key file has at most %d", path, fi.Size(), maxKeyFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fileFailure{fileError(path, err, acct)}
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%s has more than %d bytes; a key file has at most %d", path, maxKeyFile, maxKeyFile)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
