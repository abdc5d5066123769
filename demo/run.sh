#!/usr/bin/env bash
# The one-command demo (`make demo`): CPU only, no download, everything under demo_out/ (git-ignored).
#  1. start a Prefect server on a free loopback port, PREFECT_HOME in demo_out/ (stopped by PID on exit);
#  2. generate MPII- and COCO-format datasets and unlabeled folders; put the two tiny teachers that come with the
#     demo (demo/teachers) in place, or train them anew with FPD_DEMO_TRAIN_TEACHERS=1 (about 5 min more);
#  3. register the deployments (prefect.yaml), start one worker (two runs at a time) on the `gpu` process pool;
#  4. run distill-flow/demo for MPII and for COCO with `prefect deployment run ... --watch`; print MPII's table;
#  5. drop a new unlabeled folder in, run MPII again (only the new images are inferred) while COCO's run ends;
#  6. print COCO's table, what the re-run inferred and its table, where everything is.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=$REPO/demo_out
BIN=$REPO/.venv/bin
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_HOME=$OUT/prefect_home PREFECT_WORKER_QUERY_SECONDS=2
export CUDA_VISIBLE_DEVICES=""  # the demo is the CPU path, even on a GPU machine
START=$(date +%s)

rm -rf "$OUT"
mkdir -p "$PREFECT_HOME" "$OUT/logs"
PORT=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
SERVER_PID="" WORKER_PID="" CHILDREN=""  # CHILDREN: background steps of this script

cleanup() {
  local status=$?
  # shellcheck disable=SC2086  # a list of PIDs
  [ -z "$CHILDREN" ] || kill $CHILDREN 2>/dev/null || true
  # Cancel what still runs before stopping the worker, else the run stays Running in the UI forever.
  if [ -n "$WORKER_PID" ]; then
    "$BIN/python" demo/demo.py cancel-running >/dev/null 2>&1 || true
    # A Prefect worker answers the first SIGTERM by interrupting its run and may stay up: give it 10 s, then KILL.
    kill -- -"$WORKER_PID" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$WORKER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- -"$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
  fi
  if [ -n "$SERVER_PID" ]; then
    kill -- -"$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- -"$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    echo "Prefect server (PID $SERVER_PID) stopped."
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# `prefect deployment run --watch` prints every event of the run; keep the state changes of the flow and its tasks
# (and the run's URL, its reason when it fails), one line each (COLUMNS: Prefect wraps at 80 when piped).
WATCH_NOISE='prefect\.(artifact|worker\.|flow-run\.(heartbeat|pull-step|Pending|Submitting)|task-run\.Pending)|(Parameters|Job Variables|Scheduled start time):'
watch_run() {
  COLUMNS=200 "$BIN/prefect" deployment run distill-flow/demo --watch "$@" | grep --line-buffered -Ev "$WATCH_NOISE"
}
# Meanwhile, every 30 s, each dataset's newest student epoch, when it moved (their log.jsonl; demo/status.py).
report_students() {
  local last="" now
  while sleep 30; do
    now=$("$BIN/python" demo/status.py students "$OUT/runs")
    [ -z "$now" ] || printf '%s\n' "$now" | grep -vxF -f <(printf '%s\n' "$last") || true
    last=$now
  done
}

# Job control (set -m) only while starting background jobs: each gets its own process group, so that
# `kill -- -PID` stops it with its children; foreground steps stay in ours, so Ctrl-C reaches them and the trap.
set -m
"$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$OUT/logs/server.log" 2>&1 &
SERVER_PID=$!
set +m
echo "== Prefect server PID $SERVER_PID on http://127.0.0.1:$PORT (log: demo_out/logs/server.log)"

echo "== generating data; the tiny teachers that come with the demo"
"$BIN/python" demo/demo.py data
if [ "${FPD_DEMO_TRAIN_TEACHERS:-0}" = 1 ]; then
  echo "== training the two tiny teachers anew, side by side (while the server starts; about 4.5 min)"
  "$BIN/python" demo/demo.py teacher mpii >"$OUT/logs/teacher_mpii.log" 2>&1 &
  CHILDREN="$!"
  "$BIN/python" demo/demo.py teacher coco >"$OUT/logs/teacher_coco.log" 2>&1 &
  CHILDREN="$CHILDREN $!"
  for pid in $CHILDREN; do
    # The teachers' progress every 30 s: their last log line (phase, or epoch with loss and speed).
    seconds=0
    while kill -0 "$pid" 2>/dev/null; do
      sleep 1
      seconds=$((seconds + 1))
      [ $((seconds % 30)) = 0 ] || continue
      for d in mpii coco; do echo "   teacher $d: $(grep -E '^(epoch [0-9]+/|phase)' "$OUT/logs/teacher_$d.log" | tail -n 1)"; done
    done
    wait "$pid"  # set -e: a failed teacher stops the demo
  done
  CHILDREN=""
fi

"$BIN/python" demo/status.py wait-server "$PREFECT_API_URL" --timeout 120 \
  || { echo "the Prefect server did not start, see $OUT/logs/server.log"; exit 1; }

echo "== registering deployments and starting a worker on pool 'gpu'"
"$BIN/prefect" work-pool create gpu --type process --overwrite >/dev/null
"$BIN/prefect" --no-prompt deploy --all >"$OUT/logs/deploy.log" 2>&1
set -m
"$BIN/prefect" worker start --pool gpu --limit 2 >"$OUT/logs/worker.log" 2>&1 &
WORKER_PID=$!
set +m

# Two runs at a time on the 2 cores (one thread each): COCO is watched into a log throughout; on the terminal, MPII,
# then (COCO's students train longer) the MPII re-run with a new folder, on the core MPII leaves free.
echo "== runs 1 and 2: distill-flow/demo on COCO (watched into demo_out/logs/run_coco.log) and on MPII"
report_students &
PROGRESS_PID=$!
watch_run --flow-run-name demo-coco --params "$("$BIN/python" demo/demo.py params coco)" >"$OUT/logs/run_coco.log" 2>&1 &
COCO_PID=$!
CHILDREN="$PROGRESS_PID $COCO_PID"
watch_run --flow-run-name demo-mpii
"$BIN/python" demo/demo.py table mpii

echo "== a new unlabeled folder is dropped in; run 3: distill-flow/demo on MPII again (while COCO's run goes on)"
"$BIN/python" demo/demo.py add-folder
watch_run --flow-run-name demo-mpii-rerun
wait "$COCO_PID" || { tail -n 20 "$OUT/logs/run_coco.log"; exit 1; }
kill "$PROGRESS_PID" 2>/dev/null || true
CHILDREN=""
echo "== run 2, COCO: $(tail -n 1 "$OUT/logs/run_coco.log")"
"$BIN/python" demo/demo.py summary --api "$PREFECT_API_URL" --seconds $(($(date +%s) - START))
if [ "${FPD_DEMO_KEEP_SERVER:-0}" = 1 ]; then
  echo "== the UI stays up at ${PREFECT_API_URL%/api} until Ctrl-C"
  wait "$SERVER_PID"
fi
