package config

import "time"

// Publisher is one [publish.NAME] table: how DNS records are published.
type Publisher struct {
	Name string
	Line int // of the [publish.NAME] header

	// Method is "rfc2136" (a dynamic update signed with TSIG, RFC 2136
	// and RFC 8945) or "command" (a program run with the action, the
	// record's name and its value, for providers with an API).
	Method string

	// rfc2136:
	Server  string // the zone's primary, "host:port"; "" for the SOA's MNAME on port 53
	Zone    string // the zone to update; "" found from DNS (the SOA of the record's name)
	TSIGKey string // a BIND key file (tsig-keygen's output); "" sends unsigned updates

	// command: the program and its first arguments; the action ("add",
	// "revoke", "delete"), the record's name and its TXT value follow.
	Command []string

	TTL     time.Duration // of the records published
	Timeout time.Duration // of one update, or one run of the command
}

// Rotation is the [rotation] table.
type Rotation struct {
	// StateDir holds each rotating key's state and the keys rotation
	// made: the daemon's user must be able to write to it.
	StateDir string
	// Margin: an old key's record stays published for sign.expire plus
	// this long after the switch, then it is revoked.
	Margin time.Duration
	// RevokedFor: a revoked record (p= empty) stays this long before it
	// is deleted, with the old key's file.
	RevokedFor time.Duration
	// CheckInterval: how often a pending key's record is checked at the
	// zone's authoritative servers.
	CheckInterval time.Duration
	// Retry is the first wait after a failed step; each failure doubles
	// it, up to RetryMax.
	Retry, RetryMax time.Duration
}
