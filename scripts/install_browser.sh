#!/usr/bin/env bash
# Installs Debian's Chromium for the headless browser test (tests/e2e/test_browser.py) when it is missing.
# Idempotent: does nothing when `chromium` is already on PATH. Needs root (or sudo). Never runs `playwright install`.
#
#     scripts/install_browser.sh
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v chromium)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "chromium is missing and installing it needs root (or sudo)" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
echo "chromium installed: $(command -v chromium)"
