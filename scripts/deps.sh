#!/usr/bin/env bash
# scripts/deps.sh - install the Debian packages mapper needs that are missing.
# Does nothing when all are present. Needs root or sudo to install.
set -euo pipefail
pkgs=(gcc make pkg-config libpq-dev libzmq3-dev libmsgpack-dev libcmocka-dev
      postgresql postgresql-client jq clang-format procps tmux
      clang libclang-rt-dev stress-ng man-db groff-base)
missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
