#!/usr/bin/env bash
# demo.sh -- herald's first command (README): install what is missing, build,
# start the embedded local stack and run the main job.
#
# The local stack keeps its data under HERALD_DATA_DIR (default
# /var/lib/herald as root, ~/.local/share/herald otherwise) and stays up
# afterwards; stop it with `build/infra/ctl/heraldctl local stop`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

bash infra/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -Wno-dev >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

HC=build/infra/ctl/heraldctl
echo "== starting the embedded PostgreSQL"
$HC local start >/dev/null
echo "== migrating"
$HC migrate
echo "== main job: a demo agency with two tenants"
if ! $HC agency list | grep -q '^demo '; then
  $HC agency create demo --name "Demo Agency"
fi
for t in brand-one brand-two; do
  if ! $HC tenant list demo | grep -q "^$t "; then
    $HC tenant create demo "$t" --name "Demo ${t^}"
  fi
done
if ! $HC apikey list demo | grep -qE ' - +agency '; then
  echo "agency API key for 'demo' (keep it; it is shown only once):"
  $HC apikey create demo --name demo-agency-key
fi
echo
$HC agency list
echo
$HC tenant list demo
echo
$HC status
echo
echo "local stack is running; stop it with: $HC local stop"
