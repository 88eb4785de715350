#!/usr/bin/env bash
# Runs C programs built against NVIDIA's static CUDA runtime (libcudart_static.a from PyPI)
# with the rgpu shim preloaded as libcuda.so.1, and checks that the runtime accepts it; then
# (remote.sh) runs them against a real `rgpu server --backend emulated` over shm and tcp.
#
#   shim/tests/cudart/run.sh [--debug]
#
# Needs gcc, python3 with pip, and network access to PyPI on the first run; the packages are
# cached under target/cudart-cache (idempotent). Exits non-zero on the first failed check.
set -euo pipefail
cd "$(dirname "$0")/../../.."

profile=release
cargo_flags=(--release)
if [[ "${1:-}" == "--debug" ]]; then profile=debug; cargo_flags=(); fi

cache=target/cudart-cache
pkgs=$(scripts/cudart-runtime)

echo "cudart: building the shim and the rgpu server ($profile)"
cargo build -p rgpu-shim -p rgpu-nvml -p rgpu "${cargo_flags[@]}" --locked
lib_dir=$PWD/target/$profile
ln -sf librgpu_shim.so "$lib_dir/libcuda.so.1"
ln -sf librgpu_nvml.so "$lib_dir/libnvidia-ml.so.1"
for lib in libcuda.so.1 libnvidia-ml.so.1; do
  soname=$(readelf -d "$lib_dir/$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [[ "$soname" == "$lib" ]] || { echo "FAIL: $lib's SONAME is '$soname'"; exit 1; }
done

bin=$cache/bin
mkdir -p "$bin"
inc=(-I "$pkgs/nvidia/cuda_runtime/include" -I "$pkgs/nvidia/cuda_nvcc/include")
for src in shim/tests/cudart/*.c; do
  name=$(basename "$src" .c)
  gcc -O1 -o "$bin/$name" "$src" "${inc[@]}" "$pkgs/nvidia/cuda_runtime/lib/libcudart_static.a" -ldl -lpthread -lrt
done

fail() { echo "FAIL: $*"; echo "--- output ---"; cat "$out"; echo "--- log (last 40 lines) ---"; tail -n 40 "$log"; exit 1; }
out=$(mktemp); log=$(mktemp)
trap 'rm -f "$out" "$log"' EXIT

echo "cudart: device_count without a server"
status=0
env -u RGPU_SERVER LD_PRELOAD="$lib_dir/libcuda.so.1" RGPU_LOG=rgpu_shim=debug,warn \
  "$bin/device_count" >"$out" 2>"$log" || status=$?
[[ $status -eq 0 ]] || fail "program exited with status $status (crash?)"
grep -q '^done$' "$out" || fail "program did not finish"
grep -qi 'insufficient' "$out" && fail "runtime rejected the driver"
grep -q '^cudaDriverGetVersion: 0 .* version=13050$' "$out" || fail "driver version"
grep -q '^cudaGetDeviceCount: 100 (cudaErrorNoDevice) count=0$' "$out" || fail "device count"
grep -q '^cudaGetDeviceCount again: 100 (cudaErrorNoDevice) count=0$' "$out" || fail "second device count"
grep -q 'reporting no CUDA devices: RGPU_SERVER is not set' "$log" || fail "no log line saying why"
[[ $(grep -c 'reporting no CUDA devices' "$log") -eq 1 ]] || fail "the why line must appear once"

asked=$(grep -c 'rgpu shim: cuGetProcAddress' "$log" || true)
unknown=$( (grep 'cuGetProcAddress: unknown symbol' "$log" || true) | sed -n 's/.*symbol=\([A-Za-z0-9_]*\).*/\1/p' | sort -u)
not_sufficient=$(grep -c 'VersionNotSufficient' "$log" || true)
echo "cudart: the runtime made $asked cuGetProcAddress requests; unknown: ${unknown:-none}; version-not-sufficient: $not_sufficient"
[[ $asked -ge 300 ]] || fail "expected the runtime to resolve its entry points (saw $asked requests)"
[[ -z "$unknown" ]] || fail "unknown symbols: $unknown"
! grep -E 'cuGetExportTable: unknown table' "$log" || fail "runtime asked for a table the shim does not know"
sed -n 's/^/  | /p' "$out"

echo "cudart: driver_abi (the shim's C ABI, called directly)"
LD_PRELOAD="$lib_dir/libcuda.so.1" "$bin/driver_abi" >"$out" 2>"$log" || fail "exit status $?"
expect() { grep -qxF "$1" "$out" || fail "expected line: $1"; }
expect 'self@12000: r=0 st=0 same=1'
expect 'self@11030: r=0 st=0 v1=1'
expect 'v1 cuInit: r=0 found=1'
expect 'cuInit(0): r=100'
expect 'cuDeviceGetCount: r=100 count=0'
expect 'cuLaunchKernel ptsz: r=0 st=0 distinct=1'
expect 'cuLaunchGrid stub: r=801'
expect 'unknown: r=500 st=1 null=1'
expect 'too old: r=500 st=2'
expect 'CUDART_INTERFACE: r=0 size=104'
expect 'INTEGRITY_CHECK: r=0 check=0 answer=3341181c03cb675c8ed383aa1f4cd1e8'
expect 'done'
grep -q 'not supported yet.*symbol="cuLaunchGrid"' "$log" || fail "no not-supported log line for the stub"
sed -n 's/^/  | /p' "$out"

echo "cudart: device_count found through LD_LIBRARY_PATH instead of LD_PRELOAD"
env -u RGPU_SERVER LD_LIBRARY_PATH="$lib_dir" "$bin/device_count" >"$out" 2>"$log" || fail "exit status $?"
grep -q '^cudaDriverGetVersion: 0 .* version=13050$' "$out" || fail "driver version via LD_LIBRARY_PATH"
grep -q '^cudaGetDeviceCount: 100 (cudaErrorNoDevice) count=0$' "$out" || fail "device count via LD_LIBRARY_PATH"
grep -q 'reporting no CUDA devices' "$log" || fail "shim not loaded via LD_LIBRARY_PATH"

echo "cudart: device_count with an unreachable RGPU_SERVER (no device, and one line naming the server and the error)"
LD_PRELOAD="$lib_dir/libcuda.so.1" RGPU_SERVER=tcp://127.0.0.1:1 RGPU_TOKEN=$(printf '0%.0s' {1..64}) \
  "$bin/device_count" >"$out" 2>"$log" || fail "exit status $?"
grep -q '^cudaGetDeviceCount: 100 (cudaErrorNoDevice) count=0$' "$out" || fail "device count with an unreachable server"
grep -q 'reporting no CUDA devices: cannot use the GPU server tcp://127.0.0.1:1: connect' "$log" || fail "no log line naming the server"
[[ $(grep -c 'reporting no CUDA devices' "$log") -eq 1 ]] || fail "the why line must appear once"

echo "cudart: device_count with RGPU_SERVER set but no token"
LD_PRELOAD="$lib_dir/libcuda.so.1" RGPU_SERVER=tcp://127.0.0.1:1 "$bin/device_count" >"$out" 2>"$log" || fail "exit status $?"
grep -q '^cudaGetDeviceCount: 100 (cudaErrorNoDevice) count=0$' "$out" || fail "device count without a token"
grep -q 'RGPU_SERVER=tcp://127.0.0.1:1 is set, but neither RGPU_TOKEN nor RGPU_TOKEN_FILE is' "$log" || fail "no log line about the token"

echo "cudart: nvml without a server (through rgpu run): nvmlInit says the driver is not loaded"
env -u RGPU_SERVER -u RGPU_TOKEN -u RGPU_TOKEN_FILE "$lib_dir/rgpu" run -- "$bin/nvml" no-server >"$out" 2>"$log" \
  || fail "exit status $?"
for name in init_refused init_refused_again count_uninitialized; do grep -q "^ok $name\$" "$out" || fail "nvml no-server: $name"; done
grep -q 'reporting no CUDA devices: RGPU_SERVER is not set' "$log" || fail "nvml no-server: no line saying why"

echo "cudart: nvml with no libcuda.so.1 beside it: nvmlInit says the library is not found"
nvml_only=$(mktemp -d)
ln -s "$lib_dir/librgpu_nvml.so" "$nvml_only/libnvidia-ml.so.1"
env -u LD_PRELOAD LD_LIBRARY_PATH="$nvml_only" "$bin/nvml" no-driver >"$out" 2>"$log" || { rm -rf "$nvml_only"; fail "exit status $?"; }
rm -rf "$nvml_only"
for name in init_refused init_refused_again count_uninitialized; do grep -q "^ok $name\$" "$out" || fail "nvml no-driver: $name"; done

# The remote path: a real `rgpu server --backend emulated`, over shm and tcp.
shim/tests/cudart/remote.sh "$profile" "$lib_dir" "$bin"

# The CUDA 13.x runtimes (static and libcudart.so.13), without a server and over shm and tcp.
shim/tests/cudart/cuda13.sh "$profile" "$lib_dir" "$bin"

# PyTorch's default wheel (libcudart.so.13) over shm and tcp; opt-in (a 2.6 GB download), it
# runs when RGPU_TEST_TORCH=1 or when target/torch-cache already holds it, and says when skipped.
shim/tests/torch/run.sh "$profile" "$lib_dir"

echo "cudart: all checks passed"
