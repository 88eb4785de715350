//! The `.nv.info` fallback and module-globals sizes against real cubins
//! made by NVIDIA's `ptxas` from the PTX beside them (see
//! `tests/fixtures/make-cubins.sh`): the layout read from each kernel's
//! `EIATTR_KPARAM_INFO` records must equal the one the PTX declares.
#![cfg(feature = "cuda")]

use rgpu_gpu_worker::cuda::nvinfo;
use rgpu_proto::ParamSlot;

const KERNELS_PTX: &str = include_str!("../src/cuda/kernels.ptx");
const KERNELS_CUBIN: &[u8] = include_bytes!("fixtures/kernels.sm_80.cubin");
const NVINFO_PTX: &str = include_str!("fixtures/nvinfo.ptx");
const NVINFO_CUBIN: &[u8] = include_bytes!("fixtures/nvinfo.sm_80.cubin");

/// The (offset, size) layout of `.entry kernel(...)` as PTX declares it:
/// each `.param` is placed at the next multiple of its alignment (its
/// size for scalars, `.align N` for byte arrays).
fn ptx_layout(ptx: &str, kernel: &str) -> Vec<ParamSlot> {
    let head = format!(".entry {kernel}(");
    let start = ptx.find(&head).expect("kernel in the PTX") + head.len();
    let list = &ptx[start..start + ptx[start..].find(')').expect("closing paren")];
    let mut at = 0u32;
    let mut out = Vec::new();
    for decl in list.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let words: Vec<&str> = decl.split_whitespace().collect();
        assert_eq!(words[0], ".param", "{decl}");
        let (align, size) = if words[1] == ".align" {
            let align: u32 = words[2].parse().unwrap();
            assert_eq!(words[3], ".b8", "{decl}");
            let name = words[4];
            let n = &name[name.find('[').unwrap() + 1..name.find(']').unwrap()];
            (align, n.parse::<u32>().unwrap())
        } else {
            let bits: u32 = words[1][2..].parse().unwrap();
            (bits / 8, bits / 8)
        };
        at = at.next_multiple_of(align);
        out.push(ParamSlot::new(at, size));
        at += size;
    }
    out
}

#[test]
fn shipped_kernels_layouts_match_their_ptx() {
    for kernel in ["vadd", "reduce_sum", "spin"] {
        let want = ptx_layout(KERNELS_PTX, kernel);
        assert!(!want.is_empty());
        let got = nvinfo::param_layout(KERNELS_CUBIN, kernel)
            .unwrap()
            .expect("an .nv.info section per kernel");
        assert_eq!(got, want, "{kernel}");
    }
    assert_eq!(nvinfo::param_layout(KERNELS_CUBIN, "nope"), Ok(None));
    assert_eq!(nvinfo::globals_bytes(KERNELS_CUBIN), Ok(0), "no globals");
}

#[test]
fn mixed_sizes_and_alignments_match_the_ptx() {
    let want = ptx_layout(NVINFO_PTX, "mixed");
    assert_eq!(
        want,
        [(0, 1), (8, 12), (24, 8), (32, 8), (40, 2)]
            .map(|(o, s)| ParamSlot::new(o, s))
            .to_vec(),
        "the PTX reading itself"
    );
    let got = nvinfo::param_layout(NVINFO_CUBIN, "mixed")
        .unwrap()
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn module_globals_are_sized_from_the_cubin() {
    // 4096 B of `rgpu_table` (.nv.global) and 8 B of `rgpu_counter`
    // (.nv.global.init).
    assert_eq!(nvinfo::globals_bytes(NVINFO_CUBIN), Ok(4096 + 8));
    assert!(nvinfo::is_cubin(NVINFO_CUBIN));
    assert!(!nvinfo::is_cubin(NVINFO_PTX.as_bytes()));
}
