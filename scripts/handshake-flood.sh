#!/bin/sh
# Issue 10 items 1-2, repeatable: starts a rendezvous on loopback in a
# temporary home, floods it with handshakes from fresh identities (see
# driver-mio/examples/handshake_flood.rs) and prints its RSS before, at the
# end of the flood and 15 s later, and a legitimate agent's registration
# time under flood. Usage: scripts/handshake-flood.sh [RATE] [SECONDS]
set -eu
rate=${1:-2000}
seconds=${2:-30}
cd "$(dirname "$0")/.."
cargo build --release -q -p driver-mio --bin pilot-rendezvous --example handshake_flood
home=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$home"' EXIT
target/release/pilot-rendezvous --listen 127.0.0.1:0 --home "$home" --json >"$home/start.json" 2>"$home/stderr" &
pid=$!
for _ in $(seq 50); do [ -s "$home/start.json" ] && break; sleep 0.1; done
line=$(head -n1 "$home/start.json")
addr=$(printf '%s' "$line" | sed -n 's/.*"address":"\([^"]*\)".*/\1/p')
key=$(printf '%s' "$line" | sed -n 's/.*"public_key":"\([^"]*\)".*/\1/p')
echo "rendezvous $addr pid $pid"
target/release/examples/handshake_flood "$addr" "$key" "$pid" "$rate" "$seconds"
