#!/usr/bin/env bash
# Installs the ISM endpoint on Linux as a systemd service that runs it continuously, or updates
# an existing installation in place (new binary, changed settings; the machine identity, and so
# the endpoint key's binding to this machine, is kept). With --keep-identity it installs into a
# folder where uninstall.sh --keep-identity left the machine identity, so the same endpoint key
# works again on this machine instead of "Token already registered".
#
# Asks for what is missing when run on a terminal; with --yes everything comes from flags (and,
# when updating, from the installed configuration). Everything it does is logged to
# <install-dir>/logs/endpointinstaller.log. A fresh install that does not finish removes what it
# created, so that running it again works; an update never loses the installed files.
set -euo pipefail

# Everything this script creates is owner-only unless it says otherwise (install -m, chmod, the
# umask 022 subshells below): the properties file holds the endpoint key from the moment it
# exists, and a caller's lax umask (000) must not leave the binary's folder or the unit writable
# by others while root runs them.
umask 077
# `cd` below must go where it is told, silently.
unset CDPATH

SERVICE=ism-endpoint
INSTALL_DIR=/opt/ism-endpoint
ROOT=""
BINARY="$(cd "$(dirname "$0")" && pwd)/ism-endpoint"
KEY="" KEY_FILE="" GATEWAY="" GATEWAY_CA="" ALLOWED="" WS_PATH=""
PROXY_HOST="" PROXY_PORT="" PROXY_SCOPE="" PROXY_RESOLVE_GATEWAY="" PROXY_RESOLVE_URLS="" PROXY_EXCLUSIONS=""
PROXY_USER="" PROXY_PASSWORD_FILE=""
ASSUME_YES=0 START=1 CHECK_KEY=1 KEEP_IDENTITY=0

usage() {
  cat <<'EOF'
Usage: install.sh [options]
  --install-dir DIR           where to install (default /opt/ism-endpoint)
  --key KEY                   the endpoint key (Copy Endpoint Key on the gateway page); visible
                              to other users in ps and kept in shell history: prefer --key-file
  --key-file FILE             read the endpoint key from the first line of FILE (- for stdin)
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
Environment:
  ISM_TOKEN                   the endpoint key, when neither --key nor --key-file is given
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
    --key-file) KEY_FILE="$2"; shift 2 ;;
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

# The key, the most explicit source first: --key, --key-file (kept out of ps and shell
# history), ISM_TOKEN; when updating, the installed one (below); on a terminal, asked for.
if [ -n "$KEY_FILE" ]; then
  [ -z "$KEY" ] || die "give the endpoint key once: --key or --key-file, not both"
  if [ "$KEY_FILE" = - ]; then
    IFS= read -r KEY || true
  else
    # Not -f: a pipe such as --key-file <(pass show ism) is fine too.
    if [ ! -r "$KEY_FILE" ] || [ -d "$KEY_FILE" ]; then die "cannot read the endpoint key file $KEY_FILE"; fi
    IFS= read -r KEY <"$KEY_FILE" || true
  fi
  # Trimmed: a file saved on Windows ends its line with CR, an editor may add spaces.
  KEY="${KEY#"${KEY%%[![:space:]]*}"}"; KEY="${KEY%"${KEY##*[![:space:]]}"}"
  [ -n "$KEY" ] || die "the endpoint key file $KEY_FILE is empty"
elif [ -z "$KEY" ] && [ -n "${ISM_TOKEN:-}" ]; then
  KEY="$ISM_TOKEN"
fi
# The endpoint reads ISM_TOKEN over its file: the key check below must check the key written.
unset ISM_TOKEN

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
# The unit names the folder: systemd can quote spaces and escape '%' and '$' (below), but not
# these.
case "$INSTALL_DIR" in
  *[[:cntrl:]\"\\]*) die "Invalid installation folder: $INSTALL_DIR must not contain quotes, backslashes or control characters" ;;
esac
DEST="$ROOT$INSTALL_DIR"
PROPS="$DEST/config/application.properties"
UNIT="$ROOT/etc/systemd/system/$SERVICE.service"

# An empty or new folder, an existing installation to update, or the machine identity an
# uninstall kept (data/machine.key alone); nothing else.
IDENTITY="$DEST/data/machine.key"
# find runs inside the folder with ./ paths: -path takes a pattern, and a folder named like
# ism[1] must match itself, not ism1.
only_identity() {
  [ -f "$IDENTITY" ] && [ -z "$(cd -- "$DEST" && find . -mindepth 1 ! -path ./data ! -path ./data/machine.key -print -quit)" ]
}
# Removes everything in the folder but the machine identity (data/machine.key).
keep_only_identity() {
  (cd -- "$DEST" && find . -mindepth 1 ! -path ./data ! -path ./data/machine.key -delete)
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

# From here on, an install that does not finish (an error, Ctrl-C, a failed command under set -e)
# undoes what it did, so that the folder does not block the next run ("not empty and holds no
# endpoint installation"):
# - a fresh install removes the folder it created (or empties the empty folder it was given) and
#   the unit it wrote, except a machine identity the key check bound the key to: that is kept,
#   and the next run installs with it (--keep-identity) instead of "Token already registered";
# - an install with a kept identity leaves the identity alone again;
# - an update removes only its temporary files: the installed files stay as they were.
FINISHED=0 KEY_BOUND=0 ENABLED=0 DEST_EXISTED=0 UNIT_EXISTED=0 CREATED_TOP=""
[ ! -e "$UNIT" ] || UNIT_EXISTED=1
if [ -d "$DEST" ]; then
  DEST_EXISTED=1
else
  # The highest folder this run creates, so that a rollback removes the parents it made too.
  CREATED_TOP="$DEST"
  while [ ! -e "$(dirname -- "$CREATED_TOP")" ]; do CREATED_TOP="$(dirname -- "$CREATED_TOP")"; done
fi
# An update replaces the binary, the gateway's CA, the proxy credentials, the properties and the
# unit, some before the key check can fail; each is kept beside it (as <file>.previous) until the
# update finishes, and put back if it does not.
PREVIOUS=("$DEST/bin/ism-endpoint" "$DEST/config/gateway-ca.pem" "$DEST/config/proxy-credentials"
  "$PROPS" "$UNIT")
SAVED=0
keep_previous() {
  local f
  for f in "${PREVIOUS[@]}"; do
    rm -f -- "$f.previous" # a leftover of a run that was killed is not this run's
    if [ -f "$f" ]; then ln -f -- "$f" "$f.previous"; fi
  done
  SAVED=1
}
# Only what this run saved: a leftover of an earlier run is not put back.
restore_previous() {
  local f
  [ "$SAVED" -eq 1 ] || return 0
  for f in "${PREVIOUS[@]}"; do
    if [ ! -f "$f.previous" ]; then continue; fi
    # Not replaced yet: the two names are one file, which mv refuses to move onto itself.
    if [ "$f" -ef "$f.previous" ]; then rm -f -- "$f.previous"; else mv -f -- "$f.previous" "$f"; fi
  done
}
forget_previous() {
  local f
  for f in "${PREVIOUS[@]}"; do rm -f -- "$f.previous"; done
}
rollback() {
  local status=$? d
  trap - EXIT INT TERM
  if [ "$FINISHED" -eq 1 ]; then exit "$status"; fi
  [ "$interactive" -eq 0 ] || stty echo 2>/dev/null || true # Ctrl-C at the password prompt
  # Whatever fails here, the rest of the rollback runs.
  rm -f -- "$DEST/bin/ism-endpoint.new" "$UNIT.new" 2>/dev/null || true
  [ -z "${NEW:-}" ] || rm -f -- "$NEW" || true
  # The unit this run wrote (a unit that was there before is not this run's to remove).
  if [ "$UPDATE" -eq 0 ] && [ "$UNIT_EXISTED" -eq 0 ] && [ -e "$UNIT" ]; then
    if [ "$ENABLED" -eq 1 ]; then systemctl disable --now "$SERVICE" >/dev/null 2>&1 || true; fi
    rm -f -- "$UNIT"
    if [ "$ENABLED" -eq 1 ]; then systemctl daemon-reload >/dev/null 2>&1 || true; fi
  fi
  if [ "$UPDATE" -eq 1 ]; then
    restore_previous || true
    echo "The update did not finish: the installation in $INSTALL_DIR is left as it was." >&2
  elif [ "$KEPT" -eq 1 ] || { [ "$KEY_BOUND" -eq 1 ] && [ -f "$IDENTITY" ]; }; then
    keep_only_identity || true
    if [ "$KEPT" -eq 1 ]; then
      echo "The installation did not finish: $INSTALL_DIR holds only the kept machine identity again." >&2
    else
      echo "The installation did not finish. The endpoint key was validated and is now bound to this machine's identity, which is kept in $INSTALL_DIR/data/machine.key: run install.sh again with --keep-identity to install with the same key." >&2
    fi
  elif [ "$DEST_EXISTED" -eq 1 ]; then
    (cd -- "$DEST" && find . -mindepth 1 -delete) || true
    echo "The installation did not finish: removed what it created in $INSTALL_DIR." >&2
  else
    rm -rf -- "$DEST"
    d="$(dirname -- "$DEST")"
    while [ "$d" != "$(dirname -- "$CREATED_TOP")" ] && rmdir -- "$d" 2>/dev/null; do d="$(dirname -- "$d")"; done
    echo "The installation did not finish: removed $INSTALL_DIR." >&2
  fi
  exit "$status"
}
trap rollback EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Folders: readable by all as before (status and logs for operators, the binary), but never
# writable by others whatever the caller's umask; the machine identity's folder owner-only.
(umask 022 && mkdir -p -- "$DEST" && mkdir -p -- "$DEST"/{bin,config,logs,run,uninstall})
[ -d "$DEST/data" ] || mkdir -m 0700 -- "$DEST/data"
LOG="$DEST/logs/endpointinstaller.log"
log() { echo "$*"; echo "$(date -u '+%F %T') INFO - $*" >>"$LOG"; }
log "Installing the endpoint in $INSTALL_DIR$([ -n "$ROOT" ] && echo " (below $ROOT)")$([ "$UPDATE" -eq 1 ] && echo ": updating the existing installation")$([ "$KEPT" -eq 1 ] && echo ", with the machine identity kept there")"

# When updating, what is not given keeps its installed value.
# A key ends at '=', ':' or a blank, as the endpoint (and Java) reads it; a byte-order mark that a
# Windows editor put before the first key is not part of it.
current() {
  sed -n -e '1s/^\xef\xbb\xbf//' -e "s/^[[:space:]]*$1\([[:space:]]*[=:]\|[[:space:]]\)[[:space:]]*//p" "$PROPS" 2>/dev/null | tail -n 1
}
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
[ -n "$KEY" ] || die "the endpoint key is required (--key-file, --key or ISM_TOKEN)"
[ -n "$GATEWAY" ] || die "the gateway address is required (--gateway)"
case "${WS_PATH:=/wsendpoint}" in
  *[[:space:]]*|[!/]*) die "--ws-path must be a path starting with '/' without spaces, not '$WS_PATH'" ;;
esac
if [ -n "$PROXY_HOST$PROXY_PORT" ] && { [ -z "$PROXY_HOST" ] || [ -z "$PROXY_PORT" ]; }; then
  die "Proxy settings errors: give both --proxy-host and --proxy-port"
fi

# The binary: replaced atomically, so an update never leaves half a file.
[ "$UPDATE" -eq 0 ] || keep_previous
install -m 0755 "$BINARY" "$DEST/bin/ism-endpoint.new" && mv -f "$DEST/bin/ism-endpoint.new" "$DEST/bin/ism-endpoint"
log "Installed $("$DEST/bin/ism-endpoint" --version)"
if [ -n "$GATEWAY_CA" ]; then
  install -m 0644 "$GATEWAY_CA" "$DEST/config/gateway-ca.pem"
  GATEWAY_CA_KEEP="config/gateway-ca.pem"
fi

# The properties file. The keys the installer decides get its values; on an update every other
# line the operator wrote (diagnostic*, maxStreams, logDir, websocketProtocol = ws, comments, ...)
# stays as it was, in its place, and the defaults below are written only when the file has none.
OWNED=(token gateway wsendpoint gatewayCaFile allowedTargets proxyHost proxyPort proxyScope
  proxyResolveGatewayHostname proxyResolveUrlHostname proxyExclusionList)
declare -A DEFAULTS=([websocketProtocol]=wss [socketConnectionTimeoutMs]=5000 [socketReadTimeoutMs]=5000)
ORDER=(token gateway websocketProtocol wsendpoint socketConnectionTimeoutMs socketReadTimeoutMs
  gatewayCaFile allowedTargets proxyHost proxyPort proxyScope proxyResolveGatewayHostname
  proxyResolveUrlHostname proxyExclusionList)
declare -A VALUES=([token]="$KEY" [gateway]="$GATEWAY" [wsendpoint]="$WS_PATH"
  [gatewayCaFile]="${GATEWAY_CA_KEEP:-}" [allowedTargets]="$ALLOWED" [proxyExclusionList]="$PROXY_EXCLUSIONS")
if [ -n "$PROXY_HOST" ]; then
  VALUES+=([proxyHost]="$PROXY_HOST" [proxyPort]="$PROXY_PORT" [proxyScope]="$PROXY_SCOPE"
    [proxyResolveGatewayHostname]="$PROXY_RESOLVE_GATEWAY" [proxyResolveUrlHostname]="$PROXY_RESOLVE_URLS")
fi
for k in "${!VALUES[@]}"; do
  # A line break in a value would write a second setting of the caller's choosing.
  case "${VALUES[$k]}" in *[$'\n\r']*) die "the value for $k must be on one line" ;; esac
  [ -n "${VALUES[$k]}" ] || unset "VALUES[$k]"
done
# key_of LINE: the key as the endpoint reads it (up to the first '=', ':' or blank, as in Java
# properties); nothing for a blank line or a comment (# or !).
key_of() {
  local t="${1#"${1%%[![:space:]]*}"}"
  case "$t" in ''|'#'*|'!'*) return 0 ;; esac
  printf '%s' "${t%%[=:[:blank:]$'\f']*}"
}
owned() { local k; for k in "${OWNED[@]}"; do [ "$k" != "$1" ] || return 0; done; return 1; }
# The file as the installer writes it, on stdout.
properties() {
  local line key k n=0
  declare -A written=() last=()
  echo "# written by install.sh on $(date -u '+%F %T') UTC"
  if [ "$UPDATE" -eq 1 ]; then
    # The endpoint refuses a key set twice; the last line is the one that was meant (as in Java
    # properties, and as current() reads it), so an update keeps only that one.
    while IFS= read -r line || [ -n "$line" ]; do
      n=$((n + 1)); [ "$n" -ne 1 ] || line="${line#$'\xef\xbb\xbf'}"
      key="$(key_of "$line")"
      [ -z "$key" ] || last[$key]=$n
    done <"$PROPS"
    n=0
    while IFS= read -r line || [ -n "$line" ]; do
      # The byte-order mark goes: the file starts with the installer's comment now.
      n=$((n + 1)); [ "$n" -ne 1 ] || line="${line#$'\xef\xbb\xbf'}"
      key="$(key_of "$line")"
      case "$line" in '# written by install.sh on '*) continue ;; esac
      if [ -n "$key" ] && owned "$key"; then
        # In its place, once; dropped when the installer no longer writes it.
        if [ -n "${VALUES[$key]+set}" ] && [ -z "${written[$key]+set}" ]; then
          echo "$key = ${VALUES[$key]}"
        fi
      elif [ -n "$key" ] && [ "${last[$key]}" -ne "$n" ]; then
        echo "$(date -u '+%F %T') INFO - $key was set twice in application.properties: kept its last line (${last[$key]})" >>"$LOG"
      else
        echo "$line"
      fi
      [ -z "$key" ] || written[$key]=1
    done <"$PROPS"
  fi
  for k in "${ORDER[@]}"; do
    [ -z "${written[$k]+set}" ] || continue
    if [ -n "${VALUES[$k]+set}" ]; then echo "$k = ${VALUES[$k]}"
    elif [ -n "${DEFAULTS[$k]+set}" ]; then echo "$k = ${DEFAULTS[$k]}"; fi
  done
}
NEW="$PROPS.new"
properties >"$NEW"
# Group-readable for root's group, as before; never world-readable (it holds the key).
chmod 0640 "$NEW"

# The proxy credentials, stored by the endpoint itself (owner-only), and the key check: the
# endpoint connects once (through the proxy when there is one), which also binds the key to
# this machine. It runs under the umask systemd gives the service (022): the files it creates
# (smartendpoint.log, status.json) get the modes they get when the service creates them, and
# the secret ones are owner-only whatever the umask (machine.key, proxy-credentials).
ENDPOINT=(run_endpoint --config "$NEW")
run_endpoint() { (umask 022 && exec "$DEST/bin/ism-endpoint" "$@"); }
if [ -n "$PROXY_USER" ]; then
  [ -n "$PROXY_HOST" ] || die "Proxy settings errors: --proxy-user needs --proxy-host and --proxy-port"
  if [ -n "$PROXY_PASSWORD_FILE" ]; then
    PROXY_PASSWORD="$(head -n 1 "$PROXY_PASSWORD_FILE")"
  elif [ "$interactive" -eq 1 ]; then
    read -r -s -p "Proxy password: " PROXY_PASSWORD; echo
  else
    die "Proxy settings errors: the proxy password is required (--proxy-password-file)"
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
  # The gateway has bound the key to data/machine.key: from here a failed install keeps it.
  KEY_BOUND=1
  log "The key validated"
else
  log "The key was not checked (--skip-key-check): the endpoint checks it when it starts"
fi
mv -f "$NEW" "$PROPS"
log "Wrote $INSTALL_DIR/config/application.properties"

# The uninstaller lives with the installation.
install -m 0755 "$(cd "$(dirname "$0")" && pwd)/uninstall.sh" "$DEST/uninstall/uninstall.sh"

# The unit. systemd reads '%' as a specifier everywhere and '$' as a variable in ExecStart's
# arguments, and splits words at spaces: sd_word escapes both and quotes a word that needs it.
sd_word() { # sd_word TEXT [arg]
  local w="${1//%/%%}"
  [ "${2:-}" != arg ] || w="${w//\$/\$\$}"
  case "$w" in *[!A-Za-z0-9/._+-]*) printf '"%s"' "$w" ;; *) printf '%s' "$w" ;; esac
}
# A path setting of the installed file, absolute (the endpoint reads relative ones against the
# install folder), or nothing.
setting_path() {
  local v
  v="$(current "$1")"
  case "$v" in '') ;; /*) printf '%s' "$v" ;; *) printf '%s' "$INSTALL_DIR/$v" ;; esac
}
# Hardening: the endpoint (root, which it needs for none of its own work but keeps so that an
# update of an existing installation and its root-owned files changes nothing) sees the whole
# file system read-only except what it writes: data/ (the machine identity, created on first
# use), logs/ (smartendpoint.log and its rotation), run/ (status.json, written through a
# temporary file), plus the folders of a logDir, statusFile or machineKeyFile set by hand ('-':
# skipped if missing rather than failing the start). config/ stays read-only: only
# --authenticate, run by this installer, writes there.
WRITABLE="$(sd_word "$INSTALL_DIR/data") $(sd_word "$INSTALL_DIR/logs") $(sd_word "$INSTALL_DIR/run")"
USED=("$INSTALL_DIR")
for k in logDir statusFile machineKeyFile; do
  p="$(setting_path "$k")"
  [ -n "$p" ] || continue
  [ "$k" = logDir ] || p="$(dirname -- "$p")"
  case "$p" in "$INSTALL_DIR"/data|"$INSTALL_DIR"/logs|"$INSTALL_DIR"/run) continue ;; esac
  case "$p" in *[[:cntrl:]\"\\]*) die "$k: $p must not contain quotes, backslashes or control characters" ;; esac
  WRITABLE="$WRITABLE $(sd_word "-$p")"
  USED+=("$p")
done
for k in gatewayCaFile proxyCredentialsFile; do USED+=("$(setting_path "$k")"); done
# ProtectHome=yes hides /home, /root and /run/user entirely, and ReadWritePaths= cannot reopen a
# folder below them: an endpoint that keeps files there gets them read-only instead.
PROTECT_HOME=yes
for p in "${USED[@]}"; do
  case "$p" in /home|/home/*|/root|/root/*|/run/user|/run/user/*) PROTECT_HOME=read-only ;; esac
done
(umask 022 && mkdir -p -- "$(dirname -- "$UNIT")")
# Written beside it and renamed: an update keeps the unit it replaces as a link until it finishes.
cat >"$UNIT.new" <<EOF
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
ExecStart=$(sd_word "$INSTALL_DIR/bin/ism-endpoint") --config $(sd_word "$INSTALL_DIR/config/application.properties" arg)
WorkingDirectory=${INSTALL_DIR//%/%%}
Restart=always
RestartSec=5
RestartPreventExitStatus=10 11 12 13 14
KillSignal=SIGTERM
TimeoutStopSec=20
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=$WRITABLE
ProtectHome=$PROTECT_HOME
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes

[Install]
WantedBy=multi-user.target
EOF
chmod 0644 "$UNIT.new"
mv -f -- "$UNIT.new" "$UNIT"
log "Wrote the service unit $UNIT"

if [ -z "$ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  ENABLED=1
  systemctl enable "$SERVICE" >>"$LOG" 2>&1
  if [ "$START" -eq 1 ]; then
    systemctl restart "$SERVICE"
    log "Started the service: systemctl status $SERVICE"
  fi
else
  log "systemd is not running on this machine (or --root was given): the unit is installed at $UNIT but nothing was started."
  log "Start the endpoint yourself with: $(printf '%q' "$INSTALL_DIR/bin/ism-endpoint") --config $(printf '%q' "$INSTALL_DIR/config/application.properties")"
fi
log "Done. Logs: $INSTALL_DIR/logs/smartendpoint.log; status: $(printf '%q' "$INSTALL_DIR/bin/ism-endpoint") --config $(printf '%q' "$INSTALL_DIR/config/application.properties") status"
forget_previous
FINISHED=1
