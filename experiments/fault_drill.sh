#!/usr/bin/env bash
# Fault drill with real processes (the cases tests/test_faults.py cannot do in one process):
# two trainers in one workdir, kill -9 and resume, SIGTERM, a damaged newest checkpoint, and
# one-line errors. ~5 minutes on a 2-core CPU. Prints PASS / FAIL per case; exits 1 on a FAIL.
#   bash experiments/fault_drill.sh [WORKDIR_BASE]
set -u
cd "$(dirname "$0")/.."
BASE=${1:-$(mktemp -d /tmp/adm_fault_drill.XXXX)}
mkdir -p "$BASE"
PY=${PYTHON:-python}
TINY=(--config=fashion_mnist --config.model.image_size=8 --config.model.num_channels=32
      --config.model.channel_mult=1,2 --config.model.attention_resolutions=4
      --config.model.num_heads=1 --config.model.num_res_blocks=1 --config.train.batch_size=8
      --config.train.log_every=1 --config.train.grid_samples=0 --config.train.progress=False
      --config.train.async_checkpoint=False --config.data.num_workers=2)
failures=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then echo "PASS  $name"; else echo "FAIL  $name"; failures=$((failures + 1)); fi
}
steps_in() { ls "$1/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tr '\n' ' '; }
rows_once() {  # every step appears once in metrics.jsonl
  $PY -c "import json,sys; s=[json.loads(l)['step'] for l in open('$1/metrics.jsonl')]; sys.exit(len(s)!=len(set(s)))"
}
echo "fault drill in $BASE"

# 1. Two trainers in one workdir: the second stops within 5 s, naming the first.
W=$BASE/two
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=30 \
  --config.train.checkpoint_every=10 > "$BASE/first.log" 2>&1 &
FIRST=$!
for _ in $(seq 300); do grep -q '"pid"' "$W/.adm_jax.lock" 2>/dev/null && break; sleep 0.2; done
start=$(date +%s.%N)
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=30 \
  --config.train.seed=1 > "$BASE/second.log" 2>&1
second_rc=$?
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
wait $FIRST; first_rc=$?
check "second trainer refused (rc=$second_rc, ${elapsed}s)" \
  bash -c "[ $second_rc -ne 0 ] && grep -q 'is in use by train (pid $FIRST' '$BASE/second.log' && (( \$(echo '$elapsed < 5' | bc) ))"
check "first trainer finished untouched" \
  bash -c "[ $first_rc -eq 0 ] && [ '$(steps_in "$W")' = '10 20 30 ' ]"
check "metrics rows once each" rows_once "$W"

# 2. kill -9 mid-run, then the same command resumes (the stale lock is taken over).
W=$BASE/kill
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=40 \
  --config.train.checkpoint_every=5 > "$BASE/killed.log" 2>&1 &
VICTIM=$!
for _ in $(seq 600); do [ -d "$W/checkpoints/10" ] && break; sleep 0.2; done
kill -9 $VICTIM; wait $VICTIM 2>/dev/null
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=40 \
  --config.train.checkpoint_every=5 > "$BASE/resumed.log" 2>&1
resumed_rc=$?
# (steps_in runs in this shell: a function is not defined inside `bash -c`)
check "resumed after kill -9 to step 40" \
  bash -c "[ $resumed_rc -eq 0 ] && [[ ' $(steps_in "$W")' == *' 40 '* ]]"
check "stale lock taken over with a warning" grep -q "no longer running" "$BASE/resumed.log"
check "metrics rows once each after the resume" rows_once "$W"

# 3. SIGTERM: the current step finishes, a checkpoint is saved, exit 0 with a message.
W=$BASE/term
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=2000 \
  --config.train.checkpoint_every=1000 > "$BASE/term.log" 2>&1 &
TERMED=$!
for _ in $(seq 600); do [ -s "$W/metrics.jsonl" ] && break; sleep 0.2; done
sleep 2; kill -TERM $TERMED; wait $TERMED; term_rc=$?
check "SIGTERM: exit 0, checkpoint saved (steps: $(steps_in "$W"))" \
  bash -c "[ $term_rc -eq 0 ] && [ -n '$(steps_in "$W")' ] && grep -q 'SIGTERM' '$BASE/term.log'"

# 4. A damaged newest checkpoint: moved aside, the previous one restored.
W=$BASE/kill
newest=$(steps_in "$W" | awk '{print $NF}')
big=$(find "$W/checkpoints/$newest/state" -path '*/d/*' -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
rm "$big"
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=45 \
  --config.train.checkpoint_every=5 > "$BASE/damaged.log" 2>&1
damaged_rc=$?
check "damaged step $newest moved aside, training went on" \
  bash -c "[ $damaged_rc -eq 0 ] && [ -d '$W/checkpoints/damaged/$newest' ] && grep -q 'checkpoint step $newest' '$BASE/damaged.log'"

# 5. Errors in one line, before any work.
$PY -m adm_jax.main "${TINY[@]}" --workdir="$BASE/bad" --config.train.log_every=0 > "$BASE/bad.log" 2>&1
check "log_every=0: one line" bash -c "[ \$(wc -l < '$BASE/bad.log') -eq 1 ] && grep -q 'train.log_every=0 must be' '$BASE/bad.log'"
$PY -m adm_jax.main "${TINY[@]}" --workdir=/proc/forbidden > "$BASE/ro.log" 2>&1
check "unwritable workdir: one line" bash -c "[ \$(wc -l < '$BASE/ro.log') -eq 1 ] && grep -q 'workdir' '$BASE/ro.log'"

echo "$failures failure(s); logs in $BASE"
[ $failures -eq 0 ]
