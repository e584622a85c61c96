#!/usr/bin/env bash
# Creates bilevel's Conan 2 package and runs test_package against it, offline: the only
# network use is pip installing Conan into build/conan-venv (skipped when it is already
# there). Eigen, zlib (and xtensor, OpenBLAS for the with_xtensor variant) are Debian's,
# declared as [platform_requires] in conan/profiles/debian. Conan's state lives in
# build/conan-home (CONAN_HOME), never in ~/.conan2; test_package builds in
# build/conan-test-package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
conan_version=2.34.0
venv=$root/build/conan-venv
profile=conan/profiles/debian
start=$SECONDS

say() { echo "bilevel: $*"; }
elapsed() { echo "$((SECONDS - start))s"; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# Upstream version of a Debian package: epoch, Debian revision and +ds/.dfsg tags removed.
upstream() { dpkg-query -W -f='${Version}' "$1" | sed -E 's/^[0-9]+://; s/-[^-]*$//; s/[.+~](dfsg|ds).*$//'; }
apt_install() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo -n); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The Debian packages the profile stands for, at the versions it names.
check_platform() {  # check_platform <conan name> <debian package>...
  local name=$1 pkg v
  shift
  for pkg in "$@"; do
    if ! installed "$pkg"; then
      say "$pkg is not installed (scripts/install_deps.sh installs it)" >&2
      return 1
    fi
  done
  v=$(upstream "$1")
  if ! grep -qx "$name/$v" "$profile"; then
    say "$profile lists $(grep -E "^$name/" "$profile" || echo "no $name"), but Debian's $1 is $v; update the profile" >&2
    return 1
  fi
}
check_platform eigen libeigen3-dev
check_platform zlib zlib1g-dev
with_xtensor=1
if ! check_platform xtensor libxtensor-dev 2>/dev/null || ! check_platform openblas libopenblas-dev 2>/dev/null; then
  say "libxtensor-dev/libopenblas-dev missing or not at the profile's versions; skipping with_xtensor=True"
  with_xtensor=0
fi
gcc_major=$(gcc -dumpversion | cut -d. -f1)
if ! grep -qx "compiler.version=$gcc_major" "$profile"; then
  say "warning: gcc is $gcc_major but $profile says $(grep compiler.version= "$profile")" >&2
fi

# Conan in a virtual environment of its own.
if [ ! -x "$venv/bin/conan" ] || [ "$("$venv/bin/conan" --version 2>/dev/null)" != "Conan version $conan_version" ]; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    say "installing python3-venv"
    apt_install python3-venv
  fi
  if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  say "installing conan==$conan_version into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "conan==$conan_version"
fi
conan=$venv/bin/conan
export CONAN_HOME=$root/build/conan-home
"$conan" --version
if ! "$conan" profile path default >/dev/null 2>&1; then
  "$conan" profile detect >/dev/null 2>&1  # only so Conan has a default; we pass our own
fi

create() {
  say "conan create $* ($(elapsed) so far)"
  "$conan" create . --profile:all="$profile" --build=missing --no-remote \
    -c tools.cmake.cmake_layout:test_folder="$root/build/conan-test-package" "$@"
}
create
if [ "$with_xtensor" -eq 1 ]; then
  create -o "&:with_xtensor=True"
fi
variants="with_xtensor=False"
if [ "$with_xtensor" -eq 1 ]; then variants+=" and with_xtensor=True"; fi
echo "bilevel: conan package created and test_package passed ($variants, $(elapsed))"
