//! Gives the cdylib the SONAME `libnvidia-ml.so.1`, the name programs and Python's `pynvml`
//! `dlopen`, so the copy found through `LD_LIBRARY_PATH` (set by `rgpu run`) is rgpu's.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
