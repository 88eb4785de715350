//! Gives the shim's cdylib the SONAME `libcuda.so.1`, so that `dlopen("libcuda.so.1")` inside
//! NVIDIA's runtime resolves to the already-preloaded shim instead of searching for a driver.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
