#!/usr/bin/env bash
# Installs the ISM endpoint on Linux as a systemd service that runs it continuously, or updates
# an existing installation in place (new binary, changed settings; the machine identity, and so
# the endpoint key's binding to this machine, is kept). With --keep-identity it installs into a
# folder where uninstall.sh --keep-identity left the machine identity, so the same endpoint key
# works again on this machine instead of "Token already registered".
#
# Asks for what is missing when run on a terminal; with --yes everything comes from flags (and,
# when updating, from the installed configuration). Everything it does is logged to
# <install-dir>/logs/endpointinstaller.log.
set -euo pipefail

SERVICE=ism-endpoint
INSTALL_DIR=/opt/ism-endpoint
ROOT=""
BINARY="$(cd "$(dirname "$0")" && pwd)/ism-endpoint"
KEY="" GATEWAY="" GATEWAY_CA="" ALLOWED="" WS_PATH=""
PROXY_HOST="" PROXY_PORT="" PROXY_SCOPE="" PROXY_RESOLVE_GATEWAY="" PROXY_RESOLVE_URLS="" PROXY_EXCLUSIONS=""
PROXY_USER="" PROXY_PASSWORD_FILE=""
ASSUME_YES=0 START=1 CHECK_KEY=1 KEEP_IDENTITY=0

usage() {
  cat <<'EOF'
Usage: install.sh [options]
  --install-dir DIR           where to install (default /opt/ism-endpoint)
  --key KEY                   the endpoint key (Copy Endpoint Key on the gateway page)
  --gateway HOST[:PORT]       the gateway address endpoints connect to
  --gateway-ca FILE           CA certificate to trust for the gateway (private CA, TLS inspection)
  --ws-path PATH              the gateway's WebSocket path (default /wsendpoint)
  --allowed-targets LIST      hosts/CIDRs[:ports] scanners may reach, e.g. 10.0.0.0/8:80-443,*.corp:443
  --proxy-host HOST --proxy-port PORT
                              the web proxy ("Manual configuration")
  --proxy-scope gateway|gatewayAndUrls
                              "For gateway connection" or "For gateway and URL connections"
  --proxy-resolve-gateway yes|no   "Let endpoint resolve hostname for gateway" (default yes)
  --proxy-resolve-urls yes|no      "Let endpoint resolve hostname for URLs" (default yes)
  --proxy-exclusions LIST     hosts that bypass the proxy, e.g. "veracode.com, *code.com"
  --proxy-user USER           the proxy requires authentication (basic)
  --proxy-password-file FILE  the proxy password (asked for when not given)
  --binary FILE               the ism-endpoint binary to install (default: next to this script)
  --root DIR                  install below DIR instead of / (staging, tests); starts nothing
  --no-start                  install or update, but do not start the service
  --skip-key-check            do not validate the key against the gateway
  --keep-identity             install with the machine identity uninstall.sh --keep-identity
                              left in the folder (the key stays bound to this machine)
  --yes                       accept the terms of use and ask nothing
EOF
}

# die MESSAGE [EXIT_CODE]: says why on stderr (and in the log while there is one) and stops.
die() {
  echo "ERROR - $1" >&2
  if [ -n "${LOG:-}" ] && [ -d "$(dirname "$LOG")" ]; then echo "$(date -u '+%F %T') ERROR - $1" >>"$LOG"; fi
  exit "${2:-2}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --install-dir) INSTALL_DIR="$2"; shift 2 ;;
    --key) KEY="$2"; shift 2 ;;
    --gateway) GATEWAY="$2"; shift 2 ;;
    --gateway-ca) GATEWAY_CA="$2"; shift 2 ;;
    --ws-path) WS_PATH="$2"; shift 2 ;;
    --allowed-targets) ALLOWED="$2"; shift 2 ;;
    --proxy-host) PROXY_HOST="$2"; shift 2 ;;
    --proxy-port) PROXY_PORT="$2"; shift 2 ;;
    --proxy-scope) PROXY_SCOPE="$2"; shift 2 ;;
    --proxy-resolve-gateway) PROXY_RESOLVE_GATEWAY="$2"; shift 2 ;;
    --proxy-resolve-urls) PROXY_RESOLVE_URLS="$2"; shift 2 ;;
    --proxy-exclusions) PROXY_EXCLUSIONS="$2"; shift 2 ;;
    --proxy-user) PROXY_USER="$2"; shift 2 ;;
    --proxy-password-file) PROXY_PASSWORD_FILE="$2"; shift 2 ;;
    --binary) BINARY="$2"; shift 2 ;;
    --root) ROOT="${2%/}"; shift 2 ;;
    --no-start) START=0; shift ;;
    --skip-key-check) CHECK_KEY=0; shift ;;
    --keep-identity) KEEP_IDENTITY=1; shift ;;
    --yes|-y) ASSUME_YES=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

interactive=0
if [ "$ASSUME_YES" -eq 0 ] && [ -t 0 ]; then interactive=1; fi
ask() { # ask VAR "question" default
  local var="$1" question="$2" default="${3:-}" answer
  if [ "$interactive" -eq 1 ] && [ -z "${!var}" ]; then
    read -r -p "$question${default:+ [$default]}: " answer
    printf -v "$var" '%s' "${answer:-$default}"
  fi
}

if [ "$ASSUME_YES" -eq 0 ]; then
  [ "$interactive" -eq 1 ] || die "not on a terminal: pass --yes (and the settings as flags) to install without questions"
  echo "The endpoint lets the gateway's scanners reach the targets you allow, and nothing else."
  read -r -p "Do you accept the terms of use? [y/N]: " accept
  case "$accept" in y|Y|yes|YES) ;; *) die "the terms of use were not accepted" ;; esac
  ask INSTALL_DIR "Installation folder" "$INSTALL_DIR"
fi

case "$INSTALL_DIR" in /*) ;; *) die "Invalid installation folder: $INSTALL_DIR must be an absolute path" ;; esac
DEST="$ROOT$INSTALL_DIR"
PROPS="$DEST/config/application.properties"
UNIT="$ROOT/etc/systemd/system/$SERVICE.service"

# An empty or new folder, an existing installation to update, or the machine identity an
# uninstall kept (data/machine.key alone); nothing else.
IDENTITY="$DEST/data/machine.key"
only_identity() {
  [ -f "$IDENTITY" ] && [ -z "$(find "$DEST" -mindepth 1 ! -path "$DEST/data" ! -path "$IDENTITY" -print -quit)" ]
}
UPDATE=0 KEPT=0
if [ -f "$PROPS" ] && [ -x "$DEST/bin/ism-endpoint" ]; then
  UPDATE=1
elif only_identity; then
  [ "$KEEP_IDENTITY" -eq 1 ] || die "Invalid installation folder: $INSTALL_DIR holds the machine identity of an uninstalled endpoint (data/machine.key). Pass --keep-identity to install with it (its endpoint key stays bound to this machine), or remove the folder to start afresh."
  KEPT=1
elif [ -e "$DEST" ] && [ -n "$(ls -A "$DEST" 2>/dev/null)" ]; then
  die "Invalid installation folder: $INSTALL_DIR is not empty and holds no endpoint installation. Choose an empty folder that you created, or a folder the installer can create."
fi
if [ "$KEEP_IDENTITY" -eq 1 ] && [ "$UPDATE" -eq 0 ] && [ "$KEPT" -eq 0 ]; then
  die "--keep-identity: there is no machine identity in $INSTALL_DIR/data/machine.key to keep (uninstall.sh --keep-identity leaves it there)"
fi
[ -x "$BINARY" ] || die "no ism-endpoint binary at $BINARY (pass --binary)"

mkdir -p "$DEST"/{bin,config,data,logs,run,uninstall}
LOG="$DEST/logs/endpointinstaller.log"
log() { echo "$*"; echo "$(date -u '+%F %T') INFO - $*" >>"$LOG"; }
log "Installing the endpoint in $INSTALL_DIR$([ -n "$ROOT" ] && echo " (below $ROOT)")$([ "$UPDATE" -eq 1 ] && echo ": updating the existing installation")$([ "$KEPT" -eq 1 ] && echo ", with the machine identity kept there")"

# When updating, what is not given keeps its installed value.
current() { sed -n "s/^[[:space:]]*$1[[:space:]]*[=:][[:space:]]*//p" "$PROPS" 2>/dev/null | tail -n 1; }
if [ "$UPDATE" -eq 1 ]; then
  : "${KEY:=$(current token)}" "${GATEWAY:=$(current gateway)}" "${ALLOWED:=$(current allowedTargets)}"
  : "${WS_PATH:=$(current wsendpoint)}"
  : "${PROXY_HOST:=$(current proxyHost)}" "${PROXY_PORT:=$(current proxyPort)}" "${PROXY_SCOPE:=$(current proxyScope)}"
  : "${PROXY_RESOLVE_GATEWAY:=$(current proxyResolveGatewayHostname)}" "${PROXY_RESOLVE_URLS:=$(current proxyResolveUrlHostname)}"
  : "${PROXY_EXCLUSIONS:=$(current proxyExclusionList)}"
  [ -n "$GATEWAY_CA" ] || [ -z "$(current gatewayCaFile)" ] || GATEWAY_CA_KEEP="$(current gatewayCaFile)"
fi
ask GATEWAY "Gateway address (host[:port])"
ask KEY "Endpoint key"
ask ALLOWED "Targets scanners may reach (e.g. 10.0.0.0/8:80-443)"
if [ "$interactive" -eq 1 ] && [ -z "$PROXY_HOST" ]; then
  read -r -p "Do you use a web proxy (Manual configuration)? [y/N]: " use_proxy
  if [ "$use_proxy" = y ] || [ "$use_proxy" = Y ]; then
    ask PROXY_HOST "Proxy host"; ask PROXY_PORT "Proxy port"
    ask PROXY_SCOPE "Use it for: gateway, or gatewayAndUrls" "gatewayAndUrls"
    ask PROXY_RESOLVE_GATEWAY "Let endpoint resolve hostname for gateway (yes/no)" "yes"
    ask PROXY_RESOLVE_URLS "Let endpoint resolve hostname for URLs (yes/no)" "yes"
    ask PROXY_USER "Proxy user (empty: no authentication)"
  fi
fi
[ -n "$KEY" ] || die "the endpoint key is required (--key)"
[ -n "$GATEWAY" ] || die "the gateway address is required (--gateway)"
case "${WS_PATH:=/wsendpoint}" in
  *[[:space:]]*|[!/]*) die "--ws-path must be a path starting with '/' without spaces, not '$WS_PATH'" ;;
esac
if [ -n "$PROXY_HOST$PROXY_PORT" ] && { [ -z "$PROXY_HOST" ] || [ -z "$PROXY_PORT" ]; }; then
  die "Proxy settings errors: give both --proxy-host and --proxy-port"
fi

# The binary: replaced atomically, so an update never leaves half a file.
install -m 0755 "$BINARY" "$DEST/bin/ism-endpoint.new" && mv -f "$DEST/bin/ism-endpoint.new" "$DEST/bin/ism-endpoint"
log "Installed $("$DEST/bin/ism-endpoint" --version)"
if [ -n "$GATEWAY_CA" ]; then
  install -m 0644 "$GATEWAY_CA" "$DEST/config/gateway-ca.pem"
  GATEWAY_CA_KEEP="config/gateway-ca.pem"
fi

NEW="$PROPS.new"
{
  echo "# written by install.sh on $(date -u '+%F %T') UTC"
  echo "token = $KEY"
  echo "gateway = $GATEWAY"
  echo "websocketProtocol = wss"
  echo "wsendpoint = $WS_PATH"
  echo "socketConnectionTimeoutMs = 5000"
  echo "socketReadTimeoutMs = 5000"
  [ -z "${GATEWAY_CA_KEEP:-}" ] || echo "gatewayCaFile = $GATEWAY_CA_KEEP"
  [ -z "$ALLOWED" ] || echo "allowedTargets = $ALLOWED"
  if [ -n "$PROXY_HOST" ]; then
    echo "proxyHost = $PROXY_HOST"
    echo "proxyPort = $PROXY_PORT"
    [ -z "$PROXY_SCOPE" ] || echo "proxyScope = $PROXY_SCOPE"
    [ -z "$PROXY_RESOLVE_GATEWAY" ] || echo "proxyResolveGatewayHostname = $PROXY_RESOLVE_GATEWAY"
    [ -z "$PROXY_RESOLVE_URLS" ] || echo "proxyResolveUrlHostname = $PROXY_RESOLVE_URLS"
    [ -z "$PROXY_EXCLUSIONS" ] || echo "proxyExclusionList = $PROXY_EXCLUSIONS"
  fi
} >"$NEW"
chmod 0640 "$NEW"

undo() {
  rm -f "$NEW"
  if [ "$KEPT" -eq 1 ]; then
    find "$DEST" -mindepth 1 ! -path "$DEST/data" ! -path "$IDENTITY" -delete
  elif [ "$UPDATE" -eq 0 ]; then
    rm -rf "$DEST"
  fi
}

# The proxy credentials, stored by the endpoint itself (owner-only), and the key check: the
# endpoint connects once (through the proxy when there is one), which also binds the key to
# this machine.
ENDPOINT=("$DEST/bin/ism-endpoint" --config "$NEW")
if [ -n "$PROXY_USER" ]; then
  [ -n "$PROXY_HOST" ] || { undo; die "Proxy settings errors: --proxy-user needs --proxy-host and --proxy-port"; }
  if [ -n "$PROXY_PASSWORD_FILE" ]; then
    PROXY_PASSWORD="$(head -n 1 "$PROXY_PASSWORD_FILE")"
  elif [ "$interactive" -eq 1 ]; then
    read -r -s -p "Proxy password: " PROXY_PASSWORD; echo
  else
    undo; die "Proxy settings errors: the proxy password is required (--proxy-password-file)"
  fi
  log "Storing the proxy credentials and checking the key through the proxy"
  check() { printf '%s\n%s\n' "$PROXY_USER" "$PROXY_PASSWORD" | "${ENDPOINT[@]}" --authenticate 2>&1; }
elif [ "$CHECK_KEY" -eq 1 ]; then
  log "Checking the endpoint key against the gateway $GATEWAY"
  check() { "${ENDPOINT[@]}" --check 2>&1; }
else
  check() { :; }
fi
if ! out="$(check)"; then
  echo "$out" >>"$LOG"
  undo
  reason="$(echo "$out" | grep ERROR | head -n 2 | sed 's/^.*ERROR - //' | tr '\n' ' ')"
  case "$out" in
    *"requires authentication"*|*"cannot reach the proxy"*|*"did not answer within"*proxy*|*"refused CONNECT"*)
      die "Proxy settings errors: $reason. Verify that the proxy is reachable from this machine and accepts basic authentication with these credentials." 3 ;;
    *"Failed to reach the gateway"*|*"websocket connection"*)
      die "The gateway $GATEWAY could not be reached: $reason" 3 ;;
    *) die "Failure to authenticate endpoint key: $reason" 3 ;;
  esac
fi
[ -z "$out" ] || echo "$out" >>"$LOG"
if [ -n "$PROXY_USER" ] || [ "$CHECK_KEY" -eq 1 ]; then
  log "The key validated"
else
  log "The key was not checked (--skip-key-check): the endpoint checks it when it starts"
fi
mv -f "$NEW" "$PROPS"
log "Wrote $INSTALL_DIR/config/application.properties"

# The uninstaller lives with the installation.
install -m 0755 "$(cd "$(dirname "$0")" && pwd)/uninstall.sh" "$DEST/uninstall/uninstall.sh"

mkdir -p "$(dirname "$UNIT")"
cat >"$UNIT" <<EOF
# Installed by the ISM endpoint installer. Runs the endpoint continuously and restarts it,
# except after a refusal that starting it again cannot fix (exit status 10 key bound to another
# machine, 11 invalid key, 12 endpoint deleted, 13 version not supported, 14 machine identity in
# use by another running endpoint): see logs/smartendpoint.log for what to do.
[Unit]
Description=ISM endpoint (connects this network to the internal-scanning gateway)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=$INSTALL_DIR/bin/ism-endpoint --config $INSTALL_DIR/config/application.properties
WorkingDirectory=$INSTALL_DIR
Restart=always
RestartSec=5
RestartPreventExitStatus=10 11 12 13 14
KillSignal=SIGTERM
TimeoutStopSec=20
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
EOF
log "Wrote the service unit $UNIT"

if [ -z "$ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl enable "$SERVICE" >>"$LOG" 2>&1
  if [ "$START" -eq 1 ]; then
    systemctl restart "$SERVICE"
    log "Started the service: systemctl status $SERVICE"
  fi
else
  log "systemd is not running on this machine (or --root was given): the unit is installed at $UNIT but nothing was started."
  log "Start the endpoint yourself with: $INSTALL_DIR/bin/ism-endpoint --config $INSTALL_DIR/config/application.properties"
fi
log "Done. Logs: $INSTALL_DIR/logs/smartendpoint.log; status: $INSTALL_DIR/bin/ism-endpoint --config $INSTALL_DIR/config/application.properties status"
