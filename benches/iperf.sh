#!/usr/bin/env bash
# Throughput benchmark: single-stream TCP (iperf3) through an overlay between two network
# namespaces joined by a veth, nebula <-> nebula and, with --meshd, meshd <-> meshd in the same run
# on the same namespaces, alternating per round. Prints Mbit/s, the meshd/nebula ratio and the
# resident memory (VmRSS now / VmHWM peak) of every daemon. With --observe, a third leg runs
# meshd <-> meshd again while the sending meshd is scraped by Prometheus (stats.type prometheus)
# and asked `meshd status --json` once a second each, and prints its cost against the plain leg.
#
# Needs root, ip, iperf3, ping, python3, nebula-cert and nebula. Every name carries this run's
# tag; everything (processes by PID, namespaces, temp files) is removed on exit, even on Ctrl-C.
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 [--meshd PATH] [--nebula PATH] [--time SECONDS] [--rounds N] [--mtu MTU] [--cipher aes|chachapoly] [--observe]
  --meshd PATH   also benchmark this meshd binary (skipped with a message while its daemon cannot run)
  --nebula PATH  nebula binary (default: nebula on PATH)
  --time S       iperf3 duration per leg (default 10)
  --rounds N     rounds; each round runs every implementation once (default 1)
  --mtu MTU      tun.mtu on both ends (default 1300)
  --cipher C     aes (default) or chachapoly
  --observe      with --meshd: add a meshd leg with a metrics scrape and a status call every second
EOF
}

MESHD="" NEBULA="$(command -v nebula || true)" TIME=10 ROUNDS=1 MTU=1300 CIPHER=aes OBSERVE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --meshd) MESHD="$2"; shift 2 ;;
    --nebula) NEBULA="$2"; shift 2 ;;
    --time) TIME="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --mtu) MTU="$2"; shift 2 ;;
    --cipher) CIPHER="$2"; shift 2 ;;
    --observe) OBSERVE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
require_root_and_tools ip iperf3 ping python3 nebula-cert
[ -x "$NEBULA" ] || die "nebula binary not found (use --nebula PATH)"
[ -z "$MESHD" ] || [ -x "$MESHD" ] || die "--meshd $MESHD is not an executable"
case "$CIPHER" in aes|chachapoly) ;; *) die "--cipher must be aes or chachapoly" ;; esac
bench_names ib iperf

# write_config NAME VPN_IP TUN_DEV PEER_VPN PEER_UNDERLAY
write_config() {
  local name="$1" vpn="$2" dev="$3" peer_vpn="$4" peer_under="$5"
  nebula-cert sign -name "$name" -ip "$vpn/24" -ca-crt "$WORK/ca.crt" -ca-key "$WORK/ca.key" \
    -out-crt "$WORK/$name.crt" -out-key "$WORK/$name.key"
  cat >"$WORK/$name.yml" <<EOF
pki:
  ca: $WORK/ca.crt
  cert: $WORK/$name.crt
  key: $WORK/$name.key
static_host_map:
  "$peer_vpn": ["$peer_under:4242"]
lighthouse:
  am_lighthouse: false
  hosts: []
listen:
  host: 0.0.0.0
  port: 4242
punchy:
  punch: false
cipher: $CIPHER
tun:
  dev: $dev
  mtu: $MTU
logging:
  level: warning
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
EOF
}

setup_pki() {
  nebula-cert ca -name "meshd bench $TAG" -duration 2h -out-crt "$WORK/ca.crt" -out-key "$WORK/ca.key"
  write_config a "$VPN_A" "$TUN_A" "$VPN_B" "$UNDER_B"
  write_config b "$VPN_B" "$TUN_B" "$VPN_A" "$UNDER_A"
  # The observed leg's sender: the same config plus its control socket and a Prometheus listener.
  cp "$WORK/a.yml" "$WORK/a-observed.yml"
  cat >>"$WORK/a-observed.yml" <<EOF
control:
  socket: $WORK/ctl/a.sock
stats:
  type: prometheus
  listen: $UNDER_A:9464
  path: /metrics
  namespace: nebula
  interval: 1s
  message_metrics: true
  lighthouse_metrics: true
EOF
}

# observe: once a second until $WORK/observing goes away, one Prometheus scrape and one
# `status` request on the sending meshd, from one long-lived client inside its namespace (so the
# observer's own process start-ups do not compete with the legs); counts in $WORK/observe-count,
# failures in $WORK/observe-failures.
observe() {
  ip netns exec "$NS_A" python3 - "$WORK" "$UNDER_A" <<'EOF'
import os, socket, sys, time
work, host = sys.argv[1], sys.argv[2]
ok = bad = 0
while os.path.exists(f"{work}/observing"):
    try:
        c = socket.create_connection((host, 9464), timeout=2)
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: meshd\r\n\r\n")
        body = b""
        while chunk := c.recv(65536):
            body += chunk
        c.close()
        u = socket.socket(socket.AF_UNIX)
        u.settimeout(2)
        u.connect(f"{work}/ctl/a.sock")
        u.sendall(b'{"cmd":"status"}\n')
        reply = u.makefile("rb").readline()
        u.close()
        if b" 200 " in body.split(b"\r\n", 1)[0] and b'"ok":true' in reply:
            ok += 1
        else:
            bad += 1
    except OSError:
        bad += 1
    time.sleep(1)
open(f"{work}/observe-count", "a").write("x\n" * ok)
open(f"{work}/observe-failures", "a").write("x\n" * bad)
EOF
}

# start_daemon BINARY NS CONFIG LOG -> prints the PID (ip netns exec execs in place).
start_daemon() {
  ip netns exec "$2" "$1" -config "$3" >"$4" 2>&1 &
  echo $!
}

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo "?"; }

# run_leg IMPL BINARY ROUND [A_CONFIG] -> appends "impl round mbps rss_a hwm_a rss_b hwm_b" to
# $WORK/results; the `observed` leg runs the observer during iperf3.
run_leg() {
  local impl="$1" bin="$2" round="$3" cfg_a="${4:-$WORK/a.yml}" pa pb po=""
  pa="$(start_daemon "$bin" "$NS_A" "$cfg_a" "$WORK/$impl-a.log")"; PIDS+=("$pa")
  pb="$(start_daemon "$bin" "$NS_B" "$WORK/b.yml" "$WORK/$impl-b.log")"; PIDS+=("$pb")
  if ! wait_until 10 ip -n "$NS_A" link show "$TUN_A" || ! wait_until 10 ip -n "$NS_B" link show "$TUN_B"; then
    echo "$impl: tun devices did not appear; logs:" >&2; cat "$WORK/$impl-a.log" "$WORK/$impl-b.log" >&2
    return 1
  fi
  if ! wait_until 15 ip netns exec "$NS_A" ping -c 1 -W 1 "$VPN_B"; then
    echo "$impl: no tunnel; logs:" >&2; cat "$WORK/$impl-a.log" "$WORK/$impl-b.log" >&2
    return 1
  fi
  ip netns exec "$NS_B" iperf3 -s -1 -B "$VPN_B" >"$WORK/iperf-server.log" 2>&1 &
  local ps=$!; PIDS+=("$ps")
  wait_until 5 sh -c "ip netns exec $NS_B ss -tln | grep -q '$VPN_B:5201'" || die "iperf3 server did not start"
  if [ "$impl" = observed ]; then
    touch "$WORK/observing"; observe & po=$!; PIDS+=("$po")
  fi
  ip netns exec "$NS_A" iperf3 -c "$VPN_B" -t "$TIME" -P 1 -J >"$WORK/iperf-$impl-$round.json"
  if [ -n "$po" ]; then rm -f "$WORK/observing"; wait "$po" 2>/dev/null || true; fi
  wait "$ps" 2>/dev/null || true
  local mbps
  mbps="$(python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e6))' "$WORK/iperf-$impl-$round.json")"
  echo "$impl $round $mbps $(rss_kb "$pa" VmRSS) $(rss_kb "$pa" VmHWM) $(rss_kb "$pb" VmRSS) $(rss_kb "$pb" VmHWM)" >>"$WORK/results"
  printf '  %-7s round %s: %8s Mbit/s   RSS a %s kB (peak %s)   b %s kB (peak %s)\n' \
    "$impl" "$round" "$mbps" "$(rss_kb "$pa" VmRSS)" "$(rss_kb "$pa" VmHWM)" "$(rss_kb "$pb" VmRSS)" "$(rss_kb "$pb" VmHWM)"
  stop_pid "$pa"; stop_pid "$pb"
  wait_until 5 sh -c "! ip -n $NS_A link show $TUN_A && ! ip -n $NS_B link show $TUN_B" || true
}

probe_done() { ip -n "$NS_A" link show "$TUN_A" >/dev/null 2>&1 || ! alive "$1"; }

# True when meshd can run as a daemon: it starts, stays up and brings up its tun device.
meshd_runs() {
  local pid
  pid="$(start_daemon "$MESHD" "$NS_A" "$WORK/a.yml" "$WORK/meshd-probe.log")"; PIDS+=("$pid")
  # Stop waiting as soon as the tun device shows up or the process has exited.
  wait_until 5 probe_done "$pid" || true
  if ip -n "$NS_A" link show "$TUN_A" >/dev/null 2>&1 && alive "$pid"; then
    stop_pid "$pid"; return 0
  fi
  stop_pid "$pid"; return 1
}

main() {
  local started=$SECONDS impls=(nebula)
  setup_network
  setup_pki >/dev/null
  echo "iperf3 single TCP stream, ${TIME}s per leg, tun.mtu $MTU, cipher $CIPHER, rounds $ROUNDS (tag $TAG)"
  echo "machine: $(nproc) CPU(s),$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), kernel $(uname -r)"
  if [ -n "$MESHD" ]; then
    if meshd_runs; then
      impls+=(meshd)
      if [ "$OBSERVE" = 1 ]; then impls+=(observed); fi
    else
      echo "meshd: its daemon cannot run yet ($(tail -n 1 "$WORK/meshd-probe.log" 2>/dev/null || echo 'no output')); skipping the meshd legs"
    fi
  fi
  : >"$WORK/results"
  local round impl
  for round in $(seq "$ROUNDS"); do
    for impl in "${impls[@]}"; do
      case "$impl" in
        nebula) run_leg nebula "$NEBULA" "$round" ;;
        meshd) run_leg meshd "$MESHD" "$round" ;;
        observed) run_leg observed "$MESHD" "$round" "$WORK/a-observed.yml" ;;
      esac
    done
  done
  python3 - "$WORK/results" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
mean = {}
for impl in ("nebula", "meshd", "observed"):
    v = [float(r[2]) for r in rows if r[0] == impl]
    if v:
        mean[impl] = sum(v) / len(v)
        print(f"{impl:7s} mean {mean[impl]:9.1f} Mbit/s over {len(v)} round(s)")
if "meshd" in mean and mean.get("nebula"):
    print(f"ratio meshd/nebula: {mean['meshd'] / mean['nebula']:.2f}")
if "observed" in mean and mean.get("meshd"):
    cost = (1 - mean["observed"] / mean["meshd"]) * 100
    print(f"observed (scrape + status every second) vs plain meshd: {cost:+.1f} % throughput lost")
EOF
  if [ "$OBSERVE" = 1 ] && [ -e "$WORK/observe-count" ]; then
    echo "observer: $(wc -l <"$WORK/observe-count") scrape+status pairs, $(cat "$WORK/observe-failures" 2>/dev/null | wc -l) failures"
  fi
  echo "total time: $(( SECONDS - started ))s"
}

main
