#!/usr/bin/env bash
# The CUDA 13.x runtimes through the shim: for each pinned 13.x release (scripts/cudart-runtime
# --list13; PyPI, cached), builds device_count.c and remote_memory.c against its static
# runtime (libcudart_static.a) and against its shared one (libcudart.so.13, loaded the way
# PyTorch's wheel loads it), then runs them through the shim without a server and against
# `rgpu server --backend emulated` over shm and tcp, with the checks the 12.9 suite makes.
#
#   shim/tests/cudart/cuda13.sh PROFILE LIB_DIR BIN_DIR     (called by run.sh, from the repo root)
set -euo pipefail
profile=$1 lib_dir=$2 bin=$3
rgpu=target/$profile/rgpu
[[ -x $rgpu ]] || { echo "FAIL: $rgpu not built"; exit 1; }

# The driver version the shim reports (shim/src/cuda_types.rs DRIVER_VERSION).
driver_version=13050
# Fewest cuGetProcAddress requests a 13.x runtime is expected to make at start (519 for 13.5).
requests_min=400
# The client quota, seen as total memory.
quota=$((64 << 20))
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
  ! grep -E 'not supported yet|unknown table|unknown symbol|panic' "$dir/log" || fail "$1: the runtime reached an unimplemented entry (or a panic)"
}

echo "cudart13: starting rgpu server --backend emulated"
emu_server_start "$rgpu" "$dir" "[pool]
devices = 1
device_memory_bytes = $((4 * quota))
client_memory_bytes = $quota" || fail "the server did not start"

expected=(device_count properties_name properties_total copy_1B copy_4KiB copy_16MiB memset memcpy_dtod
  mem_info_total mem_info_free over_quota malloc_after_over_quota wild_pointer free synchronize)

for key in $(scripts/cudart-runtime --list13); do
  pkgs=$(scripts/cudart-runtime "$key")
  inc=$pkgs/nvidia/cu13/include rt_lib=$pkgs/nvidia/cu13/lib
  runtime_version=$(sed -n 's/^#define CUDART_VERSION  *\([0-9]*\).*/\1/p' "$inc/cuda_runtime_api.h")
  [[ -n $runtime_version ]] || fail "no CUDART_VERSION in $inc/cuda_runtime_api.h"
  out_bin=$bin/cuda-$key
  mkdir -p "$out_bin"
  for src in device_count remote_memory; do
    gcc -O1 -o "$out_bin/${src}_static" "shim/tests/cudart/$src.c" -I "$inc" "$rt_lib/libcudart_static.a" -ldl -lpthread -lrt
    gcc -O1 -o "$out_bin/${src}_shared" "shim/tests/cudart/$src.c" -I "$inc" -L "$rt_lib" -l:libcudart.so.13 -Wl,-rpath,"$rt_lib"
  done
  ldd "$out_bin/device_count_shared" | grep -q "libcudart.so.13 => $rt_lib/" || fail "$key: the shared build does not load $rt_lib/libcudart.so.13"

  for link in static shared; do
    what="CUDA $key ($runtime_version, $link)"
    echo "cudart13: $what: device_count without a server"
    status=0
    env -u RGPU_SERVER LD_PRELOAD="$lib_dir/libcuda.so.1" RGPU_LOG=rgpu_shim=debug,warn \
      "$out_bin/device_count_$link" >"$dir/out" 2>"$dir/log" || status=$?
    [[ $status -eq 0 ]] || fail "$what: exited with status $status"
    grep -q '^done$' "$dir/out" || fail "$what: program did not finish"
    ! grep -qi 'insufficient' "$dir/out" || fail "$what: runtime rejected the driver"
    grep -q "^cudaDriverGetVersion: 0 .* version=$driver_version\$" "$dir/out" || fail "$what: driver version"
    grep -q "^cudaRuntimeGetVersion: 0 .* version=$runtime_version\$" "$dir/out" || fail "$what: runtime version"
    grep -q '^cudaGetDeviceCount: 100 (cudaErrorNoDevice) count=0$' "$dir/out" || fail "$what: device count"
    grep -q '^cudaGetDeviceCount again: 100 (cudaErrorNoDevice) count=0$' "$dir/out" || fail "$what: second device count"
    [[ $(grep -c 'reporting no CUDA devices: RGPU_SERVER is not set' "$dir/log") -eq 1 ]] || fail "$what: the why line must appear once"
    asked=$(grep -c 'rgpu shim: cuGetProcAddress' "$dir/log" || true)
    unknown=$( (grep 'cuGetProcAddress: unknown symbol' "$dir/log" || true) | sed -n 's/.*symbol=\([A-Za-z0-9_]*\).*/\1/p' | sort -u)
    echo "cudart13: $what made $asked cuGetProcAddress requests; unknown: ${unknown:-none}"
    [[ $asked -ge $requests_min ]] || fail "$what: expected at least $requests_min requests (saw $asked)"
    [[ -z "$unknown" ]] || fail "$what: unknown symbols: $unknown"
    clean_log "$what without a server"

    for url in "$emu_shm_url" "$emu_tcp_url"; do
      echo "cudart13: $what: remote_memory over $url"
      status=0
      LD_PRELOAD="$lib_dir/libcuda.so.1" RGPU_SERVER="$url" RGPU_TOKEN_FILE="$emu_token_file" RGPU_GPU_MEMORY=$quota \
        RGPU_LOG=rgpu_shim=debug timeout 60 "$out_bin/remote_memory_$link" "$quota" >"$dir/out" 2>"$dir/log" || status=$?
      [[ $status -eq 0 ]] || fail "$what over $url: exited with status $status"
      ! grep -q '^FAIL' "$dir/out" || fail "$what over $url: a check failed"
      for name in "${expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "$what over $url: missing check '$name'"; done
      grep -q '^done$' "$dir/out" || fail "$what over $url: did not finish"
      grep -q 'rgpu shim: connected' "$dir/log" || fail "$what over $url: no connect line"
      # TOOLS_CONTEXT is required from 13.4 on (13.2 does not ask for it, 13.5 does).
      if ((runtime_version >= 13040)); then
        grep -q 'cuGetExportTable id=21318c60-9714-3248-8ca6-41ff7324c8f2 status=0' "$dir/log" || fail "$what over $url: TOOLS_CONTEXT was not asked for"
      fi
      grep -q 'answered the runtime.s integrity check' "$dir/log" || fail "$what over $url: no integrity check"
      clean_log "$what over $url"
    done
  done
done

emu_server_stop
echo "cudart13: the 13.x runtimes pass, static and shared, without a server and over shm and tcp"
