#!/usr/bin/env bash
# Uninstalls the ISM endpoint: stops and removes the service, then the installation folder (this
# script's parent's parent). Stopping the endpoint stops the scans currently using it.
set -euo pipefail

SERVICE=ism-endpoint
ROOT=""
ASSUME_YES=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2%/}"; shift 2 ;;
    --yes|-y) ASSUME_YES=1; shift ;;
    -h|--help) echo "Usage: uninstall.sh [--yes] [--root DIR]"; exit 0 ;;
    *) echo "ERROR - unknown option $1" >&2; exit 2 ;;
  esac
done

DEST="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f "$DEST/config/application.properties" ] || [ ! -x "$DEST/bin/ism-endpoint" ]; then
  echo "ERROR - $DEST is not an endpoint installation; nothing removed" >&2
  exit 2
fi
if [ "$ASSUME_YES" -eq 0 ]; then
  read -r -p "Uninstall the endpoint in $DEST? Scans using it will stop. [y/N]: " answer
  case "$answer" in y|Y|yes|YES) ;; *) echo "Nothing removed."; exit 1 ;; esac
fi

UNIT="$ROOT/etc/systemd/system/$SERVICE.service"
if [ -z "$ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now "$SERVICE" 2>/dev/null || true
  rm -f "$UNIT"
  systemctl daemon-reload
else
  rm -f "$UNIT"
  # An endpoint started by hand (no systemd): stop it through its status file.
  pid="$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$DEST/run/status.json" 2>/dev/null | head -n 1)"
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$DEST/bin/ism-endpoint"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  fi
fi
rm -rf "$DEST"
echo "The endpoint was uninstalled from $DEST."
