#!/usr/bin/env bash
# Headless Chromium + chromedriver for the report's browser tests (Debian packages only:
# no browser download). Idempotent: does nothing when /usr/bin/chromium and
# /usr/bin/chromedriver are already there. Needs root (as on CI) or sudo.
set -euo pipefail
source "$(dirname "$0")/apt-install.sh"

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
apt_install chromium chromium-driver
/usr/bin/chromium --version
