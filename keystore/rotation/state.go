package rotation

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// stateVersion is the format of the state file; a file of another
// version is refused rather than misread.
const stateVersion = 1

// State is one rotating key's state file, StateDir/NAME.json: what
// rotation published, what signs, and what is due next. It is written
// before every change takes effect (a switch is written, then made), so
// that a restart continues where the process stopped.
type State struct {
	Version int    `json:"version"`
	Key     string `json:"key"`    // the keys.NAME
	Domain  string `json:"domain"` // its domain, which must not change under the state

	Active   KeyState   `json:"active"`
	Pending  *KeyState  `json:"pending,omitempty"`
	Retiring []KeyState `json:"retiring,omitempty"`
	Revoked  []KeyState `json:"revoked,omitempty"`

	// Paused is set while a record is not what rotation published: the
	// rotation of this key waits until it is again.
	Paused *Paused `json:"paused,omitempty"`

	// Failures counts the failed attempts in a row; the next one is
	// not made before RetryAt (Retry doubled per failure, up to
	// RetryMax). LastError says what failed.
	Failures  int       `json:"failures,omitempty"`
	RetryAt   time.Time `json:"retry_at,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// KeyState is one key of a rotating keys.NAME: the one that signs, the
// next one, or an old one on its way out.
type KeyState struct {
	Selector string `json:"selector"`
	File     string `json:"file"`
	// Made: rotation generated the key file (under StateDir/keys), so
	// rotation deletes it at the end; a configured file is never deleted.
	Made bool `json:"made,omitempty"`
	// PEM is the private key of a key rotation made for a key with a
	// query: kept in the database with the state, not in a file.
	PEM string `json:"private_key,omitempty"`
	// Record is the TXT value published for the key (for an old key,
	// what the zone's servers served at the switch).
	Record  string    `json:"record,omitempty"`
	Created time.Time `json:"created"` // when the key was made (its file's time for a configured key)

	Since       time.Time `json:"since,omitzero"`         // active: signing since
	PublishedAt time.Time `json:"published_at,omitzero"`  // pending: the Add succeeded (zero: not yet)
	FirstSeenAt time.Time `json:"first_seen_at,omitzero"` // pending: a server first served it
	SwitchedAt  time.Time `json:"switched_at,omitzero"`   // retiring: stopped signing
	RevokeAt    time.Time `json:"revoke_at,omitzero"`     // retiring: sign.expire + margin after the switch
	// RevokedRecord replaced Record when the key was revoked.
	RevokedRecord string    `json:"revoked_record,omitempty"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	DeleteAt      time.Time `json:"delete_at,omitzero"` // revoked: RevokedAt + revoked_for
}

// Paused says which record is not what rotation expects.
type Paused struct {
	Name     string    `json:"name"`     // the DNS name
	Selector string    `json:"selector"` // of the key whose record it is
	Step     string    `json:"step"`     // what rotation was about to do: add, revoke, delete, check
	Expected []string  `json:"expected"` // the values rotation accepts there ("" for no record)
	Found    string    `json:"found"`
	Server   string    `json:"server"`
	Since    time.Time `json:"since"`
}

// ReadState reads the rotation state of keys.NAME in stateDir ([rotation]
// state_dir); nil, nil when the key has not rotated. The commands use it
// to know which key signs in place of the configured one.
func ReadState(stateDir, name string) (*State, error) { return readState(stateDir, name) }

// StatePath is the state file of keys.NAME in stateDir, for the
// commands' messages.
func StatePath(stateDir, name string) string { return statePath(stateDir, name) }

// WriteState writes st as keys.st.Key's state in stateDir, as the engine
// does (atomically, mode 0600). Only the engine writes states while the
// daemon runs; the commands' tests write theirs with it, so that what
// the commands read is what the engine writes.
func WriteState(stateDir string, st *State) error { return writeState(stateDir, st) }

// statePath is the state file of keys.NAME.
func statePath(dir, name string) string { return filepath.Join(dir, name+".json") }

// readState reads keys.NAME's state; nil, nil when there is none.
func readState(dir, name string) (*State, error) {
	path := statePath(dir, name)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the rotation state of keys.%s: %w", name, err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: not a rotation state file (%v): move it away to start keys.%s's rotation over from the configured key", path, err, name)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%s: state format %d, this version of dkimmilter reads %d", path, st.Version, stateVersion)
	}
	if st.Key != name || st.Active.Selector == "" || st.Active.File == "" {
		return nil, fmt.Errorf("%s: incomplete rotation state (key %q, active selector %q, file %q): move it away to start keys.%s's rotation over from the configured key",
			path, st.Key, st.Active.Selector, st.Active.File, name)
	}
	return &st, nil
}

// writeState writes st atomically: a temporary file in the same
// directory, synced, renamed over the old one, and the directory synced,
// so that a crash leaves the old state or the new one, never half of one.
func writeState(dir string, st *State) error {
	st.Version = stateVersion
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("rotation state directory: %w (check [rotation] state_dir: the daemon's user must be able to write there)", err)
	}
	path := statePath(dir, st.Key)
	f, err := os.CreateTemp(dir, "."+st.Key+".json.tmp*") // mode 0600
	if err != nil {
		return fmt.Errorf("writing %s: %w (check [rotation] state_dir: the daemon's user must be able to write there)", path, err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("writing %s: syncing its directory: %w", path, err)
		}
	}
	return nil
}
