package main

import (
	"fmt"
	"io"
	"strings"
)

const keysHelp = `
Manage DKIM keys: gen makes a key and prints its DNS record and config
lines, list shows the configured keys, dns prints the records to publish,
check looks them up in DNS and says what is wrong, rotate walks through a
key rotation by hand, publish and revoke change the records through the
DNS server's dynamic updates or a command of yours, rotation shows where
the keys that rotate themselves stand. For such a key, list, dns, check,
publish and revoke act on the key that signs now, as the rotation state
says. Run 'dkimmilter keys SUBCOMMAND -h' for flags.`

type keysCommand struct {
	name, help string
	run        func(args []string, stdout, stderr io.Writer) int
}

func keysCommands() []keysCommand {
	return []keysCommand{
		{"gen", "generate a key; print its DNS record and config lines", runKeysGen},
		{"list", "list the configured keys", runKeysList},
		{"dns", "print the DNS records to publish for configured keys", runKeysDNS},
		{"check", "look the keys up in DNS and report problems", runKeysCheck},
		{"rotate", "generate the next key for a domain and print the rotation steps", runKeysRotate},
		{"publish", "publish keys' DNS records through their [publish.NAME]", runKeysPublish},
		{"revoke", "revoke keys' DNS records (empty p=) through their [publish.NAME]", runKeysRevoke},
		{"rotation", "show the state of the keys that rotate themselves", runKeysRotation},
	}
}

func runKeys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "help" || args[0] == "--help" {
		w := stdout
		if len(args) == 0 {
			w = stderr
		}
		fmt.Fprintln(w, "usage: dkimmilter keys SUBCOMMAND [flags]")
		for _, c := range keysCommands() {
			fmt.Fprintf(w, "  %-9s %s\n", c.name, c.help)
		}
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range keysCommands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "dkimmilter keys: unknown subcommand %q (want %s)\n", args[0], strings.Join(keysNames(), ", "))
	return exitUsage
}

func keysNames() []string {
	var n []string
	for _, c := range keysCommands() {
		n = append(n, c.name)
	}
	return n
}
