#!/usr/bin/env bash
# Throughput benchmark through an overlay between two network namespaces joined by a veth:
# nebula <-> nebula and, with --meshd, meshd <-> meshd and meshd <-> nebula (mixed), in the same
# run on the same namespaces, alternating per round. Each pair runs three iperf3 legs: one TCP
# stream, four TCP streams, and small-packet UDP (64-byte payload, unlimited rate; packets per
# second delivered). Prints every leg, the means, the meshd/nebula and mixed/nebula ratios and the
# resident memory (VmRSS now / VmHWM peak) of every daemon. With --observe, an extra pair runs
# meshd <-> meshd again while the sending meshd is scraped by Prometheus (stats.type prometheus)
# and asked `meshd status --json` once a second each, and prints its cost against the plain pair.
#
# Needs root, ip, iperf3, ping, python3, nebula-cert and nebula. Every name carries this run's
# tag; everything (processes by PID, namespaces, temp files) is removed on exit, even on Ctrl-C.
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 [--meshd PATH] [--nebula PATH] [--time SECONDS] [--rounds N] [--mtu MTU] [--cipher aes|chachapoly]
          [--legs tcp1,tcp4,udp64] [--no-offloads] [--no-mixed]
  --meshd PATH   also benchmark this meshd binary (skipped with a message while its daemon cannot run)
  --nebula PATH  nebula binary (default: nebula on PATH)
  --time S       iperf3 duration per leg (default 10)
  --rounds N     rounds; each round runs every pair once (default 1)
  --mtu MTU      tun.mtu on both ends (default 1300)
  --cipher C     aes (default) or chachapoly
  --legs L       comma-separated legs to run (default tcp1,tcp4,udp64)
  --no-offloads  write tun.use_offloads: false and listen.udp_offloads: false (both daemons)
  --no-mixed     skip the meshd <-> nebula pair
  --observe      with --meshd: add a meshd pair with a metrics scrape and a status call every second
EOF
}

MESHD="" NEBULA="$(command -v nebula || true)" TIME=10 ROUNDS=1 MTU=1300 CIPHER=aes
LEGS="tcp1,tcp4,udp64" OFFLOADS=true MIXED=1 OBSERVE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --meshd) MESHD="$2"; shift 2 ;;
    --nebula) NEBULA="$2"; shift 2 ;;
    --time) TIME="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --mtu) MTU="$2"; shift 2 ;;
    --cipher) CIPHER="$2"; shift 2 ;;
    --legs) LEGS="$2"; shift 2 ;;
    --no-offloads) OFFLOADS=false; shift ;;
    --no-mixed) MIXED=0; shift ;;
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
  udp_offloads: $OFFLOADS
punchy:
  punch: false
cipher: $CIPHER
tun:
  dev: $dev
  mtu: $MTU
  use_offloads: $OFFLOADS
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

# iperf_leg LEG PAIR ROUND -> prints the leg's figure (Mbit/s, or packets/s delivered for udp64)
# and TCP retransmits (or UDP packets lost)
iperf_leg() {
  local leg="$1" pair="$2" round="$3" ps json="$WORK/iperf-$2-$1-$3.json" args
  case "$leg" in
    tcp1) args=(-P 1) ;;
    tcp4) args=(-P 4) ;;
    udp64) args=(-u -b 0 -l 64) ;;
    *) die "unknown leg $leg" ;;
  esac
  ip netns exec "$NS_B" iperf3 -s -1 -B "$VPN_B" >"$WORK/iperf-server.log" 2>&1 &
  ps=$!; PIDS+=("$ps")
  wait_until 5 sh -c "ip netns exec $NS_B ss -tln | grep -q '$VPN_B:5201'" || die "iperf3 server did not start"
  ip netns exec "$NS_A" timeout $(( TIME + 20 )) iperf3 -c "$VPN_B" -t "$TIME" "${args[@]}" -J >"$json" || true
  wait "$ps" 2>/dev/null || true
  python3 - "$json" "$leg" <<'EOF'
import json, sys
try:
    end = json.load(open(sys.argv[1]))["end"]
    if sys.argv[2] == "udp64":
        s = end["sum"]
        print("%.0f %d" % ((s["packets"] - s["lost_packets"]) / s["seconds"], s["lost_packets"]))
    else:
        print("%.1f %d" % (end["sum_received"]["bits_per_second"] / 1e6, end["sum_sent"].get("retransmits", 0)))
except Exception:
    print("0 0")
EOF
}

# run_pair PAIR BIN_A BIN_B ROUND [A_CONFIG] -> appends "pair leg round value rss_a hwm_a rss_b
# hwm_b" rows; the `observed` pair runs the observer during its legs.
run_pair() {
  local pair="$1" bin_a="$2" bin_b="$3" round="$4" cfg_a="${5:-$WORK/a.yml}" pa pb po="" leg v lost unit what
  pa="$(start_daemon "$bin_a" "$NS_A" "$cfg_a" "$WORK/$pair-a.log")"; PIDS+=("$pa")
  pb="$(start_daemon "$bin_b" "$NS_B" "$WORK/b.yml" "$WORK/$pair-b.log")"; PIDS+=("$pb")
  if ! wait_until 10 ip -n "$NS_A" link show "$TUN_A" || ! wait_until 10 ip -n "$NS_B" link show "$TUN_B"; then
    echo "$pair: tun devices did not appear; logs:" >&2; cat "$WORK/$pair-a.log" "$WORK/$pair-b.log" >&2
    return 1
  fi
  if ! wait_until 15 ip netns exec "$NS_A" ping -c 1 -W 1 "$VPN_B"; then
    echo "$pair: no tunnel; logs:" >&2; cat "$WORK/$pair-a.log" "$WORK/$pair-b.log" >&2
    return 1
  fi
  if [ "$pair" = observed ]; then
    touch "$WORK/observing"; observe & po=$!; PIDS+=("$po")
  fi
  for leg in ${LEGS//,/ }; do
    read -r v lost <<<"$(iperf_leg "$leg" "$pair" "$round")"
    unit="Mbit/s" what="retransmits"; [ "$leg" = udp64 ] && unit="pkt/s" what="lost"
    echo "$pair $leg $round $v $(rss_kb "$pa" VmRSS) $(rss_kb "$pa" VmHWM) $(rss_kb "$pb" VmRSS) $(rss_kb "$pb" VmHWM)" >>"$WORK/results"
    printf '  %-6s %-5s round %s: %10s %-6s (%s %s)  RSS a %s kB (peak %s)   b %s kB (peak %s)\n' \
      "$pair" "$leg" "$round" "$v" "$unit" "$lost" "$what" "$(rss_kb "$pa" VmRSS)" "$(rss_kb "$pa" VmHWM)" "$(rss_kb "$pb" VmRSS)" "$(rss_kb "$pb" VmHWM)"
  done
  if [ -n "$po" ]; then rm -f "$WORK/observing"; wait "$po" 2>/dev/null || true; fi
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
  local started=$SECONDS pairs=(nebula)
  setup_network
  setup_pki >/dev/null
  echo "iperf3 legs $LEGS, ${TIME}s each, tun.mtu $MTU, cipher $CIPHER, offloads $OFFLOADS, rounds $ROUNDS (tag $TAG)"
  echo "machine: $(nproc) CPU(s),$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), kernel $(uname -r)"
  if [ -n "$MESHD" ]; then
    if meshd_runs; then
      pairs+=(meshd)
      [ "$MIXED" = 1 ] && pairs+=(mixed)
      [ "$OBSERVE" = 1 ] && pairs+=(observed)
    else
      echo "meshd: its daemon cannot run yet ($(tail -n 1 "$WORK/meshd-probe.log" 2>/dev/null || echo 'no output')); skipping the meshd legs"
    fi
  fi
  : >"$WORK/results"
  local round pair
  for round in $(seq "$ROUNDS"); do
    for pair in "${pairs[@]}"; do
      case "$pair" in
        nebula) run_pair nebula "$NEBULA" "$NEBULA" "$round" ;;
        meshd) run_pair meshd "$MESHD" "$MESHD" "$round" ;;
        mixed) run_pair mixed "$MESHD" "$NEBULA" "$round" ;;
        observed) run_pair observed "$MESHD" "$MESHD" "$round" "$WORK/a-observed.yml" ;;
      esac
    done
  done
  python3 - "$WORK/results" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
legs = []
for r in rows:
    if r[1] not in legs:
        legs.append(r[1])
unit = {"udp64": "pkt/s"}
for leg in legs:
    mean = {}
    for pair in ("nebula", "meshd", "mixed", "observed"):
        v = [float(r[3]) for r in rows if r[0] == pair and r[1] == leg]
        if v:
            mean[pair] = sum(v) / len(v)
            print(f"{leg:5s} {pair:6s} mean {mean[pair]:11.1f} {unit.get(leg, 'Mbit/s'):6s} over {len(v)} round(s)")
    for pair in ("meshd", "mixed"):
        if pair in mean and mean.get("nebula"):
            print(f"{leg:5s} ratio {pair}/nebula: {mean[pair] / mean['nebula']:.2f}")
    if "observed" in mean and mean.get("meshd"):
        cost = (1 - mean["observed"] / mean["meshd"]) * 100
        print(f"{leg:5s} observed (scrape + status every second) vs plain meshd: {cost:+.1f} % lost")
for pair in ("nebula", "meshd", "mixed"):
    rss = [int(x) for r in rows if r[0] == pair for x in (r[5], r[7]) if x.isdigit()]
    if rss:
        print(f"peak RSS {pair:6s} (VmHWM, either daemon): {max(rss)} kB")
EOF
  if [ "$OBSERVE" = 1 ] && [ -e "$WORK/observe-count" ]; then
    echo "observer: $(wc -l <"$WORK/observe-count") scrape+status pairs, $(cat "$WORK/observe-failures" 2>/dev/null | wc -l) failures"
  fi
  echo "total time: $(( SECONDS - started ))s"
}

main
