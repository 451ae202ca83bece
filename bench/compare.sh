#!/usr/bin/env bash
# bench/compare.sh: dkimmilter and Debian's OpenDKIM side by side, with the
# same keys, the same DNS server, the same load driver and the same
# messages, runs alternating (A B A B ...), then a table of medians with
# the ratio dkimmilter/OpenDKIM. See bench/README.md.
#
#   bash bench/compare.sh            # about 7 minutes on 2 vCPUs
#   REPS=5 DUR=10s bash bench/compare.sh
#
# Needs root (its DNS server listens on port 53, see below), Debian's
# opendkim package, openssl and Go. Environment:
#   REPS    runs per milter per figure (default 3)
#   DUR     length of a 2 KB run (default 5s)
#   REUSE   messages per milter connection (default 1: Postfix's smtpd with
#           one message per SMTP session; non_smtpd_milters are always 1)
#   BIG_N   10 MB messages per run (default 128)
#   ONLY    a regexp: run only the figures whose label matches
#   PERF=1  also profile each milter with perf (sign and verify, c=8)
#   OUT     keep the JSON reports (and profiles) in this directory
#   KEEP=1  keep the work directory (configs, keys, logs)
#   DNS_IP  the loopback address of the DNS server (default 127.0.0.153)
#   NOISE_MAX, RETRIES  a run during which other processes used more than
#           NOISE_MAX% of one CPU (default 10) is run again, up to RETRIES
#           times (default 3); the last try counts
set -eu

cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DUR=${DUR:-5s}
REUSE=${REUSE:-1}
BIG_N=${BIG_N:-128}
ONLY=${ONLY:-.}
OPENDKIM=${OPENDKIM:-/usr/sbin/opendkim}
NOISE_MAX=${NOISE_MAX:-10}
RETRIES=${RETRIES:-3}

for tool in go openssl "$OPENDKIM"; do
	command -v "$tool" >/dev/null || { echo "compare.sh: $tool is missing (apt-get install opendkim openssl; Go from go.dev)" >&2; exit 1; }
done

W=$(mktemp -d /tmp/dkimbench.XXXXXX)
OUT=${OUT:-$W/results}
mkdir -p "$W/bin" "$W/keys" "$OUT"
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ "${KEEP:-0}" = 1 ]; then
		echo "work directory kept: $W"
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

echo "== building (work directory $W)"
go build -o "$W/bin/dkimmilter" ./cmd/dkimmilter
go build -o "$W/bin/milterload" ./bench/milterload
go build -o "$W/bin/dnsserve" ./bench/dnsserve
LOAD="$W/bin/milterload"

# The floor for CPU per signed message: one Go RSA-2048 signature, alone.
echo "== Go crypto/rsa: one RSA-2048 PKCS#1 v1.5 signature"
RSA_NS=$(go test -run '^$' -bench '^BenchmarkRSASignPKCS1v15$' -benchtime 1s -count 5 ./signer |
	awk '/^BenchmarkRSASignPKCS1v15/ {if (min == "" || $3 < min) min = $3} END {print min}')
echo "   ${RSA_NS:-?} ns per signature (the fastest of 5 one-second runs)"

echo "== keys: one RSA-2048 and one Ed25519 key, shared by both milters"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/keys/rsa.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$W/keys/ed.pem" 2>/dev/null
chmod 600 "$W/keys/"*.pem
{
	echo "bench._domainkey.example.com v=DKIM1; k=rsa; p=$(openssl pkey -in "$W/keys/rsa.pem" -pubout -outform DER | base64 -w0)"
	# An Ed25519 p= is the raw 32-byte key: the end of the DER SubjectPublicKeyInfo.
	echo "benched._domainkey.ed.example.com v=DKIM1; k=ed25519; p=$(openssl pkey -in "$W/keys/ed.pem" -pubout -outform DER | tail -c 32 | base64 -w0)"
} >"$W/records.txt"

# TCP ports on loopback, away from anything standard.
BASE=$((20000 + RANDOM % 20000))
DK_TCP=$BASE
OD_TCP=$((BASE + 1))

# One DNS server for both, on a loopback address of its own, port 53:
# OpenDKIM's Nameservers option takes addresses only (port 53), so this
# needs root (or CAP_NET_BIND_SERVICE). dkimmilter is pointed at the same
# server with dns.nameservers. Both cache the key for its TTL (an hour:
# dkimmilter in its key cache, OpenDKIM in libunbound's cache and its
# QueryCache), so the verify figures are with a cached key.
#
# Not used, and why: OpenDKIM's ResolverConfiguration (an unbound.conf
# that forwards to a high port) made opendkim 2.11 segfault within seconds
# of concurrent signing ("fatal flex scanner internal error": the file is
# parsed again from several threads); TestPublicKeys would spare OpenDKIM
# the DNS path that dkimmilter takes.
DNS_IP=${DNS_IP:-127.0.0.153}
start() { # name, command...: start a daemon in the background, log to $W/NAME.log
	local name=$1
	shift
	"$@" >"$W/$name.log" 2>&1 &
	PIDS+=($!)
	eval "PID_${name//-/_}=$!"
}
wait_for() { # name, test: wait up to 10s for the daemon to be ready
	local name=$1 i
	shift
	for i in $(seq 100); do
		if "$@" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "compare.sh: $name did not start; its log:" >&2
	cat "$W/$name.log" >&2
	exit 1
}
start dnsserve "$W/bin/dnsserve" -addr "$DNS_IP:53" -records "$W/records.txt"
wait_for dnsserve bash -c "exec 3<>/dev/tcp/$DNS_IP/53"

# dkimmilter: the RSA key signs example.com, the Ed25519 key ed.example.com.
dk_config() { # listen address
	cat <<EOF
listen = "$1"
authserv_id = "mx.example.com"
[sign]
internal_hosts = ["127.0.0.1", "::1"]
canonicalization = "relaxed/relaxed"
[dns]
nameservers = ["$DNS_IP:53"]
[keys.rsa]
domain = "example.com"
selector = "bench"
file = "$W/keys/rsa.pem"
[keys.ed]
domain = "ed.example.com"
selector = "benched"
file = "$W/keys/ed.pem"
[[signing]]
from = "*@example.com"
keys = ["rsa"]
[[signing]]
from = "*@ed.example.com"
keys = ["ed"]
EOF
}
dk_config "unix:$W/dk.sock" >"$W/dk.toml"
dk_config "inet:127.0.0.1:$DK_TCP" >"$W/dk-tcp.toml"

# OpenDKIM: the same model in its own words. Keys under /tmp would fail its
# RequireSafeKeys check; AlwaysAddARHeader and relaxed/relaxed match what
# dkimmilter does. OpenDKIM 2.11 has one SignatureAlgorithm per process, so
# the Ed25519 figure needs an instance of its own.
od_config() { # socket, keytable line, signingtable line, extra lines
	local tag=$1
	echo "$2" >"$W/od-$tag.keytable"
	echo "$3" >"$W/od-$tag.signingtable"
	cat <<EOF
Syslog no
Mode sv
Socket $4
UMask 007
KeyTable file:$W/od-$tag.keytable
SigningTable refile:$W/od-$tag.signingtable
InternalHosts 127.0.0.1,::1
Canonicalization relaxed/relaxed
RequireSafeKeys false
Nameservers $DNS_IP
QueryCache yes
AuthservID mx.example.com
AlwaysAddARHeader yes
EOF
	shift 4
	for l in "$@"; do echo "$l"; done
}
od_config unix "rsa example.com:bench:$W/keys/rsa.pem" "*@example.com rsa" "local:$W/od.sock" >"$W/od.conf"
od_config tcp "rsa example.com:bench:$W/keys/rsa.pem" "*@example.com rsa" "inet:$OD_TCP@127.0.0.1" >"$W/od-tcp.conf"
od_config ed "ed ed.example.com:benched:$W/keys/ed.pem" "*@ed.example.com ed" "local:$W/od-ed.sock" \
	"SignatureAlgorithm ed25519-sha256" >"$W/od-ed.conf"

echo "== starting the milters"
start dk "$W/bin/dkimmilter" serve -config "$W/dk.toml"
start dk-tcp "$W/bin/dkimmilter" serve -config "$W/dk-tcp.toml"
start od "$OPENDKIM" -f -x "$W/od.conf"
start od-tcp "$OPENDKIM" -f -x "$W/od-tcp.conf"
start od-ed "$OPENDKIM" -f -x "$W/od-ed.conf"
wait_for dk test -S "$W/dk.sock"
wait_for od test -S "$W/od.sock"
wait_for od-ed test -S "$W/od-ed.sock"
wait_for dk-tcp bash -c "exec 3<>/dev/tcp/127.0.0.1/$DK_TCP"
wait_for od-tcp bash -c "exec 3<>/dev/tcp/127.0.0.1/$OD_TCP"

# The message every verify run checks: signed once, up front, by OpenDKIM
# (so that neither side verifies a signature shaped by its own signer),
# and checked to verify as pass on both sides.
"$LOAD" -addr "unix:$W/od.sock" -mode sign -n 1 -warmup 0 -save "$W/signed-2k.eml" >/dev/null
for s in dk od; do
	"$LOAD" -addr "unix:$W/$s.sock" -mode verify -msg "$W/signed-2k.eml" -expect pass -n 1 -warmup 0 >/dev/null
done

SEQ=0
# figure LABEL ARGS...: REPS runs against each milter, alternating. ARGS
# may use {addr} and {pid}; "dk:" and "od:" prefixed args go to one side.
figure() {
	local label=$1 rep side addr pid args a
	shift
	SEQ=$((SEQ + 1))
	echo "$label" | grep -Eq -- "$ONLY" || return 0
	echo "== $label"
	for rep in $(seq "$REPS"); do
		for side in dkimmilter opendkim; do
			args=()
			for a in "$@"; do
				case $a in
				dk:*) [ $side = dkimmilter ] && args+=("${a#dk:}") ;;
				od:*) [ $side = opendkim ] && args+=("${a#od:}") ;;
				*) args+=("$a") ;;
				esac
			done
			local f try noise
			f=$(printf '%s/%02d-%s-%d.json' "$OUT" "$SEQ" "$side" "$rep")
			for try in $(seq $((RETRIES + 1))); do
				if ! "$LOAD" -json -label "$label" -milter "$side" -reuse "$REUSE" "${args[@]}" >"$f"; then
					echo "   $side run $rep: some messages failed (see $f)" >&2
				fi
				# Share of one CPU that other processes used during the run.
				noise=$(awk -F': ' '/"other_cpu_s"/ {gsub(",","",$2); o=$2} /"seconds"/ {gsub(",","",$2); s=$2}
					END {printf "%d", (s > 0 ? 100*o/s : 0)}' "$f")
				awk -v s="$side" -v r="$rep" -v n="$noise" -F': ' '/"msgs_per_s"/ {gsub(",","",$2); m=$2} /"p50"/ {gsub(",","",$2); p=$2}
					END {printf "   %-10s run %d: %8.1f msgs/s  p50 %7.2f ms  (others: %d%% of a CPU)\n", s, r, m, p, n}' "$f"
				if [ "$noise" -le "$NOISE_MAX" ] || [ "$try" -gt "$RETRIES" ]; then
					break
				fi
				echo "   noisy run (other processes above ${NOISE_MAX}% of a CPU): again in 10s"
				sleep 10
			done
		done
	done
}

DK=$PID_dk
OD=$PID_od
figure "sign c=1 unix 2KB" -mode sign -c 1 -d "$DUR" dk:-addr=unix:$W/dk.sock od:-addr=unix:$W/od.sock dk:-pid=$DK od:-pid=$OD
figure "sign c=8 unix 2KB" -mode sign -c 8 -d "$DUR" dk:-addr=unix:$W/dk.sock od:-addr=unix:$W/od.sock dk:-pid=$DK od:-pid=$OD
figure "sign c=64 unix 2KB" -mode sign -c 64 -d "$DUR" dk:-addr=unix:$W/dk.sock od:-addr=unix:$W/od.sock dk:-pid=$DK od:-pid=$OD
for c in 1 8 64; do
	figure "verify c=$c unix 2KB" -mode verify -msg "$W/signed-2k.eml" -expect pass -c $c -d "$DUR" \
		dk:-addr=unix:$W/dk.sock od:-addr=unix:$W/od.sock dk:-pid=$DK od:-pid=$OD
done
figure "sign c=1 tcp 2KB" -mode sign -c 1 -d "$DUR" dk:-addr=inet:127.0.0.1:$DK_TCP od:-addr=inet:127.0.0.1:$OD_TCP \
	dk:-pid=$PID_dk_tcp od:-pid=$PID_od_tcp
figure "ed25519 sign c=8 unix 2KB" -mode sign -from alice@ed.example.com -c 8 -d "$DUR" \
	dk:-addr=unix:$W/dk.sock od:-addr=unix:$W/od-ed.sock dk:-pid=$DK od:-pid=$PID_od_ed
figure "sign c=64 unix 10MB" -mode sign -size 10485760 -c 64 -n "$BIG_N" -warmup 1 -timeout 300s \
	dk:-addr=unix:$W/dk.sock od:-addr=unix:$W/od.sock dk:-pid=$DK od:-pid=$OD

# Profiles (PERF=1): perf samples each milter's process during one more
# sign and verify run at c=8; the reports go to $OUT and their tops are
# printed. perf is Debian's linux-perf package.
if [ "${PERF:-0}" = 1 ]; then
	command -v perf >/dev/null || { echo "compare.sh: PERF=1 needs perf (apt-get install linux-perf)" >&2; exit 1; }
	for side in dkimmilter opendkim; do
		for mode in sign verify; do
			if [ $side = dkimmilter ]; then pid=$DK sock=$W/dk.sock; else pid=$OD sock=$W/od.sock; fi
			args=(-mode "$mode" -c 8 -d "$DUR")
			[ "$mode" = verify ] && args+=(-msg "$W/signed-2k.eml" -expect pass)
			perf record -q -F 999 -g -p "$pid" -o "$W/perf.data" -- sleep "${DUR%s}" >/dev/null 2>&1 &
			perfpid=$!
			PIDS+=($perfpid)
			"$LOAD" -addr "unix:$sock" "${args[@]}" >/dev/null
			wait $perfpid || true
			perf report -i "$W/perf.data" --no-children --sort dso,symbol -g none --stdio 2>/dev/null |
				grep '%' >"$OUT/perf-$side-$mode-self.txt" || true
			perf report -i "$W/perf.data" --children --sort symbol -g none --stdio 2>/dev/null |
				grep '%' >"$OUT/perf-$side-$mode-children.txt" || true
			echo "== profile: $side $mode c=8 (self time, top 15; all in $OUT/perf-$side-$mode-*.txt)"
			head -15 "$OUT/perf-$side-$mode-self.txt"
		done
	done
fi

echo
echo "== machine"
echo "date:     $(date -u +%Y-%m-%dT%H:%MZ)"
echo "cpus:     $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "kernel:   $(uname -sr)"
echo "go:       $(go version | awk '{print $3}')"
echo "opendkim: $("$OPENDKIM" -V 2>&1 | head -1)"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, at the end)"
echo
echo "== dkimmilter / OpenDKIM (medians of $REPS runs; msgs/s: higher is better; latency, CPU, RSS: lower is better)"
"$LOAD" -table "$OUT" -compare dkimmilter/opendkim
echo
echo "== performance targets (bench/README.md)"
"$LOAD" -table "$OUT" -targets -rsa-sign-ns "${RSA_NS:-0}" -compare dkimmilter/opendkim
awk -F': ' '/"other_cpu_s"/ {gsub(",","",$2); o+=$2} /"seconds"/ {gsub(",","",$2); s+=$2}
	END {if (s > 0) printf "\nother processes used %.0f%% of one CPU on average during the runs (0%% is a quiet machine)\n", 100*o/s}' "$OUT"/*.json
