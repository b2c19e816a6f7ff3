#!/usr/bin/env bash
# The protocol core must stay pure: no I/O or OS-randomness crates in its
# normal dependency tree. `#![no_std]` stops the core's own code from using
# std; this stops a dependency from sneaking it (or getrandom) back in.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree -p pilot-proto -e normal --prefix none --format '{p}')
bad=$(grep -E '^(mio|socket2|tokio|getrandom|std|libc|async-std|smol) ' <<<"$tree" || true)
if [[ -n "$bad" ]]; then
    echo "pilot-proto's normal dependency tree holds forbidden crates:" >&2
    echo "$bad" >&2
    exit 1
fi
# No dependency may be built with its "std" feature in the default core.
with_std=$(cargo tree -p pilot-proto -e normal --prefix none --format '{p} [{f}]' | grep -E '[[,]std[],]' || true)
if [[ -n "$with_std" ]]; then
    echo "pilot-proto's default dependency tree builds crates with std:" >&2
    echo "$with_std" >&2
    exit 1
fi
echo "pilot-proto dependency tree is clean ($(sort -u <<<"$tree" | wc -l) crates, none doing I/O)"
