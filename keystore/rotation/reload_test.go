package rotation

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The README and the pause's hint: "to start over from the configured
// key, move state_dir/NAME.json away and reload". A reload must then
// start from the configured key, not go on from the state it had read
// (and write it back).
func TestMoveStateAwayAndReload(t *testing.T) {
	r := newRig(t, "ed25519", 0, nil)
	r.run(11 * time.Second)
	st := r.state()
	if len(st.Retiring) != 1 {
		t.Fatalf("no switch: %+v", st)
	}
	// The old record changed by hand: rotation pauses, and says how
	// to start over.
	r.zone.set("s0._domainkey.example.test", "v=DKIM1; k=ed25519; p=HANDMADE")
	r.run(7 * time.Second)
	if r.state().Paused == nil {
		t.Fatalf("not paused: %+v\n%s", r.state(), r.log)
	}
	path := filepath.Join(r.cfg.Rotation.StateDir, "main.json")
	if !strings.Contains(r.log.String(), "move "+path+" away and reload") {
		t.Fatalf("the pause does not say how to start over:\n%s", r.log)
	}
	if err := os.Rename(path, path+".old"); err != nil {
		t.Fatal(err)
	}
	r.e.Reload(r.cfg)
	r.e.Step(context.Background())
	st = r.state()
	if st.Paused != nil || st.Active.Selector != "s0" || len(st.Retiring) != 0 {
		t.Fatalf("after the state was moved away and a reload, the rotation goes on from it: %+v", st)
	}
	if sel, _ := r.signing(); sel != "s0" {
		t.Errorf("signs with %s, want the configured s0", sel)
	}
}
