#!/usr/bin/env bash
# meshd demo, run as root on a fresh Debian machine from a clone of this repository:
#   bash examples/demo.sh
# Installs dependencies, builds meshd (release), makes a CA and host certificates with
# `meshd cert`, and starts a small overlay in network namespaces joined by a bridge: two meshd
# nodes and one nebula 1.6.1 node. Shows the tun device and pings through the tunnels, then
# removes everything it created (namespaces, processes by PID, temp files), also on failure.
#
# To grow it (lighthouse, more hosts): add a line to NODES and, if needed, config keys in
# write_config.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (network namespaces, tun devices)" >&2; exit 1; }

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "dependencies and build"
bash .ci/deps
cargo build --release --quiet
MESHD="$PWD/target/release/meshd"

TAG="dm$(printf '%05d' $(( $$ % 100000 )))"
WORK="$(mktemp -d "/tmp/meshd-demo.${TAG}.XXXXXX")"
SWITCH="${TAG}sw"
NAMESPACES=() PIDS=()

alive() { [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ] && [ -e "/proc/$1/stat" ]; }
cleanup() {
  local pid ns i
  for pid in "${PIDS[@]}"; do
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null || true
  done
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_until() {
  local secs="$1" i; shift
  for i in $(seq $(( secs * 10 ))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

# name  implementation  vpn ip     underlay ip
NODES=(
  "alpha meshd  10.42.0.1 192.0.2.1"
  "beta  meshd  10.42.0.2 192.0.2.2"
  "gamma nebula 10.42.0.3 192.0.2.3"
)

step "certificates with meshd cert"
"$MESHD" cert ca -name "meshd demo" -duration 2h -out-crt "$WORK/ca.crt" -out-key "$WORK/ca.key"
for node in "${NODES[@]}"; do
  read -r name impl vpn under <<<"$node"
  "$MESHD" cert sign -name "$name" -ip "$vpn/24" -groups demo \
    -ca-crt "$WORK/ca.crt" -ca-key "$WORK/ca.key" -out-crt "$WORK/$name.crt" -out-key "$WORK/$name.key"
done
"$MESHD" cert print -path "$WORK/alpha.crt"

step "network: one bridge, a namespace per node"
ip netns add "$SWITCH"; NAMESPACES+=("$SWITCH")
ip -n "$SWITCH" link add br0 type bridge
ip -n "$SWITCH" link set br0 up
for node in "${NODES[@]}"; do
  read -r name impl vpn under <<<"$node"
  ns="${TAG}${name}"
  ip netns add "$ns"; NAMESPACES+=("$ns")
  ip -n "$ns" link set lo up
  ip link add "${TAG}${name:0:2}" netns "$ns" type veth peer name "p${name:0:2}" netns "$SWITCH"
  ip -n "$ns" addr add "$under/24" dev "${TAG}${name:0:2}"
  ip -n "$ns" link set "${TAG}${name:0:2}" up
  ip -n "$SWITCH" link set "p${name:0:2}" master br0 up
done

write_config() { # NAME VPN
  local name="$1" other ovpn ounder oimpl
  {
    echo "pki: {ca: $WORK/ca.crt, cert: $WORK/$name.crt, key: $WORK/$name.key}"
    echo "static_host_map:"
    for other in "${NODES[@]}"; do
      read -r oname oimpl ovpn ounder <<<"$other"
      [ "$oname" = "$name" ] || echo "  \"$ovpn\": [\"$ounder:4242\"]"
    done
    cat <<EOF
lighthouse: {am_lighthouse: false, hosts: []}
listen: {host: 0.0.0.0, port: 4242}
punchy: {punch: true}
tun: {dev: demo0, mtu: 1300}
logging: {level: info}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound:
    - {port: any, proto: icmp, host: any}
    - {port: any, proto: any, group: demo}
EOF
  } >"$WORK/$name.yml"
}

step "starting the nodes"
for node in "${NODES[@]}"; do
  read -r name impl vpn under <<<"$node"
  write_config "$name" "$vpn"
  bin="$MESHD"; [ "$impl" = nebula ] && bin="$(command -v nebula)"
  ip netns exec "${TAG}${name}" "$bin" -config "$WORK/$name.yml" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
  wait_until 10 ip -n "${TAG}${name}" link show demo0 || { cat "$WORK/$name.log"; exit 1; }
  echo "$name ($impl) is up as $vpn"
done

step "alpha's tun device"
ip -n "${TAG}alpha" addr show dev demo0

ping_through() { # FROM TO_NAME TO_VPN
  echo "-- $1 -> $2 ($3)"
  # The first echo may be spent on the handshake.
  wait_until 10 ip netns exec "${TAG}$1" ping -c 1 -W 1 "$3" || { echo "no tunnel $1 -> $2"; exit 1; }
  ip netns exec "${TAG}$1" ping -c 3 -i 0.2 "$3"
}

step "pings through the overlay"
ping_through alpha beta 10.42.0.2     # meshd -> meshd
ping_through alpha gamma 10.42.0.3    # meshd -> nebula
ping_through gamma beta 10.42.0.2     # nebula -> meshd

step "what alpha logged"
cat "$WORK/alpha.log"
step "done; cleaning up"
