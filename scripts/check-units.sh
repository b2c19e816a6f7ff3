#!/usr/bin/env bash
# Checks the systemd units in packaging/systemd/ against the binaries just
# built:
#
#   1. `systemd-analyze verify` on every unit, alone and with each of its
#      drop-ins (system units as the system manager, user units with
#      --user). verify insists that ExecStart's program exists, so each unit
#      is checked as a copy whose /usr/local/bin/ (system) or
#      %h/.cargo/bin/ (user) points at BIN_DIR instead. verify exits 0 on
#      many real mistakes (an unknown key, a bad value: "…, ignoring"), so
#      any line it prints about our files fails the check too.
#   2. Every ExecStart's command line, run with --help appended: the flags a
#      unit passes must be flags the binary knows, with values it accepts
#      (clap stops at the first unknown one, before --help).
#   3. `systemd-analyze security --offline=true` on the system units: their
#      exposure must stay at most MAX_EXPOSURE (default 2.5).
#   4. The launchd plist in packaging/launchd/ parses (python3's plistlib).
#
# Usage: scripts/check-units.sh [BIN_DIR]   (default: target/release, which
# must hold pilotctl, pilot-daemon and pilot-rendezvous). Needs
# systemd-analyze (Debian: apt-get install systemd); no running systemd.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=${1:-target/release}
for b in pilotctl pilot-daemon pilot-rendezvous; do
  if [ ! -x "$bin_dir/$b" ]; then
    echo "check-units: no $bin_dir/$b; build it first:" >&2
    echo "  cargo build --release -p pilotctl -p driver-mio --bins" >&2
    exit 1
  fi
done
bin_dir=$(cd "$bin_dir" && pwd)
if ! command -v systemd-analyze >/dev/null; then
  echo "check-units: systemd-analyze is missing (Debian: apt-get install systemd)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The user manager that `verify --user` sets up needs a runtime directory
# and a home, neither of which a CI container has.
mkdir -p "$work/runtime" "$work/home"
chmod 0700 "$work/runtime"

failures=0
checked=0

# verify MODE DIR UNIT: runs systemd-analyze verify on DIR/UNIT; fails on a
# non-zero exit or on any line naming the files under DIR.
verify() {
  local mode=$1 dir=$2 unit=$3 out rc=0
  local args=(verify --man=no)
  if [ "$mode" = user ]; then args=(--user "${args[@]}"); fi
  out=$(cd "$dir" && XDG_RUNTIME_DIR="$work/runtime" HOME="$work/home" \
    systemd-analyze "${args[@]}" "$dir/$unit" 2>&1) || rc=$?
  local ours
  ours=$(printf '%s\n' "$out" | grep -F -e "$dir" -e "$unit" || true)
  checked=$((checked + 1))
  if [ "$rc" -ne 0 ] || [ -n "$ours" ]; then
    echo "FAIL $mode $(label "$dir" "$unit") (systemd-analyze exit $rc):"
    printf '%s\n' "$out" | sed 's/^/    /'
    failures=$((failures + 1))
  else
    echo "ok   $mode $(label "$dir" "$unit")"
    # Lines about something else (the host's own units) are shown, not counted.
    if [ -n "$out" ]; then printf '%s\n' "$out" | sed 's/^/    note: /'; fi
  fi
}

label() {
  local dir=$1 unit=$2 d
  local text=$unit
  for d in "$dir/$unit.d"/*.conf; do
    [ -e "$d" ] && text="$text + $unit.d/$(basename "$d")"
  done
  echo "$text"
}

# copy_unit MODE SRC DEST: the unit with its program in BIN_DIR.
copy_unit() {
  local mode=$1 src=$2 dest=$3
  if [ "$mode" = user ]; then
    sed "s#%h/\.cargo/bin/#$bin_dir/#g" "$src" >"$dest"
  else
    sed "s#/usr/local/bin/#$bin_dir/#g" "$src" >"$dest"
  fi
}

# flags MODE UNIT_FILE: runs each ExecStart= with --help appended.
flags() {
  local mode=$1 file=$2 line word out rc
  while IFS= read -r line; do
    line=${line#ExecStart=}
    local cmd=() words=()
    # Split on blanks as systemd does here (no quotes in our ExecStart
    # lines), without globbing.
    read -ra words <<<"$line"
    for word in "${words[@]}"; do
      case $word in
        '$'[A-Za-z_]*) ;; # $VAR: words from an environment file, empty here
        *)
          # shellcheck disable=SC2016 # the unit's literal ${...}
          word=${word//'${STATE_DIRECTORY}'/$work/state}
          # shellcheck disable=SC2016
          word=${word//'${RUNTIME_DIRECTORY}'/$work/run}
          word=${word//%h/$work/home}
          cmd+=("$word")
          ;;
      esac
    done
    checked=$((checked + 1))
    rc=0
    out=$(env -i PATH=/usr/bin:/bin HOME="$work/home" "${cmd[@]}" --help 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then
      echo "FAIL $mode $(basename "$file"): its ExecStart does not parse:"
      echo "    ${cmd[*]} --help (exit $rc)"
      printf '%s\n' "$out" | head -5 | sed 's/^/    /'
      failures=$((failures + 1))
    else
      echo "ok   $mode $(basename "$file"): ExecStart's flags parse"
    fi
  done < <(grep '^ExecStart=' "$file")
}

# security MODE DIR UNIT: the unit's exposure as `systemd-analyze security`
# rates it offline; above MAX_EXPOSURE (0 fully locked down, 10 not at all;
# the units are at 1.4) fails, so hardening is not lost by accident.
# The drop-ins add capabilities on purpose and are not rated.
max_exposure=${MAX_EXPOSURE:-2.5}
security() {
  local dir=$2 unit=$3 out rc=0
  checked=$((checked + 1))
  # --threshold counts in tenths of the exposure shown.
  local threshold
  threshold=$(awk "BEGIN { print int($max_exposure * 10) }")
  out=$(systemd-analyze security --offline=true --no-pager --threshold="$threshold" \
    "$dir/$unit" 2>&1) || rc=$?
  local level
  level=$(printf '%s\n' "$out" | grep -o 'Overall exposure level for [^:]*: [0-9.]*' | awk '{ print $NF }')
  if [ "$rc" -ne 0 ] || [ -z "$level" ]; then
    echo "FAIL $1 $unit: exposure ${level:-unknown} (at most $max_exposure; exit $rc)"
    printf '%s\n' "$out" | grep -e '✗' -e 'exposure' -e 'rror' | sed 's/^/    /'
    failures=$((failures + 1))
  else
    echo "ok   $1 $unit: exposure $level (at most $max_exposure)"
  fi
}

n=0
for mode in system user; do
  for src in packaging/systemd/"$mode"/*.service; do
    [ -e "$src" ] || continue
    unit=$(basename "$src")
    n=$((n + 1))
    dir="$work/$n"
    mkdir -p "$dir"
    copy_unit "$mode" "$src" "$dir/$unit"
    verify "$mode" "$dir" "$unit"
    flags "$mode" "$dir/$unit"
    if [ "$mode" = system ]; then security "$mode" "$dir" "$unit"; fi
    # Drop-ins are for system units (installed under /etc/systemd/system).
    if [ "$mode" = system ]; then
      for dropin in packaging/systemd/dropins/"$unit".d/*.conf; do
        [ -e "$dropin" ] || continue
        n=$((n + 1))
        dir="$work/$n"
        mkdir -p "$dir/$unit.d"
        copy_unit "$mode" "$src" "$dir/$unit"
        cp "$dropin" "$dir/$unit.d/"
        verify "$mode" "$dir" "$unit"
      done
    fi
  done
done

# A drop-in for a unit we do not ship would never be checked.
for d in packaging/systemd/dropins/*.d; do
  [ -e "$d" ] || continue
  unit=$(basename "$d" .d)
  if [ ! -e "packaging/systemd/system/$unit" ]; then
    echo "FAIL $d: no packaging/systemd/system/$unit for it"
    failures=$((failures + 1))
  fi
done

# The launchd plist cannot be loaded here, but it must at least parse
# (an XML comment with a double hyphen in it does not).
for plist in packaging/launchd/*.plist; do
  [ -e "$plist" ] || continue
  checked=$((checked + 1))
  if ! command -v python3 >/dev/null; then
    echo "skip $plist: no python3 to parse it"
  elif out=$(python3 -c 'import plistlib, sys; plistlib.load(open(sys.argv[1], "rb"))' "$plist" 2>&1); then
    echo "ok   launchd $(basename "$plist") parses"
  else
    echo "FAIL launchd $(basename "$plist") does not parse:"
    printf '%s\n' "$out" | tail -1 | sed 's/^/    /'
    failures=$((failures + 1))
  fi
done

if [ "$checked" -eq 0 ]; then
  echo "check-units: no units found under packaging/systemd" >&2
  exit 1
fi
if [ "$failures" -ne 0 ]; then
  echo "check-units: $failures of $checked checks failed"
  exit 1
fi
echo "check-units: all $checked checks passed"
