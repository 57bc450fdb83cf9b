#!/usr/bin/env bash
# Soak test (not part of the default suite): a meshd <-> nebula 1.6.1 tunnel between two network
# namespaces, alternately busy (iperf3 TCP, both directions) and idle, for a configurable time.
# Samples meshd's resident memory (VmRSS) and open file descriptors after every cycle and prints
# start vs end; fails if the tunnel stops working or the fd count grows.
#
# Needs root, ip, iperf3, ping, nebula-cert and nebula. Every name carries this run's tag;
# processes (by PID), namespaces and temp files are removed on exit, even on Ctrl-C.
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 --meshd PATH [--nebula PATH] [--duration SECONDS] [--busy S] [--idle S] [--cipher aes|chachapoly]
  --duration S  total soak time (default 600)
  --busy S      seconds of traffic per cycle (default 20)
  --idle S      seconds of silence per cycle (default 20)
  --conntrack S firewall.conntrack tcp/udp/default timeouts on both nodes (default: Nebula's,
                12m/3m/10m, so flows of a short soak never expire and conntrack grows by design)
EOF
}

MESHD="" NEBULA="$(command -v nebula || true)" DURATION=600 BUSY=20 IDLE=20 CIPHER=aes CONNTRACK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --meshd) MESHD="$2"; shift 2 ;;
    --nebula) NEBULA="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --busy) BUSY="$2"; shift 2 ;;
    --idle) IDLE="$2"; shift 2 ;;
    --cipher) CIPHER="$2"; shift 2 ;;
    --conntrack) CONNTRACK="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
require_root_and_tools ip iperf3 ping nebula-cert
[ -n "$MESHD" ] && [ -x "$MESHD" ] || die "--meshd PATH (an executable) is required"
[ -x "$NEBULA" ] || die "nebula binary not found (use --nebula PATH)"
bench_names sk soak

write_config() { # NAME VPN DEV PEER_VPN PEER_UNDERLAY
  nebula-cert sign -name "$1" -ip "$2/24" -ca-crt "$WORK/ca.crt" -ca-key "$WORK/ca.key" \
    -out-crt "$WORK/$1.crt" -out-key "$WORK/$1.key"
  cat >"$WORK/$1.yml" <<EOF
pki: {ca: $WORK/ca.crt, cert: $WORK/$1.crt, key: $WORK/$1.key}
static_host_map: {"$4": ["$5:4242"]}
lighthouse: {am_lighthouse: false, hosts: []}
listen: {host: 0.0.0.0, port: 4242}
punchy: {punch: false}
cipher: $CIPHER
tun: {dev: $3, mtu: 1300}
logging: {level: info}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
EOF
  [ -z "$CONNTRACK" ] || cat >>"$WORK/$1.yml" <<EOF
  conntrack: {tcp_timeout: ${CONNTRACK}s, udp_timeout: ${CONNTRACK}s, default_timeout: ${CONNTRACK}s}
EOF
}

setup_network
nebula-cert ca -name "meshd soak $TAG" -duration 24h -out-crt "$WORK/ca.crt" -out-key "$WORK/ca.key"
write_config a "$VPN_A" "$TUN_A" "$VPN_B" "$UNDER_B"
write_config b "$VPN_B" "$TUN_B" "$VPN_A" "$UNDER_A"

ip netns exec "$NS_A" "$MESHD" -config "$WORK/a.yml" >"$WORK/meshd.log" 2>&1 & MPID=$!; PIDS+=("$MPID")
ip netns exec "$NS_B" "$NEBULA" -config "$WORK/b.yml" >"$WORK/nebula.log" 2>&1 & NPID=$!; PIDS+=("$NPID")
wait_until 10 ip -n "$NS_A" link show "$TUN_A" || die "meshd did not start: $(cat "$WORK/meshd.log")"
wait_until 10 ip -n "$NS_B" link show "$TUN_B" || die "nebula did not start"
wait_until 15 ip netns exec "$NS_A" ping -c 1 -W 1 "$VPN_B" || die "no tunnel: $(cat "$WORK/meshd.log")"
ip netns exec "$NS_B" iperf3 -s -B "$VPN_B" >"$WORK/iperf-server.log" 2>&1 & SPID=$!; PIDS+=("$SPID")
wait_until 5 sh -c "ip netns exec $NS_B ss -tln | grep -q '$VPN_B:5201'" || die "iperf3 server did not start"

rss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$MPID/status"; }
# Virtual size of heap + stacks: a leak must grow it; RSS alone also grows while the batch buffers
# (allocated once, zero pages until used) get touched slot by slot under load, up to their size.
vmdata() { awk '$1 == "VmData:" { print $2 }' "/proc/$MPID/status"; }
fds() { ls "/proc/$MPID/fd" | wc -l; }

echo "soak: meshd <-> nebula, ${DURATION}s, cycles of ${BUSY}s busy + ${IDLE}s idle, cipher $CIPHER, conntrack timeouts ${CONNTRACK:-default} (tag $TAG)"
# One busy phase each way first, so the baseline includes every buffer the data path allocates once.
ip netns exec "$NS_A" iperf3 -c "$VPN_B" -t 2 >/dev/null
ip netns exec "$NS_A" iperf3 -c "$VPN_B" -t 2 -R >/dev/null
RSS0="$(rss)" FD0="$(fds)" DATA0="$(vmdata)"
printf '%6s %10s %10s %5s %s\n' elapsed rss_kB vmdata_kB fds phase
printf '%6s %10s %10s %5s %s\n' 0 "$RSS0" "$DATA0" "$FD0" start
START=$SECONDS cycle=0
while [ $(( SECONDS - START )) -lt "$DURATION" ]; do
  cycle=$(( cycle + 1 ))
  rev=""; [ $(( cycle % 2 )) -eq 0 ] && rev="-R"
  ip netns exec "$NS_A" iperf3 -c "$VPN_B" -t "$BUSY" $rev >"$WORK/iperf-$cycle.log" 2>&1 \
    || die "iperf3 failed in cycle $cycle: $(tail -n 3 "$WORK/iperf-$cycle.log")"
  mbps="$(awk '/receiver/ { print $7 " " $8 }' "$WORK/iperf-$cycle.log")"
  printf '%6s %10s %10s %5s busy %s\n' $(( SECONDS - START )) "$(rss)" "$(vmdata)" "$(fds)" "${rev:-fwd} $mbps"
  sleep "$IDLE"
  alive "$MPID" || die "meshd exited: $(tail -n 5 "$WORK/meshd.log")"
  printf '%6s %10s %10s %5s idle\n' $(( SECONDS - START )) "$(rss)" "$(vmdata)" "$(fds)"
done
ip netns exec "$NS_A" ping -c 3 -W 1 "$VPN_B" >/dev/null || die "tunnel broken at the end"
RSS1="$(rss)" FD1="$(fds)" DATA1="$(vmdata)"
echo "meshd RSS: start ${RSS0} kB, end ${RSS1} kB; VmData: start ${DATA0} kB, end ${DATA1} kB; open fds: start ${FD0}, end ${FD1}; cycles: $cycle"
[ "$FD1" -le "$FD0" ] || die "open fds grew"
[ "$DATA1" -le "$DATA0" ] || die "heap (VmData) grew"
echo "soak OK"
