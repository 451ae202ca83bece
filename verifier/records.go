package verifier

import (
	"sync"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// recordCache keeps parsed key records by their text. A KeyRecord is
// never changed after parsing, so one can serve every message at once.
type recordCache struct {
	mu sync.Mutex
	m  map[string]parsedRecord
}

type parsedRecord struct {
	rec *dkim.KeyRecord
	err error
}

// maxRecords bounds the cache: a flood of signatures from random
// domains, each with its own key, must not grow it without end. Past it
// the cache starts over, which costs one parse per record.
const maxRecords = 4096

func newRecordCache() *recordCache { return &recordCache{m: map[string]parsedRecord{}} }

// parse is dkim.ParseKeyRecord through the cache; a nil cache parses.
func (c *recordCache) parse(text string) (*dkim.KeyRecord, error) {
	if c == nil {
		return dkim.ParseKeyRecord(text)
	}
	c.mu.Lock()
	p, ok := c.m[text]
	c.mu.Unlock()
	if ok {
		return p.rec, p.err
	}
	rec, err := dkim.ParseKeyRecord(text)
	c.mu.Lock()
	if len(c.m) >= maxRecords {
		clear(c.m)
	}
	c.m[text] = parsedRecord{rec, err}
	c.mu.Unlock()
	return rec, err
}
