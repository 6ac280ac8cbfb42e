#!/usr/bin/env bash
# Fault drill with real processes (the cases tests/test_faults.py cannot do in one process):
# two trainers in one workdir, kill -9 and resume, SIGTERM (exit 143, resumes), a damaged newest
# checkpoint, one-line errors, the non-finite guard, a disk that fills (a tmpfs when run as root,
# else RLIMIT_FSIZE) during training and sampling, a dead peer of a two-process run (jax.distributed
# on CPU) during training and during sampling, sampling resumed on another device count, and
# damaged evaluation inputs. Under 10 minutes on a 2-core CPU. Prints PASS / FAIL per case;
# exits 1 on a FAIL.
#   bash experiments/fault_drill.sh [WORKDIR_BASE]
set -u
cd "$(dirname "$0")/.."
BASE=${1:-$(mktemp -d /tmp/adm_fault_drill.XXXX)}
mkdir -p "$BASE"
PY=${PYTHON:-python}
# Every case runs the same tiny programs: one compilation cache for all of them, and XLA's
# cheap code generation (the drill checks what happens, not how fast).
export JAX_COMPILATION_CACHE_DIR=$BASE/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
FAST=$(XLA_FLAGS= $PY -c "from adm_jax import xla_env
print(xla_env.configure_for_cpu(fast_compile=True))")
export XLA_FLAGS="${XLA_FLAGS:-} $FAST"
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

# 3. SIGTERM: the current step finishes, a checkpoint is saved, exit 143 (what a scheduler
#    that requeues on failure needs) with the resume command; the same command resumes.
W=$BASE/term
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=2000 \
  --config.train.checkpoint_every=1000 > "$BASE/term.log" 2>&1 &
TERMED=$!
for _ in $(seq 600); do [ -s "$W/metrics.jsonl" ] && break; sleep 0.2; done
sleep 2; kill -TERM $TERMED; wait $TERMED; term_rc=$?
saved=$(steps_in "$W" | awk '{print $NF}')
check "SIGTERM: exit 143, checkpoint saved (steps: $(steps_in "$W"))" \
  bash -c "[ $term_rc -eq 143 ] && [ -n '$saved' ] && grep -q 'SIGTERM' '$BASE/term.log' && grep -q 'resume: python -m adm_jax.main' '$BASE/term.log'"
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=$((saved + 2)) \
  --config.train.checkpoint_every=1000 > "$BASE/term_resumed.log" 2>&1
resume_rc=$?
check "after SIGTERM the same command resumes (exit $resume_rc at step $((saved + 2)))" \
  bash -c "[ $resume_rc -eq 0 ] && [ '$(steps_in "$W" | awk '{print $NF}')' = '$((saved + 2))' ] && grep -q 'restored checkpoint of step $saved' '$BASE/term_resumed.log'"

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

# 6. The non-finite guard stops the run non-zero, in one line, with nothing saved.
$PY -m adm_jax.main "${TINY[@]}" --workdir="$BASE/nan" --config.train.lr=1e39 \
  --config.train.num_steps=3 > "$BASE/nan.log" 2>&1
nan_rc=$?
check "non-finite state: exit 1, one error line, no checkpoint" \
  bash -c "[ $nan_rc -eq 1 ] && [ \$(grep -c '^error:' '$BASE/nan.log') -eq 1 ] && grep -q 'non-finite' '$BASE/nan.log' && [ -z '$(steps_in "$BASE/nan")' ]"

# 7. A disk that fills: a 64 MiB tmpfs (root) or RLIMIT_FSIZE (a file limit) under training and
#    sampling: one line naming the path and the space, nothing half-written kept, and the same
#    command resumes once space is freed.
DISK=$BASE/disk; mkdir -p "$DISK"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=64m tmpfs "$DISK" 2>/dev/null; then
  how="tmpfs"  # a real filesystem that fills; fill N leaves N bytes free
  fill() { rm -f "$DISK/filler"; head -c "$(( $(stat -f -c '%a*%S' "$DISK") - $1 ))" /dev/zero > "$DISK/filler"; }
  unfill() { rm -f "$DISK/filler"; }
else
  how="RLIMIT_FSIZE"  # not root: no file may grow past 4 MiB (EFBIG) in the limited runs
  fill() { :; }; unfill() { :; }
fi
run_limited() { if [ "$how" = tmpfs ]; then "$@"; else (ulimit -f 4096; trap '' XFSZ; "$@"); fi; }
W=$DISK/w
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=2 \
  --config.train.checkpoint_every=2 > "$BASE/disk_first.log" 2>&1
fill 65536
run_limited $PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=4 \
  --config.train.checkpoint_every=2 > "$BASE/disk_full.log" 2>&1
full_rc=$?
check "full disk ($how) at a checkpoint: exit 1, one line naming it and the space" \
  bash -c "[ $full_rc -eq 1 ] && [ \$(grep -c '^error:' '$BASE/disk_full.log') -eq 1 ] && grep -q 'error: no space left on the device (or quota) writing checkpoint step 4 .* free' '$BASE/disk_full.log' && ! grep -q Traceback '$BASE/disk_full.log'"
check "full disk: the newest complete checkpoint is kept, nothing half-written" \
  bash -c "[ '$(steps_in "$W")' = '2 ' ] && [ -z \"\$(find '$W' -name '*tmp*')\" ]"
unfill
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --config.train.num_steps=4 \
  --config.train.checkpoint_every=2 > "$BASE/disk_freed.log" 2>&1
freed_rc=$?
check "space freed: the same command resumes to step 4 (exit $freed_rc)" \
  bash -c "[ $freed_rc -eq 0 ] && [ '$(steps_in "$W")' = '2 4 ' ]"
SAMPLE=(--mode=sample --config.sample.num_samples=24 --config.sample.batch_size=8
        --config.sample.sampler=ddim --config.sample.steps=3)
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" "${SAMPLE[@]}" \
  --config.sample.output_dir="$BASE/straight_samples" > "$BASE/straight_sample.log" 2>&1
if [ "$how" = tmpfs ]; then  # (sample parts are a few KB: no file limit catches them)
  fill 20000
  $PY -m adm_jax.main "${TINY[@]}" --workdir="$W" "${SAMPLE[@]}" > "$BASE/sample_full.log" 2>&1
  sfull_rc=$?
  parts=$(ls "$W"/samples/parts_*/part_*.npz 2>/dev/null | wc -l)
  check "full disk while sampling: exit 1, one line, finished parts kept ($parts)" \
    bash -c "[ $sfull_rc -eq 1 ] && [ \$(grep -c '^error:' '$BASE/sample_full.log') -eq 1 ] && grep -q 'error: no space left .* writing sample part' '$BASE/sample_full.log' && ! grep -q Traceback '$BASE/sample_full.log' && [ -z \"\$(find '$W/samples' -name '*tmp*')\" ]"
  unfill
  $PY -m adm_jax.main "${TINY[@]}" --workdir="$W" "${SAMPLE[@]}" > "$BASE/sample_freed.log" 2>&1
  check "space freed: sampling resumes and gives the uninterrupted run's samples" \
    $PY -c "import numpy as np,glob; a=np.load(glob.glob('$W/samples/samples_24x*.npz')[0])['arr_0']; b=np.load(glob.glob('$BASE/straight_samples/samples_24x*.npz')[0])['arr_0']; assert (a==b).all()"
  umount "$DISK"
else
  echo "SKIP  full disk while sampling (needs root to mount a tmpfs)"
fi

# 8. Sampling interrupted on 1 device (kill -9 after its first part) and resumed on 8: the same
#    samples as an uninterrupted run.
W=$BASE/kill   # a trained workdir (case 2)
XLA_FLAGS="--xla_force_host_platform_device_count=1 $FAST" $PY -m adm_jax.main "${TINY[@]}" --workdir="$W" \
  "${SAMPLE[@]}" --config.train.num_steps=45 --config.sample.output_dir=one > "$BASE/one.log" 2>&1
XLA_FLAGS="--xla_force_host_platform_device_count=1 $FAST" $PY -m adm_jax.main "${TINY[@]}" --workdir="$W" \
  "${SAMPLE[@]}" --config.train.num_steps=45 --config.sample.output_dir=moved > "$BASE/moved1.log" 2>&1 &
MOVER=$!
for _ in $(seq 600); do ls "$W"/moved/parts_*/part_00000.npz >/dev/null 2>&1 && break; sleep 0.1; done
kill -9 $MOVER; wait $MOVER 2>/dev/null
XLA_FLAGS="--xla_force_host_platform_device_count=8 $FAST" $PY -m adm_jax.main "${TINY[@]}" --workdir="$W" \
  "${SAMPLE[@]}" --config.train.num_steps=45 --config.sample.output_dir=moved > "$BASE/moved8.log" 2>&1
check "sampling resumed on 8 devices after 1: the same npz" \
  $PY -c "import numpy as np,glob; a=np.load(glob.glob('$W/one/samples_24x*.npz')[0])['arr_0']; b=np.load(glob.glob('$W/moved/samples_24x*.npz')[0])['arr_0']; assert (a==b).all()"

# 9. A dead peer: two processes (jax.distributed on CPU, 2 devices each); one is killed -9 during
#    training, then during sampling. The other exits 1 within the heartbeat timeout (30 s) plus
#    slack, with one line naming the lost process and what to run, no C++ dump on the terminal;
#    starting both again resumes.
two_procs() {  # two_procs NAME ARGS...: starts processes 0 and 1, pids in P0 P1
  local name=$1; shift
  local port=$((20000 + RANDOM % 20000))
  for i in 0 1; do
    XLA_FLAGS="--xla_force_host_platform_device_count=2 $FAST" JAX_COORDINATOR_ADDRESS=127.0.0.1:$port \
      JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i $PY -m adm_jax.main "$@" \
      > "$BASE/$name.$i.out" 2> "$BASE/$name.$i.err" &
    eval "P$i=\$!"
  done
}
survivor_ok() {  # survivor_ok NAME RC SECONDS
  [ "$2" -eq 1 ] && (( $(echo "$3 < 90" | bc) )) && [ "$(grep -c '^error:' "$BASE/$1.0.err")" -eq 1 ] \
    && grep -q '^error: process 1 of this 2-process run' "$BASE/$1.0.err" \
    && grep -q 'start all 2 again with the same command' "$BASE/$1.0.err" \
    && ! grep -qE 'Check failure|Fatal Python|Traceback' "$BASE/$1.0.err"
}
W=$BASE/peer
two_procs peer_train "${TINY[@]}" --workdir="$W" --config.train.num_steps=100000 \
  --config.train.checkpoint_every=20 --config.train.log_every=20
for _ in $(seq 1200); do [ -d "$W/checkpoints/40" ] && break; sleep 0.25; done
start=$(date +%s.%N); kill -9 $P1; wait $P0; peer_rc=$?
peer_s=$(echo "$(date +%s.%N) - $start" | bc)
check "dead peer in training: survivor exits $peer_rc in ${peer_s}s with one line" survivor_ok peer_train $peer_rc $peer_s
newest=$(steps_in "$W" | awk '{print $NF}')
two_procs peer_resume "${TINY[@]}" --workdir="$W" --config.train.num_steps=$((newest + 4)) \
  --config.train.checkpoint_every=20 --config.train.log_every=20
wait $P0; r0=$?; wait $P1; r1=$?
check "both started again: resumed from step $newest to $((newest + 4))" \
  bash -c "[ $r0 -eq 0 ] && [ $r1 -eq 0 ] && grep -q 'restored checkpoint of step $newest' '$BASE/peer_resume.0.err'"
two_procs peer_sample "${TINY[@]}" --workdir="$W" "${SAMPLE[@]}" --config.sample.num_samples=400 \
  --config.train.num_steps=$((newest + 4))
for _ in $(seq 1200); do ls "$W"/samples/parts_*/part_00001.npz >/dev/null 2>&1 && break; sleep 0.1; done
start=$(date +%s.%N); kill -9 $P1; wait $P0; peer_rc=$?
peer_s=$(echo "$(date +%s.%N) - $start" | bc)
check "dead peer in sampling: survivor exits $peer_rc in ${peer_s}s with one line" survivor_ok peer_sample $peer_rc $peer_s
two_procs peer_sample2 "${TINY[@]}" --workdir="$W" "${SAMPLE[@]}" --config.sample.num_samples=400 \
  --config.train.num_steps=$((newest + 4))
wait $P0; r0=$?; wait $P1; r1=$?
check "both started again: sampling finished from its parts" \
  bash -c "[ $r0 -eq 0 ] && [ $r1 -eq 0 ] && ls '$W'/samples/samples_400x*.npz >/dev/null"

# 10. Damaged evaluation inputs: one line naming the file, before any feature is computed.
head -c 2000 "$(ls "$W"/samples/samples_400x*.npz | head -1)" > "$BASE/truncated.npz"
$PY -m adm_jax.main "${TINY[@]}" --workdir="$W" --mode=eval --config.model.image_size=32 \
  --config.sample.sample_npz="$BASE/truncated.npz" > "$BASE/eval_bad.log" 2>&1
eval_rc=$?
check "truncated samples file: exit 1, one line naming it" \
  bash -c "[ $eval_rc -eq 1 ] && [ \$(grep -c . '$BASE/eval_bad.log') -eq 1 ] && grep -q 'truncated.npz is not a readable npz' '$BASE/eval_bad.log'"

echo "$failures failure(s); logs in $BASE"
[ $failures -eq 0 ]
