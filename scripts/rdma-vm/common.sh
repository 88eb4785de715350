# shellcheck shell=bash
# common.sh: shared settings and helpers for the soft-RoCE VM harness.
#
# Why it exists: scripts/rdma-vm-test and its helpers need the same cache
# layout, the same logging and the same deadline arithmetic; keeping them in
# one sourced file keeps each helper to its one job.

# --- Bounds (all overridable from the environment) -------------------------
# Whole run, installs included, in seconds.
: "${RGPU_RDMA_VM_TOTAL_TIMEOUT_S:=600}"
# Boot + tests inside qemu, in seconds (also capped by what is left of the total).
: "${RGPU_RDMA_VM_TIMEOUT_S:=300}"
# One test case inside the guest, in seconds.
: "${RGPU_RDMA_VM_TEST_TIMEOUT_S:=120}"
# One apt-get step (update, install or download), in seconds.
: "${RGPU_RDMA_VM_APT_TIMEOUT_S:=240}"
# Guest memory (qemu -m) and virtual CPUs (qemu -smp).
: "${RGPU_RDMA_VM_MEM:=1G}"
: "${RGPU_RDMA_VM_SMP:=2}"
# Largest initramfs we are willing to boot, in MiB (it lives in guest RAM).
: "${RGPU_RDMA_VM_INITRAMFS_MIB_MAX:=512}"
# Most extra test executables accepted through --tests.
: "${RGPU_RDMA_VM_TESTS_MAX:=256}"

RDMA_VM_HELPERS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RDMA_VM_REPO="$(cd "$RDMA_VM_HELPERS/../.." && pwd)"
: "${RGPU_RDMA_VM_DIR:=$RDMA_VM_REPO/.rdma-vm}"

# Markers the guest prints on the serial console; the host parses them.
# shellcheck disable=SC2034 # used by the scripts that source this file
RDMA_VM_MARK="@@rgpu-vm"

RDMA_VM_T0=${RDMA_VM_T0:-$(date +%s)}
export RDMA_VM_T0

rdma_vm_log() { printf 'rdma-vm-test: %s\n' "$*" >&2; }
rdma_vm_die() { rdma_vm_log "error: $*"; exit 2; }

# Seconds left of RGPU_RDMA_VM_TOTAL_TIMEOUT_S (never below 1).
rdma_vm_left_s() {
	local left=$((RGPU_RDMA_VM_TOTAL_TIMEOUT_S - ($(date +%s) - RDMA_VM_T0)))
	((left < 1)) && left=1
	echo "$left"
}

# min(a, b)
rdma_vm_min() { if (($1 < $2)); then echo "$1"; else echo "$2"; fi; }

# Run a step bounded by min(its own cap, what is left of the total budget).
# usage: rdma_vm_bounded CAP_S cmd args...
rdma_vm_bounded() {
	local cap=$1
	shift
	timeout --kill-after=10 "$(rdma_vm_min "$cap" "$(rdma_vm_left_s)")" "$@"
}

# Prefix that runs a command as root (sudo -n when not root already).
RDMA_VM_AS_ROOT=()
((EUID == 0)) || RDMA_VM_AS_ROOT=(sudo -n)

# Make sure apt's package lists exist (a fresh machine has none); refreshes
# them at most once per run.
RDMA_VM_APT_UPDATED=0
rdma_vm_apt_update() {
	((RDMA_VM_APT_UPDATED)) && return 0
	rdma_vm_bounded "$RGPU_RDMA_VM_APT_TIMEOUT_S" "${RDMA_VM_AS_ROOT[@]}" apt-get update -q >&2 ||
		rdma_vm_die "apt-get update failed"
	RDMA_VM_APT_UPDATED=1
}
rdma_vm_apt_lists_ready() {
	LC_ALL=C apt-cache policy busybox-static 2>/dev/null | grep -q 'Candidate: [0-9]' || rdma_vm_apt_update
}

# Download .deb files into DIR (no install). Stale package lists can name a
# version the mirror no longer has, so a failure refreshes them once and retries.
# usage: rdma_vm_apt_download DIR PACKAGE...
rdma_vm_apt_download() {
	local dir=$1
	shift
	local try
	for try in 1 2; do
		(cd "$dir" && rdma_vm_bounded "$RGPU_RDMA_VM_APT_TIMEOUT_S" \
			apt-get download -q -o APT::Sandbox::User=root "$@" >&2) && return 0
		((try == 1 && RDMA_VM_APT_UPDATED == 0)) || break
		rdma_vm_log "apt-get download $* failed; refreshing package lists"
		rdma_vm_apt_update
	done
	return 1
}
