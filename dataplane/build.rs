//! Builds the RDMA verbs shim (`src/rdma/ffi/shim.c`) when the `rdma` feature is on.
//!
//! The shim compiles libibverbs' `static inline` data-path functions against the
//! real `<infiniband/verbs.h>`; it links nothing from libibverbs (it uses `dlopen`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "rdma")]
    {
        println!("cargo:rerun-if-changed=src/rdma/ffi/shim.c");
        cc::Build::new()
            .file("src/rdma/ffi/shim.c")
            .flag("-std=gnu11")
            .warnings_into_errors(true)
            .compile("rgpu_rdma_shim");
    }
}
