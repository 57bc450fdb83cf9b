# Shared by benches/iperf.sh and benches/soak.sh (sourced, not run): the checks every bench
# makes, this run's names, two network namespaces joined by a veth, and removal of everything
# started (processes by PID, namespaces, temp files), even on Ctrl-C. Touches nothing else.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# require_root_and_tools TOOL...
require_root_and_tools() {
  local tool
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, tun devices)"
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool is not installed (bash .ci/deps installs it)"
  done
}

# bench_names PREFIX NAME: every name carries PREFIX and this shell's PID; sets TAG, NS_*,
# VETH_*, TUN_*, UNDER_*, VPN_*, WORK (/tmp/meshd-NAME.TAG.*) and PIDS, and installs cleanup.
bench_names() {
  TAG="$1$(printf '%05d' $(( $$ % 100000 )))"
  NS_A="${TAG}a" NS_B="${TAG}b"
  VETH_A="${TAG}va" VETH_B="${TAG}vb"
  TUN_A="${TAG}ta" TUN_B="${TAG}tb"
  UNDER_A=192.0.2.1 UNDER_B=192.0.2.2
  VPN_A=10.42.0.1 VPN_B=10.42.0.2
  WORK="$(mktemp -d "/tmp/meshd-$2.${TAG}.XXXXXX")"
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# True while $1 runs (an exited but unreaped child is a zombie, which kill -0 still accepts).
alive() { [ -e "/proc/$1/stat" ] && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# Stops one process we started: SIGTERM, up to 5 s grace, then SIGKILL.
stop_pid() {
  local pid="$1" i
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  rm -rf "$WORK"
}

# Polls a command every 0.1 s for at most $1 seconds.
wait_until() {
  local secs="$1" i; shift
  for i in $(seq $(( secs * 10 ))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

# NS_A (UNDER_A) and NS_B (UNDER_B) joined by a veth, loopback up.
setup_network() {
  ip netns add "$NS_A"
  ip netns add "$NS_B"
  ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
  ip -n "$NS_A" addr add "$UNDER_A/24" dev "$VETH_A"
  ip -n "$NS_B" addr add "$UNDER_B/24" dev "$VETH_B"
  local ns
  for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
  ip -n "$NS_A" link set "$VETH_A" up
  ip -n "$NS_B" link set "$VETH_B" up
}
