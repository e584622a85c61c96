#!/usr/bin/env bash
# Installs what bilevel needs to build and test, from Debian's packages; a no-op when all
# of it is already there, so the set-up scripts stay fast and idempotent.
set -euo pipefail
packages=(build-essential cmake g++ pkg-config ccache libeigen3-dev doctest-dev libxtensor-dev
          libbenchmark-dev libcli11-dev zlib1g-dev libopenblas-dev libopenmpi-dev openmpi-bin
          dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "bilevel: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
