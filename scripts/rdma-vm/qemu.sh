# shellcheck shell=bash
# qemu.sh: unpack Debian's qemu-system-x86 into the cache, never onto the host.
#
# Why it exists: installing qemu-system-x86 with apt-get makes apt remove a
# newer qemu-utils that the machine may already have (the two cannot be
# installed together), so the harness unpacks qemu-system-x86,
# qemu-system-common, qemu-system-data and seabios with `dpkg-deb -x` into
# $RGPU_RDMA_VM_DIR/qemu and installs only the shared libraries they need
# (plain library packages that conflict with nothing). A second run finds
# the unpacked tree and touches neither apt nor the network.

# Packages unpacked into the cache: the binary, its loadable modules (the
# TCG accelerator is one), option ROMs, and the BIOS.
RDMA_VM_QEMU_PACKAGES=(qemu-system-x86 qemu-system-common qemu-system-data seabios)

# The library packages qemu-system-x86 depends on (qemu-* and firmware left out).
rdma_vm_qemu_library_packages() {
	LC_ALL=C apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
		--no-replaces --no-enhances qemu-system-x86 2>/dev/null |
		sed -n 's/^  Depends: \([a-z0-9][^ ]*\)$/\1/p' |
		grep -v -E '^(qemu-.*|seabios|ipxe-qemu)$' || true
}

# Sets RDMA_VM_QEMU: the command that runs the unpacked qemu (its module
# directory in the environment, its firmware directories as -L options).
rdma_vm_ensure_qemu() {
	local dir="$RGPU_RDMA_VM_DIR/qemu"
	local bin="$dir/usr/bin/qemu-system-x86_64"
	# shellcheck disable=SC2034 # used by scripts/rdma-vm-test
	RDMA_VM_QEMU=(env "QEMU_MODULE_DIR=$dir/usr/lib/x86_64-linux-gnu/qemu" "$bin"
		-L "$dir/usr/share/qemu" -L "$dir/usr/share/seabios")
	if [[ -e $dir/.complete ]] && ! LC_ALL=C ldd "$bin" 2>&1 | grep -q 'not found'; then
		return 0
	fi
	rdma_vm_log "unpacking qemu into $dir"
	rdma_vm_apt_lists_ready
	local libs=() missing=() pkg
	mapfile -t libs < <(rdma_vm_qemu_library_packages)
	((${#libs[@]} > 0)) || rdma_vm_die "apt-cache knows no dependencies of qemu-system-x86"
	for pkg in "${libs[@]}"; do
		dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$pkg")
	done
	if ((${#missing[@]} > 0)); then
		rdma_vm_log "installing qemu's libraries: ${missing[*]}"
		rdma_vm_bounded "$RGPU_RDMA_VM_APT_TIMEOUT_S" "${RDMA_VM_AS_ROOT[@]}" \
			env DEBIAN_FRONTEND=noninteractive nice -n 10 \
			apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
			rdma_vm_die "apt-get install ${missing[*]} failed"
	fi
	local dl="$RGPU_RDMA_VM_DIR/download"
	rm -rf "$dl" "$dir"
	mkdir -p "$dl" "$dir"
	rdma_vm_apt_download "$dl" "${RDMA_VM_QEMU_PACKAGES[@]}" ||
		rdma_vm_die "apt-get download ${RDMA_VM_QEMU_PACKAGES[*]} failed"
	local deb
	for deb in "$dl"/*.deb; do
		dpkg-deb -x "$deb" "$dir" || rdma_vm_die "dpkg-deb -x $deb failed"
	done
	rm -rf "$dl"
	[[ -x $bin ]] || rdma_vm_die "no $bin after unpacking"
	if LC_ALL=C ldd "$bin" | grep 'not found' >&2; then
		rdma_vm_die "qemu still misses shared libraries"
	fi
	touch "$dir/.complete"
}
