//! Kernel names of real GPU images (fatbin containers, cubin ELF, PTX), read
//! without running anything.
//!
//! Exists because the CUDA runtime registers every fatbin of a program at
//! start: the emulated device accepts such an image as a *registration*, so
//! the program gets as far as its first real launch, and needs the kernel
//! names to answer function lookups honestly. Everything here reads
//! peer-sent bytes: every offset is bounds-checked and nothing panics.
//!
//! Format facts (fatbin container: 16-byte header `0xBA55ED50`, `u16`
//! version, `u16` header size, `u64` size of the entries; entries of a
//! `u16` kind (1 PTX, 2/0x10 ELF), `u32` header size at 4, `u32` padded
//! payload size at 8, `u32` payload size at 16, `u64` flags at 40 with
//! compression bits 0x2000/0x8000) come from ZLUDA's `dark_api` fatbin
//! reader and the nvopen-tools fatbin format notes (see `docs/worker.md`).
//! Kernel names: PTX `.entry NAME`, cubin sections `.nv.info.NAME` (one per
//! kernel, holding its parameter info).

/// Fatbin container magic `0xBA55ED50`.
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Most kernel names read from one image (a cuBLAS-sized image has a few
/// thousand); the rest are not listed and lookups of them are refused.
pub const IMAGE_NAMES_MAX: usize = 65_536;
/// Longest kernel name kept (the protocol's name bound).
pub const NAME_BYTES_MAX: usize = rgpu_proto::MAX_NAME_BYTES as usize;
/// Most fatbin entries walked in one container.
pub const FATBIN_ENTRIES_MAX: usize = 4096;

/// Fatbin entry kinds.
const KIND_PTX: u16 = 1;
const KIND_ELF: u16 = 2;
const KIND_ELF_ALT: u16 = 0x10;
/// Entry flags meaning the payload is compressed (unreadable here).
const FLAGS_COMPRESSED: u64 = 0x2000 | 0x8000;
/// Fatbin container header bytes.
const FATBIN_HEADER_BYTES: usize = 16;
/// Fatbin entry header bytes read here (the base header).
const ENTRY_HEADER_BYTES: usize = 64;
/// Prefix of a cubin section holding one kernel's info.
const NV_INFO_PREFIX: &[u8] = b".nv.info.";

/// What a real image told about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RealImage {
    /// Kernel names found, deduplicated, in order of discovery.
    pub names: Vec<Box<str>>,
    /// False when some code could not be read (compressed entries, an
    /// image cut short): a lookup of an unlisted name may then be a real
    /// kernel, and is accepted as one.
    pub complete: bool,
    /// A test module (`RGPU-EMU-MODULE v1` text) carried as an
    /// uncompressed PTX entry of a fatbin, if there is one.
    pub embedded_test_module: Option<Vec<u8>>,
}

impl RealImage {
    fn add(&mut self, name: &[u8]) {
        if name.is_empty() || name.len() > NAME_BYTES_MAX {
            return;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            return;
        };
        if self.names.len() >= IMAGE_NAMES_MAX {
            self.complete = false;
            return;
        }
        if !self.names.iter().any(|n| &**n == name) {
            self.names.push(name.into());
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Reads the kernel names of a fatbin container, cubin or PTX image.
#[must_use]
pub fn read(image: &[u8], test_magic: &[u8]) -> RealImage {
    let mut out = RealImage {
        complete: true,
        ..RealImage::default()
    };
    if u32_at(image, 0) == Some(FATBIN_MAGIC) {
        fatbin(image, test_magic, &mut out);
    } else if image.starts_with(b"\x7fELF") {
        if elf(image, &mut out).is_none() {
            out.complete = false;
        }
    } else {
        ptx(image, &mut out);
    }
    out
}

/// Walks a fatbin container's entries.
fn fatbin(image: &[u8], test_magic: &[u8], out: &mut RealImage) {
    let header = u16_at(image, 6).map_or(FATBIN_HEADER_BYTES, usize::from);
    let size = u64_at(image, 8).and_then(|s| usize::try_from(s).ok());
    let end = size
        .and_then(|s| s.checked_add(header))
        .map_or(image.len(), |e| e.min(image.len()));
    let mut at = header;
    for _ in 0..FATBIN_ENTRIES_MAX {
        if at.saturating_add(ENTRY_HEADER_BYTES) > end {
            return;
        }
        let fields = (
            u16_at(image, at),
            u32_at(image, at + 4),
            u32_at(image, at + 8),
            u32_at(image, at + 16),
            u64_at(image, at + 40),
        );
        let (Some(kind), Some(hsize), Some(padded), Some(psize), Some(flags)) = fields else {
            out.complete = false;
            return;
        };
        let (hsize, padded, psize) = (hsize as usize, padded as usize, psize as usize);
        let start = at.saturating_add(hsize);
        let payload = start
            .checked_add(psize)
            .filter(|&e| hsize >= ENTRY_HEADER_BYTES && e <= end)
            .and_then(|e| image.get(start..e));
        let Some(payload) = payload else {
            out.complete = false;
            return;
        };
        if flags & FLAGS_COMPRESSED != 0 {
            out.complete = false;
        } else {
            let is_test = kind == KIND_PTX && starts_with_line(payload, test_magic);
            if is_test && out.embedded_test_module.is_none() {
                let text = payload.split(|&b| b == 0).next().unwrap_or(&[]);
                out.embedded_test_module = Some(text.to_vec());
            } else if kind == KIND_PTX && !is_test {
                ptx(payload, out);
            } else if (kind == KIND_ELF || kind == KIND_ELF_ALT) && elf(payload, out).is_none() {
                out.complete = false;
            }
        }
        at = start.saturating_add(padded.max(psize));
    }
    out.complete = false;
}

fn starts_with_line(text: &[u8], line: &[u8]) -> bool {
    text.strip_prefix(line)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'\n' || rest[0] == b'\r')
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.'
}

/// Collects `.entry NAME` declarations of PTX text (up to a NUL).
fn ptx(text: &[u8], out: &mut RealImage) {
    let text = text.split(|&b| b == 0).next().unwrap_or(&[]);
    const ENTRY: &[u8] = b".entry";
    let mut i = 0;
    while let Some(pos) = text[i..].windows(ENTRY.len()).position(|w| w == ENTRY) {
        let at = i + pos;
        let after = at + ENTRY.len();
        let boundary_before = at == 0 || !is_ident(text[at - 1]);
        let ws = text[after..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        if boundary_before && ws > 0 {
            let name_start = after + ws;
            let len = text[name_start..]
                .iter()
                .take_while(|&&b| is_ident(b))
                .count();
            out.add(&text[name_start..name_start + len]);
        }
        i = after;
    }
}

/// Collects kernel names from a cubin's `.nv.info.NAME` section names.
/// `None` if the ELF headers do not fit the image.
fn elf(image: &[u8], out: &mut RealImage) -> Option<()> {
    // ELF64 little-endian only (cubins are).
    if image.get(4) != Some(&2) || image.get(5) != Some(&1) {
        return None;
    }
    let shoff = usize::try_from(u64_at(image, 0x28)?).ok()?;
    let shentsize = usize::from(u16_at(image, 0x3a)?);
    let shnum = usize::from(u16_at(image, 0x3c)?);
    let shstrndx = usize::from(u16_at(image, 0x3e)?);
    if shnum == 0 {
        return Some(());
    }
    if shentsize < 64 || shstrndx >= shnum {
        return None;
    }
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = u32_at(image, at)?;
        let off = usize::try_from(u64_at(image, at + 0x18)?).ok()?;
        let size = usize::try_from(u64_at(image, at + 0x20)?).ok()?;
        Some((name, off, size))
    };
    let (_, str_off, str_size) = section(shstrndx)?;
    let strtab = image.get(str_off..str_off.checked_add(str_size)?)?;
    for i in 0..shnum {
        let (name_off, _, _) = section(i)?;
        let name = strtab.get(name_off as usize..)?;
        let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
        if let Some(kernel) = name.strip_prefix(NV_INFO_PREFIX) {
            out.add(kernel);
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8] = b"RGPU-EMU-MODULE v1";

    /// A fatbin container holding `entries` (kind, flags, payload).
    pub(crate) fn container(entries: &[(u16, u64, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for &(kind, flags, payload) in entries {
            let padded = payload.len().div_ceil(8) * 8;
            let mut h = [0u8; 64];
            h[0..2].copy_from_slice(&kind.to_le_bytes());
            h[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
            h[4..8].copy_from_slice(&64u32.to_le_bytes());
            h[8..12].copy_from_slice(&(padded as u32).to_le_bytes());
            h[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            h[28..32].copy_from_slice(&80u32.to_le_bytes());
            h[40..48].copy_from_slice(&flags.to_le_bytes());
            body.extend_from_slice(&h);
            body.extend_from_slice(payload);
            body.resize(body.len() + padded - payload.len(), 0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&FATBIN_MAGIC.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A minimal ELF64 with the given section names (no contents).
    fn elf_with_sections(names: &[&str]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut offs = Vec::new();
        for n in names.iter().chain(std::iter::once(&".shstrtab")) {
            offs.push(strtab.len() as u32);
            strtab.extend_from_slice(n.as_bytes());
            strtab.push(0);
        }
        let mut img = vec![0u8; 64];
        img[0..4].copy_from_slice(b"\x7fELF");
        img[4] = 2;
        img[5] = 1;
        let str_off = img.len();
        img.extend_from_slice(&strtab);
        let shoff = img.len();
        let shnum = offs.len() + 1; // null section first
        img[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        img[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        img[0x3c..0x3e].copy_from_slice(&(shnum as u16).to_le_bytes());
        img[0x3e..0x40].copy_from_slice(&((shnum - 1) as u16).to_le_bytes());
        img.extend_from_slice(&[0u8; 64]);
        for (i, off) in offs.iter().enumerate() {
            let mut sh = [0u8; 64];
            sh[0..4].copy_from_slice(&off.to_le_bytes());
            if i == offs.len() - 1 {
                sh[0x18..0x20].copy_from_slice(&(str_off as u64).to_le_bytes());
                sh[0x20..0x28].copy_from_slice(&(strtab.len() as u64).to_le_bytes());
            }
            img.extend_from_slice(&sh);
        }
        img
    }

    #[test]
    fn ptx_entries_are_listed() {
        let text = b".version 8.0\n.target sm_80\n.visible .entry _Z3addPfS_(\n.param .u64 p)\n{}\n.func helper()\n.entry\tk2 ()\n.entryx nope\n\0.entry after_nul";
        let r = read(text, MAGIC);
        assert!(r.complete);
        let names: Vec<&str> = r.names.iter().map(|n| &**n).collect();
        assert_eq!(names, ["_Z3addPfS_", "k2"]);
    }

    #[test]
    fn cubin_nv_info_sections_are_listed() {
        let img = elf_with_sections(&[".text.k1", ".nv.info.k1", ".nv.info", ".nv.info.k2"]);
        let r = read(&img, MAGIC);
        assert!(r.complete);
        let names: Vec<&str> = r.names.iter().map(|n| &**n).collect();
        assert_eq!(names, ["k1", "k2"]);
        // Cut short: headers out of bounds, nothing listed, not complete.
        let r = read(&img[..img.len() - 40], MAGIC);
        assert!(!r.complete);
    }

    #[test]
    fn fatbin_entries_are_walked() {
        let cubin = elf_with_sections(&[".nv.info.from_elf"]);
        let ptx = b".version 8.0\n.target sm_80\n.entry from_ptx()\n{}\n\0";
        let img = container(&[(KIND_ELF, 0, &cubin), (KIND_PTX, 0, ptx)]);
        let r = read(&img, MAGIC);
        assert!(r.complete);
        let names: Vec<&str> = r.names.iter().map(|n| &**n).collect();
        assert_eq!(names, ["from_elf", "from_ptx"]);
        assert_eq!(r.embedded_test_module, None);

        // A compressed entry cannot be read: the list is incomplete.
        let img = container(&[(KIND_ELF, 0x8000, b"zstd bytes")]);
        let r = read(&img, MAGIC);
        assert!(!r.complete && r.names.is_empty());

        // A test module carried as a PTX entry is found.
        let img = container(&[(KIND_PTX, 0, b"RGPU-EMU-MODULE v1\nkernel rgpu_fill_u32\n\0")]);
        let r = read(&img, MAGIC);
        assert_eq!(
            r.embedded_test_module.as_deref(),
            Some(&b"RGPU-EMU-MODULE v1\nkernel rgpu_fill_u32\n"[..])
        );
    }

    #[test]
    fn hostile_fatbins_do_not_panic() {
        let good = container(&[(KIND_PTX, 0, b".entry a()\0")]);
        for cut in 0..good.len() {
            let _ = read(&good[..cut], MAGIC);
        }
        let mut lying = good.clone();
        lying[16 + 4..16 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let r = read(&lying, MAGIC);
        assert!(!r.complete);
        let mut huge = good;
        huge[16 + 16..16 + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!read(&huge, MAGIC).complete);
    }
}
