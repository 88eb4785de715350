#!/usr/bin/env bash
# PyTorch's default Linux wheel (torch 2.15.0, CUDA 13.2, libcudart.so.13) through rgpu's
# libcuda.so.1: starts `rgpu server --backend emulated`, then runs torch_emulated.py through
# `rgpu run` over shm and over tcp (device facts, copies up to 64 MiB, pinned non-blocking
# copies, the caching allocator, streams and events, NVML-backed queries, and an op needing a
# real kernel refused with a RuntimeError naming CUDA error 801), plus one run without a
# server (no device, no crash). See docs/shim.md (PyTorch).
#
#   shim/tests/torch/run.sh PROFILE LIB_DIR    (called by shim/tests/cudart/run.sh, from the
#                                               repo root, after it built and linked the shim)
#
# The wheel and the libraries `import torch` loads (every one is DT_NEEDED by libtorch_cuda.so
# or libtorch_cpu.so) are pinned and installed once into target/torch-cache/site: about
# 2.6 GB to download and 4.4 GB on disk, so the step is opt-in:
#   RGPU_TEST_TORCH=1   install if needed, then run (a failed install fails the step)
#   RGPU_TEST_TORCH=0   skip (says so)
#   unset               run if the cache is installed, else skip and say how to enable it
set -euo pipefail
profile=$1 lib_dir=$2
rgpu=target/$profile/rgpu
[[ -x $rgpu ]] || { echo "FAIL: $rgpu not built"; exit 1; }

cache=target/torch-cache
site=$cache/site
# Written after a complete install of exactly this pinned set.
marker=$site/.rgpu-torch-2.15.0-cu132
# Exact versions pip resolved for torch 2.15.0 on 2026-11-21 (no numpy: torch does not need it).
wheels=(torch==2.15.0 nvidia-cuda-runtime==13.2.86 nvidia-cublas==13.4.1.3 nvidia-cuda-cupti==13.2.86
  nvidia-cuda-nvrtc==13.2.86 nvidia-cufft==12.2.0.57 nvidia-cufile==1.17.1.22 nvidia-cusolver==12.2.0.11
  nvidia-cusparse==12.7.10.12 nvidia-nvjitlink==13.5.37 nvidia-nvtx==13.2.86 nvidia-cudnn-cu13==9.26.0.51
  nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 nvidia-nvshmem-cu13==3.7.2
  filelock==4.2.11 typing-extensions==4.16.0 sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1 jinja2==3.1.6
  markupsafe==3.0.4 fsspec==2026.9.0 nvidia-ml-py==13.615.71)

if [[ ! -f $marker ]]; then
  case ${RGPU_TEST_TORCH:-} in
    1)
      echo "torch: installing torch 2.15.0 and its CUDA 13.2 libraries into $site (about 2.6 GB from PyPI)"
      rm -rf "$site"
      start=$SECONDS
      PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$site" "${wheels[@]}" || { echo "FAIL: cannot install torch from PyPI"; exit 1; }
      touch "$marker"
      echo "torch: installed in $((SECONDS - start)) s, $(du -sh "$site" | cut -f1) on disk"
      ;;
    *)
      echo "torch: SKIPPED: PyTorch is not installed in $site (a 2.6 GB download, 4.4 GB on disk);"
      echo "torch:          run with RGPU_TEST_TORCH=1 to install it once and run the PyTorch checks"
      exit 0
      ;;
  esac
elif [[ ${RGPU_TEST_TORCH:-} == 0 ]]; then
  echo "torch: SKIPPED: RGPU_TEST_TORCH=0"
  exit 0
fi

# The quota the client asks for and must see as total memory; the largest copy.
quota=$((512 << 20))
copy_max=$((64 << 20))
# Fewest fatbins the eager run must load (torch 2.15.0 registers 477).
eager_images_min=400
# The shim's pinned-memory bound: PyTorch caches freed pinned blocks, rounded up to powers of two.
pinned=$((512 << 20))
dir=$(mktemp -d)
# shellcheck source=../../../scripts/lib/emulated-server.sh
. scripts/lib/emulated-server.sh
trap 'emu_server_stop; rm -rf "$dir"' EXIT

fail() {
  echo "FAIL: $*"
  for f in out log; do [[ -f $dir/$f ]] && { echo "--- $f (last 40 lines) ---"; tail -n 40 "$dir/$f"; }; done
  echo "--- server log ---"; tail -n 20 "$dir/server.log" 2>/dev/null || true
  exit 1
}

# The log must show no refusing stub, unknown name or table, and no panic.
clean_log() {
  ! grep -E 'not supported yet|unknown table|unknown symbol|panic' "$dir/log" ||
    fail "$1: torch reached an unimplemented entry (or a panic)"
}

echo "torch: without a server: no device, no crash"
status=0
env -u RGPU_SERVER -u RGPU_TOKEN -u RGPU_TOKEN_FILE PYTHONPATH="$PWD/$site" RGPU_LOG=rgpu_shim=info \
  timeout 120 "$rgpu" run -- python3 shim/tests/torch/torch_emulated.py no-server >"$dir/out" 2>"$dir/log" || status=$?
[[ $status -eq 0 ]] || fail "no-server run exited with status $status"
for name in no_device_available no_device_count; do grep -q "^ok $name\$" "$dir/out" || fail "missing check '$name' without a server"; done
grep -q 'reporting no CUDA devices: RGPU_SERVER is not set' "$dir/log" || fail "no line saying why there is no device"

echo "torch: starting rgpu server --backend emulated"
emu_server_start "$rgpu" "$dir" "[pool]
devices = 1
device_memory_bytes = $((8 * quota))
client_memory_bytes = $quota" || fail "the server did not start"

expected=(is_available device_count device_name properties_total_memory capability mem_get_info_total
  mem_get_info_free copy_pageable_sizes copy_device_to_device copy_pinned_non_blocking pinned_over_bound_refused
  pinned_over_bound_explained memory_allocated
  memory_reserved empty_cache stream_is_side event_query_done event_elapsed_time stream_copy_result
  stream_query synchronize nvml_device_memory_used nvml_utilization kernel_refused
  copy_after_kernel_error kernel_refused_again copy_after_second_error zeros_by_memset cublas_refused
  copy_after_cublas_error)
for url in "$emu_shm_url" "$emu_tcp_url"; do
  echo "torch: torch_emulated.py over $url"
  status=0
  start=$SECONDS
  PYTHONPATH="$PWD/$site" RGPU_LOG=rgpu_shim=info RGPU_PINNED_BYTES=$pinned timeout 300 "$rgpu" run --server "$url" \
    --token-file "$emu_token_file" --gpu-memory "$quota" -- \
    python3 shim/tests/torch/torch_emulated.py "$quota" "$copy_max" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "torch_emulated.py over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "a torch check failed over $url"
  for name in "${expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "missing check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "torch_emulated.py did not finish over $url"
  grep -q 'rgpu shim: connected' "$dir/log" || fail "no connect line over $url"
  clean_log "torch over $url"
  sed -n 's/^perf /  | /p; s/^kernel error: /  | kernel error: /p; s/^cublas error: /  | cublas error: /p; s/^pinned error: /  | pinned error: /p' "$dir/out"
  echo "  | whole run $((SECONDS - start)) s"
done
# Eager module loading (the driver's CUDA_MODULE_LOADING=EAGER): the runtime ships every fatbin
# PyTorch registered (477, about 338 MB for torch 2.15) at its first call; all must load.
echo "torch: CUDA_MODULE_LOADING=EAGER over $emu_shm_url"
status=0
start=$SECONDS
CUDA_MODULE_LOADING=EAGER PYTHONPATH="$PWD/$site" RGPU_LOG=rgpu_shim=debug timeout 300 "$rgpu" run \
  --server "$emu_shm_url" --token-file "$emu_token_file" --gpu-memory "$quota" -- \
  python3 shim/tests/torch/torch_emulated.py eager >"$dir/out" 2>"$dir/log" || status=$?
[[ $status -eq 0 ]] || fail "the eager run exited with status $status"
for name in eager_is_available eager_copy; do grep -q "^ok $name\$" "$dir/out" || fail "missing check '$name' (eager)"; done
grep -q '^done$' "$dir/out" || fail "the eager run did not finish"
loaded=$(grep -cE 'rgpu shim: module (image shipped|loaded by hash)' "$dir/log" || true)
[[ $loaded -ge $eager_images_min ]] || fail "eager loading loaded $loaded images, expected at least $eager_images_min"
! grep -E 'exceeds the .*inline frame bound' "$dir/log" || fail "an image was too large to load"
clean_log "torch (eager)"
sed -n 's/^perf /  | /p' "$dir/out"
echo "  | $loaded images loaded, whole run $((SECONDS - start)) s"

grep -q 'cannot run on the emulated device' "$dir/server.log" ||
  fail "the worker did not log why torch's kernel launch was refused"

emu_server_stop
echo "torch: all checks passed over shm and tcp"
