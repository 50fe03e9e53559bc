#!/usr/bin/env bash
# A three-node gateway cluster on this machine's loopback, from the files production uses: three
# nats-servers as one JetStream cluster (nats/nats.conf), three gateway nodes with the settings
# systemd/gateway.env.example describes, and HAProxy in front of them (haproxy.cfg).
#
#   deploy/cluster/local.sh up       install and build what is missing, start what is not running
#                                    (also a node that was killed), print the addresses
#   deploy/cluster/local.sh status   each process, HAProxy's view of the nodes, `ism node list`
#   deploy/cluster/local.sh down     stop everything: HAProxy, the nodes (SIGTERM: they drain), NATS
#
# State (certificates, secrets, data, a log and a pid file per process) lives in $ISM_CLUSTER_DIR,
# by default deploy/cluster/.local/; `down` keeps it, so `up` again finds the same cluster (delete
# the directory to start afresh). Ports are $ISM_CLUSTER_PORT_BASE (20000) plus: HAProxy 43
# (endpoints), 80 (SOCKS5), 28 (HTTP proxy), 70 (API), 90 (stats page); node N adds N*100 to the
# same offsets (and 44 for its relay links); NATS server N listens on N*100 + 22 (clients), 62
# (routes), 82 (monitoring). $ISM_BIN_DIR: use the binaries there instead of building them.
# $ISM_LB_MAXCONN: HAProxy's connections at once (4096 here; `ism-bench cluster` sets more).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CLUSTER_DIR=$ROOT/deploy/cluster
DIR=${ISM_CLUSTER_DIR:-$CLUSTER_DIR/.local}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
BASE=${ISM_CLUSTER_PORT_BASE:-20000}
BIN=${ISM_BIN_DIR:-$ROOT/target/release}
NODES=(1 2 3)
DEADLINE=${ISM_CLUSTER_DEADLINE:-60} # seconds each process has to become ready
umask 077

LB_ENDPOINT=127.0.0.1:$((BASE + 43))
LB_SOCKS=127.0.0.1:$((BASE + 80))
LB_HTTP_PROXY=127.0.0.1:$((BASE + 28))
LB_API=127.0.0.1:$((BASE + 70))
LB_STATS=127.0.0.1:$((BASE + 90))
node_port() { echo $((BASE + $1 * 100 + $2)); } # node_port N OFFSET
# The gateway nodes' ISM_EVENT_LOG: the first URL carries the clients' password (nats.conf).
nats_urls() {
  local n urls=() login
  login="ism:$(cat "$DIR/secrets/nats-password")@"
  for n in "${NODES[@]}"; do urls+=("nats://${login}127.0.0.1:$(node_port "$n" 22)"); login=; done
  (IFS=,; echo "${urls[*]}")
}

say() { echo "== $*"; }
die() {
  echo "local.sh: $*" >&2
  exit 1
}

# The pid of a process this script started (name: nats-N, node-N, haproxy) while it runs: the
# pid file's process, if it is still the program started (a reused pid is not).
pid_of() {
  local file=$DIR/run/$1.pid pid exe
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  case "$1:${exe##*/}" in
    nats-*:nats-server | node-*:ism-gateway | haproxy:haproxy) echo "$pid" ;;
    *) return 1 ;;
  esac
}

# launch NAME COMMAND...: runs the command in its own session (a closed terminal does not stop
# it), output appended to $DIR/logs/NAME.log, pid in $DIR/run/NAME.pid.
launch() {
  local name=$1 log=$DIR/logs/$1.log _
  shift
  rm -f "$DIR/run/$name.pid"
  echo "--- $(date -u +%FT%TZ) local.sh starts $name" >>"$log"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$DIR/run/$name.pid" "$@" >>"$log" 2>&1 </dev/null &
  for _ in $(seq 50); do
    [ -s "$DIR/run/$name.pid" ] && return 0
    sleep 0.1
  done
  die "$name did not start; see $log"
}

# wait_for NAME WHAT CHECK...: runs CHECK until it succeeds, for up to $DEADLINE seconds; fails
# at once, pointing at the log, if the process exited.
wait_for() {
  local name=$1 what=$2 log=$DIR/logs/$1.log end=$((SECONDS + DEADLINE))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! pid_of "$name" >/dev/null; then
      tail -n 20 "$log" >&2 || true
      die "$name exited before $what; its log: $log"
    fi
    if [ "$SECONDS" -ge "$end" ]; then
      tail -n 20 "$log" >&2 || true
      die "$name: no $what within ${DEADLINE}s; its log: $log"
    fi
    sleep 0.2
  done
}

http_ok() { curl -fsS --max-time 2 -o /dev/null "$1"; }
# NATS server on monitoring port PORT: healthy, and every stream it holds has a leader (after a
# restart /healthz says ok a moment before the streams have elected theirs, and a node that
# starts then finds its stream unanswered).
nats_ready() {
  http_ok "http://127.0.0.1:$1/healthz" &&
    curl -fsS --max-time 2 "http://127.0.0.1:$1/jsz?streams=true" | python3 -c '
import json, sys
jsz = json.load(sys.stdin)
streams = [s for a in jsz.get("account_details", []) for s in a.get("stream_detail", [])]
led = jsz.get("meta_cluster", {}).get("leader") and all(s.get("cluster", {}).get("leader") for s in streams)
sys.exit(0 if led else 1)'
}
# HAProxy's stats: every node UP in every backend.
lb_all_up() {
  local up
  up=$(curl -fsS --max-time 2 "http://$LB_STATS/;csv" | awk -F, '$2 ~ /^node-/ && $18 == "UP"' | wc -l)
  [ "$up" -eq $((4 * ${#NODES[@]})) ]
}

tools() {
  local tool
  for tool in curl openssl setsid; do
    command -v "$tool" >/dev/null || die "needs curl, openssl and setsid (apt-get install curl openssl util-linux)"
  done
  if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
    if [ "$(id -u)" -eq 0 ]; then
      say "installing haproxy (Debian's package)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
    else
      die "haproxy is not installed: sudo apt-get install haproxy (or run this as root)"
    fi
  fi
  HAPROXY_BIN=$(command -v haproxy || echo /usr/sbin/haproxy)
  # nats-server 2.15 as the tests use it (NATS_SERVER_BIN, else installed into .venv-tools).
  # shellcheck source=scripts/tools.sh
  source scripts/tools.sh
}

build() {
  if [ -n "${ISM_BIN_DIR:-}" ]; then
    say "using the binaries in $BIN"
  else
    say "cargo build --release -p ism-gateway -p ism-cli -p ism-endpoint"
    cargo build --release --quiet -p ism-gateway -p ism-cli -p ism-endpoint
  fi
  local b
  for b in ism-gateway ism ism-endpoint; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing"
  done
}

# Made once, kept across down/up: the secrets every node shares, the certificate every node
# presents to endpoints (signed by a private CA: the endpoints' gatewayCaFile) and the cluster
# certificates of the relay links.
secrets() {
  mkdir -p "$DIR/secrets" "$DIR/tls" "$DIR/run" "$DIR/logs"
  [ -s "$DIR/secrets/key-secret" ] || openssl rand -hex 32 >"$DIR/secrets/key-secret"
  [ -s "$DIR/secrets/admin-token" ] || openssl rand -hex 32 >"$DIR/secrets/admin-token"
  [ -s "$DIR/secrets/nats-password" ] || openssl rand -hex 32 >"$DIR/secrets/nats-password"
  [ -s "$DIR/secrets/nats-route-password" ] || openssl rand -hex 32 >"$DIR/secrets/nats-route-password"
  if [ ! -s "$DIR/tls/cert.pem" ]; then
    say "making a private CA and the nodes' certificate for localhost, 127.0.0.1 in $DIR/tls"
    local t=$DIR/tls
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
      -subj "/CN=ism local cluster CA" -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=localhost" -keyout "$t/key.pem" -out "$t/cert.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$t/cert.ext"
    openssl x509 -req -in "$t/cert.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
      -days 825 -extfile "$t/cert.ext" -out "$t/cert.pem" 2>/dev/null
    rm -f "$t/cert.csr" "$t/cert.ext"
  fi
  if [ ! -s "$DIR/cluster-tls/cluster-ca.pem" ]; then
    local names=()
    local n
    for n in "${NODES[@]}"; do names+=("node-$n"); done
    "$BIN/ism-gateway" cluster-certs --dir "$DIR/cluster-tls" "${names[@]}" >/dev/null
  fi
}

# nats/nats.conf's variables for server N on loopback (the unit sets production's).
nats_env() {
  local n=$1 routes=() m route_login
  route_login="ism-route:$(cat "$DIR/secrets/nats-route-password")@"
  for m in "${NODES[@]}"; do routes+=("nats://${route_login}127.0.0.1:$(node_port "$m" 62)"); done
  echo "ISM_NATS_PASSWORD=$(cat "$DIR/secrets/nats-password")"
  echo "ISM_NATS_ROUTE_PASSWORD=$(cat "$DIR/secrets/nats-route-password")"
  echo "ISM_NATS_NAME=nats-$n"
  echo "ISM_NATS_LISTEN=127.0.0.1:$(node_port "$n" 22)"
  echo "ISM_NATS_CLUSTER_LISTEN=127.0.0.1:$(node_port "$n" 62)"
  echo "ISM_NATS_ROUTES=[$(IFS=,; echo "${routes[*]}")]"
  echo "ISM_NATS_MONITOR=127.0.0.1:$(node_port "$n" 82)"
  echo "ISM_NATS_STORE_DIR=$DIR/nats-$n"
}

# Node N's settings, as /etc/ism/gateway-node-N.env holds them in production
# (systemd/gateway.env.example); the unit adds the node id, the data directory and these two.
node_env() {
  local n=$1
  cat <<EOF
ISM_JETSTREAM_REPLICAS=3
ISM_DRAIN_TIMEOUT=60
NO_COLOR=1
ISM_EVENT_LOG=$(nats_urls)
ISM_KEY_SECRET_FILE=$DIR/secrets/key-secret
ISM_ADMIN_TOKEN=$(cat "$DIR/secrets/admin-token")
ISM_TLS_CERT=$DIR/tls/cert.pem
ISM_TLS_KEY=$DIR/tls/key.pem
ISM_CLUSTER_TLS_DIR=$DIR/cluster-tls
ISM_RELAY_LISTEN=127.0.0.1:$(node_port "$n" 44)
ISM_ENDPOINT_LISTEN=127.0.0.1:$(node_port "$n" 43)
ISM_SOCKS_LISTEN=127.0.0.1:$(node_port "$n" 80)
ISM_HTTP_PROXY_LISTEN=127.0.0.1:$(node_port "$n" 28)
ISM_API_LISTEN=127.0.0.1:$(node_port "$n" 70)
ISM_PUBLIC_ADDRESS=$LB_ENDPOINT
ISM_PUBLIC_SOCKS_ADDRESS=$LB_SOCKS
ISM_PUBLIC_HTTP_PROXY_ADDRESS=$LB_HTTP_PROXY
EOF
}

# haproxy.cfg's variables for the nodes on loopback (production's are its defaults).
haproxy_env() {
  local n
  echo "ISM_LB_LOCAL=1"
  echo "ISM_LB_MAXCONN=${ISM_LB_MAXCONN:-4096}"
  echo "ISM_LB_ENDPOINT_BIND=$LB_ENDPOINT"
  echo "ISM_LB_SOCKS_BIND=$LB_SOCKS"
  echo "ISM_LB_HTTP_PROXY_BIND=$LB_HTTP_PROXY"
  echo "ISM_LB_API_BIND=$LB_API"
  echo "ISM_LB_STATS_BIND=$LB_STATS"
  for n in "${NODES[@]}"; do
    echo "ISM_NODE_$n=127.0.0.1"
    echo "ISM_NODE_${n}_ENDPOINT_PORT=$(node_port "$n" 43)"
    echo "ISM_NODE_${n}_SOCKS_PORT=$(node_port "$n" 80)"
    echo "ISM_NODE_${n}_HTTP_PROXY_PORT=$(node_port "$n" 28)"
    echo "ISM_NODE_${n}_API_PORT=$(node_port "$n" 70)"
  done
}

# with_env FILE COMMAND...: the command with the file's VAR=value lines in its environment.
with_env() {
  local file=$1
  shift
  (
    set -a
    # shellcheck source=/dev/null
    . "$file"
    set +a
    "$@"
  )
}

up() {
  tools
  build
  secrets
  local n started=()

  for n in "${NODES[@]}"; do
    nats_env "$n" >"$DIR/run/nats-$n.env"
    if ! pid_of "nats-$n" >/dev/null; then
      mkdir -p "$DIR/nats-$n"
      with_env "$DIR/run/nats-$n.env" launch "nats-$n" "$NATS_SERVER_BIN" -c "$CLUSTER_DIR/nats/nats.conf"
      started+=("nats-$n")
    fi
  done
  # Ready once the three have formed the JetStream cluster and its streams have leaders.
  for n in "${NODES[@]}"; do
    wait_for "nats-$n" "JetStream cluster (GET /healthz, stream leaders in /jsz)" nats_ready "$(node_port "$n" 82)"
  done
  say "NATS: nats-1..3 form one JetStream cluster (user ism, password in $DIR/secrets/nats-password)"

  # The first node creates the stream and the KV buckets; the others start once it is ready.
  for n in "${NODES[@]}"; do
    mkdir -p "$DIR/node-$n"
    node_env "$n" >"$DIR/node-$n/gateway.env"
    if ! pid_of "node-$n" >/dev/null; then
      with_env "$DIR/node-$n/gateway.env" launch "node-$n" "$BIN/ism-gateway" --node-id "node-$n" \
        --data-dir "$DIR/node-$n/data"
      started+=("node-$n")
      [ "$n" != "${NODES[0]}" ] || wait_for "node-$n" "GET /ready 200" http_ok "http://127.0.0.1:$(node_port "$n" 70)/ready"
    fi
  done
  for n in "${NODES[@]}"; do
    wait_for "node-$n" "GET /ready 200" http_ok "http://127.0.0.1:$(node_port "$n" 70)/ready"
  done
  say "gateway nodes: node-1..3 ready"

  haproxy_env >"$DIR/run/haproxy.env"
  if ! pid_of haproxy >/dev/null; then
    with_env "$DIR/run/haproxy.env" "$HAPROXY_BIN" -c -q -f "$CLUSTER_DIR/haproxy.cfg" ||
      die "haproxy -c -f $CLUSTER_DIR/haproxy.cfg failed"
    with_env "$DIR/run/haproxy.env" launch haproxy "$HAPROXY_BIN" -db -f "$CLUSTER_DIR/haproxy.cfg"
    started+=(haproxy)
  fi
  wait_for haproxy "every node UP in its health checks (http://$LB_STATS/)" lb_all_up
  say "HAProxy: every node in rotation"
  [ ${#started[@]} -eq 0 ] || say "started ${started[*]}"
  addresses
}

addresses() {
  local n ism=${BIN#"$ROOT"/}/ism
  cat <<EOF

Gateway cluster on loopback (state and logs in $DIR):
  endpoints connect to   wss://$LB_ENDPOINT/wsendpoint   (gateway=$LB_ENDPOINT)
  their CA file          gatewayCaFile=$DIR/tls/ca.pem
  scanners, SOCKS5       socks5://$LB_SOCKS
  scanners, HTTP proxy   http://$LB_HTTP_PROXY
  management API         http://$LB_API   (HAProxy's stats: http://$LB_STATS/)
  admin token            $(cat "$DIR/secrets/admin-token")
  NATS servers           $(nats_urls | sed 's/ism:[0-9a-f]*@/ism:***@/')   (password: $DIR/secrets/nats-password)
EOF
  for n in "${NODES[@]}"; do
    echo "  node-$n API             http://127.0.0.1:$(node_port "$n" 70)   log $DIR/logs/node-$n.log"
  done
  cat <<EOF

  export ISM_API=http://$LB_API ISM_API_TOKEN=\$(cat $DIR/secrets/admin-token)
  $ism node list
  $ism node drain node-2      # then: deploy/cluster/local.sh status
  deploy/cluster/local.sh down
EOF
}

status() {
  local name pid n
  for name in nats-1 nats-2 nats-3 node-1 node-2 node-3 haproxy; do
    if pid=$(pid_of "$name"); then
      printf '  %-8s running, pid %s\n' "$name" "$pid"
    else
      printf '  %-8s not running (log %s)\n' "$name" "$DIR/logs/$name.log"
    fi
  done
  if pid_of haproxy >/dev/null; then
    echo "HAProxy's view (backend node status):"
    curl -fsS --max-time 2 "http://$LB_STATS/;csv" | awk -F, '$2 ~ /^node-/ {printf "  %-10s %-6s %s\n", $1, $2, $18}'
  fi
  if [ -x "$BIN/ism" ] && [ -s "$DIR/secrets/admin-token" ]; then
    for n in "${NODES[@]}"; do
      if http_ok "http://127.0.0.1:$(node_port "$n" 70)/healthz" 2>/dev/null; then
        echo "ism node list (through node-$n):"
        ISM_API_TOKEN=$(cat "$DIR/secrets/admin-token") "$BIN/ism" --api "http://127.0.0.1:$(node_port "$n" 70)" node list || true
        break
      fi
    done
  fi
}

# alive PID: the process exists and is not a zombie (nobody may have reaped it yet).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# stop NAME...: SIGTERM to each, then waits (a node drains first: up to its drain timeout).
stop() {
  local name pid left pids=() names=() end=$((SECONDS + 75))
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      kill -TERM "$pid" && pids+=("$pid") && names+=("$name")
    fi
    rm -f "$DIR/run/$name.pid"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  say "stopping ${names[*]}"
  while :; do
    left=0
    for pid in "${pids[@]}"; do
      alive "$pid" || continue
      left=1
      if [ "$SECONDS" -ge "$end" ]; then
        echo "local.sh: pid $pid did not stop within 75 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
    [ "$left" -eq 1 ] || return 0
    sleep 0.2
  done
}

down() {
  # HAProxy first (no new connections), then the nodes (they record their sessions' end in the
  # log), then NATS.
  stop haproxy
  stop node-1 node-2 node-3
  stop nats-1 nats-2 nats-3
  say "stopped; state kept in $DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *)
    echo "usage: deploy/cluster/local.sh up|down|status" >&2
    exit 2
    ;;
esac
