#!/usr/bin/env bash
# Live prefill/decode benchmark on simulated engines (docs/benchmarks.md,
# "Prefill/decode disaggregation"): the same long-prompt, long-output load
# through the whole system (all-in-one, agents, pd proxies, the data plane),
# once per fleet and policy:
#   prefix-cache      on 6 both-role enginesims
#   pd-split          on 2 prefill + 4 decode enginesims (decode agents run pd proxies)
#   dynamic-pd-split  on the same 2 + 4
# then prints TTFT and TPOT side by side. Every process binds 127.0.0.1 from
# PD_BENCH_PORT (default 43000) upwards; logs and JSON go to PD_BENCH_DIR.
# Knobs: PD_BENCH_DURATION (60s), PD_BENCH_RATE (4 req/s), PD_BENCH_PROFILE
# (llama3-8b-h100), PD_BENCH_KV_PER_BLOCK (40us), PD_BENCH_PROMPT_TOKENS
# (4000), PD_BENCH_OUTPUT_TOKENS (256). Enginesims run in real time: a busy
# machine slows them all alike, but compare runs of one invocation only.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/llmrouter}
base=${PD_BENCH_PORT:-43000}
duration=${PD_BENCH_DURATION:-60s}
rate=${PD_BENCH_RATE:-4}
profile=${PD_BENCH_PROFILE:-llama3-8b-h100}
per_block=${PD_BENCH_KV_PER_BLOCK:-40us}
prompt=${PD_BENCH_PROMPT_TOKENS:-4000}
output=${PD_BENCH_OUTPUT_TOKENS:-256}
dir=${PD_BENCH_DIR:-$(mktemp -d -t llmrouter-pd-bench.XXXXXX)}
mkdir -p "$dir"
export LLMROUTER_LOG_FORMAT=json

[ -x "$BIN" ] || go build -o "$BIN" ./cmd/llmrouter
[ -x bin/standin ] || go build -o bin/standin ./integration/standin/cmd/standin

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM
start() { # log name, then the command
  local name=$1; shift
  "$@" >"$dir/$name.log" 2>&1 &
  pids+=($!)
}

api=$((base + 1)) xds=$((base + 2)) http=$((base + 3)) extproc=$((base + 4)) listen=$((base + 5)) admin=$((base + 6))

# run LABEL POLICY FLEET: FLEET is "both" (6 both-role) or "pd" (2 prefill + 4 decode).
run() {
  local label=$1 policy=$2 fleet=$3
  echo "pd-bench: $label ($policy on $fleet)"
  LLMROUTER_LLM_SCHEDULER_LISTEN=127.0.0.1:$api LLMROUTER_LLM_SCHEDULER_XDS_LISTEN=127.0.0.1:$xds \
  LLMROUTER_LLM_SCHEDULER_HTTP_LISTEN=127.0.0.1:$http LLMROUTER_LLM_GATEWAY_LISTEN=127.0.0.1:$extproc \
    start "$label-all-in-one" "$BIN" all-in-one --policy "$policy"
  for i in 0 1 2 3 4 5; do
    local role=both eng=$((base + 10 + i)) adv proxy=()
    if [ "$fleet" = pd ]; then role=decode; [ $i -lt 2 ] && role=prefill; fi
    adv=127.0.0.1:$eng
    if [ "$role" = decode ]; then adv=127.0.0.1:$((base + 20 + i)); proxy=(--pd-proxy "$adv"); fi
    start "$label-engine-$i" "$BIN" enginesim --listen "127.0.0.1:$eng" --profile "$profile" --seed $((i + 1)) \
      --role "$role" --kv-transfer-per-block "$per_block"
    LLMROUTER_AGENT_HTTP_LISTEN=127.0.0.1:$((base + 30 + i)) \
      start "$label-agent-$i" "$BIN" agent --engine-url "http://127.0.0.1:$eng" --advertise "$adv" \
      --scheduler "127.0.0.1:$api" --role "$role" "${proxy[@]}"
  done
  "$BIN" bootstrap --listen "127.0.0.1:$listen" --admin "127.0.0.1:$admin" --xds "127.0.0.1:$xds" \
    --extproc "127.0.0.1:$extproc" >"$dir/$label-envoy.yaml"
  start "$label-standin" bin/standin -c "$dir/$label-envoy.yaml"
  local deadline=$((SECONDS + 90))
  until [ "$(curl -sf "127.0.0.1:$http/admin/instances" | jq '[.[] | select(.state == "healthy")] | length' 2>/dev/null)" = 6 ] &&
      curl -sf -m 5 "127.0.0.1:$listen/v1/chat/completions" -H 'content-type: application/json' \
        -d '{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":1,"messages":[{"role":"user","content":"ping"}]}' >/dev/null; do
    if [ $SECONDS -ge $deadline ]; then echo "pd-bench: $label not ready in 90 s; logs in $dir" >&2; exit 1; fi
    sleep 0.5
  done
  "$BIN" bench --mode live --target "http://127.0.0.1:$listen" --label "$label" --workload shared-prefix \
    --groups 100000 --prompts-per-group 1 --system-tokens $((prompt - 100)) --question-tokens 100 \
    --output-tokens "$output" --rate "$rate" --duration "$duration" --seed 1 --json --progress=false >"$dir/$label.json"
  curl -sf "127.0.0.1:$http/metrics" | grep '^llmrouter_scheduler_pd_decisions_total' >"$dir/$label-decisions.txt" || true
  for i in 2 3 4 5; do curl -sf "127.0.0.1:$((base + 30 + i))/metrics" | grep '^llmrouter_pd_' || true; done >"$dir/$label-proxies.txt"
  stop_all
}

run "prefix-cache-6both" prefix-cache both
run "pd-split-2P4D" pd-split pd
run "dynamic-pd-split-2P4D" dynamic-pd-split pd

echo
echo "Live: $rate req/s for $duration, $prompt-token unique prompts, $output output tokens, $profile enginesims, KV transfer $per_block per block"
printf '%-24s %8s %10s %10s %10s %10s %10s\n' run requests "TTFT mean" "TTFT p50" "TTFT p99" "TPOT mean" "TPOT p99"
for f in "$dir"/prefix-cache-6both.json "$dir"/pd-split-2P4D.json "$dir"/dynamic-pd-split-2P4D.json; do
  jq -r '.[0] | [.policy, .requests, .ttft_mean_ms, .ttft_median_ms, .ttft_p99_ms, .tpot_mean_ms, .tpot_p99_ms] | @tsv' "$f" |
    awk -F'\t' '{printf "%-24s %8d %10.1f %10.1f %10.1f %10.2f %10.2f\n", $1, $2, $3, $4, $5, $6, $7}'
done
echo "Decisions and proxy counters: $dir/*-decisions.txt, $dir/*-proxies.txt"
