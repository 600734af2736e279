//! Per-package index metadata cache, for re-indexing a directory of packages where only a few
//! changed (`apt_repo::index_dir`, `dnf_repo::index_dir`).
//!
//! An entry is found by the package file's absolute path, size and modification time (ns), and
//! it is used only if the file's sha256, computed again on every run, equals the one the entry
//! was made from: the key is path + size + mtime + sha256. A file rewritten in place with the
//! same size and mtime (a `touch -r`, a coarse-mtime file system, a restored backup) is
//! therefore never served stale; the price of that is one streaming sha256 of each unchanged
//! package per run (10,000 small packages: a few hundred milliseconds on two cores). The value
//! is whatever the index writer derived from the file (digests, parsed control data); it
//! carries that sha256 itself ([`Cached::sha256`]). The cache is one JSON file the caller
//! places in its build state or cache directory, never in a published tree; a missing or
//! unreadable cache is an empty one (everything is re-read). Only entries used by the latest
//! run are saved.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Cache format version (bumped when the cached values or the key change shape).
const VERSION: u32 = 2;

/// A value the cache can hold: it knows the sha256 of the file it was derived from.
pub trait Cached: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// Lower-case hex sha256 of the whole package file the value describes.
    fn sha256(&self) -> &str;
}

#[derive(serde::Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Stored<T> {
    version: u32,
    entries: BTreeMap<String, T>,
}

pub struct IndexCache<T> {
    path: Option<PathBuf>,
    old: BTreeMap<String, T>,
    /// Entries used by this run: `None` = the entry of `old` under the same key.
    new: Mutex<BTreeMap<String, Option<T>>>,
}

impl<T: Cached> IndexCache<T> {
    /// A cache that is not stored (every package is read).
    pub fn none() -> IndexCache<T> {
        IndexCache {
            path: None,
            old: BTreeMap::new(),
            new: Mutex::new(BTreeMap::new()),
        }
    }

    /// The cache stored in `path` (created by [`IndexCache::save`]).
    pub fn open(path: &Path) -> IndexCache<T> {
        let old = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Stored<T>>(&b).ok())
            .filter(|s| s.version == VERSION)
            .map(|s| s.entries)
            .unwrap_or_default();
        IndexCache {
            path: Some(path.to_path_buf()),
            old,
            new: Mutex::new(BTreeMap::new()),
        }
    }

    /// A directory beside the cache file for what a writer keeps besides the entries
    /// (`<cache file>.<what>`); `None` without a cache file.
    pub fn side_dir(&self, what: &str) -> Option<PathBuf> {
        let p = self.path.as_ref()?;
        let mut name = p.file_name()?.to_os_string();
        name.push(format!(".{what}"));
        Some(p.with_file_name(name))
    }

    /// Whether entries are kept (a cache file was given).
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Where an entry for `file` is looked for: absolute path, size, mtime (ns).
    fn key(file: &Path) -> Result<(String, u64)> {
        let m = std::fs::metadata(file).with_context(|| format!("stat {}", file.display()))?;
        let abs = std::path::absolute(file).with_context(|| format!("{}", file.display()))?;
        Ok((
            format!(
                "{}\0{}\0{}.{:09}",
                abs.display(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            ),
            m.len(),
        ))
    }

    /// The cached value for `file` if its entry's sha256 is the file's, else `compute()`'s
    /// (then remembered). Without a cache file, just `compute()`.
    pub fn get_or<F>(&self, file: &Path, compute: F) -> Result<T>
    where
        F: FnOnce() -> Result<T>,
    {
        if self.path.is_none() {
            return compute();
        }
        let (key, size) = Self::key(file)?;
        if let Some(v) = self.old.get(&key) {
            if sha256_file(file, size)? == v.sha256() {
                self.new.lock().expect("cache lock").insert(key, None);
                return Ok(v.clone());
            }
        }
        let t = compute()?;
        self.new
            .lock()
            .expect("cache lock")
            .insert(key, Some(t.clone()));
        Ok(t)
    }

    /// Store the entries used by this run (atomically); a no-op for [`IndexCache::none`].
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let used = std::mem::take(&mut *self.new.lock().expect("cache lock"));
        let entries: BTreeMap<&String, &T> = used
            .iter()
            .filter_map(|(k, v)| Some((k, v.as_ref().or_else(|| self.old.get(k))?)))
            .collect();
        #[derive(Serialize)]
        struct Out<'a, T> {
            version: u32,
            entries: &'a BTreeMap<&'a String, &'a T>,
        }
        let v = Out {
            version: VERSION,
            entries: &entries,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
            serde_json::to_writer(&mut w, &v)?;
            std::io::Write::flush(&mut w)?;
        }
        tmp.persist(path)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.error))?;
        Ok(())
    }
}

/// Streaming sha256 of a file expected to be `size` bytes (the buffer is sized to the file, at
/// most 1 MiB: most packages in an index are small, and a 1 MiB buffer per file costs an
/// mmap/munmap pair each).
fn sha256_file(path: &Path, size: u64) -> Result<String> {
    let ctx = || format!("hashing {}", path.display());
    let mut f = std::fs::File::open(path).with_context(ctx)?;
    let mut buf = vec![0u8; size.clamp(4096, 1 << 20) as usize];
    let mut h = Sha256::new();
    loop {
        let n = f.read(&mut buf).with_context(ctx)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Every regular file under `dir` whose name ends in `ext`, sorted (symlinks not followed).
/// Subdirectories are listed in parallel (a pool has a directory per source package).
pub fn files_under(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    use rayon::prelude::*;
    fn walk(d: &Path, ext: &str) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for e in std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            let p = e.path();
            if t.is_dir() {
                dirs.push(p);
            } else if t.is_file() && p.to_string_lossy().ends_with(ext) {
                files.push(p);
            }
        }
        let below: Vec<Vec<PathBuf>> = dirs
            .par_iter()
            .map(|d| walk(d, ext))
            .collect::<Result<_>>()?;
        files.extend(below.into_iter().flatten());
        Ok(files)
    }
    let mut out = walk(dir, ext)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct V {
        sha256: String,
        text: String,
    }
    impl Cached for V {
        fn sha256(&self) -> &str {
            &self.sha256
        }
    }

    fn describe(p: &Path) -> Result<V> {
        let b = std::fs::read(p)?;
        Ok(V {
            sha256: crate::digest::sha256_hex(&b),
            text: String::from_utf8(b)?,
        })
    }

    /// A rewrite with the same size and the same mtime is a miss: the sha256 differs.
    #[test]
    fn same_size_same_mtime_rewrite_is_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.deb");
        let cache_file = tmp.path().join("cache.json");
        std::fs::write(&f, "first").unwrap();
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        let c = IndexCache::<V>::open(&cache_file);
        assert_eq!(c.get_or(&f, || describe(&f)).unwrap().text, "first");
        c.save().unwrap();

        // Unchanged: served from the cache (compute is not called).
        let c = IndexCache::<V>::open(&cache_file);
        let v = c
            .get_or(&f, || panic!("unchanged file read again"))
            .unwrap();
        assert_eq!(v.text, "first");
        c.save().unwrap();

        std::fs::write(&f, "other").unwrap();
        let h = std::fs::File::options().write(true).open(&f).unwrap();
        h.set_modified(mtime).unwrap();
        drop(h);
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.len(), m.modified().unwrap()), (5, mtime));
        let c = IndexCache::<V>::open(&cache_file);
        assert_eq!(c.get_or(&f, || describe(&f)).unwrap().text, "other");
        c.save().unwrap();
        let c = IndexCache::<V>::open(&cache_file);
        let v = c.get_or(&f, || panic!("read again")).unwrap();
        assert_eq!(v.text, "other");
    }

    /// No cache file: nothing is remembered; a corrupt cache file is an empty cache.
    #[test]
    fn disabled_and_corrupt_caches() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.deb");
        std::fs::write(&f, "x").unwrap();
        let c = IndexCache::<V>::none();
        assert!(!c.enabled());
        c.get_or(&f, || describe(&f)).unwrap();
        c.save().unwrap();
        let cache_file = tmp.path().join("cache.json");
        std::fs::write(&cache_file, "{not json").unwrap();
        let c = IndexCache::<V>::open(&cache_file);
        assert!(c.enabled());
        let mut called = false;
        c.get_or(&f, || {
            called = true;
            describe(&f)
        })
        .unwrap();
        assert!(called);
    }
}
