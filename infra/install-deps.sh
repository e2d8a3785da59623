#!/usr/bin/env bash
# install-deps.sh -- install every Debian package herald's build, local stack,
# tests and benchmarks need.  Idempotent: quiet and fast when all is present.
# Must run as root on Debian 12 (bookworm); a non-root user with everything
# already installed gets a clean pass.
set -euo pipefail

PKGS=(
  # toolchain
  build-essential cmake pkg-config git clang ca-certificates
  # required libraries
  libpq-dev libzmq3-dev libjemalloc-dev libcurl4-openssl-dev libssl-dev check
  # chosen libraries (see docs/dependencies.md)
  libjansson-dev libmicrohttpd-dev libyaml-dev libical-dev
  # embedded local stack and tests: PostgreSQL server binaries, smtp-sink
  postgresql-15 postfix tzdata procps curl
  # the scenario driver (infra/scenarios.sh) reads JSON answers
  jq
  # load generator for benchmarks
  wrk
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# postfix is only needed for its smtp-sink/smtp-source programs: keep the
# postfix mail system itself unconfigured and never started as a service.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
# postgresql-common would create and start a system cluster; herald runs its
# own clusters, so tell it not to create one.
mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ] || ! grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf; then
  echo "create_main_cluster = false" >> /etc/postgresql-common/createcluster.conf
fi
apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${missing[@]}" >/dev/null
echo "install-deps: done"
