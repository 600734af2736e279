//! Per-package index metadata cache, for re-indexing a directory of packages where only a few
//! changed (`apt_repo::index_dir`, `dnf_repo::index_dir`).
//!
//! An entry is keyed by the package file's canonical path, size, modification time (ns),
//! inode and device: a file rewritten or replaced gets a new key and is read again. The value
//! is whatever the index writer derived from the file (digests, parsed control data). The
//! cache is one JSON file the caller places in its build state or cache directory, never in
//! a published tree; a missing or unreadable cache is an empty one (everything is re-read).
//! Only entries used by the latest run are saved.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Cache format version (bumped when the cached values change shape).
const VERSION: u32 = 1;

#[derive(Default)]
pub struct IndexCache {
    path: Option<PathBuf>,
    old: BTreeMap<String, serde_json::Value>,
    new: Mutex<BTreeMap<String, serde_json::Value>>,
}

impl IndexCache {
    /// A cache that is not stored (every package is read).
    pub fn none() -> IndexCache {
        IndexCache::default()
    }

    /// The cache stored in `path` (created by [`IndexCache::save`]).
    pub fn open(path: &Path) -> IndexCache {
        let old = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(|v| v.get("version").and_then(|x| x.as_u64()) == Some(VERSION.into()))
            .and_then(|mut v| v.get_mut("entries").map(serde_json::Value::take))
            .and_then(|e| serde_json::from_value(e).ok())
            .unwrap_or_default();
        IndexCache {
            path: Some(path.to_path_buf()),
            old,
            new: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether entries are kept (a cache file was given).
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// The key of a package file as it is now.
    pub fn key(file: &Path) -> Result<String> {
        let m = std::fs::metadata(file).with_context(|| format!("stat {}", file.display()))?;
        let canon = std::fs::canonicalize(file).with_context(|| format!("{}", file.display()))?;
        Ok(format!(
            "{}\0{}\0{}.{}\0{}\0{}",
            canon.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino(),
            m.dev()
        ))
    }

    /// The cached value for `key`, or `compute()`'s (then remembered).
    pub fn get_or<T, F>(&self, key: &str, compute: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Result<T>,
    {
        if let Some(v) = self.old.get(key) {
            if let Ok(t) = serde_json::from_value::<T>(v.clone()) {
                self.new
                    .lock()
                    .expect("cache lock")
                    .insert(key.to_string(), v.clone());
                return Ok(t);
            }
        }
        let t = compute()?;
        if self.path.is_some() {
            self.new
                .lock()
                .expect("cache lock")
                .insert(key.to_string(), serde_json::to_value(&t)?);
        }
        Ok(t)
    }

    /// Store the entries used by this run (atomically); a no-op for [`IndexCache::none`].
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let entries = std::mem::take(&mut *self.new.lock().expect("cache lock"));
        let v = serde_json::json!({ "version": VERSION, "entries": entries });
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        serde_json::to_writer(std::io::BufWriter::new(tmp.as_file()), &v)?;
        tmp.persist(path)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.error))?;
        Ok(())
    }
}

/// Every regular file under `dir` whose name ends in `ext`, sorted (symlinks not followed).
pub fn files_under(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            let p = e.path();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() && p.to_string_lossy().ends_with(ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
