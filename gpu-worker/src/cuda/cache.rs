//! The on-disk module cache shared by a server's workers.
//!
//! Exists so a second client process that loads the same module (say a
//! cuBLAS fatbin) need not ship its image again: images are stored in a
//! directory keyed by their SHA-256 content hash (computed by the shim),
//! written atomically (a temp file, then `rename`), and read back by
//! `module_load_cached`. The cache is shared between tenants, so an image
//! is stored only when its SHA-256 equals the hash the client named (a
//! client cannot plant an image under another image's hash), and checked
//! again when read.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Largest module image stored or read, in bytes (a big fatbin fits).
pub const MODULE_IMAGE_BYTES_MAX: u64 = 1 << 30;

/// A content-addressed directory of module images.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
}

impl ModuleCache {
    /// A cache in `dir`, created if missing.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, hash: &[u8; 32]) -> PathBuf {
        self.dir.join(hex(hash))
    }

    /// The image stored under `hash`, or `None` when absent.
    ///
    /// # Errors
    /// A read failure other than "not found", or an entry over
    /// [`MODULE_IMAGE_BYTES_MAX`].
    pub fn get(&self, hash: &[u8; 32]) -> io::Result<Option<Vec<u8>>> {
        let path = self.path(hash);
        match fs::metadata(&path) {
            Ok(m) if m.len() > MODULE_IMAGE_BYTES_MAX => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "cached module image over MODULE_IMAGE_BYTES_MAX",
            )),
            Ok(_) => {
                let image = fs::read(&path)?;
                if sha256(&image) == *hash {
                    Ok(Some(image))
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "cached module image does not match its hash",
                    ))
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `image` under `hash`, atomically: readers see the whole image
    /// or none. An existing entry is kept (same hash, same bytes).
    ///
    /// # Errors
    /// An image over [`MODULE_IMAGE_BYTES_MAX`] or whose SHA-256 is not
    /// `hash` ([`io::ErrorKind::InvalidInput`]), or a write failure.
    pub fn put(&self, hash: &[u8; 32], image: &[u8]) -> io::Result<()> {
        if image.len() as u64 > MODULE_IMAGE_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "module image over MODULE_IMAGE_BYTES_MAX",
            ));
        }
        if sha256(image) != *hash {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "module image does not match the hash it was sent with",
            ));
        }
        let path = self.path(hash);
        if path.exists() {
            return Ok(());
        }
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{:x}", std::process::id(), hash[0]));
        let mut f = fs::File::create(&tmp)?;
        let written = f.write_all(image).and_then(|()| f.sync_all());
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }
}

fn hex(hash: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut name = String::with_capacity(64);
    for b in hash {
        // Writing to a String cannot fail.
        let _ = write!(name, "{b:02x}");
    }
    name
}

/// SHA-256 of `data`, the cache's key.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("rgpu-modcache-{tag}-{}", std::process::id()))
    }

    #[test]
    fn put_then_get_round_trips_and_miss_is_none() {
        let dir = tempdir("rt");
        let cache = ModuleCache::open(&dir).unwrap();
        let a = sha256(b"image-a");
        let b = sha256(b"image-b");
        assert_eq!(cache.get(&a).unwrap(), None);
        cache.put(&a, b"image-a").unwrap();
        assert_eq!(cache.get(&a).unwrap().as_deref(), Some(&b"image-a"[..]));
        assert_eq!(cache.get(&b).unwrap(), None);
        // An image sent under another image's hash is not stored.
        assert!(cache.put(&b, b"image-a").is_err());
        assert_eq!(cache.get(&b).unwrap(), None);
        // Shared: a second handle on the directory sees the entry.
        let other = ModuleCache::open(&dir).unwrap();
        assert!(other.get(&a).unwrap().is_some());
        // A corrupted entry is refused on read.
        fs::write(dir.join(hex(&a)), b"tampered").unwrap();
        assert!(cache.get(&a).is_err());
        let leftovers = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0, "no temp files left behind");
        fs::remove_dir_all(&dir).unwrap();
    }
}
