#!/usr/bin/env bash
# apt_install PACKAGE...: install Debian packages as root or through sudo; one clear line
# when neither works. Sourced by the install-*.sh scripts.
apt_install() {
    local who="${0##*/}" sudo=""
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$who: no apt-get here; install $* yourself" >&2
        exit 1
    fi
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "$who: run as root (apt-get install -y $*)" >&2
            exit 1
        fi
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "$@" >/dev/null
}
