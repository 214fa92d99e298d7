# Shared by the bench scripts (sourced): the default model path, a free port, waiting for a
# server's /health, starting a tandem server in the background (killed on exit) or a
# llama-server, the steps of a side-by-side comparison of two servers, and the saturation test
# of the interception sweeps.

DEFAULT_MODEL="${XDG_CACHE_HOME:-$HOME/.cache}/tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf"
# The project's virtualenv when installed (scripts/install-deps.sh), else the system python.
BENCH_PY=python3; [ -x .venv/bin/python ] && BENCH_PY=.venv/bin/python

# The tandem binary every bench script runs: target/release/tandem, which build_tandem builds,
# unless TANDEM_BIN names one built elsewhere (a `cuda` build, scripts/build-cuda.sh), which is
# run as it is. SERVE_FLAGS (split on spaces) is added to every start_tandem, e.g.
# SERVE_FLAGS='--gpu-layers 99'.
TANDEM="${TANDEM_BIN:-target/release/tandem}"
build_tandem() {
  [ -n "${TANDEM_BIN:-}" ] || cargo build --release --locked --bin tandem >&2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_up URL: until URL/health answers (60 s at most).
wait_up() {
  for _ in $(seq 1 300); do curl -sf "$1/health" >/dev/null && return 0; sleep 0.2; done
  echo "server at $1 did not start" >&2
  return 1
}

# kill_on_exit PID: the process is killed when the script exits (with every other one given).
BENCH_PIDS=()
kill_on_exit() {
  BENCH_PIDS+=("$1")
  trap 'kill "${BENCH_PIDS[@]}" 2>/dev/null || true' EXIT
}

# start_tandem LOG [serve flags...]: target/release/tandem serve on a free port, logging to LOG;
# sets PORT, URL and PID, kills the server on exit, returns once it answers.
start_tandem() {
  local log=$1; shift
  PORT=$(free_port)
  URL="http://127.0.0.1:$PORT"
  # shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
  "$TANDEM" serve --port "$PORT" "$@" ${SERVE_FLAGS:-} > "$log" 2>&1 &
  PID=$!
  kill_on_exit "$PID"
  wait_up "$URL"
}

# start_llama LOG PORT [llama-server flags...]: llama.cpp's llama-server (built by
# bench/build-llama-server.sh) on $MODEL with $THREADS threads and the given flags, logging to
# LOG; sets LPID, kills the server on exit, returns once it answers.
start_llama() {
  local log=$1 port=$2 bin; shift 2
  bin=$(bench/build-llama-server.sh)
  "$bin" -m "$MODEL" --port "$port" -t "$THREADS" -tb "$THREADS" "$@" 2>"$log" &
  LPID=$!
  kill_on_exit "$LPID"
  wait_up "http://127.0.0.1:$port"
}

# compare_steps OUT NAME_A URL_A NAME_B URL_B: the steps of a side-by-side comparison, each run
# against A, then B, written to OUT/NAME-STEP.{json,md}: single-stream decode (four requests, one
# per step single-1..4), 16 streams, TTFT of a 512-token prompt (six requests, one per step
# ttft-1..6), the client-side tool loop at each of $RATES req/s, and the agent loop
# (one 400-token system prompt shared by every conversation) at $AGENT_RATE. Both servers stay
# up and the steps alternate, so load from other tenants of this shared machine falls on both
# alike rather than on whichever ran second. Each step has its own seed, so no step's prompts
# repeat an earlier one's (a prompt cache would serve them); both servers get identical requests.
# $STEPS picks steps (default "single c16 ttft tools agent"); $REPEATS runs each tool-loop rate
# that many times (run k > 1 is step tools-RATE-runK, with prompts of its own), to see the spread.
compare_steps() {
  local out=$1 seed=400 r k; shift
  local -a servers=("$1" "$3") urls=("$2" "$4")
  local steps=" ${STEPS:-single c16 ttft tools agent} "
  step() {
    local name=$1 i; shift
    [[ $steps == *" ${name%%-*} "* ]] || return 0
    for i in 0 1; do
      "$TANDEM" bench --url "${urls[$i]}" --quiet --label "${servers[$i]} $name" "$@" \
        --out "$out/${servers[$i]}-$name" >/dev/null
    done
  }
  # in_turns NAME N SEED [bench flags...]: N one-request steps NAME-1..N (seeds SEED+1..SEED+N),
  # so the servers take turns request by request: N requests in a row to one server and then
  # N to the other put a slow spell of this shared machine on one of them (the TTFT step read
  # 1.14-1.15x so over 2026-12-04/05, while requests taken in turns gave 1.00x).
  in_turns() {
    local name=$1 n=$2 first=$3 k; shift 3
    for k in $(seq 1 "$n"); do
      step "$name-$k" "$@" --concurrency 1 --requests 1 --seed $((first + k))
    done
  }
  in_turns single 4 100 --prompt-tokens 32 --output-tokens 128
  step c16 --prompt-tokens 32 --output-tokens 128 --concurrency 16 --requests 32 --seed 200
  in_turns ttft 6 300 --prompt-tokens 512 --output-tokens 1
  for r in $RATES; do
    for k in $(seq 1 "${REPEATS:-1}"); do
      step "tools-$r$( ((k > 1)) && echo "-run$k")" --workload bench/workloads/tool_loop.jsonl \
        --rate "$r" --requests 24 --seed $((seed + 1000 * (k - 1)))
    done
    seed=$((seed + 100))
  done
  step agent --workload bench/workloads/tool_loop.jsonl --system-prompt-tokens 400 \
    --rate "$AGENT_RATE" --requests 24 --seed 900
}

# saturated REPORT.json LIMIT: whether a bench (or `tandem simulate`) run had errors or a mean
# normalized latency above LIMIT seconds/token (the sweeps stop at the first such rate).
saturated() {
  python3 - "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
sys.exit(0 if s["errors"] or s["normalized_latency_s"]["mean"] > float(sys.argv[2]) else 1)
PY
}
