package loadgen

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// Message is a message prepared once and sent many times: its header
// fields in both forms Postfix can send them, and its body in wire (CRLF)
// form, so that the driver spends as little CPU per message as it can (it
// shares the machine with the milter it measures).
type Message struct {
	Header dkim.Header
	Body   []byte
	// EnvFrom and Rcpts are the envelope.
	EnvFrom string
	Rcpts   []string

	lead, nolead []string // header values with / without the leading space
}

// ParseMessage prepares a raw message (LF or CRLF line ends). The envelope
// sender is the address of its first From field unless envFrom is set.
func ParseMessage(raw []byte, envFrom string, rcpts []string) (*Message, error) {
	h, body := testkit.Split(raw)
	if len(h) == 0 {
		return nil, fmt.Errorf("message has no header fields")
	}
	if envFrom == "" {
		envFrom = "sender@example.com"
		for _, f := range h {
			if strings.EqualFold(f.Name, "From") {
				if addrs := dkim.FromAddresses(f.Value()); len(addrs) > 0 {
					envFrom = addrs[0]
				}
				break
			}
		}
	}
	if len(rcpts) == 0 {
		rcpts = []string{"bob@example.net"}
	}
	m := &Message{Header: h, Body: body, EnvFrom: envFrom, Rcpts: rcpts}
	for _, f := range h {
		m.lead = append(m.lead, testkit.HeaderValue(f, true))
		m.nolead = append(m.nolead, testkit.HeaderValue(f, false))
	}
	return m, nil
}

// Raw returns the message as it is on the wire.
func (m *Message) Raw() []byte { return testkit.Join(m.Header, m.Body) }

// Size is the size of the message on the wire.
func (m *Message) Size() int {
	n := 2 + len(m.Body)
	for _, f := range m.Header {
		n += len(f.Raw) + 2
	}
	return n
}

func (m *Message) values(leadSpace bool) []string {
	if leadSpace {
		return m.lead
	}
	return m.nolead
}

// lines is the text the generated bodies are made of: ordinary prose of
// ordinary line lengths, with the odd double space and trailing space
// that relaxed canonicalization has to deal with.
var lines = []string{
	"Hello Bob,",
	"",
	"Here are the figures from last week's run, as promised. The totals are",
	"in the attached sheet; the short version is that the new relay handled",
	"the evening peak without queueing, and the  bounce rate stayed under one",
	"percent for the whole period. ",
	"Two things to look at before Thursday:",
	"  - the retry interval for the deferred queue is still the default;",
	"  - the list server signs with a 1024-bit key, which some receivers now",
	"    treat as a policy failure.",
	"Let me know if you want me to go through the numbers on a call.",
	"",
	"Best regards,",
	"Alice",
	"-- ",
	"Alice Example, Operations, Example Corp.",
	"",
}

// GenerateMessage builds a realistic outbound message of about size bytes
// on the wire (the body is padded with text lines to reach it) from the
// address from to the address to. Its header is what a mail client and
// Postfix's smtpd produce: a Received field added by Postfix first.
func GenerateMessage(size int, from, to string) *Message {
	fromDomain := from[strings.LastIndexByte(from, '@')+1:]
	var b bytes.Buffer
	b.WriteString("Received: from laptop.example.com (laptop.example.com [10.1.2.3])\r\n" +
		"\t(Authenticated sender: " + from + ")\r\n" +
		"\tby mx." + fromDomain + " (Postfix) with ESMTPSA id 4Xabc123DEF\r\n" +
		"\tfor <" + to + ">; Tue, 10 Nov 2026 09:15:02 +0100 (CET)\r\n")
	b.WriteString("From: Alice Example <" + from + ">\r\n")
	b.WriteString("To: Bob Example <" + to + ">\r\n")
	b.WriteString("Subject: Figures from last week's run\r\n")
	b.WriteString("Date: Tue, 10 Nov 2026 09:15:01 +0100\r\n")
	b.WriteString("Message-ID: <20261110091501.4Xabc123DEF@" + fromDomain + ">\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8; format=flowed\r\n")
	b.WriteString("Content-Transfer-Encoding: 8bit\r\n")
	b.WriteString("User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101\r\n Thunderbird/128.4.0\r\n")
	b.WriteString("\r\n")
	for i := 0; b.Len() < size || i < len(lines); i++ {
		b.WriteString(lines[i%len(lines)])
		b.WriteString("\r\n")
	}
	m, err := ParseMessage(b.Bytes(), from, []string{to})
	if err != nil {
		panic(err) // the generated message always has a header
	}
	return m
}
