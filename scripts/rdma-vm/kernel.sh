# shellcheck shell=bash
# kernel.sh: fetch Debian's stock kernel into the cache, never onto the host.
#
# Why it exists: the guest needs a kernel with rdma_rxe as a module. Debian
# 12's linux-image-amd64 (6.1) has it and boots under qemu's TCG. The .deb
# is fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
# $RGPU_RDMA_VM_DIR/kernel/PACKAGE, so nothing is installed on the host and
# a second run finds it there and downloads nothing.

# Which package: RGPU_RDMA_VM_KERNEL_PKG, else what linux-image-amd64 depends on.
rdma_vm_kernel_package() {
	if [[ -n ${RGPU_RDMA_VM_KERNEL_PKG:-} ]]; then
		echo "$RGPU_RDMA_VM_KERNEL_PKG"
		return 0
	fi
	LC_ALL=C apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1
}

# Sets RDMA_VM_VMLINUZ and RDMA_VM_KMODS (the lib/modules/VERSION directory).
rdma_vm_ensure_kernel() {
	local pkg dir
	pkg=$(rdma_vm_kernel_package)
	if [[ -z $pkg ]]; then
		# No package lists yet (fresh machine): use a cached kernel if any,
		# else refresh the lists once.
		local stamps=("$RGPU_RDMA_VM_DIR"/kernel/*/.complete)
		if [[ -e ${stamps[0]} ]]; then
			pkg=$(basename "$(dirname "${stamps[0]}")")
		else
			rdma_vm_apt_update
			pkg=$(rdma_vm_kernel_package)
		fi
	fi
	[[ $pkg =~ ^linux-image-[A-Za-z0-9.+~-]+$ ]] || rdma_vm_die "no usable kernel package (got '$pkg')"
	dir="$RGPU_RDMA_VM_DIR/kernel/$pkg"
	if [[ ! -e $dir/.complete ]]; then
		rdma_vm_log "fetching kernel package $pkg"
		local dl="$RGPU_RDMA_VM_DIR/download"
		rm -rf "$dl" "$dir"
		mkdir -p "$dl"
		if ! rdma_vm_apt_download "$dl" "$pkg"; then
			# Fresh lists may name a newer kernel ABI than the stale ones did.
			pkg=$(rdma_vm_kernel_package)
			dir="$RGPU_RDMA_VM_DIR/kernel/$pkg"
			if [[ ! $pkg =~ ^linux-image-[A-Za-z0-9.+~-]+$ ]] || ! rdma_vm_apt_download "$dl" "$pkg"; then
				rdma_vm_die "apt-get download $pkg failed"
			fi
		fi
		mkdir -p "$dir"
		nice -n 10 dpkg-deb -x "$dl"/"$pkg"_*.deb "$dir" || rdma_vm_die "dpkg-deb -x $pkg failed"
		rm -rf "$dl"
		# Keep one kernel only: the cache must not grow with every ABI bump.
		local old
		for old in "$RGPU_RDMA_VM_DIR"/kernel/*; do
			[[ $old == "$dir" ]] || rm -rf "$old"
		done
		touch "$dir/.complete"
	fi
	local images=("$dir"/boot/vmlinuz-*) kmods=("$dir"/lib/modules/*)
	RDMA_VM_VMLINUZ=${images[0]}
	RDMA_VM_KMODS=${kmods[0]}
	[[ -f $RDMA_VM_VMLINUZ && -d $RDMA_VM_KMODS ]] || rdma_vm_die "kernel package $pkg has no vmlinuz/modules"
}
