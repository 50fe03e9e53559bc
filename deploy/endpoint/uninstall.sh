#!/usr/bin/env bash
# Uninstalls the ISM endpoint: stops and removes the service, then the installation folder (this
# script's parent's parent). Stopping the endpoint stops the scans currently using it.
#
# With --keep-identity the machine identity (data/machine.key) stays in the folder, so that
# install.sh --keep-identity on this machine can use the same endpoint key again: the gateway
# binds a key to the identity that first used it ("Token already registered" for any other).
set -euo pipefail
# `cd` below must go where it is told, silently.
unset CDPATH

SERVICE=ism-endpoint
ROOT=""
ASSUME_YES=0 KEEP_IDENTITY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2%/}"; shift 2 ;;
    --yes|-y) ASSUME_YES=1; shift ;;
    --keep-identity) KEEP_IDENTITY=1; shift ;;
    -h|--help) echo "Usage: uninstall.sh [--yes] [--keep-identity] [--root DIR]"; exit 0 ;;
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
  # An endpoint started by hand (no systemd): stop it through its status file, which an
  # installation that never ran does not have.
  pid=""
  if [ -f "$DEST/run/status.json" ]; then
    pid="$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$DEST/run/status.json" | head -n 1)"
  fi
  # grep -F: the folder's name is text, not a pattern (ism[1], ism.1).
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DEST/bin/ism-endpoint"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  fi
fi
IDENTITY="$DEST/data/machine.key"
if [ "$KEEP_IDENTITY" -eq 1 ] && [ -f "$IDENTITY" ]; then
  # find runs inside the folder with ./ paths: -path takes a pattern, and a folder named like
  # ism[1] must match itself (as $DEST/data would not), or the identity would be deleted too.
  (cd -- "$DEST" && find . -mindepth 1 ! -path ./data ! -path ./data/machine.key -delete)
  echo "The endpoint was uninstalled from $DEST; its machine identity is kept in $IDENTITY."
  echo "Install again with install.sh --keep-identity --install-dir $(printf '%q' "${DEST#"$ROOT"}") to use the same endpoint key on this machine."
else
  [ "$KEEP_IDENTITY" -eq 0 ] || echo "There is no machine identity to keep in $DEST (none was ever created)."
  rm -rf "$DEST"
  echo "The endpoint was uninstalled from $DEST."
fi
