//go:build race

package milter

// raceEnabled: the race detector slows the milter tenfold; the soak test
// sends fewer messages under it.
const raceEnabled = true
