package rotation

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/dkimmilter/dkimmilter/keystore"
)

// stateStore is where one rotating key's state and the keys rotation
// makes are kept: state_dir's files for a key with a file (fileStore),
// the dkimmilter_rotation table for each domain of a key with a query
// (dbStore). The steps are the same for both (Engine.work); only this
// differs.
type stateStore interface {
	// save writes st; it is called before every effect that relies on
	// it (a switch is saved, then made).
	save(st *State) error
	// newKey keeps pk, the next key of st under selector, and returns
	// it as a pending KeyState (File or PEM set). A key made for that
	// selector by an earlier run that stopped before saving is taken up
	// instead, and returned as pk.
	newKey(st *State, selector string, pk *keystore.PrivateKey) (KeyState, *keystore.PrivateKey, error)
	// removeKey removes an old key rotation made, once its record is
	// deleted; it says what became of it, for the log.
	removeKey(k KeyState) string
	// switched makes k sign, after save wrote the state that says so.
	switched(name string, k *keystore.Key)
	// spread is how long every signer takes to see a switch (0 for the
	// process's own keys; cache_ttl for the database's): the old record
	// is kept that much longer.
	spread() time.Duration
	// keyDir is the directory of the keys rotation made for domain, ""
	// when they are not files: a date-based selector avoids their names.
	keyDir(domain string) string
	// startOver says how to start a key's rotation over from its
	// configured key, for the hints.
	startOver(st *State) string
}

// readKey reads the private key of k: inline (a key rotation made for a
// key with a query), its file, or, for a key with a query that has not
// rotated yet, the key the key table holds (conf).
func readKey(k KeyState, conf *keystore.PrivateKey) (*keystore.PrivateKey, error) {
	switch {
	case k.PEM != "":
		pk, err := keystore.ParsePrivateKey([]byte(k.PEM))
		if err != nil {
			return nil, fmt.Errorf("the key of selector %s in the rotation state: %w", k.Selector, err)
		}
		return pk, nil
	case k.File != "":
		return keystore.ReadPrivateKey(k.File)
	case conf != nil:
		return conf, nil
	}
	return nil, fmt.Errorf("the key of selector %s is neither in the rotation state nor in a file", k.Selector)
}

// fileStore keeps the states of keys with a file in state_dir/NAME.json,
// and the keys rotation makes in state_dir/keys/DOMAIN/SELECTOR.pem.
type fileStore struct {
	dir     string
	rotated *keystore.Rotated
}

func (f *fileStore) save(st *State) error { return writeState(f.dir, st) }

func (f *fileStore) newKey(st *State, selector string, pk *keystore.PrivateKey) (KeyState, *keystore.PrivateKey, error) {
	path := filepath.Join(f.keyDir(st.Domain), selector+".pem")
	if err := keystore.WriteKeyFile(path, pk); errors.Is(err, keystore.ErrKeyExists) {
		// Made by an earlier run that stopped before writing its state:
		// the state directory is rotation's own.
		var rerr error
		if pk, rerr = keystore.ReadPrivateKey(path); rerr != nil {
			return KeyState{}, nil, rerr
		}
	} else if err != nil {
		return KeyState{}, nil, fmt.Errorf("writing the new key: %w (check [rotation] state_dir)", err)
	}
	return KeyState{Selector: selector, File: path, Made: true}, pk, nil
}

func (f *fileStore) removeKey(k KeyState) string {
	if !k.Made {
		return "kept (not made by rotation)"
	}
	if err := removeFile(k.File); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "could not be removed: " + err.Error()
	}
	return "removed"
}

func (f *fileStore) switched(name string, k *keystore.Key) { f.rotated.Set(name, k) }

func (f *fileStore) spread() time.Duration { return 0 }

func (f *fileStore) keyDir(domain string) string { return filepath.Join(f.dir, "keys", domain) }

func (f *fileStore) startOver(st *State) string {
	return "move " + statePath(f.dir, st.Key) + " away and reload (its keys stay in " + filepath.Join(f.dir, "keys") + ")"
}
