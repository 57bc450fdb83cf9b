#!/usr/bin/env bash
# meshd demo, run as root on a fresh Debian machine from a clone of this repository:
#   bash examples/demo.sh
# Installs dependencies, builds meshd (release), makes a CA and host certificates with
# `meshd cert`, and builds the deployment tutorial's mesh in network namespaces: a meshd
# lighthouse on a "public" bridge and hosts each behind its own NAT router (masquerade, unsolicited
# inbound dropped): two meshd hosts and one nebula 1.6.1 host. Configs are examples/lighthouse.yaml
# and examples/host.yaml with the paths and the lighthouse address substituted. Pings across the
# NATs, shows that the hosts talk directly (each uses the other's NAT address, not the
# lighthouse), then removes everything it created (namespaces, processes by PID, temp files), also
# on failure.
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
LH_PUBLIC=203.0.113.1
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

# name                implementation  vpn ip       router (0 = on the public bridge)
NODES=(
  "leuchtturm1        meshd           10.10.10.1   0"
  "prod1-postgresql-0 meshd           10.10.10.2   1"
  "prod1-web-0        meshd           10.10.10.3   2"
  "prod1-worker-0     nebula          10.10.10.4   3"
)

step "certificates with meshd cert"
"$MESHD" cert ca -name "meshd demo" -duration 2h -out-crt "$WORK/ca.crt" -out-key "$WORK/ca.key"
for node in "${NODES[@]}"; do
  read -r name impl vpn router <<<"$node"
  "$MESHD" cert sign -name "$name" -ip "$vpn/24" \
    -ca-crt "$WORK/ca.crt" -ca-key "$WORK/ca.key" -out-crt "$WORK/$name.crt" -out-key "$WORK/$name.key"
done
"$MESHD" cert print -path "$WORK/prod1-postgresql-0.crt"

newns() { ip netns add "$1"; NAMESPACES+=("$1"); ip -n "$1" link set lo up; }
# plug NS IFNAME CIDR: a veth from NS into the public bridge.
plug() {
  ip link add "$2" netns "$1" type veth peer name "p$2" netns "$SWITCH"
  ip -n "$1" addr add "$3" dev "$2"
  ip -n "$1" link set "$2" up
  ip -n "$SWITCH" link set "p$2" master br0 up
}

step "network: a public bridge, the lighthouse on it, one NAT router per host"
newns "$SWITCH"
ip -n "$SWITCH" link add br0 type bridge
ip -n "$SWITCH" link set br0 up
newns "${TAG}lh"
plug "${TAG}lh" "${TAG}lh" "$LH_PUBLIC/24"
for r in 1 2 3; do
  rns="${TAG}r$r" hns="${TAG}h$r"
  newns "$rns"; newns "$hns"
  plug "$rns" "${TAG}w$r" "203.0.113.1$r/24"
  ip link add "${TAG}l$r" netns "$rns" type veth peer name "${TAG}e$r" netns "$hns"
  ip -n "$rns" addr add "192.168.$r.1/24" dev "${TAG}l$r"; ip -n "$rns" link set "${TAG}l$r" up
  ip -n "$hns" addr add "192.168.$r.2/24" dev "${TAG}e$r"; ip -n "$hns" link set "${TAG}e$r" up
  ip -n "$hns" route add default via "192.168.$r.1"
  ip netns exec "$rns" sysctl -q -w net.ipv4.ip_forward=1
  ip netns exec "$rns" nft -f - <<EOF
table ip demonat {
  chain nat_out { type nat hook postrouting priority srcnat; oifname "${TAG}w$r" masquerade; }
  chain filter_fwd {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "${TAG}l$r" oifname "${TAG}w$r" accept
  }
  chain filter_in {
    type filter hook input priority filter;
    iifname "${TAG}w$r" ct state established,related accept
    iifname "${TAG}w$r" drop
  }
}
EOF
done
ns_of() { [ "$1" = 0 ] && echo "${TAG}lh" || echo "${TAG}h$1"; }

# The tutorial's configs with this run's paths, tun device and lighthouse address.
write_config() { # NAME ROUTER
  local src=examples/host.yaml from=prod1-postgresql-0
  [ "$2" = 0 ] && src=examples/lighthouse.yaml from=leuchtturm1
  sed -e "s#/etc/meshd/ca.crt#$WORK/ca.crt#" \
      -e "s#/etc/meshd/$from\.#$WORK/$1.#" \
      -e "s#203\.0\.113\.1:4242#$LH_PUBLIC:4242#" \
      -e "s#dev: nebula1#dev: demo0#" \
      "$src" >"$WORK/$1.yml"
  # The lighthouse file has no tun section: give it the same device name.
  [ "$2" = 0 ] && printf 'tun:\n  dev: demo0\n' >>"$WORK/$1.yml"
  return 0
}

step "starting the nodes"
for node in "${NODES[@]}"; do
  read -r name impl vpn router <<<"$node"
  write_config "$name" "$router"
  bin="$MESHD"; [ "$impl" = nebula ] && bin="$(command -v nebula)"
  ip netns exec "$(ns_of "$router")" "$bin" -config "$WORK/$name.yml" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
  wait_until 10 ip -n "$(ns_of "$router")" link show demo0 || { cat "$WORK/$name.log"; exit 1; }
  echo "$name ($impl) is up as $vpn"
done

ping_through() { # FROM_ROUTER TO_NAME TO_VPN
  echo "-- $(ns_of "$1") -> $2 ($3)"
  # The first echoes may be spent on the lighthouse query and the handshake.
  wait_until 15 ip netns exec "$(ns_of "$1")" ping -c 1 -W 1 "$3" || { echo "no tunnel to $2"; exit 1; }
  ip netns exec "$(ns_of "$1")" ping -c 3 -i 0.2 "$3"
}

step "pings across the NATs (the hosts learn each other from the lighthouse)"
ping_through 1 leuchtturm1 10.10.10.1
ping_through 1 prod1-web-0 10.10.10.3        # meshd -> meshd, both behind NAT
ping_through 2 prod1-postgresql-0 10.10.10.2 # and back
ping_through 1 prod1-worker-0 10.10.10.4     # meshd -> nebula 1.6.1
ping_through 3 prod1-web-0 10.10.10.3        # nebula 1.6.1 -> meshd

step "direct paths: the address each host uses for the other"
# Router 2's public address is 203.0.113.12, router 1's 203.0.113.11, the lighthouse's .1.
show_remote() { # LOG PEER_VPN EXPECTED_NAT_IP
  local line
  line="$(grep "tunnel established vpn_ip=$2 " "$WORK/$1.log" | tail -1)"
  echo "$1: $line"
  case "$line" in
    *"remote=Some($3:"*) ;;
    *) echo "expected $1 to reach $2 at NAT address $3" >&2; exit 1 ;;
  esac
}
show_remote prod1-postgresql-0 10.10.10.3 203.0.113.12
show_remote prod1-web-0 10.10.10.2 203.0.113.11
echo "prod1-worker-0 (nebula 1.6.1) handshakes, with the peer addresses it used:"
grep -o 'Handshake message \(received\|sent\).*udpAddr=[^ ]*' "$WORK/prod1-worker-0.log" \
  | sed 's/\(Handshake message [a-z]*\).*\(udpAddr=[^ ]*\)/\1 ... \2/' | sort -u
grep -q 'udpAddr="203.0.113.11:' "$WORK/prod1-worker-0.log" \
  || { echo "nebula never used prod1-postgresql-0's NAT address" >&2; exit 1; }
before="$(ip netns exec "${TAG}lh" cat "/sys/class/net/${TAG}lh/statistics/rx_bytes")"
ip netns exec "${TAG}h1" ping -q -c 200 -i 0.005 -s 1000 10.10.10.3 | tail -2
after="$(ip netns exec "${TAG}lh" cat "/sys/class/net/${TAG}lh/statistics/rx_bytes")"
echo "lighthouse received $(( after - before )) bytes while ~200 kB of pings crossed the NATs"
[ $(( after - before )) -lt 50000 ] || { echo "traffic went through the lighthouse" >&2; exit 1; }

step "done; cleaning up"
