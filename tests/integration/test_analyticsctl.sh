#!/bin/bash
# analyticsctl against a live analyticsd: every command's happy path (or the
# server's documented UNIMPLEMENTED answer: exit 1 with the message), --help
# for every command, usage errors (exit 2), track --stdin with bad lines,
# tail ended cleanly by SIGINT, KEY=VALUE strings and KEY:=JSON values, times
# read by the server's strict RFC 3339 parser, the examples' exit status, and
# (test_analyticsctl_tty.py) tables and progress on a pseudo-terminal.
# Usage: test_analyticsctl.sh ANALYTICSCTL HOST:PORT
set -uo pipefail
CTL_BIN=${1:?usage: test_analyticsctl.sh ANALYTICSCTL HOST:PORT}
TARGET=${2:?usage: test_analyticsctl.sh ANALYTICSCTL HOST:PORT}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILS=0
CHECKS=0
# Names unique to this run, so the checks hold on a server with earlier data.
RUN=r$$x$RANDOM

ctl() { "$CTL_BIN" --target "$TARGET" "$@"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
# expect STATUS DESCRIPTION -- COMMAND...: runs it, keeps stdout/stderr in
# $TMP/out and $TMP/err, checks the exit status.
expect() {
  local want=$1 what=$2
  shift 3
  CHECKS=$((CHECKS + 1))
  "$@" >"$TMP/out" 2>"$TMP/err"
  local got=$?
  if [ "$got" -ne "$want" ]; then
    fail "$what: exit $got, expected $want"
    sed 's/^/    stdout: /' "$TMP/out" | head -5
    sed 's/^/    stderr: /' "$TMP/err" | head -5
    return 1
  fi
}
# json EXPR: evaluates a Python expression over the JSON document on stdout (d).
json() { $PY -c "import json,sys; d=json.load(open('$TMP/out')); sys.exit(0 if ($1) else 1)"; }
# unimplemented: the server's UNIMPLEMENTED answer, named on stderr.
unimplemented() { grep -q "UNIMPLEMENTED" "$TMP/err"; }

# --- help: every command, both spellings, exit 0 on stdout ---
expect 0 "--help" -- ctl --help && grep -q "commands:" "$TMP/out" || fail "--help text"
for c in track search metrics reports alerts tail health data-keys call; do
  expect 0 "$c --help" -- ctl "$c" --help && grep -q "usage: analyticsctl $c" "$TMP/out" ||
    fail "$c --help text"
  expect 0 "help $c" -- ctl help "$c"
done
expect 0 "metrics create --help" -- ctl metrics create --help

# --- usage errors: exit 2 with a message ---
expect 2 "no command" -- ctl
expect 2 "unknown command" -- ctl frobnicate
expect 2 "unknown global option" -- ctl --frob health
expect 2 "bad --timeout" -- ctl --timeout soon health
expect 2 "track without NAME" -- ctl track message
expect 2 "track bad property" -- ctl track message sent novalue
expect 2 "track option of another command" -- ctl track message sent --formula x
expect 2 "search unknown option" -- ctl search --bogus
expect 2 "search bad --limit" -- ctl search --limit 0
expect 2 "search bad --from" -- ctl search --from yesterday-ish
expect 2 "metrics without verb" -- ctl metrics
expect 2 "metrics unknown verb" -- ctl metrics frob
expect 2 "metrics create without --formula" -- ctl metrics create --name x
expect 2 "metrics get without ID" -- ctl metrics get
expect 2 "metrics bad --filter" -- ctl metrics create --name x --formula 'count(a)' --filter nope
expect 2 "reports generate without --template" -- ctl reports generate
expect 2 "reports bad --format" -- ctl reports generate --template t --format doc
expect 2 "alerts create incomplete" -- ctl alerts create --name x
expect 2 "alerts bad --threshold" -- ctl alerts create --name x --metric m --condition c --threshold hi
expect 2 "tail with an argument" -- ctl tail now
expect 2 "call without METHOD" -- ctl call
grep -q "analyticsctl" "$TMP/err" || fail "usage errors name the tool on stderr"

# --- health ---
expect 0 "health" -- ctl health && json 'd["status"] == "SERVING"' || fail "health answer"
expect 1 "health of an unreachable server" -- "$CTL_BIN" --target 127.0.0.1:1 --timeout 2000 health

# --- track from arguments: queued, flushed, summary ---
expect 0 "track" -- ctl track message message_sent campaignId=ctl-$RUN charactersCount:=150 \
  --session s-ctl && json 'd["tracked"] == 1 and d["accepted"] == 1 and d["rejected"] == 0' ||
  fail "track summary: $(cat "$TMP/out")"
EVENT_ID=$($PY -c "import json; print(json.load(open('$TMP/out'))['eventId'])" 2>/dev/null)
expect 0 "track the same id again" -- ctl track message message_sent --id "$EVENT_ID" &&
  json 'd["duplicates"] == 1 and d["accepted"] == 0' || fail "duplicate summary: $(cat "$TMP/out")"
expect 1 "track an event the server rejects" -- ctl track message message_sent --timestamp 2000-01-01 &&
  json 'd["rejected"] == 1' && grep -q "rejected" "$TMP/err" || fail "rejection reported"
expect 1 "track to an unreachable server" -- "$CTL_BIN" --target 127.0.0.1:1 --timeout 1000 track a b &&
  json 'd["undelivered"] == 1' || fail "undelivered counted: $(cat "$TMP/out")"

# --- track --stdin: JSON lines, bad lines reported with their number ---
cat >"$TMP/events.jsonl" <<EOF
{"eventType":"message","eventName":"ctl_stdin","properties":{"n":1,"campaignId":"ctl-stdin"}}
this is not json
{"eventType":"message","eventName":"ctl_stdin","properties":{"n":3},"bogusField":1}

{"event_type":"message","event_name":"ctl_stdin","properties":{"n":5,"campaignId":"ctl-stdin"}}
{"eventType":"message"}
{"eventType":"message","eventName":"ctl_stdin","sessionId":"s-$RUN","properties":{"n":7,"campaignId":"ctl-stdin"}}
EOF
expect 1 "track --stdin with bad lines" -- sh -c "\"$CTL_BIN\" --target $TARGET track --stdin < $TMP/events.jsonl"
json 'd["lines"] == 7 and d["badLines"] == 3 and d["tracked"] == 3 and d["accepted"] == 3' ||
  fail "track --stdin summary: $(cat "$TMP/out")"
for n in 2 3 6; do
  grep -q "line $n:" "$TMP/err" || fail "track --stdin: line $n not reported: $(cat "$TMP/err")"
done
expect 1 "track --stdin --stop-on-error" -- sh -c "\"$CTL_BIN\" --target $TARGET track --stdin --stop-on-error < $TMP/events.jsonl"
json 'd["lines"] == 2 and d["tracked"] == 1 and d["duplicates"] + d["accepted"] == 1' ||
  fail "--stop-on-error summary: $(cat "$TMP/out")"
$PY -c "
import json
for i in range(2500):
    print(json.dumps({'eventType': 'bulk', 'eventName': 'ctl_bulk_$RUN', 'properties': {'i': i}}))
" >"$TMP/bulk.jsonl"
expect 0 "track --stdin, 2,500 events" -- sh -c "\"$CTL_BIN\" --target $TARGET track --stdin < $TMP/bulk.jsonl" &&
  json 'd["accepted"] == 2500 and d["badLines"] == 0' || fail "bulk summary: $(cat "$TMP/out")"

# --- search ---
expect 0 "search" -- ctl search --name message_sent --property campaignId=ctl-$RUN --from -1h --limit 5 &&
  json 'len(d["events"]) == 1 and d["events"][0]["eventId"] == "'"$EVENT_ID"'"' ||
  fail "search by property"
expect 0 "search --all" -- ctl search --name ctl_bulk_$RUN --limit 2000 --all &&
  json 'len(d["events"]) == 2000 and "nextPageToken" in d' || fail "search --all with --limit"
expect 0 "search --all (every page)" -- ctl search --name ctl_bulk_$RUN --all &&
  json 'len(d["events"]) == 2500 and len({e["eventId"] for e in d["events"]}) == 2500' ||
  fail "search --all pages"
expect 0 "search --query --session --type --to" -- ctl search --type message --session s-$RUN \
  --query ctl_stdin --to now && json 'len(d["events"]) == 1' || fail "search filters"

# --- metrics ---
expect 0 "metrics create" -- ctl metrics create --name "ctl delivery rate $RUN" \
  --formula "(delivered / sent) * 100" --variable "sent=count(message_sent)" \
  --variable "delivered=count(message_delivered)" --dimension campaignId \
  --filter campaignId:exists --unit percentage --aggregation avg ||
  fail "metrics create"
METRIC_ID=$($PY -c "import json; print(json.load(open('$TMP/out'))['metricId'])" 2>/dev/null)
expect 0 "metrics list" -- ctl metrics list && json 'any(m["metricId"] == "'"$METRIC_ID"'" for m in d["metrics"])' ||
  fail "metrics list"
expect 0 "metrics list --all" -- ctl metrics list --all --limit 10 && json 'len(d["metrics"]) >= 1'
expect 0 "metrics get" -- ctl metrics get "$METRIC_ID" && json 'd["name"].startswith("ctl delivery rate r")' || fail "metrics get"
expect 0 "metrics update" -- ctl metrics update "$METRIC_ID" --unit pct --filter campaignId:eq:ctl-$RUN &&
  json 'd["unit"] == "pct" and d["formula"] == "(delivered / sent) * 100" and d["filters"][0]["op"] == "eq"' ||
  fail "metrics update keeps the rest: $(cat "$TMP/out")"
expect 0 "metrics data" -- ctl metrics data "$METRIC_ID" --from -1h --to now --interval 5m \
  --time-zone Europe/Paris --top-n 3 && json 'd["interval"] == "5m" and d["timeZone"] == "Europe/Paris"' ||
  fail "metrics data"
expect 1 "metrics create with a bad formula" -- ctl metrics create --name bad --formula "(a" &&
  grep -q "INVALID_ARGUMENT" "$TMP/err" || fail "server error on stderr"
expect 0 "metrics delete" -- ctl metrics delete "$METRIC_ID" && json 'd["deleted"] is True'
expect 1 "metrics get after delete" -- ctl metrics get "$METRIC_ID" && grep -q NOT_FOUND "$TMP/err" ||
  fail "NOT_FOUND on stderr"

# --- reports: the spec's example as a CSV, waited for, downloaded; errors by code ---
TODAY=$(date -u +%Y-%m-%d)
expect 0 "reports generate" -- ctl reports generate --template campaign_performance --format csv \
  --param campaignId=123 --parameters "{\"dateRange\":{\"start\":\"$TODAY\",\"end\":\"$TODAY\"}}" \
  --name "ctl $RUN" &&
  json 'd["status"] in ("pending", "running") and d["name"] == "ctl '"$RUN"'"' ||
  fail "reports generate: pending, named"
REPORT_ID=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["reportId"])' "$TMP/out" 2>/dev/null)
expect 0 "reports wait" -- ctl reports wait "$REPORT_ID" --timeout 60 &&
  json 'd["status"] == "completed"' || fail "reports wait: completed"
expect 0 "reports get" -- ctl reports get "$REPORT_ID" &&
  json 'd["runs"][0]["status"] == "completed"' || fail "reports get: the run"
expect 0 "reports list" -- ctl reports list --all
expect 0 "reports download" -- ctl reports download "$REPORT_ID" --file "$TMP/report.csv" &&
  grep -q "Delivery rate" "$TMP/report.csv" || fail "reports download: the CSV"
expect 1 "reports get of an unknown id" -- ctl reports get no-such-report &&
  grep -q NOT_FOUND "$TMP/err" || fail "NOT_FOUND on stderr"
expect 1 "reports generate, unknown template" -- ctl reports generate --template nope &&
  grep -q "template" "$TMP/err" || fail "INVALID_ARGUMENT names template"
expect 1 "reports download of an unknown id" -- ctl reports download no-such-report \
  --file "$TMP/report.bin"
# --- channels and alerts ---
field() { $PY -c "import json; print(json.load(open('$TMP/out'))['$1'])" 2>/dev/null; }
expect 0 "metrics create for an alert" -- ctl metrics create --name ctl_err_$RUN \
  --formula "count(ctl_err_$RUN)" || fail "metric for alerts"
expect 0 "channels create" -- ctl channels create --name ctl_mail_$RUN --email oncall@example.com \
  --default && json 'd["type"] == "email" and d["isDefault"]' || fail "channels create: $(cat "$TMP/out")"
CHANNEL_ID=$(field channelId)
expect 2 "channels create with two kinds" -- ctl channels create --name x --email a@example.com \
  --slack https://hooks.slack.com/x
expect 0 "channels list" -- ctl channels list --all &&
  json 'any(c["channelId"] == "'"$CHANNEL_ID"'" for c in d["channels"])' || fail "channels list"
expect 0 "channels get" -- ctl channels get "$CHANNEL_ID" && json 'd["name"] == "ctl_mail_'$RUN'"' ||
  fail "channels get"
# No SMTP_URL here: the test notification fails, and says why.
expect 1 "channels test without SMTP" -- ctl channels test "$CHANNEL_ID" &&
  grep -q "not delivered" "$TMP/err" || fail "channels test: $(cat "$TMP/err")"
expect 1 "channels get unknown" -- ctl channels get no-such-channel && grep -q NOT_FOUND "$TMP/err" ||
  fail "channels NOT_FOUND"
expect 0 "alerts create" -- ctl alerts create --name ctl_alert_$RUN --metric ctl_err_$RUN \
  --condition greater_than --threshold 0 --severity critical --channel email --channel slack \
  --message '{{value}} errors' &&
  json 'd["enabled"] and d["unresolvedChannels"] == ["slack"]' || fail "alerts create: $(cat "$TMP/out")"
ALERT_ID=$(field alertId)
expect 2 "alerts bad --renotify" -- ctl alerts create --name x --metric m --condition gt \
  --threshold 1 --renotify soon
expect 1 "alerts create, unknown metric" -- ctl alerts create --name ctl_x_$RUN --metric nope_$RUN \
  --condition gt --threshold 1 && grep -q "metric" "$TMP/err" || fail "unknown metric"
expect 0 "alerts list" -- ctl alerts list --all &&
  json 'any(a["alertId"] == "'"$ALERT_ID"'" for a in d["alerts"])' || fail "alerts list"
expect 0 "alerts get" -- ctl alerts get "$ALERT_ID" || fail "alerts get"
expect 0 "track an event crossing the threshold" -- ctl track app ctl_err_$RUN || fail "track"
FIRED=0
for _ in $(seq 50); do
  ctl alerts history "$ALERT_ID" >"$TMP/out" 2>"$TMP/err" &&
    json 'any(e["state"] == "firing" and e["notifiedChannels"] == ["'"$CHANNEL_ID"'"] for e in d.get("entries", []))' &&
    { FIRED=1; break; }
  sleep 0.1
done
CHECKS=$((CHECKS + 1))
[ $FIRED = 1 ] || fail "alerts history: no firing entry notifying the channel: $(cat "$TMP/out")"
expect 0 "alerts update" -- ctl alerts update "$ALERT_ID" --threshold 3 && json 'd["threshold"] == 3' ||
  fail "alerts update"
expect 0 "alerts delete" -- ctl alerts delete "$ALERT_ID" || fail "alerts delete"
expect 1 "alerts get after delete" -- ctl alerts get "$ALERT_ID" && grep -q NOT_FOUND "$TMP/err" ||
  fail "alerts NOT_FOUND after delete"
expect 1 "alerts history unknown" -- ctl alerts history no-such-alert && grep -q NOT_FOUND "$TMP/err" ||
  fail "alerts history NOT_FOUND"
expect 0 "channels delete" -- ctl channels delete "$CHANNEL_ID" || fail "channels delete"

# --- call ---
expect 0 "call" -- ctl call /analytics.v1.MetricService/ListMetrics '{"pageSize":1}' && json 'True'
expect 2 "call an unknown method" -- ctl call /analytics.v1.Nope/Nope

# --- tail: events as JSON lines, SIGINT ends cleanly ---
CHECKS=$((CHECKS + 1))
"$CTL_BIN" --target "$TARGET" tail --name ctl_tail --property k=v >"$TMP/tail.out" 2>"$TMP/tail.err" &
TAIL=$!
sleep 0.7
ctl track x ctl_tail k=v >/dev/null
ctl track x ctl_tail k=other >/dev/null
ctl track x ctl_other k=v >/dev/null
for _ in $(seq 50); do
  [ -s "$TMP/tail.out" ] && break
  sleep 0.1
done
sleep 0.2
kill -INT $TAIL
wait $TAIL
rc=$?
[ $rc -eq 0 ] || fail "tail after SIGINT: exit $rc ($(cat "$TMP/tail.err"))"
[ "$(wc -l <"$TMP/tail.out")" -eq 1 ] || fail "tail: expected 1 line: $(cat "$TMP/tail.out")"
$PY -c "
import json,sys
d = json.loads(open('$TMP/tail.out').readline())
sys.exit(0 if d['event']['eventName'] == 'ctl_tail' and d['event']['properties']['k'] == 'v' else 1)
" || fail "tail line: $(cat "$TMP/tail.out")"
CHECKS=$((CHECKS + 1))
"$CTL_BIN" --target "$TARGET" tail --snapshots >"$TMP/tail.out" 2>"$TMP/tail.err" &
TAIL=$!
sleep 1.5
kill -TERM $TAIL
wait $TAIL
rc=$?
[ $rc -eq 0 ] || fail "tail --snapshots after SIGTERM: exit $rc"
grep -q '"aggregates"' "$TMP/tail.out" || fail "tail --snapshots prints snapshots"
# The metric stream: UNIMPLEMENTED (exit 1), or NOT_FOUND for an unknown metric.
expect 1 "tail --metric (unknown metric)" -- ctl tail --metric no-such-metric &&
  grep -Eq "UNIMPLEMENTED|NOT_FOUND" "$TMP/err" || fail "tail --metric error"

# --- KEY=VALUE is a string, KEY:=JSON a JSON value (as httpie reads them) ---
expect 0 "track KEY=VALUE and KEY:=JSON" -- ctl track message ctl_kv_$RUN str=150 num:=150 \
  flag:=true list:='[1,"a"]' obj:='{"k":null}' text='a:=b' ||
  fail "track with typed properties"
expect 0 "search the typed properties" -- ctl search --name ctl_kv_$RUN &&
  json 'd["events"][0]["properties"] == {"str": "150", "num": 150, "flag": True, "list": [1, "a"], "obj": {"k": None}, "text": "a:=b"}' ||
  fail "stored properties: $(cat "$TMP/out")"
expect 2 "KEY:= with bad JSON" -- ctl track message ctl_kv_$RUN n:=15x
expect 2 "--param KEY:= with bad JSON" -- ctl reports generate --template t --param days:=thirty

# --- times: RFC 3339 read by the server's own strict parser ---
expect 2 "--timestamp on a day that does not exist" -- ctl track message m --timestamp 2024-02-30T10:00:00Z
expect 2 "--timestamp with a lowercase t" -- ctl track message m --timestamp 2024-05-01t10:00:00Z
expect 2 "--timestamp with second 60" -- ctl track message m --timestamp 2024-05-01T10:00:60Z
expect 2 "--timestamp with 10 fractional digits" -- ctl track message m --timestamp 2024-05-01T10:00:00.1234567891Z
expect 2 "--from with an offset of 24 hours" -- ctl search --from 2024-05-01T10:00:00+24:00
expect 2 "--from a date that does not exist" -- ctl search --from 2023-02-29
TS_LOCAL=$($PY -c "
import datetime as dt
t = dt.datetime.now(dt.timezone(dt.timedelta(hours=2))) - dt.timedelta(minutes=5)
print(t.strftime('%Y-%m-%dT%H:%M:%S') + '.250+02:00')")
TS_UTC=$($PY -c "
import datetime as dt
t = dt.datetime.fromisoformat('$TS_LOCAL').astimezone(dt.timezone.utc)
print(t.strftime('%Y-%m-%dT%H:%M:%S.250Z'))")
expect 0 "--timestamp with an offset and a fraction" -- ctl track message ctl_ts_$RUN --timestamp "$TS_LOCAL" ||
  fail "offset timestamp"
expect 0 "search --from with an offset" -- ctl search --name ctl_ts_$RUN --from "$TS_LOCAL" &&
  json 'd["events"][0]["timestamp"] == "'"$TS_UTC"'"' || fail "stored time: $(cat "$TMP/out"), want $TS_UTC"

# --- the spec's example programs: exit 0 only when the call worked ---
EXAMPLES=$(dirname "$CTL_BIN")/../examples
if [ -x "$EXAMPLES/generate_report" ]; then
  for ex in generate_report; do
    CHECKS=$((CHECKS + 1))
    "$EXAMPLES/$ex" "$TARGET" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    if grep -q UNIMPLEMENTED "$TMP/out" "$TMP/err" && [ $rc -eq 0 ]; then
      fail "$ex: the server answered UNIMPLEMENTED and it exited 0"
    fi
    [ $rc -eq 0 ] || grep -q "failed" "$TMP/err" || fail "$ex: exit $rc without the error on stderr"
  done
  "$EXAMPLES/create_metric" "$TARGET" >/dev/null 2>&1 # created, or there already
  expect 1 "create_metric example, the name taken" -- "$EXAMPLES/create_metric" "$TARGET" &&
    grep -q ALREADY_EXISTS "$TMP/err" || fail "create_metric twice: $(cat "$TMP/err")"
  expect 1 "track_event example, server unreachable" -- "$EXAMPLES/track_event" 127.0.0.1:1
fi

# --- on a terminal: tables, and the progress of track --stdin ---
CHECKS=$((CHECKS + 1))
$PY "$(dirname "$0")/test_analyticsctl_tty.py" "$CTL_BIN" "$TARGET" >"$TMP/tty.log" 2>&1 ||
  { fail "analyticsctl on a terminal"; tail -n 40 "$TMP/tty.log"; }

echo "analyticsctl: $CHECKS checks, $FAILS failed"
[ $FAILS -eq 0 ]
