# Shared by the bench scripts (sourced): the default model path, a free port, waiting for a
# server's /health, starting a tandem server in the background (killed on exit) or a
# llama-server, and the saturation test of the interception sweeps.

DEFAULT_MODEL="${XDG_CACHE_HOME:-$HOME/.cache}/tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf"
# The project's virtualenv when installed (scripts/install-deps.sh), else the system python.
BENCH_PY=python3; [ -x .venv/bin/python ] && BENCH_PY=.venv/bin/python

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_up URL: until URL/health answers (60 s at most).
wait_up() {
  for _ in $(seq 1 300); do curl -sf "$1/health" >/dev/null && return 0; sleep 0.2; done
  echo "server at $1 did not start" >&2
  return 1
}

# start_tandem LOG [serve flags...]: target/release/tandem serve on a free port, logging to LOG;
# sets PORT, URL and PID, kills the server on exit, returns once it answers.
start_tandem() {
  local log=$1; shift
  PORT=$(free_port)
  URL="http://127.0.0.1:$PORT"
  target/release/tandem serve --port "$PORT" "$@" > "$log" 2>&1 &
  PID=$!
  trap 'kill $PID 2>/dev/null || true' EXIT
  wait_up "$URL"
}

# start_llama LOG PORT [llama-server flags...]: llama.cpp's llama-server (built by
# bench/build-llama-server.sh) on $MODEL with $THREADS threads and the given flags, logging to
# LOG; sets LPID (the caller kills it), returns once it answers.
start_llama() {
  local log=$1 port=$2 bin; shift 2
  bin=$(bench/build-llama-server.sh)
  "$bin" -m "$MODEL" --port "$port" -t "$THREADS" -tb "$THREADS" "$@" 2>"$log" &
  LPID=$!
  wait_up "http://127.0.0.1:$port"
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
