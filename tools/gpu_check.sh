#!/usr/bin/env bash
# One device call: build the extension, run the GPU tests (and once under compute-sanitizer),
# the benchmarks and the main command; results under $OUT (default ./results).
#   STAGES="build test sanitize racecheck bench main profile variants sm89" bash tools/gpu_check.sh
#   (unset: all but profile, variants and sm89; STAGES="" runs none, only BENCH2_ARGS / BENCH3_ARGS)
# Extra pytest / bench args: TEST_K, PYTEST_ARGS, BENCH_ARGS, SM89_TEST_K, SM89_SANITIZE_K,
# SM89_BENCH_ARGS, BENCH2_ARGS, BENCH3_ARGS; PREBUILT / PREBUILT_VARIANTS (built here by
# tools/prebuild.sh), DEADLINE (below). Needs: python3 with torch, nvcc, a GPU.
# variants: each tools/variants/*.patch (or those VARIANTS names; experiments, not kept once
# decided) is applied to a copy of the sources, built in place in parallel with the main build,
# tested, and its bench rows timed after the main benchmark, each followed by the main build's same
# rows (VARIANT_BENCH or the variant's <name>.bench: bench/run.py arguments; <name>.tests: pytest
# arguments).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/results}
mkdir -p "$OUT"
STAGES=${STAGES-"build test sanitize racecheck bench main"}  # set but empty: no stage (BENCH2/3 only)
LOG="$OUT/run.log"
export PYTHONUNBUFFERED=1
status=()

has() { [[ " $STAGES " == *" $1 "* ]]; }
# DEADLINE: seconds after the start by which every stage must end (each is cut off at it, and one
# with under 15 s left is skipped), so that a call's later stages still get their turn.
stage() {  # name, command...
  local name=$1; shift
  if [ -n "${DEADLINE:-}" ]; then
    local left=$((DEADLINE - SECONDS))
    if (( left < 15 )); then echo "=== $name skipped: deadline" | tee -a "$LOG"; status+=("$name skipped"); return 124; fi
    set -- timeout "$left" "$@"
  fi
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$LOG"
  "$@" 2>&1 | tee -a "$LOG" "$OUT/$name.log" > /dev/null
  local rc=${PIPESTATUS[0]}
  status+=("$name rc=$rc $((SECONDS - t0))s")
  echo "=== $name done rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOG"
  return "$rc"
}

{
  nvidia-smi --query-gpu=name,compute_cap,clocks.sm,clocks.max.sm,power.limit,memory.total --format=csv
  nvcc --version | tail -2
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, torch.version.cuda)'
} 2>&1 | tee -a "$LOG"

# PREBUILT: the extension built elsewhere for this machine's python and torch (tools/prebuild.sh: a
# .so or .so.xz in an ignored folder the call carries), installed into python/ in place of the build
# stage. PREBUILT_VARIANTS: a folder of <variant>.so.xz built the same way from the variants' sources.
install_so() {  # file (.so or .so.xz), package folder
  python3 - "$1" "$2" <<'PY'
import glob, lzma, os, shutil, sys, sysconfig
src, pkg = sys.argv[1:]
for old in glob.glob(os.path.join(pkg, "_cuda_ops*.so")):
    os.remove(old)
with (lzma.open if src.endswith(".xz") else open)(src, "rb") as f, \
        open(os.path.join(pkg, "_cuda_ops" + sysconfig.get_config_var("EXT_SUFFIX")), "wb") as g:
    shutil.copyfileobj(f, g)
PY
}
[ -n "${PREBUILT:-}" ] && export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}

# The variants to run: those VARIANTS names, in that order (their tests and benches run in it), or
# every tools/variants/*.patch.
variant_names() {
  if [ -n "${VARIANTS:-}" ]; then echo $VARIANTS
  else for pf in tools/variants/*.patch; do [ -f "$pf" ] && basename "$pf" .patch; done; fi
}
if has variants; then
  for name in $(variant_names); do
    pf=tools/variants/$name.patch; d=/tmp/ac4k_var_$name; so=${PREBUILT_VARIANTS:-/nonexistent}/$name.so.xz
    rm -rf "$d"; mkdir -p "$d"
    if [ -f "$so" ]; then
      cp -r python "$d"/ && install_so "$so" "$d/python/ac4k_kernel" > "$OUT/var_$name.build.log" 2>&1
    elif [ -f "$pf" ]; then
      cp -r setup.py build_tools include lib python "$d"/
      ( cd "$d" && patch -p1 < "$OLDPWD/$pf" > "$OUT/var_$name.build.log" 2>&1 &&
        MAX_JOBS=${VARIANT_JOBS:-4} python3 setup.py build_ext --inplace >> "$OUT/var_$name.build.log" 2>&1 ) &
    fi
  done
fi
# sm89: a second build of the same sources for AC4K_CUDA_ARCH=sm89 (mma.sync kernels, compute_89 PTX
# that the driver JIT-compiles for this GPU), built beside the main one and tested after it.
SM89=/tmp/ac4k_sm89
if has sm89; then
  rm -rf "$SM89"; mkdir -p "$SM89"; cp -r setup.py build_tools include lib python "$SM89"/
  ( cd "$SM89" && AC4K_CUDA_ARCH=sm89 MAX_JOBS=${SM89_JOBS:-6} python3 setup.py build_ext --inplace > "$OUT/sm89_build.log" 2>&1;
    echo "rc=$?" >> "$OUT/sm89_build.log"; touch /tmp/ac4k_sm89_done ) &
fi
if has build && [ -n "${PREBUILT:-}" ]; then
  install_so "$PREBUILT" python/ac4k_kernel
  stage build python3 -c 'import ac4k_kernel; print(ac4k_kernel.get_info())' || { echo "PREBUILT FAILED"; exit 1; }
elif has build; then
  stage build python3 -m pip install --no-build-isolation --no-deps --no-index -v -e . || { echo "BUILD FAILED"; tail -50 "$OUT/build.log"; exit 1; }
fi
if has build; then
  so=$(python3 -c 'import ac4k_kernel._cuda_ops as m; print(m.__file__)')
  if command -v cuobjdump > /dev/null; then
    cuobjdump --dump-sass "$so" > /tmp/ac4k_sass.txt 2>&1  # large: only its summary goes to $OUT
    python3 tools/sass_summary.py /tmp/ac4k_sass.txt | tee -a "$LOG"
  fi
fi
# TEST_K: a pytest -k expression; TEST_TIMEOUT cuts off a hang (a kernel waiting on a barrier).
has test && stage test timeout ${TEST_TIMEOUT:-1500} python3 -m pytest tests/gpu -q -rs -k "${TEST_K:-}" ${PYTEST_ARGS:-}
# torch.compile and the fp64 S=8192 reference under the sanitizer take minutes and check nothing of
# ours: leave them out there. racecheck on one attention case (shared memory of the TMA pipeline).
# SANITIZE_K narrows it further (a pytest -k expression), SANITIZE_TIMEOUT cuts it off.
has sanitize && stage sanitize timeout ${SANITIZE_TIMEOUT:-3000} compute-sanitizer --tool memcheck --error-exitcode 9 \
  --target-processes all python3 -m pytest tests/gpu -q -x \
  -k "not compile and not s8192 and not never_released and not device_grid${SANITIZE_K:+ and ($SANITIZE_K)}" ${PYTEST_ARGS:-}
# RACECHECK_TESTS: other pytest arguments for racecheck (may quote).
has racecheck && stage racecheck bash -c "compute-sanitizer --tool racecheck --error-exitcode 9 \
  python3 -m pytest -q -x ${RACECHECK_TESTS:-tests/gpu/test_attention.py -k \"recipe and 129\"}"
# WAIT_FOR: a file that something started beside this script (an anchor's build) touches when done;
# waited for up to WAIT_MAX seconds before the bench and the variant rows (or only bench3) so they are
# timed beside it.
wait_anchor() {  # with BENCH3_ARGS, only before bench3 (wait_anchor late)
  [ -n "${WAIT_FOR:-}" ] || return 0
  [ "${1:-}" = late ] || [ -z "${BENCH3_ARGS:-}" ] || return 0
  local t0=$SECONDS; while [ ! -e "$WAIT_FOR" ] && (( SECONDS - t0 < ${WAIT_MAX:-240} )); do sleep 2; done
  echo "=== waited $((SECONDS - t0)) s for $WAIT_FOR" | tee -a "$LOG"
}
has bench && wait_anchor
has bench && stage bench timeout ${BENCH_TIMEOUT:-1500} python3 bench/run.py --json "$OUT/bench.json" ${BENCH_ARGS:-}
has main && stage main python3 -m ac4k_kernel
if has variants; then
  wait  # the variant builds
  wait_anchor
  for name in $(variant_names); do
    pf=tools/variants/$name.patch
    [ -d "/tmp/ac4k_var_$name/python" ] || continue
    # Per variant, optional: <name>.tests (pytest arguments; default the attention tests, VARIANT_TEST_K)
    # and <name>.bench (bench/run.py arguments; default VARIANT_BENCH).
    tests="tests/gpu/test_attention.py -k \"${VARIANT_TEST_K:-not s8192 and not compile}\""
    [ -f "${pf%.patch}.tests" ] && tests=$(cat "${pf%.patch}.tests")
    bench="${VARIANT_BENCH:---only attention --ours-only}"
    [ -f "${pf%.patch}.bench" ] && bench=$(cat "${pf%.patch}.bench")
    # A variant is timed only after its tests pass (a hang is cut off by the timeout), then the main
    # build's same rows right after it.
    PYTHONPATH=/tmp/ac4k_var_$name/python${PYTHONPATH:+:$PYTHONPATH} stage "var_${name}_test" \
      timeout ${VARIANT_TEST_TIMEOUT:-240} bash -c "python3 -m pytest -q -x -p no:cacheprovider $tests" || continue
    # bash -c: the bench arguments may quote (an --impl filter with spaces).
    PYTHONPATH=/tmp/ac4k_var_$name/python${PYTHONPATH:+:$PYTHONPATH} stage "var_$name" \
      bash -c "python3 bench/run.py $bench --json '$OUT/var_$name.json'"
    stage "var_main_for_$name" bash -c "python3 bench/run.py $bench --json '$OUT/var_main_for_$name.json'"
  done
fi
# BENCH2_ARGS, BENCH3_ARGS: further bench/run.py runs after the variants (e.g. the quantizers alone,
# then attention beside an anchor whose build ran meanwhile).
for n in 2 3; do
  a=BENCH${n}_ARGS
  [ -n "${!a:-}" ] || continue
  [ "$n" = 3 ] && wait_anchor late
  stage bench$n bash -c "python3 bench/run.py --json '$OUT/bench$n.json' ${!a}"  # the arguments may quote
done
if has sm89; then
  while [ ! -e /tmp/ac4k_sm89_done ]; do sleep 2; done
  AC4K_ALLOW_PTX_JIT=1 CUDA_CACHE_MAXSIZE=4294967296 PYTHONPATH=$SM89/python${PYTHONPATH:+:$PYTHONPATH} stage sm89_test \
    timeout ${SM89_TEST_TIMEOUT:-600} python3 -m pytest tests/gpu -q -rs -p no:cacheprovider -k "${SM89_TEST_K:-}"
  # SM89_SANITIZE_K: memcheck of those sm89 tests (a pytest -k expression; empty: none).
  [ -n "${SM89_SANITIZE_K:-}" ] && AC4K_ALLOW_PTX_JIT=1 CUDA_CACHE_MAXSIZE=4294967296 \
    PYTHONPATH=$SM89/python${PYTHONPATH:+:$PYTHONPATH} stage sm89_sanitize timeout ${SM89_SANITIZE_TIMEOUT:-600} \
    compute-sanitizer --tool memcheck --error-exitcode 9 --target-processes all python3 -m pytest tests/gpu -q -x \
    -p no:cacheprovider -k "not compile and ($SM89_SANITIZE_K)"
  AC4K_ALLOW_PTX_JIT=1 PYTHONPATH=$SM89/python${PYTHONPATH:+:$PYTHONPATH} python3 -c \
    'import ac4k_kernel._cuda_ops as m; print("sm89 build:", m.__file__, m.__arch__, m.__sass_cc__)' 2>&1 | tee -a "$LOG"
  # The sm89 kernels' speed on this GPU (SM89_BENCH_ARGS; empty: not timed), beside the sm90a rows of
  # the bench stage of the same call.
  [ -n "${SM89_BENCH_ARGS:-}" ] && AC4K_ALLOW_PTX_JIT=1 PYTHONPATH=$SM89/python${PYTHONPATH:+:$PYTHONPATH} \
    stage sm89_bench timeout ${SM89_BENCH_TIMEOUT:-900} python3 bench/run.py --json "$OUT/sm89_bench.json" $SM89_BENCH_ARGS
fi
# Nsight Compute: PROFILE_ARGS = tools/profile_ops.py's arguments (default: the 8-bit attention kernels,
# ours and SageAttention2's when importable), PROFILE_REGEX = the kernels to profile (ncu matches the function's
# name: ours is mha_8bit_kernel for both 8-bit precisions), PROFILE_COUNT = how many.
if has profile; then
  stage profile ncu --kernel-name regex:"${PROFILE_REGEX:-mha_8bit|qk_int8}" --launch-count ${PROFILE_COUNT:-2} --set full \
    --clock-control none --import-source no -o "$OUT/profile" -f python3 tools/profile_ops.py ${PROFILE_ARGS:-attention 8192 128}
  ncu --import "$OUT/profile.ncu-rep" --page details > "$OUT/profile_details.txt" 2>&1
  [ -n "${PROFILE_SASS:-}" ] && ncu --import "$OUT/profile.ncu-rep" --page source --csv --print-source sass > "$OUT/profile_sass.csv" 2>&1
fi

echo "=== summary" | tee -a "$LOG"
printf '%s\n' "${status[@]}" | tee -a "$LOG"
grep -E "passed|failed|ERROR SUMMARY|RACECHECK SUMMARY" "$OUT"/test.log "$OUT"/sm89_test.log "$OUT"/sanitize.log \
  "$OUT"/sm89_sanitize.log "$OUT"/racecheck.log 2>/dev/null | tail -8
[ -f "$OUT/bench.log" ] && sed -n '/^op /,$p' "$OUT/bench.log"
true
