#!/usr/bin/env bash
# `make run`: the whole system on one machine.
#   all-in-one (scheduler + xDS + gateway) on its default ports, bound to loopback;
#   3 simulated vLLM engines (:8001-8003), each with an agent;
#   Envoy on :8080 when `envoy` is on PATH (or ENVOY_BIN names it), else the test stand-in.
# Ctrl-C stops everything. Logs go to $LLMROUTER_RUN_DIR (default: a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/llmrouter}
run_dir=${LLMROUTER_RUN_DIR:-$(mktemp -d -t llmrouter-run.XXXXXX)}
mkdir -p "$run_dir"
export LLMROUTER_LOG_FORMAT=${LLMROUTER_LOG_FORMAT:-console}

pids=()
stopping=0
cleanup() {
  stopping=1
  trap - EXIT INT TERM
  echo
  echo "make run: stopping ${#pids[@]} processes"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "make run: logs are in $run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # name, then the command
  local name=$1; shift
  "$@" >"$run_dir/$name.log" 2>&1 &
  pids+=($!)
}

for port in 8080 9090 9002 18000 18001 8001 8002 8003; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "make run: port $port is already in use; stop whatever holds it (ss -ltnp 'sport = :$port') and try again" >&2
    exit 1
  fi
done

echo "make run: starting llmrouter all-in-one (scheduler :18001, xDS :18000, gateway :9002, metrics :9090)"
LLMROUTER_LLM_SCHEDULER_LISTEN=127.0.0.1:18001 \
LLMROUTER_LLM_SCHEDULER_XDS_LISTEN=127.0.0.1:18000 \
LLMROUTER_LLM_SCHEDULER_HTTP_LISTEN=127.0.0.1:9090 \
LLMROUTER_LLM_GATEWAY_LISTEN=127.0.0.1:9002 \
LLMROUTER_LLM_GATEWAY_HTTP_LISTEN=127.0.0.1:9091 \
  start all-in-one "$BIN" all-in-one

for i in 1 2 3; do
  port=800$i
  echo "make run: starting enginesim on :$port and its agent"
  start "engine-$i" "$BIN" enginesim --listen "127.0.0.1:$port" --seed "$i"
  LLMROUTER_AGENT_HTTP_LISTEN="127.0.0.1:$((9092 + i))" \
    start "agent-$i" "$BIN" agent --engine-url "http://127.0.0.1:$port" --advertise "127.0.0.1:$port" --scheduler 127.0.0.1:18001
done

"$BIN" bootstrap --listen 0.0.0.0:8080 --xds 127.0.0.1:18000 --extproc 127.0.0.1:9002 >"$run_dir/envoy.yaml"
envoy_bin=${ENVOY_BIN:-$(command -v envoy || true)}
if [ -n "$envoy_bin" ]; then
  echo "make run: starting Envoy ($envoy_bin) on :8080"
  start envoy "$envoy_bin" -c "$run_dir/envoy.yaml" --log-level warn
else
  cat >&2 <<'NOTICE'

  ###########################################################################
  #  No Envoy binary found (put `envoy` on PATH or set ENVOY_BIN).          #
  #  Using the TEST STAND-IN data plane instead: it reads the same          #
  #  bootstrap and speaks the same xDS and ext_proc, but it is a test       #
  #  fixture, NOT Envoy. Do not put it in front of real traffic.            #
  ###########################################################################

NOTICE
  go build -o bin/standin ./integration/standin/cmd/standin
  start standin bin/standin -c "$run_dir/envoy.yaml"
fi

# Ready when a chat completion comes back through :8080 with a pick.
deadline=$((SECONDS + 60))
until curl -sf -m 5 localhost:8080/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":1,"messages":[{"role":"user","content":"ping"}]}' >/dev/null 2>&1; do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "make run: a process exited during start-up; its log:" >&2
      for f in "$run_dir"/*.log; do echo "== $f" >&2; tail -n 20 "$f" >&2; done
      exit 1
    fi
  done
  if [ $SECONDS -ge $deadline ]; then
    echo "make run: not ready after 60 s; logs in $run_dir" >&2
    exit 1
  fi
  sleep 0.5
done

cat <<EOF2

llmrouter is up. Try:

  curl -N localhost:8080/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"meta-llama/Llama-3.1-8B-Instruct","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"Hello!"}]}'

Metrics: curl localhost:9090/metrics | grep llmrouter_    Instances: curl localhost:9090/admin/instances
Logs: $run_dir    Ctrl-C stops everything.
EOF2

while :; do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null && [ $stopping = 0 ]; then
      echo "make run: process $p exited; see the logs in $run_dir" >&2
      exit 1
    fi
  done
  sleep 1
done
