#!/bin/sh
# Issue 10 items 1-2, repeatable on real sockets (loopback only): starts a
# rendezvous and two agents, alice and bob, that trust each other, in a
# temporary directory; then floods the rendezvous and bob's daemon with
# handshakes from fresh identities (driver-mio/examples/handshake_flood.rs)
# and prints
#   - the RSS of the rendezvous and of bob's daemon before, at the end of
#     the flood and 15 s later;
#   - a legitimate agent's registration time before the flood (baseline)
#     and in the middle of it;
#   - alice's time, from `daemon start` to registered and to her first echo
#     from bob (`pilotctl ping`: a fresh session to a flooded daemon), once
#     before the flood (baseline) and once in the middle of it;
#   - the rendezvous's handshake counters (cookies, per-source limit,
#     peers forgotten) at the end.
# Usage: scripts/handshake-flood.sh [RATE] [SECONDS]   (RATE per target)
set -eu
rate=${1:-2000}
seconds=${2:-30}
cd "$(dirname "$0")/.."
# One build: built apart, the two packages unify features differently and
# each build would recompile the other's crates.
cargo build --release -q -p driver-mio --bin pilot-rendezvous --example handshake_flood \
    -p pilotctl --bin pilotctl
bin=$PWD/target/release
dir=$(mktemp -d)
rv_pid=
flood_pid=
cleanup() {
    for a in alice bob; do
        PILOT_HOME="$dir/$a" "$bin/pilotctl" daemon stop >/dev/null 2>&1 || true
    done
    [ -n "$flood_pid" ] && kill "$flood_pid" 2>/dev/null || true
    [ -n "$rv_pid" ] && kill "$rv_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The agents' settings are theirs alone, not the caller's.
unset PILOT_SOCKET PILOT_RENDEZVOUS PILOT_RENDEZVOUS_KEY PILOT_TRANSPORT

field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" | head -n1; }
ms_now() { date +%s%3N; }
ctl() { a=$1; shift; PILOT_HOME="$dir/$a" "$bin/pilotctl" "$@"; }

mkdir -p "$dir/rv"
"$bin/pilot-rendezvous" --listen 127.0.0.1:0 --home "$dir/rv" --json >"$dir/rv/start.json" 2>"$dir/rv/stderr" &
rv_pid=$!
for _ in $(seq 50); do [ -s "$dir/rv/start.json" ] && break; sleep 0.1; done
rv_addr=$(field address <"$dir/rv/start.json")
rv_key=$(field public_key <"$dir/rv/start.json")
echo "rendezvous $rv_addr pid $rv_pid"

# Each agent on its own loopback address: the flooder sends from
# 127.0.0.1, and per-source limits tell them apart.
start() {
    ctl "$1" daemon start --hostname "$1" --listen "$2" --rendezvous "$rv_addr" \
        --rendezvous-key "$rv_key" --json
}
bob_start=$(start bob 127.0.0.3:0)
bob_pid=$(printf '%s' "$bob_start" | field pid)
bob_key=$(printf '%s' "$bob_start" | field public_key)
bob_addr=$(printf '%s' "$bob_start" | field address)
bob_udp=$(ctl bob info --json | field public_endpoint)
start alice 127.0.0.4:0 >/dev/null
ctl alice handshake "$bob_addr" "handshake-flood.sh" --json >/dev/null
for _ in $(seq 100); do
    ctl bob pending --json | grep -q '"node_id"' && break
    sleep 0.1
done
ctl bob approve alice --json >/dev/null
for _ in $(seq 100); do
    ctl alice trust --json | grep -q '"node_id"' && break
    sleep 0.1
done
echo "bob $bob_addr at $bob_udp pid $bob_pid; alice trusts bob and bob alice"

# Alice starts again from her saved settings (a fresh session) and pings
# bob; prints the times from the start to registered and to the echo.
alice_again() {
    ctl alice daemon stop --json >/dev/null 2>&1 || true
    t0=$(ms_now)
    if ! out=$(ctl alice daemon start --wait 30 --json 2>&1); then
        echo "alice did not start ($1): $out"
        return
    fi
    t1=$(ms_now)
    if out=$(ctl alice ping "$bob_addr" --count 1 --timeout 30 --json 2>&1); then
        t2=$(ms_now)
        echo "alice registered in $((t1 - t0)) ms, first echo from bob $((t2 - t0)) ms after her start ($1)"
    else
        echo "alice registered in $((t1 - t0)) ms, no echo from bob ($1): $out"
    fi
}
alice_again "without flood"
ctl alice daemon stop --json >/dev/null

"$bin/examples/handshake_flood" "$rv_addr" "$rv_key" "$rv_pid" "$rate" "$seconds" \
    "$bob_udp" "$bob_key" "$bob_pid" &
flood_pid=$!
# The example registers its own baseline agent first (a few ms); alice
# starts a quarter into the flood, before the example's own legitimate
# agent at the half.
sleep "$(( seconds / 4 + 1 ))"
alice_again "under flood"
wait "$flood_pid"
flood_pid=
# The defences at work (the status file is at most 2 s old).
"$bin/pilotctl" rendezvous status --home "$dir/rv" | grep -E 'Handshakes|UDP'
echo "bob's daemon: $(ctl bob info --json | field datagrams_in) datagrams in, $(ctl bob info --json | field dropped) dropped"
