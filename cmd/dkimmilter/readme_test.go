package main

import (
	"os"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
)

// The README's config example and config/example.toml must load with the
// daemon's own parser: documentation that drifts from the code fails here.
func TestDocumentedConfigsParse(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	for _, part := range strings.Split(string(readme), "```toml\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		blocks++
		cfg, err := config.Parse("README.md", []byte(block))
		if err != nil {
			t.Errorf("README.md config block %d: %v", blocks, err)
			continue
		}
		if len(cfg.Keys) == 0 || len(cfg.Signing) == 0 {
			t.Errorf("README.md config block %d has no keys or signing rules", blocks)
		}
	}
	if blocks == 0 {
		t.Error("README.md has no ```toml block")
	}
	if _, err := config.Load("../../config/example.toml"); err != nil {
		t.Errorf("config/example.toml: %v", err)
	}
	// The two commands a newcomer needs come first.
	if !strings.Contains(strings.SplitN(string(readme), "\n## ", 2)[0], "go test ./...") {
		t.Error("README.md does not start with the test command")
	}
}
