#!/usr/bin/env bash
# demo.sh -- herald's first command (README): install what is missing, build,
# start the embedded local stack and run the main job: a batch through both
# lanes for two tenants, then the four scenarios of DESIGN.md (infra/scenarios.sh).
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
echo "== starting the local stack (PostgreSQL, scheduler, workers, provider simulator, smtp-sink)"
bash infra/stack.sh start
echo "== main job: a demo agency with two tenants"
if ! $HC agency list | grep -q '^demo '; then
  $HC agency create demo --name "Demo Agency"
fi
for t in brand-one brand-two; do
  if ! $HC tenant list demo | grep -q "^$t "; then
    $HC tenant create demo "$t" --name "Demo ${t^}"
  fi
  # Providers: email through SMTP to the local smtp-sink, the rest over HTTP to the simulator.
  $HC provider set "$t" mail --channel email --transport smtp \
    --config '{"url":"smtp://127.0.0.1:'"${HERALD_STACK_SMTP_PORT:-2525}"'"}' >/dev/null
  for ch in sms messenger push webhook; do
    $HC provider set "$t" "$ch-gw" --channel "$ch" --transport http \
      --config '{"url":"http://127.0.0.1:'"${HERALD_STACK_SIM_PORT:-7780}"'/v1/send/'"$ch"'/'"$t"'"}' \
      --secret '{"headers":{"Authorization":"Bearer demo-'"$t"'"}}' >/dev/null
  done
done
if ! $HC apikey list demo | grep -qE ' - +agency '; then
  echo "agency API key for 'demo' (keep it; it is shown only once):"
  $HC apikey create demo --name demo-agency-key
fi

echo "== sending a demo batch through both lanes"
EMAIL='{"from":"Demo <news@demo.example>","subject":"Hello {{ name | default: \"friend\" }}","text":"Hi {{ name | default: \"friend\" }}, this is message {{ n }}.","html":"<p>Hi <b>{{ name | default: \"friend\" }}</b></p>"}'
SMS='{"text":"Your code is {{ code }}"}'
for t in brand-one brand-two; do
  $HC send "$t" --provider mail --channel email --lane bulk --count 2000 \
    --to-pattern "reader%d@$t.example" --content "$EMAIL" --data '{"name":"Reader","n":1}'
  $HC send "$t" --provider sms-gw --channel sms --lane transactional --count 20 \
    --to-pattern "+1555000%04d" --content "$SMS" --data '{"code":"4711"}'
  $HC send "$t" --provider messenger-gw --channel messenger --lane bulk --count 200 \
    --to-pattern "+1555100%04d" --content '{"text":"Sale starts now"}'
  $HC send "$t" --provider push-gw --channel push --lane transactional --count 10 \
    --to-pattern "device-token-%d" --content '{"title":"Order shipped","body":"On its way"}'
done

DSN=$($HC local start)
echo "== waiting for every message to have its result"
for _ in $(seq 1 120); do
  left=0
  for t in brand-one brand-two; do
    s=t_${t//-/_}
    n=$(psql "$DSN" -Atc "SELECT (SELECT coalesce(sum(cardinality(addresses)),0) FROM $s.outbox) - (SELECT count(*) FROM $s.results)")
    left=$((left + n))
  done
  [ "$left" -eq 0 ] && break
  sleep 1
done
echo
for t in brand-one brand-two; do
  s=t_${t//-/_}
  echo "results of tenant $t (this run and earlier ones):"
  psql "$DSN" -c "SELECT o.channel, o.lane, r.status, count(*) AS messages, round(avg(r.latency_us) / 1000.0, 2) AS avg_send_ms
                  FROM $s.results r JOIN $s.outbox o ON o.id = r.message_id / 4096
                  GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
done
echo "provider simulator saw:"
curl -s "http://127.0.0.1:${HERALD_STACK_SIM_PORT:-7780}/v1/stats" | head -c 600; echo
echo
echo "== the four scenarios of DESIGN.md through the API (herald time moves forward where they wait for days)"
set +e
bash infra/scenarios.sh
rc=$?
set -e
echo
$HC status
echo
echo "the local stack is running (API on http://127.0.0.1:${HERALD_STACK_API_PORT:-7700}); stop it with: bash infra/stack.sh stop"
exit $rc
