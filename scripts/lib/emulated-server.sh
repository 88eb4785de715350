# shellcheck shell=bash
# Starts and stops a throw-away `rgpu server --backend emulated` for scripts and tests that need a
# GPU server: a fresh random token, an shm socket and a port-0 tcp listener in a private
# directory, and the bound tcp address read from the one JSON line the server prints when ready.
# Used by scripts/demo and shim/tests/cudart/remote.sh.
#
#   emu_server_start RGPU_BINARY DIR [CONFIG_TOML_LINES]   sets emu_server_pid, emu_tcp_url,
#                                                          emu_shm_url, emu_token_file
#   emu_server_stop                                        SIGTERM, bounded wait, then SIGKILL
#
# emu_server_backend=cuda before emu_server_start starts `--backend cuda` instead (the GPU suite,
# shim/tests/cudart/remote_cuda.sh); the default stays emulated.

emu_server_pid=
emu_tcp_url=
emu_shm_url=
emu_token_file=

# Longest wait for the server's ready line, in tenths of a second.
EMU_SERVER_READY_TENTHS_MAX=100
# Longest wait for a SIGTERMed server to drain and exit, in tenths of a second.
EMU_SERVER_STOP_TENTHS_MAX=50

emu_server_start() {
  local rgpu=$1 dir=$2 extra=${3:-}
  emu_token_file=$dir/token
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$emu_token_file"
  printf 'metrics_listen = "127.0.0.1:0"\n%s\n' "$extra" >"$dir/rgpu.toml"
  emu_shm_url=shm://$dir/rgpu.sock
  RGPU_LOG=warn "$rgpu" server --backend "${emu_server_backend:-emulated}" --token-file "$emu_token_file" \
    --config "$dir/rgpu.toml" --listen "$emu_shm_url" --listen tcp://127.0.0.1:0 \
    >"$dir/ready" 2>"$dir/server.log" &
  emu_server_pid=$!
  local _
  for _ in $(seq "$EMU_SERVER_READY_TENTHS_MAX"); do
    [[ -s $dir/ready ]] && break
    sleep 0.1
  done
  emu_tcp_url=$(sed -n 's/.*"\(tcp:\/\/[^"]*\)".*/\1/p' "$dir/ready")
  if [[ -z $emu_tcp_url ]]; then
    echo "the ${emu_server_backend:-emulated} rgpu server did not start; its log:" >&2
    cat "$dir/server.log" >&2
    return 1
  fi
}

emu_server_stop() {
  if [[ -n $emu_server_pid ]] && kill -0 "$emu_server_pid" 2>/dev/null; then
    kill -TERM "$emu_server_pid" 2>/dev/null || true
    local _
    for _ in $(seq "$EMU_SERVER_STOP_TENTHS_MAX"); do
      kill -0 "$emu_server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$emu_server_pid" 2>/dev/null || true
  fi
  emu_server_pid=
}
