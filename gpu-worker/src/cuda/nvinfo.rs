//! What a cubin (CUDA ELF) says about itself without the driver: each
//! kernel's argument layout from its `.nv.info.<kernel>` section, and the
//! device bytes its module globals take.
//!
//! Exists for two jobs of the `cuda` backend:
//!
//! - **Argument layouts on old drivers.** `cuFuncGetParamInfo` needs CUDA
//!   ≥ 12.4; before that the layout is read from the cubin's
//!   `EIATTR_KPARAM_INFO` records, as `cuobjdump -elf` prints them.
//! - **Module globals in the quota.** `__device__` variables live in the
//!   `.nv.global` (zero-initialised, `SHT_NOBITS`) and `.nv.global.init`
//!   sections; their sizes are known before the module is loaded.
//!
//! Record format (public facts, not NVIDIA documentation: VivekPanyam's
//! `cudaparsers` (`src/cubin.rs`), Cricket's `cpu-elf2.c`, and what
//! `cuobjdump -elf` prints for the fixtures in `gpu-worker/tests/fixtures`):
//! a `.nv.info*` section is a sequence of records `u8 format, u8 attribute`
//! followed, for format `EIFMT_SVAL` (4), by a `u16` byte count and that
//! many bytes, and for the other formats by a 2-byte value.
//! `EIATTR_KPARAM_INFO` (0x17) is an `SVAL` of 12 bytes: `u32` index,
//! `u16` ordinal, `u16` offset, `u32` flags whose bits 18..32 are the
//! parameter's size in bytes. All little endian. The ELF itself is read
//! with the `object` crate.

use object::{Object, ObjectSection};
use rgpu_proto::ParamSlot;

use super::{PARAMS_MAX, PARAM_BYTES_MAX};

/// `EIFMT_SVAL`: a record with a `u16` length and a payload.
const EIFMT_SVAL: u8 = 4;
/// `EIATTR_KPARAM_INFO`: one kernel parameter's ordinal, offset and size.
const EIATTR_KPARAM_INFO: u8 = 0x17;
/// Payload size of an `EIATTR_KPARAM_INFO` record.
const KPARAM_INFO_BYTES: usize = 12;
/// Prefix of a kernel's info section; the kernel's name follows.
const NV_INFO_PREFIX: &str = ".nv.info.";
/// Sections holding module globals (`__device__` variables).
const GLOBAL_SECTIONS: [&str; 2] = [".nv.global", ".nv.global.init"];

/// Why a cubin could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NvInfoError {
    /// Not a well-formed ELF file.
    #[error("not a readable cubin: {0}")]
    Elf(String),
    /// A record runs past its section.
    #[error("truncated .nv.info record in {section}")]
    Truncated {
        /// The section.
        section: String,
    },
    /// The parameter records do not describe a valid layout (duplicate or
    /// missing ordinals, bounds exceeded, overlapping parameters).
    #[error("inconsistent parameter layout in {section}: {why}")]
    Layout {
        /// The section.
        section: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// Whether `image` starts like an ELF file (a cubin, not PTX or fatbin).
#[must_use]
pub fn is_cubin(image: &[u8]) -> bool {
    image.starts_with(b"\x7fELF")
}

/// `image` at an 8-byte aligned address, as the ELF reader requires (a
/// buffer from the wire has no alignment promise): borrowed when already
/// aligned, else copied into `words`.
fn aligned<'a>(image: &'a [u8], words: &'a mut Vec<u64>) -> &'a [u8] {
    if image.as_ptr().align_offset(8) == 0 {
        return image;
    }
    words.resize(image.len().div_ceil(8), 0);
    let bytes = zerocopy::IntoBytes::as_mut_bytes(words.as_mut_slice());
    bytes[..image.len()].copy_from_slice(image);
    &bytes[..image.len()]
}

fn parse<'a>(image: &'a [u8], words: &'a mut Vec<u64>) -> Result<object::File<'a>, NvInfoError> {
    object::File::parse(aligned(image, words)).map_err(|e| NvInfoError::Elf(e.to_string()))
}

/// The argument layout of `kernel` from its `.nv.info.<kernel>` section,
/// ordered by ordinal; `Ok(None)` when the cubin has no such section.
///
/// # Errors
/// [`NvInfoError`] for an unreadable ELF, a truncated record or a layout
/// that is not a set of disjoint parameters `0..n` within
/// [`PARAM_BYTES_MAX`] and [`PARAMS_MAX`].
pub fn param_layout(image: &[u8], kernel: &str) -> Result<Option<Vec<ParamSlot>>, NvInfoError> {
    let mut words = Vec::new();
    let file = parse(image, &mut words)?;
    let want = format!("{NV_INFO_PREFIX}{kernel}");
    let Some(section) = file.sections().find(|s| s.name() == Ok(want.as_str())) else {
        return Ok(None);
    };
    let data = section
        .data()
        .map_err(|e| NvInfoError::Elf(e.to_string()))?;
    let records = kparam_records(data).ok_or_else(|| NvInfoError::Truncated {
        section: want.clone(),
    })?;
    layout_of(records)
        .map(Some)
        .map_err(|why| NvInfoError::Layout { section: want, why })
}

/// (ordinal, offset, size) of every `EIATTR_KPARAM_INFO` record of one
/// section; `None` when a record runs past the end.
fn kparam_records(mut data: &[u8]) -> Option<Vec<(u16, u16, u32)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (&[format, attribute, lo, hi], rest) = data.split_first_chunk::<4>()?;
        data = rest;
        if format != EIFMT_SVAL {
            // The 2 bytes after format and attribute are the value itself.
            continue;
        }
        let len = usize::from(u16::from_le_bytes([lo, hi]));
        let payload = data.get(..len)?;
        data = &data[len..];
        if attribute == EIATTR_KPARAM_INFO {
            let p: &[u8; KPARAM_INFO_BYTES] = payload.try_into().ok()?;
            let ordinal = u16::from_le_bytes([p[4], p[5]]);
            let offset = u16::from_le_bytes([p[6], p[7]]);
            let flags = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
            out.push((ordinal, offset, flags >> 18));
        }
    }
    Some(out)
}

/// Orders records by ordinal and checks they form a layout.
fn layout_of(mut records: Vec<(u16, u16, u32)>) -> Result<Vec<ParamSlot>, &'static str> {
    if records.len() > PARAMS_MAX {
        return Err("too many parameters");
    }
    records.sort_unstable_by_key(|r| r.0);
    let mut end_prev = 0u32;
    let mut layout = Vec::with_capacity(records.len());
    for (i, &(ordinal, offset, size)) in records.iter().enumerate() {
        if usize::from(ordinal) != i {
            return Err("ordinals are not 0..n");
        }
        let (offset, size) = (u32::from(offset), size);
        let end = offset + size; // both < 2^16: no overflow
        if size == 0 || end as usize > PARAM_BYTES_MAX {
            return Err("parameter out of bounds");
        }
        if offset < end_prev {
            return Err("parameters overlap");
        }
        end_prev = end;
        layout.push(ParamSlot::new(offset, size));
    }
    Ok(layout)
}

/// Device bytes of the cubin's module globals: the sizes of its
/// `.nv.global` and `.nv.global.init` sections.
///
/// # Errors
/// [`NvInfoError::Elf`] for an unreadable ELF.
pub fn globals_bytes(image: &[u8]) -> Result<u64, NvInfoError> {
    let mut words = Vec::new();
    let file = parse(image, &mut words)?;
    Ok(file
        .sections()
        .filter(|s| s.name().is_ok_and(|n| GLOBAL_SECTIONS.contains(&n)))
        .map(|s| s.size())
        .fold(0u64, u64::saturating_add))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(format: u8, attr: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![format, attr];
        if format == EIFMT_SVAL {
            v.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            v.extend_from_slice(payload);
        } else {
            v.extend_from_slice(&[0, 0]);
        }
        v
    }

    fn kparam(ordinal: u16, offset: u16, size: u32) -> Vec<u8> {
        let mut p = vec![0, 0, 0, 0];
        p.extend_from_slice(&ordinal.to_le_bytes());
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&((size << 18) | 0x1f000).to_le_bytes());
        rec(EIFMT_SVAL, EIATTR_KPARAM_INFO, &p)
    }

    #[test]
    fn records_between_other_attributes_are_found_and_ordered() {
        let mut s = rec(3, 0x19, &[]);
        s.extend(kparam(1, 8, 4));
        s.extend(rec(EIFMT_SVAL, 0x0a, &[1, 2, 3, 4, 5, 6, 7, 8]));
        s.extend(kparam(0, 0, 8));
        s.extend(rec(1, 0x2a, &[]));
        let r = kparam_records(&s).unwrap();
        assert_eq!(r, vec![(1, 8, 4), (0, 0, 8)]);
        assert_eq!(
            layout_of(r),
            Ok(vec![ParamSlot::new(0, 8), ParamSlot::new(8, 4)])
        );
    }

    #[test]
    fn truncated_and_inconsistent_records_are_refused() {
        let s = kparam(0, 0, 8);
        assert_eq!(kparam_records(&s[..s.len() - 1]), None);
        assert_eq!(kparam_records(&[4, 0x17, 12]), None);
        assert_eq!(
            layout_of(vec![(0, 0, 8), (2, 8, 4)]),
            Err("ordinals are not 0..n")
        );
        assert_eq!(
            layout_of(vec![(0, 0, 8), (1, 4, 4)]),
            Err("parameters overlap")
        );
        assert_eq!(layout_of(vec![(0, 0, 0)]), Err("parameter out of bounds"));
        assert_eq!(layout_of(vec![]), Ok(vec![]));
    }

    #[test]
    fn garbage_is_not_a_cubin() {
        assert!(!is_cubin(b"//\n.version 7.0"));
        assert!(matches!(
            param_layout(b"\x7fELF garbage", "k"),
            Err(NvInfoError::Elf(_))
        ));
        assert!(globals_bytes(b"nope").is_err());
    }
}
