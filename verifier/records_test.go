package verifier

import (
	"fmt"
	"testing"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

func TestRecordCache(t *testing.T) {
	c := newRecordCache()
	rec := testkit.KeyRecord(testkit.RSAKey(2048), "")
	a, err := c.parse(rec)
	b, _ := c.parse(rec)
	if err != nil || a == nil || a != b {
		t.Errorf("the second parse of a record is not the cached one: %p %p %v", a, b, err)
	}
	if _, err := c.parse("v=DKIM1; p="); err == nil {
		t.Error("a revoked key parsed without its error")
	}
	for i := 0; i < maxRecords+10; i++ {
		c.parse(fmt.Sprintf("v=DKIM1; n=%d; p=", i))
	}
	if len(c.m) > maxRecords {
		t.Errorf("%d records cached, bound %d", len(c.m), maxRecords)
	}
	var nilCache *recordCache
	if r, err := nilCache.parse(rec); err != nil || r == nil {
		t.Errorf("a nil cache must parse: %v", err)
	}
}
