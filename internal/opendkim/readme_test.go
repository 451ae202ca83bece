package opendkim

import (
	"os"
	"strings"
	"testing"
)

// The README's "Switching from OpenDKIM" table names every setting this
// package knows, so that an admin finds each of theirs there; families of
// settings that share a fate are named by their prefix.
func TestREADMENamesEverySetting(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "\n## Switching from OpenDKIM\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Switching from OpenDKIM" section`)
	}
	section := text[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	families := []string{"FlowData", "Reputation", "VBR-", "LDAP"}
	for name := range options {
		token := "`" + name + "`"
		for _, f := range families {
			if strings.HasPrefix(name, f) {
				token = "`" + f + "*`"
			}
		}
		if !strings.Contains(section, token) {
			t.Errorf("README.md, Switching from OpenDKIM: %s is not in the table", token)
		}
	}
}

// The README says what OpenDKIM does with the mail dkimmilter gives
// dkim=policy in the words the translation's comment uses.
func TestREADMEPolicyWords(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), policyWords) {
		t.Errorf("README.md does not say %q", policyWords)
	}
}
