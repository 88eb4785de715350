#!/usr/bin/env bash
# The shim's remote path, end to end: starts `rgpu server --backend emulated` with a temporary
# token on a temporary shm socket and a free tcp port, then runs remote_memory (built against
# NVIDIA's static runtime by run.sh) through the shim over shm and over tcp. The server is
# stopped at the end and on any failure.
#
#   shim/tests/cudart/remote.sh PROFILE LIB_DIR BIN_DIR     (called by run.sh, from the repo root)
set -euo pipefail
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
device_memory_bytes = $((4 * quota))
client_memory_bytes = $quota" || fail "the server did not start"
tcp_url=$emu_tcp_url

expected=(device_count properties_name properties_total copy_1B copy_4KiB copy_16MiB memset memcpy_dtod
  mem_info_total mem_info_free over_quota malloc_after_over_quota wild_pointer free synchronize)
# The shm run logs every call (trace): the runtime calls the driver from atexit handlers,
# after thread-local storage is gone, and logging there must not abort the process.
for url in "$emu_shm_url" "$tcp_url"; do
  echo "cudart: remote_memory over $url"
  status=0
  level=info; [[ $url == shm://* ]] && level=trace
  LD_PRELOAD="$lib_dir/libcuda.so.1" RGPU_SERVER="$url" RGPU_TOKEN_FILE="$emu_token_file" RGPU_GPU_MEMORY=$quota \
    RGPU_LOG=rgpu_shim=$level timeout 60 "$bin/remote_memory" "$quota" >"$dir/out" 2>"$dir/log" || status=$?
  [[ $status -eq 0 ]] || fail "remote_memory over $url exited with status $status"
  ! grep -q '^FAIL' "$dir/out" || fail "a check failed over $url"
  for name in "${expected[@]}"; do grep -q "^ok $name\$" "$dir/out" || fail "missing check '$name' over $url"; done
  grep -q '^done$' "$dir/out" || fail "remote_memory did not finish over $url"
  grep -q 'rgpu shim: connected' "$dir/log" || fail "no connect line over $url"
  ! grep -E 'not supported yet|unknown table|unknown symbol|panic' "$dir/log" || fail "the runtime reached an unimplemented entry (or a panic) over $url"
  sed -n 's/^/  | /p' "$dir/out" | grep -v '^  | ok '
done

echo "cudart: a wrong token is refused (no device, one line naming the server)"
LD_PRELOAD="$lib_dir/libcuda.so.1" RGPU_SERVER="$tcp_url" RGPU_TOKEN="$(printf 'f%.0s' {1..64})" \
  timeout 60 "$bin/device_count" >"$dir/out" 2>"$dir/log" || fail "exit status $?"
grep -q '^cudaGetDeviceCount: 100 (cudaErrorNoDevice) count=0$' "$dir/out" || fail "wrong token: device count"
grep -q "cannot use the GPU server $tcp_url: handshake" "$dir/log" || fail "wrong token: no handshake line"

emu_server_stop
echo "cudart: remote checks passed over shm and tcp"
