#!/usr/bin/env bash
# Installs every Debian package dfkd needs, by name. Idempotent: when all are
# present it only checks (well under a second) and installs nothing.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build ccache pkg-config curl
  libtorch-dev libgloo-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libpqxx-dev postgresql openssl libssl-dev
  prometheus-cpp-dev prometheus
  nlohmann-json3-dev libcli11-dev libgtest-dev zlib1g-dev libopencv-dev
  dataset-fashion-mnist python3-torch visp-images-data
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
