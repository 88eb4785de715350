# shellcheck shell=bash
# host-deps.sh: install the host packages the harness needs, once.
#
# Why it exists: the harness must work on a fresh Debian 12 machine that has
# only Rust, gcc and python3. Everything comes from Debian's archive through
# apt-get; nothing is installed when every tool is already there, so a warm
# run does no package work at all.

# Debian packages, each with a file that proves it is installed. qemu is
# not among them: see qemu.sh.
RDMA_VM_HOST_PACKAGES=(
	"busybox-static:/bin/busybox"
	"iproute2:/usr/bin/rdma"
	"ibverbs-utils:/usr/bin/ibv_rc_pingpong"
	"ibverbs-providers:/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so"
	"libibverbs-dev:/usr/include/infiniband/verbs.h"
	"cpio:/usr/bin/cpio"
	"kmod:/sbin/modinfo"
	"libc-bin:/sbin/ldconfig"
	"binutils:/usr/bin/objcopy"
	"util-linux:/usr/bin/flock"
)

rdma_vm_ensure_host_packages() {
	local missing=() entry
	for entry in "${RDMA_VM_HOST_PACKAGES[@]}"; do
		[[ -e ${entry#*:} ]] || missing+=("${entry%%:*}")
	done
	((${#missing[@]} == 0)) && return 0
	command -v apt-get >/dev/null || rdma_vm_die "missing ${missing[*]} and no apt-get"
	rdma_vm_log "installing host packages: ${missing[*]}"
	# Fresh machines have empty or stale package lists: refresh first.
	rdma_vm_apt_update
	rdma_vm_bounded "$RGPU_RDMA_VM_APT_TIMEOUT_S" "${RDMA_VM_AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive nice -n 10 \
		apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
		rdma_vm_die "apt-get install ${missing[*]} failed"
}
