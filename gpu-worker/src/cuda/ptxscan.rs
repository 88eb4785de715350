//! Names of the module-scope `.global` variables a PTX text defines.
//!
//! Exists so the `cuda` backend can charge a JIT-compiled module's globals
//! to the quota: the driver cannot list a module's globals, but
//! `cuModuleGetGlobal` gives the exact size of one it is asked for by name.
//! This scan only finds the names; sizes come from the driver.
//!
//! A definition is a statement at brace depth 0 whose directives include
//! `.global` and not `.extern` (PTX ISA, "Variable declarations"): e.g.
//! `.visible .global .align 4 .b8 table[4096];`. The name is the first
//! token that is neither a directive nor an `.align` operand, cut at `[`,
//! `=`, `;` or `<`. Comments (`//`, `/* */`) are skipped.

/// Most global names taken from one module (more are not charged; logged).
pub const GLOBALS_MAX: usize = 4096;
/// Longest global name accepted, in bytes.
pub const NAME_BYTES_MAX: usize = 1024;

/// The names of the globals `ptx` defines, at most [`GLOBALS_MAX`].
#[must_use]
pub fn global_names(ptx: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    for stmt in statements(ptx) {
        if depth == 0 {
            if let Some(name) = definition_name(stmt.trim()) {
                if out.len() == GLOBALS_MAX {
                    tracing::warn!(
                        max = GLOBALS_MAX,
                        "too many PTX globals; the rest are not charged"
                    );
                    break;
                }
                out.push(name.to_string());
            }
        }
        depth = depth.saturating_add(stmt.matches('{').count());
        depth = depth.saturating_sub(stmt.matches('}').count());
    }
    out
}

/// Splits `ptx` into statements at `;`, `{` and `}` (kept at the end of
/// the piece before them), with comments removed.
fn statements(ptx: &str) -> Vec<String> {
    let mut code = String::with_capacity(ptx.len());
    let mut rest = ptx;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
            code.push(' ');
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            code.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in code.chars() {
        if c == '{' || c == '}' {
            out.push(std::mem::take(&mut cur));
            out.push(c.to_string());
        } else if c == ';' {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn definition_name(stmt: &str) -> Option<&str> {
    let mut tokens = stmt.split_whitespace();
    let mut global = false;
    let mut name = None;
    while let Some(t) = tokens.next() {
        if t == ".extern" {
            return None;
        }
        if t == ".global" {
            global = true;
        } else if t == ".align" {
            tokens.next();
        } else if !t.starts_with('.') {
            name = Some(t);
            break;
        }
    }
    let name = name?;
    let end = name.find(['[', '=', ';', '<']).unwrap_or(name.len());
    let name = &name[..end];
    let ok = global
        && !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'%');
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_defined_globals_only() {
        let ptx = "
.version 7.0 // .global fake;
.target sm_50
.address_size 64
.extern .global .align 4 .b8 elsewhere[];
.visible .global .align 4 .b8 rgpu_table[4096];
.global .u64 counter = 7;
/* .global .u32 commented; */
.const .align 4 .b8 consts[16];
.global .align 8 .v2 .f32 pair;
.visible .entry k(.param .u64 p)
{
    .reg .b64 %rd<2>;
    .global .u32 not_module_scope;
    ret;
}
";
        assert_eq!(global_names(ptx), ["rgpu_table", "counter", "pair"]);
        assert!(global_names(include_str!("kernels.ptx")).is_empty());
    }

    #[test]
    fn garbage_yields_nothing() {
        assert!(global_names(".global ;").is_empty());
        assert!(global_names(".global .u32 a-b;").is_empty());
        assert!(
            global_names("}}}{ .global .u32 x;").is_empty(),
            "inside braces"
        );
    }
}
