#!/usr/bin/env bash
# Headless Chromium + chromedriver for the report's browser tests (Debian packages only:
# no browser download). Idempotent: does nothing when /usr/bin/chromium and
# /usr/bin/chromedriver are already there. Needs root (as on CI) or sudo.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get here; install chromium and chromedriver yourself" >&2
    exit 1
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-browser: run as root (apt-get install -y chromium chromium-driver)" >&2
        exit 1
    fi
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version
