#!/usr/bin/env bash
# The CUDA 13.x runtimes through the shim: for each pinned 13.x release (scripts/cudart-runtime
# --list13; PyPI, cached), builds every C program of the remote suite against its static
# runtime (libcudart_static.a) and against its shared one (libcudart.so.13, loaded the way
# PyTorch's wheel loads it). Then device_count runs without a server, and every program runs
# through `rgpu run` against `rgpu server --backend emulated` over shm and tcp. A 13.x build
# must pass exactly the checks its CUDA 12.9 build (run.sh's, in BIN_DIR) passes on the same
# server and transport, with no FAIL line, no refusing stub, unknown name or table, and no panic.
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
# memory_sizes: the quota and pinned bound it runs with (as in remote.sh), its largest copy on
# most runs, and the largest on one run (the first 13.x release, libcudart.so.13, over shm).
sizes_quota=$((768 << 20)) sizes_pinned=$((512 << 20)) sizes_small=$((16 << 20)) sizes_big=$((256 << 20))
# The programs of the remote suite (shim/tests/cudart/*.c, built by run.sh into BIN_DIR).
programs=(remote_memory memory_sizes streams_events kernel_driver kernel_cudart alloc_ext nvml identity graphs)
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

# The log must show no refusing stub or attribute, unknown name or table, and no panic. The
# NVML checks call refusing NVML stubs on purpose (as in remote.sh).
clean_log() {
  local pattern='not supported|unknown table|unknown symbol|panic'
  [[ $2 == nvml ]] && pattern='panic|unknown symbol'
  ! grep -E "$pattern" "$dir/log" || fail "$1: the runtime reached an unimplemented entry (or a panic)"
}

# run_client URL PROG ARGS…: PROG through `rgpu run` against URL, as remote.sh does
# (client_quota=BYTES overrides the quota, client_timeout_s=S the 60 s limit).
run_client() {
  local url=$1; shift
  timeout "${client_timeout_s:-60}" "$rgpu" run --server "$url" --token-file "$emu_token_file" \
    --gpu-memory "${client_quota:-$quota}" -- "$@"
}

# run_program URL BINARY NAME SIZE: runs one program of the suite with its arguments, output
# in $dir/out and log in $dir/log; returns its exit status.
run_program() {
  local url=$1 exe=$2 name=$3 size=$4 level=info status=0
  [[ $name == remote_memory ]] && level=debug
  case $name in
    memory_sizes)
      client_quota=$sizes_quota client_timeout_s=120 RGPU_PINNED_BYTES=$sizes_pinned RGPU_LOG=rgpu_shim=$level \
        run_client "$url" "$exe" "$size" >"$dir/out" 2>"$dir/log" || status=$?
      ;;
    remote_memory | alloc_ext | nvml)
      RGPU_LOG=rgpu_shim=$level run_client "$url" "$exe" "$quota" >"$dir/out" 2>"$dir/log" || status=$?
      ;;
    *) RGPU_LOG=rgpu_shim=$level run_client "$url" "$exe" >"$dir/out" 2>"$dir/log" || status=$? ;;
  esac
  return "$status"
}

# Every driver symbol of the pinned releases is exported (shim/src/proc_table/exports.rs):
# libraries such as cuBLASLt look driver functions up by name.
exported=$(nm -D --defined-only "$lib_dir/libcuda.so.1" | awk '{print $3}' | LC_ALL=C sort -u)
unexported=$(LC_ALL=C comm -23 shim/src/proc_table/abi_symbols.txt <(echo "$exported") | tr '\n' ' ')
[[ -z $unexported ]] || fail "libcuda.so.1 does not export: $unexported"
echo "cudart13: libcuda.so.1 exports all $(wc -l <shim/src/proc_table/abi_symbols.txt) driver symbol names"

echo "cudart13: starting rgpu server --backend emulated"
emu_server_start "$rgpu" "$dir" "[pool]
devices = 1
device_memory_bytes = $((32 * quota))
client_memory_bytes = $quota" || fail "the server did not start"

# The checks each program passes as built against CUDA 12.9 (BIN_DIR), per transport: the
# list a 13.x build must match. The names do not depend on memory_sizes' largest copy.
declare -A reference
for url in "$emu_shm_url" "$emu_tcp_url"; do
  for name in "${programs[@]}"; do
    [[ -x $bin/$name ]] || fail "$bin/$name not built (run.sh builds it)"
    status=0
    run_program "$url" "$bin/$name" "$name" "$sizes_small" || status=$?
    [[ $status -eq 0 ]] || fail "CUDA 12.9 $name over $url (the reference): exited with status $status"
    ! grep -q '^FAIL' "$dir/out" || fail "CUDA 12.9 $name over $url (the reference): a check failed"
    grep -q '^done$' "$dir/out" || fail "CUDA 12.9 $name over $url (the reference): did not finish"
    reference[$name $url]=$(grep '^ok ' "$dir/out" | sort)
    [[ -n ${reference[$name $url]} ]] || fail "CUDA 12.9 $name over $url (the reference): no check passed"
  done
done

big_key=$(scripts/cudart-runtime --list13 | head -n 1)
for key in $(scripts/cudart-runtime --list13); do
  pkgs=$(scripts/cudart-runtime "$key")
  inc=$pkgs/nvidia/cu13/include rt_lib=$pkgs/nvidia/cu13/lib
  runtime_version=$(sed -n 's/^#define CUDART_VERSION  *\([0-9]*\).*/\1/p' "$inc/cuda_runtime_api.h")
  [[ -n $runtime_version ]] || fail "no CUDART_VERSION in $inc/cuda_runtime_api.h"
  out_bin=$bin/cuda-$key
  mkdir -p "$out_bin"
  # -w: the suite calls a few entry points 13.x headers mark deprecated (cudaGetDriverEntryPoint).
  for name in device_count "${programs[@]}"; do
    gcc -O1 -w -o "$out_bin/${name}_static" "shim/tests/cudart/$name.c" -I "$inc" "$rt_lib/libcudart_static.a" -ldl -lpthread -lrt
    gcc -O1 -w -o "$out_bin/${name}_shared" "shim/tests/cudart/$name.c" -I "$inc" -L "$rt_lib" -l:libcudart.so.13 -Wl,-rpath,"$rt_lib" -ldl -lpthread
  done
  # (ldd's output is read whole: `grep -q` quitting early would fail the pipe under pipefail.)
  loaded=$(ldd "$out_bin/device_count_shared")
  grep -q "libcudart.so.13 => $rt_lib/" <<<"$loaded" || fail "$key: the shared build does not load $rt_lib/libcudart.so.13"

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
    clean_log "$what without a server" device_count

    for url in "$emu_shm_url" "$emu_tcp_url"; do
      passed=()
      for name in "${programs[@]}"; do
        size=$sizes_small
        [[ $name == memory_sizes && $key == "$big_key" && $link == shared && $url == shm://* ]] && size=$sizes_big
        status=0
        run_program "$url" "$out_bin/${name}_$link" "$name" "$size" || status=$?
        [[ $status -eq 0 ]] || fail "$what: $name over $url exited with status $status"
        ! grep -q '^FAIL' "$dir/out" || fail "$what: $name over $url: a check failed"
        grep -q '^done$' "$dir/out" || fail "$what: $name over $url did not finish"
        got=$(grep '^ok ' "$dir/out" | sort)
        [[ $got == "${reference[$name $url]}" ]] ||
          fail "$what: $name over $url: checks differ from CUDA 12.9's: $(diff <(echo "${reference[$name $url]}") <(echo "$got") | grep '^[<>]' | tr '\n' ' ')"
        clean_log "$what: $name over $url" "$name"
        if [[ $name == remote_memory ]]; then
          grep -q 'rgpu shim: connected' "$dir/log" || fail "$what over $url: no connect line"
          # TOOLS_CONTEXT is required from 13.4 on (13.2 does not ask for it, 13.5 does).
          if ((runtime_version >= 13040)); then
            grep -q 'cuGetExportTable id=21318c60-9714-3248-8ca6-41ff7324c8f2 status=0' "$dir/log" || fail "$what over $url: TOOLS_CONTEXT was not asked for"
          fi
          grep -q 'answered the runtime.s integrity check' "$dir/log" || fail "$what over $url: no integrity check"
        fi
        if [[ $name == memory_sizes && $size == "$sizes_big" ]]; then
          grep -q '^ok copy_pinned_sizes$' "$dir/out" || fail "$what: the $sizes_big-byte copies over $url"
          sed -n "s/^perf /  | $key $link: /p" "$dir/out"
        fi
        passed+=("$name($(grep -c '^ok ' "$dir/out"))")
      done
      echo "cudart13: $what over ${url%%://*}: ${passed[*]}"
    done
  done
done

emu_server_stop
echo "cudart13: the 13.x runtimes pass the 12.9 suite's checks, static and shared, over shm and tcp"
