// Command dnsserve is the benchmark's DNS server: it answers TXT queries
// for the names in a records file, on UDP and TCP, so that dkimmilter and
// OpenDKIM fetch the same keys the same way. Every other name is NXDOMAIN.
// It is a benchmark helper, not part of the product; see bench/README.md.
//
//	dnsserve -addr 127.0.0.1:53 -records FILE
//
// FILE has one record per line: "NAME TEXT", where TEXT is the TXT value
// (split into 255-byte strings on the wire). Blank lines and lines that
// start with '#' are skipped.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/miekg/dns"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:53", "address to listen on (UDP and TCP); keep it on loopback")
	records := flag.String("records", "", "records file: NAME TEXT per line")
	ttl := flag.Uint("ttl", 3600, "TTL of the answers")
	flag.Parse()
	recs, err := load(*records)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dnsserve:", err)
		os.Exit(1)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.RecursionAvailable = true
		if len(q.Question) == 1 {
			qq := q.Question[0]
			txt, ok := recs[strings.ToLower(qq.Name)]
			switch {
			case !ok:
				m.Rcode = dns.RcodeNameError
			case qq.Qtype == dns.TypeTXT || qq.Qtype == dns.TypeANY:
				m.Answer = append(m.Answer, &dns.TXT{
					Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: uint32(*ttl)},
					Txt: split(txt),
				})
			}
		}
		if o := q.IsEdns0(); o != nil {
			m.SetEdns0(o.UDPSize(), false)
		}
		w.WriteMsg(m)
	})
	errc := make(chan error, 2)
	for _, netw := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: *addr, Net: netw, Handler: h}
		go func() { errc <- srv.ListenAndServe() }()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "dnsserve:", err)
		os.Exit(1)
	case <-sigs:
	}
}

func load(path string) (map[string]string, error) {
	if path == "" {
		return nil, fmt.Errorf("-records FILE is required")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name, txt, ok := strings.Cut(l, " ")
		if !ok {
			return nil, fmt.Errorf("%s: line %q: want NAME TEXT", path, l)
		}
		out[strings.ToLower(dns.Fqdn(name))] = strings.TrimSpace(txt)
	}
	return out, sc.Err()
}

// split cuts a TXT value into character-strings of at most 255 bytes, in
// miekg/dns presentation form (quotes and backslashes escaped).
func split(s string) []string {
	var out []string
	for len(s) > 0 {
		n := min(len(s), 255)
		out = append(out, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s[:n]))
		s = s[n:]
	}
	return out
}
