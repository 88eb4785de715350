#!/usr/bin/env bash
# The shim's remote path, end to end: starts `rgpu server --backend emulated` with a temporary
# token on a temporary shm socket and a free tcp port, then runs the C programs (built against
# NVIDIA's static runtime by run.sh) through `rgpu run` over shm and over tcp. The server is
# stopped at the end and on any failure.
#
#   shim/tests/cudart/remote.sh PROFILE LIB_DIR BIN_DIR     (called by run.sh, from the repo root)
#
# RGPU_TEST_BACKEND=cuda runs remote_cuda.sh instead: `--backend cuda` and the programs that make
# sense on a real GPU (the GPU suite, scripts/gpu-suite). Unset or `emulated`: this script.
set -euo pipefail
case ${RGPU_TEST_BACKEND:-emulated} in
  emulated) ;;
  cuda) exec shim/tests/cudart/remote_cuda.sh "$@" ;;
  *) echo "FAIL: RGPU_TEST_BACKEND must be emulated or cuda, not '$RGPU_TEST_BACKEND'"; exit 1 ;;
esac
profile=$1 lib_dir=$2 bin=$3
rgpu=target/$profile/rgpu
[[ -x $rgpu ]] || { echo "FAIL: $rgpu not built"; exit 1; }

# The quota each client asks for (RGPU_GPU_MEMORY) and must then see as total memory.
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

echo "cudart: starting rgpu server --backend emulated"
emu_server_start "$rgpu" "$dir" "[pool]
devices = 1
device_memory_bytes = $((32 * quota))
client_memory_bytes = $quota" || fail "the server did not start"
tcp_url=$emu_tcp_url

# run_client URL PROG ARGS…: runs PROG the way users do, through `rgpu run` (shim and NVML
# library found next to the rgpu binary, where run.sh linked them), against URL with the test
# token and the quota (client_quota=BYTES overrides it, client_timeout_s=S the 60 s limit).
# Callers add RGPU_LOG and redirections; the exit status is PROG's.
run_client() {
  local url=$1; shift
  timeout "${client_timeout_s:-60}" "$rgpu" run --server "$url" --token-file "$emu_token_file" \
    --gpu-memory "${client_quota:-$quota}" -- "$@"
}

expected=(device_count properties_name properties_total copy_1B copy_4KiB copy_16MiB memset memcpy_dtod
  mem_info_total mem_info_free over_quota malloc_after_over_quota wild_pointer free synchronize)
# The shm run logs every call (trace): the runtime calls the driver from atexit handlers,
# after thread-local storage is gone, and logging there must not abort the process.
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: remote_memory over $url"
  status=0
  level=info; [[ $url == shm://* ]] && level=trace
  RGPU_LOG=rgpu_shim=$level run_client "$url" "$bin/remote_memory" "$quota" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "remote_memory over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "a check failed over $url"
  for name in "${expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "missing check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "remote_memory did not finish over $url"
  grep -q 'rgpu shim: connected' "$dir/log" || fail "no connect line over $url"
  ! grep -E 'not supported yet|unknown table|unknown symbol|panic' "$dir/log" || fail "the runtime reached an unimplemented entry (or a panic) over $url"
  sed -n 's/^/  | /p' "$dir/out" | grep -v '^  | ok '
done

# Memory paths (memory_sizes.c): pinned and pageable copies 1 B to 256 MiB, async pinned
# copies, cudaMemcpyDefault, cudaMemcpy2D, 16/32-bit memsets, pointer attributes, a wild host pointer.
# A larger quota and pinned bound than the checks above; the throughput lines are printed.
big_quota=$((768 << 20))
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: memory_sizes over $url"
  status=0
  client_quota=$big_quota client_timeout_s=120 RGPU_PINNED_BYTES=$((512 << 20)) RGPU_LOG=rgpu_shim=info \
    run_client "$url" "$bin/memory_sizes" $((256 << 20)) >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "memory_sizes over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "a memory check failed over $url"
  for name in device malloc_max malloc_host host_alloc host_get_flags copy_pageable_sizes copy_pinned_sizes \
    copy_host_alloc async_pinned_errors async_pinned memcpy_default memcpy_2d memset_d16_d32 pointer_attributes \
    host_register wild_host_pointer usable_after_wild free; do
    grep -q "^ok $name\$" "$dir/out" || fail "missing check '$name' over $url"
  done
  grep -q '^done$' "$dir/out" || fail "memory_sizes did not finish over $url"
  ! grep -E 'not supported yet|unknown table|unknown symbol|panic' "$dir/log" || fail "memory_sizes reached an unimplemented entry (or a panic) over $url"
  sed -n 's/^perf /  | /p' "$dir/out"
done

nvml_expected=(init driver_version cuda_driver_version count handle_by_index handle_by_index_out_of_range name
  name_insufficient_size memory_total_is_quota memory_v2 memory_v2_version_mismatch handle_by_uuid
  handle_by_unknown_uuid pci_info handle_by_pci_bus_id index utilization_in_range utilization_null_refused stub_not_supported
  foreign_handle_refused uuid_matches_cuda compute_capability name_matches_cuda processes_size_query
  processes_is_us memory_used_after_malloc spin_kernels utilization_after_kernels shutdown uninitialized_after_shutdown shutdown_twice)
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: nvml (rgpu's libnvidia-ml.so.1, then the runtime, one session) over $url"
  status=0
  RGPU_LOG=info run_client "$url" "$bin/nvml" "$quota" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "nvml over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "an nvml check failed over $url"
  for name in "${nvml_expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "missing nvml check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "nvml did not finish over $url"
  [[ $(grep -c 'rgpu shim: connected' "$dir/log") -eq 1 ]] || fail "NVML and CUDA must share one connection over $url"
  ! grep -E 'panic|unknown symbol' "$dir/log" || fail "a panic or unknown symbol over $url"
  sed -n 's/^/  | /p' "$dir/out" | grep -v '^  | ok '
done

# Streams and events (streams_events.c): several streams ordered by an event and a stream wait,
# the default streams, event record/query/synchronize/elapsed time, a deferred async error;
# then the per-call cost of an async call (cudaEventRecord), a local one (cudaEventQuery on a
# completed event) and a sync one (cudaStreamQuery), printed.
streams_expected=(stream_create stream_priority stream_flags not_capturing event_create event_query_unrecorded malloc
  enqueue event_synchronize event_query_done cross_stream_order elapsed_time elapsed_time_no_timing
  stream_query_sync stream_host_roundtrip per_thread_stream per_thread_streams_in_threads legacy_stream
  async_error_reported usable_after_error event_destroy stream_destroy synchronize)
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: streams_events over $url"
  status=0
  RGPU_LOG=rgpu_shim=info run_client "$url" "$bin/streams_events" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "streams_events over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "a stream/event check failed over $url"
  for name in "${streams_expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "missing check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "streams_events did not finish over $url"
  ! grep -E 'not supported yet|unknown table|unknown symbol|panic' "$dir/log" || fail "streams_events reached an unimplemented entry (or a panic) over $url"
  client_timeout_s=120 run_client "$url" "$bin/streams_events" bench 100000 >"$dir/out" 2>"$dir/log" \
    || fail "streams_events bench over $url: status $?"
  grep -q '^ok bench$' "$dir/out" || fail "streams_events bench over $url"
  sed -n 's/^bench /  | /p' "$dir/out"
done

# Kernels through the driver API (kernel_driver.c): an RGPU-EMU-MODULE v1 image, lookups, the
# built-in kernels launched with kernelParams, the extra form, cuLaunchKernelEx (cooperative;
# clusters refused) and cuLaunchCooperativeKernel, results checked on the host; bad launches
# give errors; a real PTX image registers but its launch is refused (and the worker says why).
kernel_expected=(init context module_load module_load_again lookup_vector_add lookup_saxpy lookup_fill
  lookup_sum lookup_unknown lookup_cached alloc_and_upload vector_add_kernel_params saxpy_extra
  fill_launch_ex_cooperative launch_ex_cluster_refused cooperative_launch sum_reduction bad_param_size
  both_param_forms missing_params unknown_function bad_geometry_deferred context_usable_after_errors
  real_image_registers real_kernel_lookup real_unknown_kernel real_kernel_launch_refused func_max_threads
  func_num_regs_builtin func_attribute_real_refused module_global_absent
  module_unload launch_after_unload unload_twice)
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: kernel_driver over $url"
  status=0
  RGPU_LOG=rgpu_shim=info run_client "$url" "$bin/kernel_driver" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "kernel_driver over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "a kernel check failed over $url"
  for name in "${kernel_expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "missing kernel check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "kernel_driver did not finish over $url"
  ! grep -E 'not supported yet|unknown symbol|panic' "$dir/log" || fail "kernel_driver reached an unimplemented entry (or a panic) over $url"
done
# Overlap (overlap.c): async work reaches the device while the program makes no driver call.
# `observe` queues a kernel, a memset and an async copy into pinned memory, then only watches that
# memory: on shm the worker writes it in place, so the value appears only if the shim sent the
# batch on its own (the flusher). On tcp an async copy into pinned memory is a round trip, so the
# check would prove nothing there; `timing` (printed, not asserted) runs on both.
echo "cudart: overlap observe over $emu_shm_url"
status=0
RGPU_LOG=rgpu_shim=info run_client "$emu_shm_url" "$bin/overlap" observe >"$dir/out" 2>"$dir/log" || status=$?
[[ $status -eq 0 ]] || fail "overlap observe exited with status $status"
for name in context spin_kernel setup pinned_alloc queued async_reached_device_without_a_call \
  observe_synchronize teardown; do
  grep -q "^ok $name\$" "$dir/out" || fail "missing overlap check '$name'"
done
grep -q '^done$' "$dir/out" || fail "overlap observe did not finish"
sed -n 's/^observe: /  | /p' "$dir/out"
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: overlap timing over $url"
  status=0
  RGPU_LOG=rgpu_shim=info run_client "$url" "$bin/overlap" timing >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "overlap timing over $url exited with status $status"
  for name in timing_launch timing_synchronize teardown; do
    grep -q "^ok $name\$" "$dir/out" || fail "missing overlap check '$name' over $url"
  done
  sed -n 's/^perf /  | /p' "$dir/out"
done

# Kernels through the runtime API (kernel_cudart.c): a fatbin registered the way nvcc's host
# code does it (__cudaRegisterFatBinary/Function; the 12.9 runtime then calls cuLibraryLoadData),
# carrying a test module, launched with cudaLaunchKernel and checked on the host.
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: kernel_cudart over $url"
  status=0
  RGPU_LOG=rgpu_shim=info run_client "$url" "$bin/kernel_cudart" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "kernel_cudart over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "a runtime kernel check failed over $url"
  for name in cudart_alloc cudart_vector_add cudart_fill; do
    grep -q "^ok $name\$" "$dir/out" || fail "missing runtime kernel check '$name' over $url"
  done
  grep -q '^done$' "$dir/out" || fail "kernel_cudart did not finish over $url"
  ! grep -E 'not supported yet|unknown symbol|panic' "$dir/log" || fail "kernel_cudart reached an unimplemented entry (or a panic) over $url"
done
grep -q 'kernel real_kernel cannot run on the emulated device' "$dir/server.log" ||
  fail "the worker did not log why the real kernel's launch was refused"

# Stream capture and graphs (graphs.c): a memset, a built-in kernel and a D2D copy captured on a
# stream, nothing run during the capture, the graph launched 3 times and checked; a synchronous
# copy during a capture is 900 and the capture ends 901.
graphs_expected=(graph_setup not_capturing_before begin_capture capturing capture_info event_in_capture captured_calls
  end_capture not_capturing_after nothing_ran_during_capture instantiate graph_launched_3_times destroy
  sync_copy_refused capture_invalidated usable_after)
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: graphs over $url"
  status=0
  RGPU_LOG=rgpu_shim=info run_client "$url" "$bin/graphs" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "graphs over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "a graph check failed over $url"
  for name in "${graphs_expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "missing graph check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "graphs did not finish over $url"
  ! grep -E 'not supported yet|unknown symbol|panic' "$dir/log" || fail "graphs reached an unimplemented entry (or a panic) over $url"
done

# NVIDIA's Python NVML bindings (what pynvml-based monitors and torch.cuda.utilization use),
# installed once into the cache like the runtime.
pynvml_dir=target/cudart-cache/pynvml
if [[ ! -f $pynvml_dir/pynvml.py ]]; then
  echo "cudart: installing nvidia-ml-py into $pynvml_dir" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$pynvml_dir" nvidia-ml-py==13.615.71 >&2 || fail "cannot install nvidia-ml-py"
fi
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: pynvml (nvidia-ml-py) over $url"
  status=0
  PYTHONPATH=$PWD/$pynvml_dir RGPU_LOG=info run_client "$url" python3 shim/tests/cudart/pynvml_check.py "$quota" \
    >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "pynvml_check over $url exited with status $status"
  for name in py_count py_name py_memory py_uuid py_compute_capability py_pci py_processes \
    py_utilization py_temperature_not_supported; do
    grep -q "^ok $name\$" "$dir/out" || fail "missing pynvml check '$name' over $url"
  done
  grep -q '^done$' "$dir/out" || fail "pynvml_check did not finish over $url"
  sed -n 's/^pynvml: /  | /p' "$dir/out"
done

# Allocation variants (alloc_ext.c): cudaMallocPitch, cudaMallocAsync / cudaFreeAsync and the
# default pool, each charged to the quota and refused over it, frees returning it.
alloc_expected=(start pitch pitch_charged pitch_over_quota pools_supported malloc_async async_charged
  malloc_async_over_quota default_pool malloc_from_pool async_memory_usable free_async returned
  bad_free_async free_pitch)
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: alloc_ext over $url"
  status=0
  RGPU_LOG=rgpu_shim=info run_client "$url" "$bin/alloc_ext" "$quota" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "alloc_ext over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "an allocation check failed over $url"
  for name in "${alloc_expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "missing check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "alloc_ext did not finish over $url"
  ! grep -E 'not supported yet|unknown table|unknown symbol|panic' "$dir/log" || fail "alloc_ext reached an unimplemented entry (or a panic) over $url"
done

# Unified addressing (uva.c): device ranges are reserved in the client (a host mmap with
# MAP_FIXED_NOREPLACE there fails), cudaMemcpyDefault all four ways, pointer attributes, a freed
# range released, and a device range that already is client host memory refused by
# cudaMemcpyDefault (explicit directions still work, the host bytes untouched).
uva_expected=(malloc reserved memcpy_default pointer_attributes device_as_host_refused released_on_free conflict_setup
  conflict_default_refused conflict_explicit_works conflict_free_keeps_host free)
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: uva over $url"
  status=0
  RGPU_LOG=rgpu_shim=info run_client "$url" "$bin/uva" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "uva over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "a unified-addressing check failed over $url"
  for name in "${uva_expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "missing check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "uva did not finish over $url"
  grep -q 'a device range is also host memory in this process' "$dir/log" || fail "no conflict line over $url"
  ! grep -E 'not supported yet|unknown symbol|panic' "$dir/log" || fail "uva reached an unimplemented entry (or a panic) over $url"
done

# fork() and threads (fork_threads.c, fork_check.py): forked children of a process with CUDA
# initialized get cudaErrorInitializationError / CUDA_ERROR_NOT_INITIALIZED, exit through _exit()
# and exit() (the runtime's atexit teardown), never touch the parent's connection; the parent's
# work before, between and after the forks is checked, also while another thread copies; then
# 8 threads x 50 iterations of alloc / H2D / built-in kernel / memset / D2H / free on their own
# streams, checked. The Python check forks through multiprocessing (a child forked before the
# parent's cuInit connects on its own).
fork_expected=(parent_init parent_work child_refused child_exit_runs_atexit child_exit_without_calls
  parent_queued_work_survives_fork
  parent_after_fork fork_while_busy parent_after_forks free)
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: fork_threads over $url"
  status=0
  RGPU_LOG=rgpu_shim=info run_client "$url" "$bin/fork_threads" fork >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "fork_threads fork over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "a fork check failed over $url"
  for name in "${fork_expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "missing fork check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "fork_threads fork did not finish over $url"
  grep -q 'forked from one that had initialized CUDA' "$dir/log" || fail "no forked-child line over $url"
  ! grep -E 'panic|remote call failed' "$dir/log" || fail "fork_threads fork: a panic or a failed remote call over $url"
  sed -n 's/^fork_while_busy: /  | /p' "$dir/out"
  status=0
  RGPU_LOG=rgpu_shim=info run_client "$url" "$bin/fork_threads" threads 8 50 >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "fork_threads threads over $url exited with status $status"
  for name in threads_setup threads_concurrent threads_context_clean; do
    grep -q "^ok $name\$" "$dir/out" || fail "missing thread check '$name' over $url"
  done
  grep -q '^done$' "$dir/out" || fail "fork_threads threads did not finish over $url"
  ! grep -E 'panic|unknown symbol' "$dir/log" || fail "fork_threads threads: a panic or unknown symbol over $url"
  sed -n 's/^threads: /  | /p' "$dir/out"
  status=0
  RGPU_LOG=rgpu_shim=info run_client "$url" python3 shim/tests/cudart/fork_check.py >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "fork_check.py over $url exited with status $status"
  for name in py_fork_before_init_child_connects py_parent_init py_parent_work py_fork_after_init_refused \
    py_parent_after_fork; do
    grep -q "^ok $name\$" "$dir/out" || fail "missing Python fork check '$name' over $url"
  done
  grep -q '^done$' "$dir/out" || fail "fork_check.py did not finish over $url"
done

echo "cudart: a wrong token is refused (no device, one line naming the server)"
RGPU_TOKEN="$(printf 'f%.0s' {1..64})" timeout 60 "$rgpu" run --server "$tcp_url" --token-env -- \
  "$bin/device_count" >"$dir/out" 2>"$dir/log" || fail "exit status $?"
grep -q '^cudaGetDeviceCount: 100 (cudaErrorNoDevice) count=0$' "$dir/out" || fail "wrong token: device count"
grep -q "cannot use the GPU server $tcp_url: handshake" "$dir/log" || fail "wrong token: no handshake line"

emu_server_stop
echo "cudart: remote checks passed over shm and tcp"
