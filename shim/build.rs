//! Gives the shim's cdylib the SONAME `libcuda.so.1`, so that `dlopen("libcuda.so.1")` inside
//! NVIDIA's runtime resolves to the already-preloaded shim instead of searching for a driver.
//!
//! Also writes `$OUT_DIR/abi_exports.rs`: one exported refusing stub for every driver symbol
//! in `src/proc_table/abi_symbols.txt` that the shim's code does not name (see
//! `src/proc_table/exports.rs` for why libraries need them).
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

/// Most source files scanned (bounds the walk; the crate has under a hundred).
const SOURCE_FILES_MAX: usize = 4096;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src");
    let symbols = std::fs::read_to_string("src/proc_table/abi_symbols.txt")
        .unwrap_or_else(|e| panic!("src/proc_table/abi_symbols.txt: {e}"));
    let mut named = BTreeSet::new();
    let mut files = 0;
    scan(Path::new("src"), &mut named, &mut files);
    let mut out = String::new();
    for name in symbols.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            name.starts_with("cu") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "abi_symbols.txt: bad name {name:?}"
        );
        if named.contains(name) {
            continue;
        }
        writeln!(
            out,
            "/// `{name}`: not implemented by the shim; logs once and returns \
             `CUDA_ERROR_NOT_SUPPORTED`.\n#[no_mangle]\npub extern \"C\" fn {name}() -> CUresult {{\n    \
             unexported(\"{name}\")\n}}"
        )
        .expect("writing to a String cannot fail");
    }
    let path =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("abi_exports.rs");
    std::fs::write(&path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Adds every identifier that the Rust code under `dir` uses (comments and string literals
/// left out) to `named`. A driver symbol the shim defines (`#[no_mangle]`, directly or through
/// a macro) is always named in code, so it is never given a second, conflicting stub.
fn scan(dir: &Path, named: &mut BTreeSet<String>, files: &mut usize) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a readable directory entry").path();
        if path.is_dir() {
            scan(&path, named, files);
        } else if path.extension().is_some_and(|x| x == "rs") {
            *files += 1;
            assert!(
                *files <= SOURCE_FILES_MAX,
                "more than {SOURCE_FILES_MAX} source files"
            );
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            identifiers(&text, named);
        }
    }
}

/// The identifiers of `text` outside `//` comments, `/* */` comments and `"…"` literals.
fn identifiers(text: &str, named: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut word = String::new();
    while i < bytes.len() {
        let c = bytes[i];
        let rest = &bytes[i..];
        if rest.starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            i += 2;
            while i < bytes.len() && !bytes[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if c == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            word.push(char::from(c));
            i += 1;
            continue;
        } else {
            i += 1;
        }
        if !word.is_empty() {
            named.insert(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        named.insert(word);
    }
}
