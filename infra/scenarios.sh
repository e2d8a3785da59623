#!/usr/bin/env bash
# scenarios.sh -- the four scenarios of DESIGN.md, end to end through herald's
# public API, against a running stack (infra/stack.sh): what a client
# marketer and a client developer would do, with herald time moved forward
# (`heraldctl clock advance`) where a scenario waits for days.
#
#   bash infra/scenarios.sh            # all four
#   bash infra/scenarios.sh 1 3        # some
#
# Each scenario makes its own tenant (a fresh slug per run) under agency
# `scenarios`, checks what must hold (every check prints ok/FAIL), and ends
# with a short report.  The last line is "N passed, N failed"; the exit status
# is 0 only when nothing failed.
#
# Environment: HERALD_API (default http://127.0.0.1:7700), HERALD_SIM (the
# provider simulator, started with --inbox; default http://127.0.0.1:7780),
# HERALD_SMTP (smtp-sink, default 127.0.0.1:2525), HERALDCTL (default
# build/infra/ctl/heraldctl) with the same HERALD_* settings as the stack.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
API=${HERALD_API:-http://127.0.0.1:7700}
SIM=${HERALD_SIM:-http://127.0.0.1:7780}
SMTP=${HERALD_SMTP:-127.0.0.1:2525}
CTL=${HERALDCTL:-$ROOT/build/infra/ctl/heraldctl}
RUNID=${HERALD_SCENARIO_RUN:-$(date +%s | tail -c 7)}
if [ "$(id -u)" -eq 0 ]; then DATA=${HERALD_DATA_DIR:-/var/lib/herald}; else DATA=${HERALD_DATA_DIR:-$HOME/.local/share/herald}; fi
MAIL=${HERALD_MAIL_DIR:-$DATA/stack/mail}  # smtp-sink's dump of every email (infra/stack.sh)
TMP=$(mktemp -d /tmp/herald-scenarios.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
KEY=""      # the key calls use (set per scenario)
STATUS=0    # the last call's HTTP status
BODY=""     # the last call's body

say() { printf '%s\n' "$*"; }
ok() { passed=$((passed + 1)); say "  ok    $1"; }
bad() { failed=$((failed + 1)); say "  FAIL  $1"; }
# check DESCRIPTION COMMAND...: the command's exit status decides.
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
eq() { [ "$1" = "$2" ] || { say "        got '$1', want '$2'"; return 1; }; }

# call METHOD PATH [JSON] -> STATUS, BODY
call() {
  local args=(-s -o "$TMP/body" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $KEY")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  STATUS=$(curl "${args[@]}" "$API$2")
  BODY=$(cat "$TMP/body")
}
j() { printf '%s' "$BODY" | jq -r "$1"; }
# expect STATUS DESCRIPTION: the last call answered that status.
expect() {
  if [ "$STATUS" = "$1" ]; then ok "$2"; else bad "$2 (HTTP $STATUS, want $1: $(printf '%s' "$BODY" | head -c 300))"; fi
}

# wait_for SECONDS COMMAND...: until the command succeeds.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -ge $end ] && return 1
    sleep 0.2
  done
}

advance() { "$CTL" clock advance "$1" >/dev/null || { bad "heraldctl clock advance $1"; return 1; }; }

# Texts the provider simulator received for a recipient, newest first, one per line.
inbox() { curl -s "$SIM/v1/inbox/$(printf '%s' "$1" | jq -sRr @uri)" | jq -r '.messages[].text' 2>/dev/null; }
inbox_count() { inbox "$1" | grep -c "${2:-.}" || true; }
inbox_has() { inbox "$1" | grep -q "$2"; }

# Emails smtp-sink kept for an address (newest first), quoted-printable soft breaks undone.
mail_files() { grep -rlsF "To: <$1>" "$MAIL" 2>/dev/null | xargs -r ls -t 2>/dev/null; }
mail_count() { mail_files "$1" | wc -l; }
mail_has() { local f; for f in $(mail_files "$1"); do qp <"$f" | grep -q "$2" && return 0; done; return 1; }
qp() { sed -e ':a' -e '/=\r\?$/{N;s/=\r\?\n//;ba}' -e 's/=3D/=/g' -e 's/\r$//'; }
# The first tracked link of the newest email to an address matching a text.
mail_link() {
  local f
  for f in $(mail_files "$1"); do
    if qp <"$f" | grep -q "$2"; then qp <"$f" | grep -oE 'https?://[^" ]*/v1/t/click/[A-Za-z0-9_.~-]+' | head -1; return; fi
  done
}
mail_pixel() {
  local f
  for f in $(mail_files "$1"); do
    if qp <"$f" | grep -q "$2"; then qp <"$f" | grep -oE 'https?://[^" ]*/v1/t/open/[A-Za-z0-9_.~-]+' | head -1; return; fi
  done
}

# The agency every scenario's tenant belongs to, and its key (created once per stack).
agency_key() {
  local f="$DATA/scenarios-agency-key"
  if [ -s "$f" ] && KEY=$(cat "$f") &&
    call GET /v1/tenants && [ "$STATUS" = 200 ]; then
    return 0
  fi
  "$CTL" agency list | grep -q '^scenarios ' || "$CTL" agency create scenarios --name "Scenario runs" >/dev/null
  KEY=$("$CTL" apikey create scenarios --name scenarios 2>/dev/null) || return 1
  (umask 077; printf '%s' "$KEY" >"$f")
}

# new_tenant SLUG SETTINGS_JSON: create it with providers for every channel; KEY = its full key.
new_tenant() {
  local slug=$1 settings=$2
  agency_key || { bad "agency key"; return 1; }
  local agency=$KEY
  call POST /v1/tenants "{\"slug\":\"$slug\",\"name\":\"$slug\",\"settings\":$settings}"
  expect 201 "tenant $slug created" || true
  call PUT "/v1/tenants/$slug/providers/mail" \
    "{\"channel\":\"email\",\"transport\":\"smtp\",\"config\":{\"url\":\"smtp://$SMTP\"}}"
  for ch in sms messenger push webhook; do
    call PUT "/v1/tenants/$slug/providers/$ch" \
      "{\"channel\":\"$ch\",\"transport\":\"http\",\"config\":{\"url\":\"$SIM/v1/send/$ch/$slug\"},\"secret\":{\"headers\":{\"Authorization\":\"Bearer t\"}}}"
  done
  [ "$STATUS" = 200 ] || [ "$STATUS" = 201 ] || { bad "providers of $slug (HTTP $STATUS: $BODY)"; return 1; }
  call POST "/v1/tenants/$slug/keys" '{"scope":"full","name":"scenario"}'
  [ "$STATUS" = 201 ] || { bad "key of $slug (HTTP $STATUS: $BODY)"; return 1; }
  KEY=$(j .key)
  AGENCY_KEY=$agency
}

# contact JSON -> CONTACT (its id)
contact() {
  call PUT /v1/contacts "$1"
  CONTACT=$(j .id)
  [ "$STATUS" = 200 ] || [ "$STATUS" = 201 ]
}

# message_status ID -> its status
message_status() { call GET "/v1/messages/$1"; j .status; }
message_done() { local s; s=$(message_status "$1"); [ "$s" != queued ] && [ "$s" != null ]; }

# ---------------------------------------------------------------- scenario 1
scenario1() {
  say "== 1. Referral programme for a regulated brand"
  local slug="ref-$RUNID"
  new_tenant "$slug" '{"default_country_code":"44"}' || return
  # Advisors register contacts at points of sale, with consent records.
  local -a phones=(07700900101 07700900102 07700900103 07700900104 07700900105)
  local -a pos=(leeds leeds york york york) adv=(ann ann bob bob cy)
  local i ids=()
  for i in 0 1 2 3 4; do
    contact "{\"phone\":\"${phones[$i]}\",\"attributes\":{\"point_of_sale\":\"${pos[$i]}\",\"advisor\":\"${adv[$i]}\"}}" ||
      bad "register ${phones[$i]}"
    ids+=("$CONTACT")
    for purpose in processing marketing; do
      call POST "/v1/contacts/$CONTACT/consents" \
        "{\"channel\":\"sms\",\"purpose\":\"$purpose\",\"granted\":true,\"source\":\"point_of_sale:${pos[$i]}\",\"actor\":\"advisor:${adv[$i]}\"}"
    done
  done
  check "5 contacts registered with consents" eq "$(j .granted)" true
  # The same phone typed another way is the same contact.
  contact '{"phone":"+44 7700 900101","attributes":{"point_of_sale":"leeds","advisor":"ann"}}'
  check "a phone in another format is the same contact (deduplicated)" eq "$CONTACT" "${ids[0]}"
  call GET "/v1/contacts/${ids[0]}/consents"
  check "consent history kept with source and advisor" \
    eq "$(j '[.history[] | select(.source == "point_of_sale:leeds" and .actor == "advisor:ann")] | length')" 2

  # Phone verification with a 4-digit SMS code (transactional lane).
  call POST /v1/otp "{\"channel\":\"sms\",\"provider\":\"sms\",\"contact\":{\"id\":${ids[0]}},\"purpose\":\"phone\"}"
  expect 202 "verification code requested"
  local otp_msg; otp_msg=$(j .message_id)
  check "the code SMS reached the phone" wait_for 30 inbox_has +447700900101 'code'
  local code; code=$(inbox +447700900101 | grep -oE '[0-9]{4}' | head -1)
  call GET "/v1/messages/$otp_msg"
  check "the code went on the transactional lane" eq "$(j .lane)" transactional
  local wrong=0000; [ "$code" = 0000 ] && wrong=1111
  call POST /v1/otp/verify "{\"contact\":{\"id\":${ids[0]}},\"purpose\":\"phone\",\"code\":\"$wrong\"}"
  expect 422 "a wrong code is refused"
  call POST /v1/otp/verify "{\"contact\":{\"id\":${ids[0]}},\"purpose\":\"phone\",\"code\":\"$code\"}"
  expect 200 "the right code verifies the phone"
  call POST /v1/otp/verify "{\"contact\":{\"id\":${ids[0]}},\"purpose\":\"phone\",\"code\":\"$code\"}"
  expect 409 "a code verifies only once"

  # The day after a purchase: an SMS with a personal referral code (bulk lane).
  call POST /v1/code-pools '{"name":"friends","kind":"referral","settings":{"redemption_limit":3,"credit_attribute":"referral_credits"}}'
  expect 201 "referral pool created"
  local pool; pool=$(j .id)
  call POST /v1/rules "{\"name\":\"referral after purchase\",\"trigger\":{\"event\":\"order\"},\"reentry\":\"once\",
    \"steps\":[{\"wait\":{\"delay\":\"1d\"},\"actions\":[{\"issue_code\":{\"pool\":$pool}},
      {\"send\":{\"channel\":\"sms\",\"provider\":\"sms\",\"content\":{\"text\":\"Thanks! Give friends your code {{ code }}\"}}}]}]}"
  expect 201 "rule: referral SMS the day after a purchase"
  call POST /v1/events "{\"name\":\"order\",\"contact\":{\"phone\":\"07700900101\"},\"properties\":{\"revenue\":120,\"point_of_sale\":\"leeds\"}}"
  expect 202 "purchase recorded" || [ "$STATUS" = 201 ] || true
  sleep 2
  check "no referral SMS before a day has passed" test "$(inbox_count +447700900101 'Give friends')" -eq 0
  advance 1d
  check "a day later the buyer got the referral SMS" wait_for 30 inbox_has +447700900101 'Give friends'
  local ref; ref=$(inbox +447700900101 | grep 'Give friends' | head -1 | grep -oE '[A-Z0-9_-]{6,}$')
  check "the SMS carries a personal code" test -n "$ref"
  # Three friends redeem it; a fourth is refused; the referrer is credited three times.
  for i in 1 2 3 4; do
    call POST /v1/codes/redeem "{\"code\":\"$ref\",\"contact\":{\"id\":${ids[$i]}}}"
    if [ "$i" -le 3 ]; then expect 200 "friend $i redeems the code"; else expect 409 "a 4th redemption is refused"; fi
  done
  call GET "/v1/contacts/${ids[0]}"
  check "the referrer is credited 3 times" eq "$(j .attributes.referral_credits)" 3
  # Reports per point of sale and advisor.
  call GET "/v1/reports/dimensions?dimension=point_of_sale&from=$(date -u -d '-2 days' +%F)&to=$(date -u -d '+30 days' +%F)"
  expect 200 "report per point of sale"
  say "  report: $(printf '%s' "$BODY" | jq -c '.data // .' 2>/dev/null | head -c 600)"
}

# template NAME CHANNEL CONTENT_JSON -> TEMPLATE (its id)
template() {
  call POST /v1/templates "{\"name\":\"$1\",\"channel\":\"$2\",\"content\":$3}"
  TEMPLATE=$(j .id)
  [ "$STATUS" = 201 ] || bad "template $1 (HTTP $STATUS: $(printf '%s' "$BODY" | head -c 300))"
}
# rule JSON -> RULE (its id)
rule() {
  call POST /v1/rules "$1"
  RULE=$(j .id)
  [ "$STATUS" = 201 ] || bad "rule $(printf '%s' "$1" | jq -r .name) (HTTP $STATUS: $(printf '%s' "$BODY" | head -c 300))"
}
event() { # NAME CONTACT_REF_JSON [PROPERTIES_JSON]
  call POST /v1/events "{\"name\":\"$1\",\"contact\":$2,\"properties\":${3:-{\}}}"
  [ "$STATUS" = 202 ] || [ "$STATUS" = 201 ] || [ "$STATUS" = 200 ] || bad "event $1 (HTTP $STATUS: $(printf '%s' "$BODY" | head -c 200))"
}
attr() { call GET "/v1/contacts/$1"; j ".attributes.$2"; }
attr_is() { [ "$(attr "$1" "$2")" = "$3" ]; }
grant() { # CONTACT CHANNEL...
  local c=$1 ch; shift
  for ch in "$@"; do
    call POST "/v1/contacts/$c/consents" "{\"channel\":\"$ch\",\"purpose\":\"marketing\",\"granted\":true,\"source\":\"signup_form\"}"
  done
}

# ---------------------------------------------------------------- scenario 2
scenario2() {
  say "== 2. Retention for a marketplace"
  local slug="shop-$RUNID" dom="shop-$RUNID.example"
  new_tenant "$slug" '{"default_country_code":"44"}' || return
  local -a cat=(shoes shoes shoes books books garden) c=()
  local i
  for i in 1 2 3 4 5 6; do
    contact "{\"email\":\"u$i@$dom\",\"phone\":\"0770090020$i\",\"attributes\":{\"favourite_category\":\"${cat[$((i - 1))]}\"}}"
    c[$i]=$CONTACT
    grant "$CONTACT" email messenger sms
  done
  local from="\"from\":\"Shop <news@$dom>\""
  template welcome-1 email "{$from,\"subject\":\"Welcome\",\"html\":\"<p>Welcome to the shop, part 1</p>\"}"; local t_w1=$TEMPLATE
  template congrats email "{$from,\"subject\":\"Thank you\",\"html\":\"<p>Congratulations on your first order</p>\"}"; local t_c=$TEMPLATE
  template cart email "{$from,\"subject\":\"Your cart\",\"html\":\"<p>You left {{ event.item }} in <a href=\\\"https://$dom/cart\\\">your cart</a></p>\"}"; local t_cart=$TEMPLATE
  rule "{\"name\":\"welcome series\",\"trigger\":{\"event\":\"subscribed\"},\"steps\":[
    {\"actions\":[{\"send\":{\"channel\":\"email\",\"provider\":\"mail\",\"template\":{\"id\":$t_w1,\"version\":1}}}]},
    {\"wait\":{\"delay\":\"2d\"},\"actions\":[{\"send\":{\"channel\":\"email\",\"provider\":\"mail\",\"content\":{$from,\"subject\":\"Welcome 2\",\"html\":\"<p>Welcome, part 2</p>\"}}}]}]}"
  rule "{\"name\":\"first order\",\"trigger\":{\"event\":\"order\"},\"reentry\":\"always\",\"steps\":[
    {\"if\":{\"event\":\"order\",\"count\":{\"op\":\"eq\",\"value\":1}},
     \"actions\":[{\"send\":{\"channel\":\"email\",\"provider\":\"mail\",\"template\":{\"id\":$t_c,\"version\":1}}}]}]}"
  rule "{\"name\":\"abandoned cart\",\"trigger\":{\"event\":\"cart\"},\"reentry\":\"always\",\"exit\":[{\"event\":\"order\"}],\"steps\":[
    {\"wait\":{\"delay\":\"1h\"},\"actions\":[{\"send\":{\"channel\":\"email\",\"provider\":\"mail\",\"template\":{\"id\":$t_cart,\"version\":1}}}]},
    {\"wait\":{\"delay\":\"1d\"},\"unless\":[{\"event\":\"email_opened\"}],
     \"actions\":[{\"send\":{\"channel\":\"messenger\",\"provider\":\"messenger\",\"content\":{\"text\":\"{{ event.item }} is still waiting for you\"}}}]}]}"
  rule "{\"name\":\"price drop\",\"trigger\":{\"event\":\"price_drop\",\"audience\":{\"events\":[\"viewed\",\"carted\"],\"match\":\"item\",\"days\":7}},
    \"reentry\":\"always\",\"steps\":[{\"actions\":[{\"send\":{\"channel\":\"sms\",\"provider\":\"sms\",\"content\":{\"text\":\"{{ event.item }} is now cheaper\"}}}]}]}"
  rule "{\"name\":\"anti-churn\",\"trigger\":{\"inactive\":{\"days\":14}},\"steps\":[
    {\"actions\":[{\"send\":{\"channel\":\"messenger\",\"provider\":\"messenger\",\"content\":{\"text\":\"We miss you\"}}}]}]}"

  # Subscription form -> welcome series.
  for i in 1 2 3 4 5 6; do event subscribed "{\"id\":${c[$i]}}"; done
  check "welcome email 1 to every subscriber" wait_for 30 mail_has "u6@$dom" "Welcome to the shop, part 1"
  check "welcome email 2 not before two days" test "$(mail_has "u1@$dom" 'Welcome, part 2' && echo y)" != y
  advance 2d
  check "welcome email 2 two days later" wait_for 30 mail_has "u1@$dom" "Welcome, part 2"

  # First order -> congratulation; a second order does not repeat it.
  event order "{\"id\":${c[1]}}" '{"revenue":40}'
  check "congratulation on the first order" wait_for 30 mail_has "u1@$dom" "first order"
  advance 3d
  event order "{\"id\":${c[1]}}" '{"revenue":25}'
  sleep 3
  check "no congratulation on the second order" test "$(mail_files "u1@$dom" | xargs -r grep -l 'first order' | wc -l)" -eq 1

  # Abandoned cart: email after 1 h; messenger a day later unless opened; stop on purchase.
  event cart "{\"id\":${c[2]}}" '{"item":"boots"}'
  event cart "{\"id\":${c[3]}}" '{"item":"hat"}'
  advance 61m
  check "cart reminder email after an hour" wait_for 30 mail_has "u3@$dom" "hat"
  check "cart reminder email to the other cart too" wait_for 30 mail_has "u2@$dom" "boots"
  local px; px=$(mail_pixel "u2@$dom" boots)
  if [ -n "$px" ]; then curl -s -o /dev/null "$px"; fi
  check "the email carries an open pixel" test -n "$px"
  event order "{\"id\":${c[2]}}" '{"revenue":80}'
  advance 1d
  check "no open, no purchase: messenger reminder" wait_for 30 inbox_has +447700900203 "hat is still waiting"
  check "bought: no messenger reminder" test "$(inbox_count +447700900202 'still waiting')" -eq 0

  # Price drop on viewed or carted items.
  event viewed "{\"id\":${c[4]}}" '{"item":"lamp"}'
  event viewed "{\"id\":${c[5]}}" '{"item":"desk"}'
  sleep 1
  event price_drop "{\"id\":${c[6]}}" '{"item":"lamp"}'
  check "price drop reaches who viewed the item" wait_for 30 inbox_has +447700900204 "lamp is now cheaper"
  check "price drop does not reach others" test "$(inbox_count +447700900205 'cheaper')" -eq 0

  # Favourite-category segment campaign.
  call POST /v1/segments '{"name":"likes shoes","rule":{"attribute":"favourite_category","op":"eq","value":"shoes"}}'
  expect 201 "segment: favourite category shoes"
  local seg; seg=$(j .id)
  call POST "/v1/segments/$seg/preview" '{}'
  check "segment preview counts 3 contacts" eq "$(j .count)" 3
  call POST /v1/campaigns "{\"name\":\"shoe week\",\"segment_id\":$seg,\"channel\":\"email\",
    \"messages\":{\"email\":{\"template\":$t_w1,\"provider\":\"mail\"}},\"calendar\":{\"kind\":\"now\"}}"
  expect 201 "campaign to the segment"
  local camp; camp=$(j .id)
  check "the campaign run reaches the 3 contacts" wait_for 30 campaign_recipients "$camp" 3

  # Anti-churn: inactive for 14 days.
  advance 15d
  check "inactive for 14 days: a we-miss-you message" wait_for 30 inbox_has +447700900206 "We miss you"

  call GET "/v1/reports/repeat-purchases?from=$(date -u -d '-1 day' +%F)&to=$(date -u -d '+40 days' +%F)"
  expect 200 "second-purchase report"
  say "  report: $(printf '%s' "$BODY" | jq -c . | head -c 400)"
  call GET "/v1/reports/rules/$RULE"
  [ "$STATUS" = 200 ] && say "  rule report: $(printf '%s' "$BODY" | jq -c . | head -c 300)"

  cascade2 "$slug" "${c[5]}"
}
campaign_recipients() { call GET "/v1/campaigns/$1/runs"; [ "$(j '[.runs[]?.recipients // 0] | add // 0')" = "$2" ]; }

# The channel cascade (docs/cascade.md): Viber, and if not delivered within 10
# minutes, SMS.  The Viber account's provider sends no receipt; the SMS one
# does (provsim posts it to herald's callback URL).  Prices make the cost show.
cascade2() {
  local slug=$1 who=$2 key=$KEY
  KEY=$AGENCY_KEY
  call PUT "/v1/tenants/$slug/providers/viber" \
    "{\"channel\":\"messenger\",\"transport\":\"http\",\"config\":{\"url\":\"$SIM/v1/send/messenger/$slug-viber\",\"price\":0.01,\"currency\":\"EUR\"},\"secret\":{\"headers\":{\"Authorization\":\"Bearer t\"}}}"
  call PUT "/v1/tenants/$slug/providers/sms" \
    "{\"channel\":\"sms\",\"transport\":\"http\",\"config\":{\"url\":\"$SIM/v1/send/sms/$slug\",\"price\":0.05,\"currency\":\"EUR\"},\"secret\":{\"headers\":{\"Authorization\":\"Bearer t\"},\"callback_secret\":\"cb-$slug\"}}"
  KEY=$key
  curl -s -o /dev/null -X POST "$SIM/v1/control/faults" \
    -d "{\"account\":\"$slug\",\"dlr_url\":\"$API/v1/callbacks/$slug/sms?key=cb-$slug\"}"
  call POST /v1/messages "{\"channel\":\"messenger\",\"provider\":\"viber\",\"lane\":\"bulk\",\"contact\":{\"id\":$who},
    \"content\":{\"text\":\"Your cart misses you (viber)\"},
    \"fallback\":[{\"channel\":\"sms\",\"provider\":\"sms\",\"content\":{\"text\":\"Your cart misses you (sms)\"},\"after\":\"10m\"}]}"
  expect 202 "cascade: a Viber message with an SMS fallback after 10 minutes"
  local msg; msg=$(j .id)
  local phone; call GET "/v1/contacts/$who"; phone=$(j .phone)
  check "cascade: Viber first" wait_for 30 inbox_has "$phone" "misses you (viber)"
  check "cascade: no SMS within the window" test "$(inbox_count "$phone" 'misses you (sms)')" -eq 0
  advance 11m
  check "cascade: not delivered on Viber within 10 minutes, so SMS" wait_for 30 inbox_has "$phone" "misses you (sms)"
  check "cascade: the SMS is delivered and the cascade stops" wait_for 30 cascade_is "$msg" finished delivered
  check "cascade: never twice on one channel" test "$(inbox_count "$phone" 'misses you')" -eq 2
  call GET "/v1/messages/$msg"
  check "cascade: cost per channel (0.01 + 0.05 EUR)" eq "$(j '[.cascade.steps[].cost] | join(" + ")') = $(j .cascade.cost.EUR)" "0.01 + 0.05 = 0.06"
  say "  cascade: $(printf '%s' "$BODY" | jq -c '[.cascade.steps[] | {channel, status, cost, currency}]')"
}
cascade_is() { call GET "/v1/messages/$1"; [ "$(j .cascade.state)" = "$2" ] && [ "$(j '.cascade.steps[-1].status')" = "$3" ]; }

# ---------------------------------------------------------------- scenario 3
scenario3() {
  say "== 3. Activation and loyalty for a B2B marketplace"
  local slug="b2b-$RUNID" dom="b2b-$RUNID.example"
  new_tenant "$slug" '{"default_country_code":"44"}' || return
  contact "{\"email\":\"buyer@$dom\",\"attributes\":{\"company\":\"Acme\"}}"
  local b=$CONTACT
  grant "$b" email
  local from="\"from\":\"Market <hello@$dom>\""
  rule "{\"name\":\"onboarding reward\",\"trigger\":{\"event\":\"onboarding_step\"},\"reentry\":\"always\",\"steps\":[{\"actions\":[
    {\"increment\":{\"attribute\":\"balance\",\"by\":100}},
    {\"send\":{\"channel\":\"email\",\"provider\":\"mail\",\"content\":{$from,\"subject\":\"+100 points\",\"html\":\"<p>100 points for {{ event.step }}</p>\"}}}]}]}"
  rule '{"name":"check-in","trigger":{"event":"checkin"},"reentry":"always","steps":[{"actions":[
    {"increment":{"attribute":"checkins"}},
    {"increment":{"attribute":"streak"},"if":{"event":"checkin","count":{"op":"gte","value":2},"when":{"op":"within_last","days":2}}},
    {"set":{"attribute":"streak","value":1},"if":{"event":"checkin","count":{"op":"lt","value":2},"when":{"op":"within_last","days":2}}},
    {"emit":{"event":"progress"}}]}]}'
  rule '{"name":"invites","trigger":{"event":"invited"},"reentry":"always","steps":[{"actions":[{"increment":{"attribute":"invites"}},{"emit":{"event":"progress"}}]}]}'
  rule '{"name":"stickers","trigger":{"event":"sticker"},"reentry":"always","steps":[{"actions":[{"increment":{"attribute":"stickers"}},{"emit":{"event":"progress"}}]}]}'
  rule '{"name":"ranks","trigger":{"event":"progress"},"reentry":"always","steps":[{"actions":[
    {"set":{"attribute":"rank","value":1},"if":{"attribute":"checkins","op":"gte","value":1}},
    {"set":{"attribute":"rank","value":2},"if":{"and":[{"attribute":"checkins","op":"gte","value":5},{"attribute":"invites","op":"gte","value":3}]}},
    {"set":{"attribute":"rank","value":3},"if":{"and":[{"attribute":"checkins","op":"gte","value":10},{"attribute":"invites","op":"gte","value":10},{"attribute":"stickers","op":"gte","value":3}]}}]}]}'

  local s
  for s in profile catalogue first_rfq; do event onboarding_step "{\"id\":$b}" "{\"step\":\"$s\"}"; done
  check "a reward credited for each onboarding step (balance 300)" wait_for 30 attr_is "$b" balance 300
  check "an email for each reward" wait_for 30 test_mail_count "buyer@$dom" 3
  for s in 1 2 3 4 5 6 7 8 9 10; do
    event checkin "{\"id\":$b}"
    wait_for 20 attr_is "$b" checkins "$s" || break
    advance 1d
  done
  check "10 daily check-ins counted" attr_is "$b" checkins 10
  say "  after 10 daily check-ins: checkins=$(attr "$b" checkins) streak=$(attr "$b" streak)"
  check "a 10-day streak" attr_is "$b" streak 10
  check "rank 1 after check-ins alone" attr_is "$b" rank 1
  for s in $(seq 1 10); do event invited "{\"id\":$b}" "{\"n\":$s}"; done
  for s in 1 2 3; do event sticker "{\"id\":$b}" "{\"supplier\":\"s$s\"}"; done
  check "rank 3 = 10 check-ins, 10 invites, 3 stickers" wait_for 30 attr_is "$b" rank 3
  advance 2d
  event checkin "{\"id\":$b}"
  check "a missed day restarts the streak" wait_for 20 attr_is "$b" streak 1
  call GET "/v1/contacts/$b"
  say "  contact: $(j -c .attributes)"
}
test_mail_count() { [ "$(mail_count "$1")" -ge "$2" ]; }

# ---------------------------------------------------------------- scenario 4
scenario4() {
  say "== 4. Behaviour-based messaging"
  local slug="beh-$RUNID" dom="beh-$RUNID.example"
  new_tenant "$slug" '{"default_country_code":"44"}' || return
  local -a utm=(google google facebook google newsletter) city=(Leeds Leeds Leeds York Leeds) score=(80 20 90 70 60) c=()
  local i
  for i in 1 2 3 4 5; do
    contact "{\"email\":\"v$i@$dom\",\"attributes\":{\"utm_source\":\"${utm[$((i - 1))]}\",\"city\":\"${city[$((i - 1))]}\",\"lead_score\":${score[$((i - 1))]}}}"
    c[$i]=$CONTACT
    grant "$CONTACT" email
    event visit "{\"id\":$CONTACT}"
  done
  event order "{\"id\":${c[1]}}" '{"revenue":150}'
  event order "{\"id\":${c[3]}}" '{"revenue":40}'
  advance 15d
  event visit "{\"id\":${c[2]}}"
  event visit "{\"id\":${c[5]}}"
  seg_count() { # RULE_JSON WANT
    call POST /v1/segments "{\"name\":\"s$RANDOM\",\"rule\":$1}"
    local id; id=$(j .id)
    call POST "/v1/segments/$id/preview" '{}'
    [ "$(j .count)" = "$2" ] || { say "        got $(j .count), want $2"; return 1; }
  }
  check "segment: from Google in Leeds (2)" seg_count '{"and":[{"attribute":"utm_source","op":"eq","value":"google"},{"attribute":"city","op":"eq","value":"Leeds"}]}' 2
  check "segment: has not come back for 14 days (3)" seg_count '{"and":[{"event":"visit"},{"event":"visit","did":false,"when":{"op":"within_last","days":14}}]}' 3
  check "segment: lead score >= 60 and revenue >= 100 (1)" seg_count '{"and":[{"attribute":"lead_score","op":"gte","value":60},{"event":"order","sum":{"property":"revenue","op":"gte","value":100}}]}' 1

  # Abandoned registration.
  rule "{\"name\":\"abandoned registration\",\"trigger\":{\"event\":\"registration_started\"},\"exit\":[{\"event\":\"registration_completed\"}],
    \"steps\":[{\"wait\":{\"delay\":\"30m\"},\"actions\":[{\"send\":{\"channel\":\"email\",\"provider\":\"mail\",\"content\":{\"from\":\"Beh <hi@$dom>\",\"subject\":\"Almost there\",\"html\":\"<p>Finish signing up</p>\"}}}]}]}"
  event registration_started "{\"id\":${c[4]}}"
  event registration_started "{\"id\":${c[5]}}"
  event registration_completed "{\"id\":${c[5]}}"
  advance 31m
  check "abandoned registration: a reminder" wait_for 30 mail_has "v4@$dom" "Finish signing up"
  check "completed registration: no reminder" test "$(mail_files "v5@$dom" | xargs -r grep -l 'Finish signing' | wc -l)" -eq 0

  # A campaign with a link; opens, clicks and replies per message.
  call POST /v1/segments '{"name":"leeds","rule":{"attribute":"city","op":"eq","value":"Leeds"}}'
  local seg; seg=$(j .id)
  template offer email "{\"from\":\"Beh <hi@$dom>\",\"subject\":\"Offer\",\"html\":\"<p>Our <a href=\\\"https://$dom/offer\\\">autumn offer</a></p>\"}"
  call POST /v1/campaigns "{\"name\":\"autumn\",\"segment_id\":$seg,\"channel\":\"email\",
    \"messages\":{\"email\":{\"template\":$TEMPLATE,\"provider\":\"mail\"}},\"calendar\":{\"kind\":\"now\"}}"
  expect 201 "campaign to Leeds"
  local camp; camp=$(j .id)
  check "the campaign reaches 4 contacts" wait_for 30 campaign_recipients "$camp" 4
  check "emails arrive" wait_for 30 mail_has "v1@$dom" "autumn offer"
  local link; link=$(mail_link "v1@$dom" "autumn offer")
  check "links are tracked" test -n "$link"
  local loc; loc=$(curl -s -o /dev/null -w '%{redirect_url}' "$link")
  check "a click redirects to the original link" eq "$loc" "https://$dom/offer"
  curl -s -o /dev/null "$(mail_pixel "v3@$dom" "autumn offer")"
  event order "{\"id\":${c[1]}}" '{"revenue":60}'
  sleep 3
  call GET "/v1/reports/campaigns/$camp"
  expect 200 "campaign report"
  say "  report: $(printf '%s' "$BODY" | jq -c '.' | head -c 500)"
  check "report: 1 click, 2 opens (a click is an open), 1 conversion" \
    eq "$(j '[.totals | .clicked, .opened, .converted] | map(tostring) | join(",")')" "1,2,1"
  # Funnel: visited -> started registration -> ordered.
  local f1 f2 f3
  seg_count '{"event":"visit"}' 5 && f1=5
  seg_count '{"event":"registration_started"}' 2 && f2=2
  seg_count '{"event":"order"}' 2 && f3=2
  check "funnel visit 5 -> registration 2 -> order 2" test "${f1:-}${f2:-}${f3:-}" = 522
}

main() {
  local which=("$@")
  [ ${#which[@]} -eq 0 ] && which=(1 2 3 4)
  curl -sf "$API/v1/openapi.yaml" >/dev/null || { say "no herald-api at $API (start the stack: bash infra/stack.sh start)"; exit 2; }
  curl -sf "$SIM/v1/inbox/x" >/dev/null || { say "no provider simulator with --inbox at $SIM"; exit 2; }
  for n in "${which[@]}"; do
    if declare -F "scenario$n" >/dev/null; then "scenario$n"; else bad "scenario $n does not exist"; fi
  done
  say "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
main "$@"
