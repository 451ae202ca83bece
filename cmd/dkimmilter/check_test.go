package main

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
)

// Every problem is listed on its own, from joined errors and config
// errors however nested, without reading their text.
func TestEachProblem(t *testing.T) {
	cfgErrs := config.Errors{{File: "a.toml", Line: 1, Msg: "one"}, {File: "a.toml", Line: 2, Msg: "two"}}
	err := errors.Join(cfgErrs, fmt.Errorf("keys: %w", errors.New("three\nstill three")), errors.Join(errors.New("four")))
	var got []string
	eachProblem(err, func(e error) { got = append(got, e.Error()) })
	want := []string{"a.toml:1: one", "a.toml:2: two", "keys: three\nstill three", "four"}
	if !slices.Equal(got, want) {
		t.Errorf("problems %q, want %q", got, want)
	}
}
