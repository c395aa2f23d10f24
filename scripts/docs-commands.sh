#!/usr/bin/env bash
# Runs every shell command of docs/operating.md and deploy/README.md (their ```sh blocks) against a
# system started by scripts/run.sh, as an operator would type them, with a token set
# (LLMROUTER_TOKEN), so the documented commands stay true. Commands that need what one machine does
# not have (kubectl, docker, an Envoy binary) are listed as skipped, with the reason. Then, after a few
# requests, it checks that make run exports every metric the dashboard and the alert rules read.
# Ports: the defaults, or LLMROUTER_RUN_*_PORT (scripts/run.sh); the documented default ports in the
# commands are replaced by those. `make test-docs` runs it; CI runs make test-docs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
BIN=${BIN:-bin/llmrouter}
[ -x "$BIN" ] || { echo "docs-commands: $BIN missing; run make build" >&2; exit 1; }
# make build stamps the revision (llmrouter version, llmrouter_build_info).
if rev=$(git rev-parse HEAD 2>/dev/null); then
  "$BIN" version | grep -q "revision $rev" || { echo "docs-commands: $BIN version does not name revision $rev: $("$BIN" version)" >&2; exit 1; }
fi

export LLMROUTER_RUN_ENVOY_PORT=${LLMROUTER_RUN_ENVOY_PORT:-8080}
export LLMROUTER_RUN_HTTP_PORT=${LLMROUTER_RUN_HTTP_PORT:-9090}
export LLMROUTER_RUN_EXTPROC_PORT=${LLMROUTER_RUN_EXTPROC_PORT:-9002}
export LLMROUTER_RUN_XDS_PORT=${LLMROUTER_RUN_XDS_PORT:-18000}
export LLMROUTER_RUN_API_PORT=${LLMROUTER_RUN_API_PORT:-18001}
export LLMROUTER_RUN_ENGINE_PORT=${LLMROUTER_RUN_ENGINE_PORT:-8001}
export LLMROUTER_TOKEN=${LLMROUTER_TOKEN:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
work=$(mktemp -d -t llmrouter-docs.XXXXXX)
export LLMROUTER_RUN_DIR=$work/run

run_pid=
cleanup() {
  if [ -n "$run_pid" ]; then
    # TERM, not INT: a background job of a non-interactive shell starts
    # with SIGINT ignored, and bash cannot trap a signal ignored on entry,
    # so INT left make run (and this script's wait) running forever in CI.
    kill -TERM "$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

scripts/run.sh >"$work/run.out" 2>&1 &
run_pid=$!
deadline=$((SECONDS + 180))
until grep -q "llmrouter is up" "$work/run.out"; do
  if ! kill -0 "$run_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    echo "docs-commands: make run did not come up:" >&2
    cat "$work/run.out" >&2
    exit 1
  fi
  sleep 0.5
done

# The documented defaults -> this run's ports; the example engine address -> the first engine.
subst() {
  sed -e "s/localhost:9090/localhost:$LLMROUTER_RUN_HTTP_PORT/g" \
      -e "s/127\.0\.0\.1:18000/127.0.0.1:$LLMROUTER_RUN_XDS_PORT/g" \
      -e "s/127\.0\.0\.1:18001/127.0.0.1:$LLMROUTER_RUN_API_PORT/g" \
      -e "s/127\.0\.0\.1:9002/127.0.0.1:$LLMROUTER_RUN_EXTPROC_PORT/g" \
      -e "s/10\.0\.0\.5:8000/127.0.0.1:$LLMROUTER_RUN_ENGINE_PORT/g"
}

# curl as documented, but failing on an HTTP error (a 401 is a broken example).
mkdir -p "$work/bin" "$work/cwd"
real_curl=$(command -v curl)
printf '#!/bin/sh\nexec %s -sS --fail-with-body "$@"\n' "$real_curl" >"$work/bin/curl"
chmod +x "$work/bin/curl"
ln -s "$root/$BIN" "$work/bin/llmrouter"

ran=0 skipped=0 failed=0
for doc in docs/operating.md deploy/README.md; do
  while IFS= read -r line; do
    [ -z "${line// }" ] && continue
    case "$line" in
      \#*) continue ;;
      kubectl*) echo "SKIP ($doc, needs a Kubernetes cluster): $line"; skipped=$((skipped + 1)); continue ;;
      docker*) echo "SKIP ($doc, needs Docker): $line"; skipped=$((skipped + 1)); continue ;;
      envoy*|func-e*) echo "SKIP ($doc, needs an Envoy binary): $line"; skipped=$((skipped + 1)); continue ;;
    esac
    cmd=$(printf '%s\n' "$line" | subst)
    if (cd "$work/cwd" && PATH="$work/bin:$PATH" bash -euo pipefail -c "$cmd") >"$work/out" 2>&1; then
      echo "ok   ($doc): $cmd"
      ran=$((ran + 1))
    else
      echo "FAIL ($doc): $cmd" >&2
      sed 's/^/     /' "$work/out" >&2
      failed=$((failed + 1))
    fi
  done < <(awk '/^```/{ if (inb) { inb=0 } else if ($0 ~ /^```(sh|bash)$/) { inb=1 }; next } inb' "$doc")
done
echo "docs-commands: $ran ran, $skipped skipped, $failed failed"

# `make run` after a few requests: every metric the dashboard and the rules read is exported (by the
# all-in-one or an agent). integration/e2e checks the same over separate processes, with Prometheus's
# parser vouching for the name pattern (deploy module, TestNameExtractionMatchesParser).
for i in 1 2 3 4; do
  curl -sSf -m 30 "localhost:$LLMROUTER_RUN_ENVOY_PORT/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model":"meta-llama/Llama-3.1-8B-Instruct","stream":true,"max_tokens":4,"messages":[{"role":"user","content":"metrics '"$i"'"}]}' >/dev/null
done
agent_port=${LLMROUTER_RUN_AGENT_PORT:-9093}
{
  curl -sSf "localhost:$LLMROUTER_RUN_HTTP_PORT/metrics"
  curl -sSf "localhost:$agent_port/metrics"
} | sed -n 's/^# TYPE \([^ ]*\) .*/\1/p' | sort -u >"$work/exported"
missing=0
for name in $(grep -oh '\bllmrouter_[a-z0-9_]*' deploy/grafana/llmrouter-dashboard.json deploy/prometheus/rules.yaml | sort -u); do
  base=$name
  for suf in _bucket _sum _count; do
    b=${name%"$suf"}
    if [ "$b" != "$name" ] && grep -qx "$b" "$work/exported"; then base=$b; fi
  done
  if ! grep -qx "$base" "$work/exported"; then
    echo "FAIL: make run does not export $name (read by the dashboard or the rules)" >&2
    missing=$((missing + 1))
  fi
done
echo "docs-commands: $(wc -l <"$work/exported") metric families exported by make run; $missing read but missing"
[ "$failed" = 0 ] && [ "$ran" -gt 0 ] && [ "$missing" = 0 ]
