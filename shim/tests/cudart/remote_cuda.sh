#!/usr/bin/env bash
# The C runtime programs through the shim against `rgpu server --backend cuda` (a real GPU), over
# shm and tcp: remote.sh's checks that do not depend on the emulated device. Run by remote.sh when
# RGPU_TEST_BACKEND=cuda, and by scripts/gpu-suite. Nothing here has run on a GPU yet.
#
#   RGPU_TEST_BACKEND=cuda shim/tests/cudart/remote.sh PROFILE LIB_DIR BIN_DIR
#   RGPU_BIN=PATH overrides target/PROFILE/rgpu (the shim and NVML library must lie beside it).
#
# Run here:            remote_memory (all but properties_name), memory_sizes, streams_events
#                      (checks and the per-call bench), alloc_ext, uva (all but the conflict_*
#                      checks), fork_threads fork, fork_check.py, the wrong-token refusal.
# Not run, and why:    kernel_driver, kernel_cudart, graphs, overlap, fork_threads threads: they
#                      launch the emulated device's built-in kernels (RGPU-EMU-MODULE images),
#                      which a real GPU cannot load; real kernels on the GPU are checked by
#                      cli/tests/cuda_server.rs (the shipped PTX) and the PyTorch step of
#                      scripts/gpu-suite. nvml and pynvml_check: they assert that the device name
#                      says "emulated" and busy the device with an emulated kernel.
# Checks that cannot hold on a GPU, so a FAIL of theirs is reported, not fatal:
#   properties_name (remote_memory) asserts the name says "emulated";
#   conflict_* (uva) rely on the emulated worker placing allocations right after the previous one.
set -euo pipefail
profile=$1 lib_dir=$2 bin=$3
rgpu=${RGPU_BIN:-target/$profile/rgpu}
[[ -x $rgpu ]] || { echo "FAIL: $rgpu not built"; exit 1; }
[[ -d $lib_dir ]] || { echo "FAIL: no library directory $lib_dir"; exit 1; }

# The quota each client asks for (--gpu-memory) and must then see as total memory.
quota=$((64 << 20))
dir=$(mktemp -d)
# shellcheck source=../../../scripts/lib/emulated-server.sh
. scripts/lib/emulated-server.sh
trap 'emu_server_stop; rm -rf "$dir"' EXIT

fail() {
  echo "FAIL: $*"
  for f in out log; do [[ -f $dir/$f ]] && { echo "--- $f (last 40 lines) ---"; tail -n 40 "$dir/$f"; }; done
  echo "--- server log ---"; tail -n 20 "$dir/server.log" || true
  exit 1
}

echo "cudart-cuda: starting rgpu server --backend cuda"
emu_server_backend=cuda emu_server_start "$rgpu" "$dir" "[pool]
client_memory_bytes = $quota" || fail "the cuda server did not start"
tcp_url=$emu_tcp_url

run_client() {
  local url=$1; shift
  timeout "${client_timeout_s:-120}" "$rgpu" run --server "$url" --token-file "$emu_token_file" \
    --gpu-memory "${client_quota:-$quota}" -- "$@"
}

# check_out PROGRAM URL TOLERATED_REGEX NAME…: every NAME has an "ok" line, no FAIL line other
# than those matching TOLERATED_REGEX (printed as not applicable), and the program finished.
check_out() {
  local prog=$1 url=$2 tolerated=$3; shift 3
  local name
  if [[ -n $tolerated ]]; then
    grep '^FAIL' "$dir/out" | grep -vE "$tolerated" && fail "a $prog check failed over $url"
    grep '^FAIL' "$dir/out" | grep -E "$tolerated" | sed 's/^/  | not applicable on a GPU: /' || true
  else
    ! grep '^FAIL' "$dir/out" || fail "a $prog check failed over $url"
  fi
  for name in "$@"; do grep -q "^ok $name\$" "$dir/out" || fail "missing $prog check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "$prog did not finish over $url"
  ! grep -E 'not supported yet|unknown table|unknown symbol|panic' "$dir/log" ||
    fail "$prog reached an unimplemented entry (or a panic) over $url"
}

# one PROGRAM URL [ENV…] -- ARGS…: runs a program through `rgpu run`, failing on a bad status.
one() {
  local prog=$1 url=$2; shift 2
  local status=0
  echo "cudart-cuda: $prog $* over $url"
  RGPU_LOG=rgpu_shim=info run_client "$url" "$@" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "$prog over $url exited with status $status"
}

for url in "$emu_shm_url" "$tcp_url"; do
  one remote_memory "$url" "$bin/remote_memory" "$quota"
  check_out remote_memory "$url" '^FAIL properties_name' device_count properties_total copy_1B copy_4KiB \
    copy_16MiB memset memcpy_dtod mem_info_total mem_info_free over_quota malloc_after_over_quota wild_pointer \
    free synchronize
  grep -q 'rgpu shim: connected' "$dir/log" || fail "no connect line over $url"
  sed -n 's/^/  | /p' "$dir/out" | grep -v '^  | ok ' || true

  client_quota=$((768 << 20)) RGPU_PINNED_BYTES=$((512 << 20)) \
    one memory_sizes "$url" "$bin/memory_sizes" $((256 << 20))
  check_out memory_sizes "$url" '' device malloc_max malloc_host host_alloc host_get_flags copy_pageable_sizes \
    copy_pinned_sizes copy_host_alloc async_pinned_errors async_pinned memcpy_default memcpy_2d memset_d16_d32 \
    pointer_attributes host_register wild_host_pointer usable_after_wild free
  sed -n 's/^perf /  | /p' "$dir/out"

  one streams_events "$url" "$bin/streams_events"
  check_out streams_events "$url" '' stream_create stream_priority stream_flags not_capturing event_create \
    event_query_unrecorded malloc enqueue event_synchronize event_query_done cross_stream_order elapsed_time \
    elapsed_time_no_timing stream_query_sync stream_host_roundtrip per_thread_stream \
    per_thread_streams_in_threads legacy_stream async_error_reported usable_after_error event_destroy \
    stream_destroy synchronize
  one streams_events_bench "$url" "$bin/streams_events" bench 100000
  grep -q '^ok bench$' "$dir/out" || fail "streams_events bench over $url"
  sed -n 's/^bench /  | /p' "$dir/out"

  one alloc_ext "$url" "$bin/alloc_ext" "$quota"
  check_out alloc_ext "$url" '' start pitch pitch_charged pitch_over_quota pools_supported malloc_async \
    async_charged malloc_async_over_quota default_pool malloc_from_pool async_memory_usable free_async returned \
    bad_free_async free_pitch

  one uva "$url" "$bin/uva"
  check_out uva "$url" '^FAIL conflict_' malloc reserved memcpy_default pointer_attributes \
    device_as_host_refused released_on_free

  one fork_threads "$url" "$bin/fork_threads" fork
  check_out fork_threads "$url" '' parent_init parent_work child_refused child_exit_runs_atexit \
    child_exit_without_calls parent_queued_work_survives_fork parent_after_fork fork_while_busy \
    parent_after_forks free
  sed -n 's/^fork_while_busy: /  | /p' "$dir/out"

  one fork_check.py "$url" python3 shim/tests/cudart/fork_check.py
  for name in py_fork_before_init_child_connects py_parent_init py_parent_work py_fork_after_init_refused \
    py_parent_after_fork; do
    grep -q "^ok $name\$" "$dir/out" || fail "missing Python fork check '$name' over $url"
  done
done

echo "cudart-cuda: a wrong token is refused (no device, one line naming the server)"
RGPU_TOKEN="$(printf 'f%.0s' {1..64})" timeout 60 "$rgpu" run --server "$tcp_url" --token-env -- \
  "$bin/device_count" >"$dir/out" 2>"$dir/log" || fail "exit status $?"
grep -q '^cudaGetDeviceCount: 100 (cudaErrorNoDevice) count=0$' "$dir/out" || fail "wrong token: device count"

emu_server_stop
echo "cudart-cuda: not run on the GPU (emulated built-in kernels or names): kernel_driver kernel_cudart graphs overlap nvml pynvml_check 'fork_threads threads'"
echo "cudart-cuda: remote checks passed over shm and tcp against the cuda backend"
