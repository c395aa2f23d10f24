#!/usr/bin/env bash
# `make run`: the whole system on one machine.
#   all-in-one (scheduler + xDS + gateway) on its default ports, bound to loopback;
#   3 simulated vLLM engines (:8001-8003), each with an agent;
#   Envoy on :8080 when `envoy` is on PATH (or ENVOY_BIN names it), else the test stand-in.
# Ctrl-C stops everything. Logs go to $LLMROUTER_RUN_DIR (default: a temporary directory).
# Every port moves with an environment variable (defaults in brackets):
#   LLMROUTER_RUN_ENVOY_PORT [8080]  LLMROUTER_RUN_ENVOY_ADMIN_PORT [9901]  LLMROUTER_RUN_HTTP_PORT [9090]
#   LLMROUTER_RUN_EXTPROC_PORT [9002]  LLMROUTER_RUN_XDS_PORT [18000]  LLMROUTER_RUN_API_PORT [18001]
#   LLMROUTER_RUN_ENGINE_PORT [8001] (engines on it and the next two)
#   LLMROUTER_RUN_AGENT_PORT [9093] (the agents' /metrics on it and the next two)
# LLMROUTER_RUN_* variables are the script's, not configuration (llmrouter does not warn about them).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/llmrouter}
envoy_port=${LLMROUTER_RUN_ENVOY_PORT:-8080}
envoy_admin_port=${LLMROUTER_RUN_ENVOY_ADMIN_PORT:-9901}
http_port=${LLMROUTER_RUN_HTTP_PORT:-9090}
extproc_port=${LLMROUTER_RUN_EXTPROC_PORT:-9002}
xds_port=${LLMROUTER_RUN_XDS_PORT:-18000}
api_port=${LLMROUTER_RUN_API_PORT:-18001}
engine_port=${LLMROUTER_RUN_ENGINE_PORT:-8001}
agent_port=${LLMROUTER_RUN_AGENT_PORT:-9093}
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

for port in "$envoy_port" "$envoy_admin_port" "$http_port" "$extproc_port" "$xds_port" "$api_port" \
    "$engine_port" $((engine_port + 1)) $((engine_port + 2)) "$agent_port" $((agent_port + 1)) $((agent_port + 2)); do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "make run: port $port is already in use; stop whatever holds it (ss -ltnp 'sport = :$port') or move it (LLMROUTER_RUN_*_PORT, see scripts/run.sh)" >&2
    exit 1
  fi
done

echo "make run: starting llmrouter all-in-one (scheduler :$api_port, xDS :$xds_port, gateway :$extproc_port, metrics :$http_port)"
LLMROUTER_LLM_SCHEDULER_LISTEN=127.0.0.1:$api_port \
LLMROUTER_LLM_SCHEDULER_XDS_LISTEN=127.0.0.1:$xds_port \
LLMROUTER_LLM_SCHEDULER_HTTP_LISTEN=127.0.0.1:$http_port \
LLMROUTER_LLM_GATEWAY_LISTEN=127.0.0.1:$extproc_port \
  start all-in-one "$BIN" all-in-one

for i in 0 1 2; do
  port=$((engine_port + i))
  echo "make run: starting enginesim on :$port and its agent"
  start "engine-$((i + 1))" "$BIN" enginesim --listen "127.0.0.1:$port" --seed "$((i + 1))"
  LLMROUTER_AGENT_HTTP_LISTEN="127.0.0.1:$((agent_port + i))" \
    start "agent-$((i + 1))" "$BIN" agent --engine-url "http://127.0.0.1:$port" --advertise "127.0.0.1:$port" --scheduler "127.0.0.1:$api_port"
done

"$BIN" bootstrap --listen "0.0.0.0:$envoy_port" --admin "127.0.0.1:$envoy_admin_port" --xds "127.0.0.1:$xds_port" \
  --extproc "127.0.0.1:$extproc_port" >"$run_dir/envoy.yaml"
envoy_bin=${ENVOY_BIN:-$(command -v envoy || true)}
if [ -n "$envoy_bin" ]; then
  echo "make run: starting Envoy ($envoy_bin) on :$envoy_port"
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
until curl -sf -m 5 "localhost:$envoy_port/v1/chat/completions" -H 'content-type: application/json' \
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

  curl -N localhost:$envoy_port/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"meta-llama/Llama-3.1-8B-Instruct","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"Hello!"}]}'

Metrics: curl localhost:$http_port/metrics | grep llmrouter_    Instances: curl localhost:$http_port/admin/instances
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
