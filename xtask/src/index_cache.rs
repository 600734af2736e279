//! Per-package index metadata cache, for re-indexing a directory of packages where only a few
//! changed (`apt_repo::index_dir`, `dnf_repo::index_dir`).
//!
//! An entry is found by the package file's absolute path and is used only if the file's
//! current `stat` matches the one the entry was made from in size, mtime (ns), ctime (ns),
//! inode and device. An unchanged package therefore costs one `stat`, not a read. Any write to
//! a file moves its ctime, and ctime cannot be set from user space (`utimensat` sets mtime and
//! atime and moves ctime to "now"), so a rewrite in place with the same size and a restored
//! mtime (`touch -r`, a backup restore, `cp -p`, a `set_modified`) is a miss; a file replaced by
//! a rename is a new inode. What the stat cannot tell apart is a change in the same clock tick
//! as the stat the entry was made from (timestamps are coarse: a jiffy, or a second or two on
//! some file systems): an entry whose mtime or ctime is less than [`RACY`] older than the
//! moment it was made is stored as *racy* and, on its next use, checked by a streaming sha256
//! against the entry's own sha256 ([`Cached::sha256`], which stays what is published), as Git
//! does for its index. The value is whatever the index writer derived from the file (digests,
//! parsed control data).
//!
//! The cache is one file the caller places in its build state or cache directory, never in a
//! published tree. Format (version [`VERSION`]): a header line `obs-index-cache <VERSION>`,
//! then one line per entry, tab-separated: size, mtime `s.ns`, ctime `s.ns`, inode, device,
//! racy flag (`0`/`1`), the absolute path as a JSON string, the value as compact JSON (neither
//! JSON can hold a raw tab or newline); then `end <entry count>`. Loading splits the lines and
//! keeps each value's text; a value is parsed only when it is used (in the caller's parallel
//! workers), and an unchanged entry is written back as the same text. A missing cache is an
//! empty one; a cache of another version, or one that is malformed anywhere (a bad line, a
//! missing or wrong end line, a value that does not parse) is dropped with a warning and
//! everything is read again. Only entries used by the latest run are saved, and the file is
//! not rewritten when nothing changed.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Cache format version (bumped when the cached values, the key or the file layout change).
const VERSION: u32 = 3;
const MAGIC: &str = "obs-index-cache";

/// How much older than the moment an entry is made a file's mtime and ctime must be for the
/// entry to be trusted on its stat alone (more than the coarsest timestamp granularity of the
/// file systems a pool lives on).
pub const RACY: Duration = Duration::from_secs(2);

/// A value the cache can hold: it knows the sha256 of the file it was derived from.
pub trait Cached: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// Lower-case hex sha256 of the whole package file the value describes.
    fn sha256(&self) -> &str;
}

/// What an entry's file looked like when the entry was made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stat {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Stat {
    fn of(m: &std::fs::Metadata) -> Stat {
        Stat {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }

    /// Whether a change in the same timestamp tick could hide behind this stat, taken at `now`.
    fn racy(&self, now: SystemTime, window: Duration) -> bool {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let ns = |(s, n): (i64, i64)| s as i128 * 1_000_000_000 + n as i128;
        let newest = ns(self.mtime).max(ns(self.ctime));
        newest + window.as_nanos() as i128 > now
    }
}

/// An entry of the loaded file: the stat, the racy flag and where its value's JSON is.
struct Old {
    stat: Stat,
    racy: bool,
    value: Range<usize>,
}

/// An entry used by this run.
struct New {
    stat: Stat,
    racy: bool,
    /// `None`: the old entry's value text, unchanged.
    json: Option<String>,
}

pub struct IndexCache<T> {
    path: Option<PathBuf>,
    text: String,
    old: HashMap<String, Old>,
    new: Mutex<BTreeMap<String, New>>,
    window: Duration,
    _t: std::marker::PhantomData<fn() -> T>,
}

/// Parse the cache file's text: `None` for anything malformed.
fn parse(text: &str) -> std::result::Result<HashMap<String, Old>, String> {
    let mut lines = text.split_inclusive('\n');
    let head = lines.next().ok_or("empty file")?;
    if head != format!("{MAGIC} {VERSION}\n") {
        return Err(format!(
            "header {:?} is not {MAGIC} {VERSION}",
            head.trim_end()
        ));
    }
    let mut old = HashMap::new();
    let mut pos = head.len();
    for line in lines {
        let start = pos;
        pos += line.len();
        let n = old.len() + 2;
        let body = line
            .strip_suffix('\n')
            .ok_or(format!("line {n}: not terminated"))?;
        if let Some(count) = body.strip_prefix("end ") {
            if count.parse::<usize>().ok() != Some(old.len()) || pos != text.len() {
                return Err(format!(
                    "line {n}: end line {body:?} does not close {} entries",
                    old.len()
                ));
            }
            return Ok(old);
        }
        let bad = || format!("line {n}: malformed entry");
        let mut f = body.splitn(8, '\t');
        let mut next = || f.next().ok_or_else(bad);
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
        let time = |s: &str| -> std::result::Result<(i64, i64), String> {
            let (a, b) = s.split_once('.').ok_or_else(bad)?;
            let ns = b.parse::<i64>().map_err(|_| bad())?;
            if b.len() != 9 || !(0..1_000_000_000).contains(&ns) {
                return Err(bad());
            }
            Ok((a.parse::<i64>().map_err(|_| bad())?, ns))
        };
        let size = num(next()?)?;
        let mtime = time(next()?)?;
        let ctime = time(next()?)?;
        let ino = num(next()?)?;
        let dev = num(next()?)?;
        let racy = match next()? {
            "0" => false,
            "1" => true,
            _ => return Err(bad()),
        };
        let path: String = serde_json::from_str(next()?).map_err(|_| bad())?;
        let value = next()?;
        if value.is_empty() {
            return Err(bad());
        }
        let vstart = start + body.len() - value.len();
        let e = Old {
            stat: Stat {
                size,
                mtime,
                ctime,
                ino,
                dev,
            },
            racy,
            value: vstart..vstart + value.len(),
        };
        if old.insert(path, e).is_some() {
            return Err(format!("line {n}: a path listed twice"));
        }
    }
    Err("no end line (truncated)".into())
}

impl<T: Cached> IndexCache<T> {
    /// A cache that is not stored (every package is read).
    pub fn none() -> IndexCache<T> {
        IndexCache {
            path: None,
            text: String::new(),
            old: HashMap::new(),
            new: Mutex::new(BTreeMap::new()),
            window: RACY,
            _t: std::marker::PhantomData,
        }
    }

    /// The cache stored in `path` (created by [`IndexCache::save`]).
    pub fn open(path: &Path) -> IndexCache<T> {
        Self::open_with(path, RACY)
    }

    /// [`IndexCache::open`] for a cache file, [`IndexCache::none`] without one.
    pub fn open_opt(path: Option<&Path>) -> IndexCache<T> {
        path.map_or_else(Self::none, Self::open)
    }

    fn open_with(path: &Path, window: Duration) -> IndexCache<T> {
        let mut text = String::new();
        let old = match std::fs::File::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!("index cache {}: {e}; reading every package", path.display());
                HashMap::new()
            }
            Ok(mut f) => match f.read_to_string(&mut text).map_err(|e| e.to_string()) {
                Ok(_) => parse(&text),
                Err(e) => Err(e),
            }
            .unwrap_or_else(|e| {
                tracing::warn!(
                    "index cache {}: {e}; ignoring it and reading every package",
                    path.display()
                );
                HashMap::new()
            }),
        };
        IndexCache {
            path: Some(path.to_path_buf()),
            text,
            old,
            new: Mutex::new(BTreeMap::new()),
            window,
            _t: std::marker::PhantomData,
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

    /// Where an entry for `file` is looked for, and the file's stat now.
    fn key(file: &Path) -> Result<(String, Stat)> {
        let m = std::fs::metadata(file).with_context(|| format!("stat {}", file.display()))?;
        let abs = std::path::absolute(file).with_context(|| format!("{}", file.display()))?;
        Ok((abs.to_string_lossy().into_owned(), Stat::of(&m)))
    }

    /// The cached value for `file` if its entry's stat is the file's (and, for a racy entry,
    /// its sha256 too), else `compute()`'s (then remembered). Without a cache file, just
    /// `compute()`.
    pub fn get_or<F>(&self, file: &Path, compute: F) -> Result<T>
    where
        F: FnOnce() -> Result<T>,
    {
        if self.path.is_none() {
            return compute();
        }
        let (key, stat) = Self::key(file)?;
        if let Some(o) = self.old.get(&key).filter(|o| o.stat == stat) {
            match serde_json::from_str::<T>(&self.text[o.value.clone()]) {
                Ok(v) if !o.racy || sha256_file(file, stat.size)? == v.sha256() => {
                    let racy = o.racy && stat.racy(SystemTime::now(), self.window);
                    let e = New {
                        stat,
                        racy,
                        json: None,
                    };
                    self.new.lock().expect("cache lock").insert(key, e);
                    return Ok(v);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    "index cache {}: the entry of {key} does not parse ({e}); reading the file",
                    self.path.as_ref().expect("enabled").display()
                ),
            }
        }
        let t = compute()?;
        let e = New {
            stat,
            racy: stat.racy(SystemTime::now(), self.window),
            json: Some(serde_json::to_string(&t)?),
        };
        self.new.lock().expect("cache lock").insert(key, e);
        Ok(t)
    }

    /// Take `file`'s stat again for its entry of this run, after the caller changed its
    /// metadata (a chmod moves the ctime) without changing its bytes.
    pub fn restat(&self, file: &Path) -> Result<()> {
        if self.path.is_none() {
            return Ok(());
        }
        let (key, stat) = Self::key(file)?;
        if let Some(e) = self.new.lock().expect("cache lock").get_mut(&key) {
            e.stat = stat;
            e.racy = stat.racy(SystemTime::now(), self.window);
        }
        Ok(())
    }

    /// Store the entries used by this run (atomically) unless they are exactly the stored
    /// ones; a no-op for [`IndexCache::none`].
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let used = std::mem::take(&mut *self.new.lock().expect("cache lock"));
        let unchanged = used.len() == self.old.len()
            && used.iter().all(|(k, e)| {
                e.json.is_none()
                    && self
                        .old
                        .get(k)
                        .is_some_and(|o| o.stat == e.stat && o.racy == e.racy)
            });
        if unchanged && path.exists() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        let ctx = || format!("writing {}", tmp.path().display());
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
            writeln!(w, "{MAGIC} {VERSION}").with_context(ctx)?;
            for (k, e) in &used {
                let json = match &e.json {
                    Some(j) => j.as_str(),
                    None => &self.text[self.old[k].value.clone()],
                };
                let s = &e.stat;
                writeln!(
                    w,
                    "{}\t{}.{:09}\t{}.{:09}\t{}\t{}\t{}\t{}\t{json}",
                    s.size,
                    s.mtime.0,
                    s.mtime.1,
                    s.ctime.0,
                    s.ctime.1,
                    s.ino,
                    s.dev,
                    u8::from(e.racy),
                    serde_json::to_string(k)?,
                )
                .with_context(ctx)?;
            }
            writeln!(w, "end {}", used.len()).with_context(ctx)?;
            w.flush().with_context(ctx)?;
        }
        tmp.persist(path)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.error))?;
        Ok(())
    }
}

/// With `OBS_INDEX_TIMING` set, print to stderr how long `what` took since `start` (the
/// phases of `index_dir`, for profiling) and return now.
pub fn span(what: &str, start: std::time::Instant) -> std::time::Instant {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let now = std::time::Instant::now();
    if *ON.get_or_init(|| std::env::var_os("OBS_INDEX_TIMING").is_some()) {
        eprintln!("index timing: {what}: {:.3}s", (now - start).as_secs_f64());
    }
    now
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

    /// A rewrite with the same size and the same mtime is a miss, told by the stat alone
    /// (the ctime moved; no racy-entry hashing: the window is zero).
    #[test]
    fn same_size_same_mtime_rewrite_is_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.deb");
        let cache_file = tmp.path().join("cache");
        let open = || IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        std::fs::write(&f, "first").unwrap();
        let before = std::fs::metadata(&f).unwrap();
        let mtime = before.modified().unwrap();
        let c = open();
        assert_eq!(c.get_or(&f, || describe(&f)).unwrap().text, "first");
        c.save().unwrap();

        // Unchanged: served from the cache (compute is not called).
        let c = open();
        let v = c
            .get_or(&f, || panic!("unchanged file read again"))
            .unwrap();
        assert_eq!(v.text, "first");
        c.save().unwrap();

        // Past the coarsest timestamp tick, so the rewrite's ctime differs.
        std::thread::sleep(Duration::from_millis(30));
        std::fs::write(&f, "other").unwrap();
        let h = std::fs::File::options().write(true).open(&f).unwrap();
        h.set_modified(mtime).unwrap();
        drop(h);
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.len(), m.modified().unwrap()), (5, mtime));
        assert_eq!((m.ino(), m.dev()), (before.ino(), before.dev()));
        assert_ne!(
            (m.ctime(), m.ctime_nsec()),
            (before.ctime(), before.ctime_nsec())
        );
        let c = open();
        assert_eq!(c.get_or(&f, || describe(&f)).unwrap().text, "other");
        c.save().unwrap();
        let c = open();
        let v = c.get_or(&f, || panic!("read again")).unwrap();
        assert_eq!(v.text, "other");
    }

    /// Replace the sha256 stored in the cache file's only entry (the stat stays).
    fn forge_sha256(cache_file: &Path) {
        let text = std::fs::read_to_string(cache_file).unwrap();
        let sha = crate::digest::sha256_hex(b"first");
        assert!(text.contains(&sha));
        let forged = text.replace(&sha, &"0".repeat(64));
        std::fs::write(cache_file, forged).unwrap();
    }

    /// An entry made within the racy window of its file's last change is checked by sha256
    /// on its next use; outside it, the stat alone serves it.
    #[test]
    fn racy_entries_are_hashed() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.deb");
        std::fs::write(&f, "first").unwrap();
        let cache_file = tmp.path().join("cache");

        let c = IndexCache::<V>::open(&cache_file);
        c.get_or(&f, || describe(&f)).unwrap();
        c.save().unwrap();
        assert!(std::fs::read_to_string(&cache_file)
            .unwrap()
            .contains("\t1\t\""));
        forge_sha256(&cache_file);
        let c = IndexCache::<V>::open(&cache_file);
        let mut called = false;
        c.get_or(&f, || {
            called = true;
            describe(&f)
        })
        .unwrap();
        assert!(called, "a racy entry was trusted without its sha256");

        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        c.get_or(&f, || describe(&f)).unwrap();
        c.save().unwrap();
        forge_sha256(&cache_file);
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        let v = c.get_or(&f, || panic!("read again")).unwrap();
        assert_eq!(v.sha256, "0".repeat(64));
    }

    /// A run where everything hits leaves the cache file as it was.
    #[test]
    fn unchanged_cache_is_not_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.deb");
        std::fs::write(&f, "x").unwrap();
        let cache_file = tmp.path().join("cache");
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        c.get_or(&f, || describe(&f)).unwrap();
        c.save().unwrap();
        let ino = std::fs::metadata(&cache_file).unwrap().ino();
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        c.get_or(&f, || panic!("read again")).unwrap();
        c.save().unwrap();
        assert_eq!(std::fs::metadata(&cache_file).unwrap().ino(), ino);
    }

    /// No cache file: nothing is remembered; a corrupt, truncated or other-version cache file
    /// is an empty cache.
    #[test]
    fn disabled_and_corrupt_caches() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.deb");
        std::fs::write(&f, "x").unwrap();
        let c = IndexCache::<V>::none();
        assert!(!c.enabled());
        c.get_or(&f, || describe(&f)).unwrap();
        c.save().unwrap();
        let cache_file = tmp.path().join("cache");
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        c.get_or(&f, || describe(&f)).unwrap();
        c.save().unwrap();
        let good = std::fs::read_to_string(&cache_file).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        assert_eq!(lines.len(), 3);
        let bad = [
            "{not json".to_string(),
            format!("{}\n{}\n", lines[0], lines[1]),
            good.replace("obs-index-cache 3", "obs-index-cache 2"),
            good.replace("end 1", "end 2"),
            good.replace("\t0\t\"", "\tx\t\""),
            format!("{good}{}\n", lines[1]),
        ];
        for b in bad {
            std::fs::write(&cache_file, &b).unwrap();
            let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
            assert!(c.enabled());
            let mut called = false;
            c.get_or(&f, || {
                called = true;
                describe(&f)
            })
            .unwrap();
            assert!(called, "trusted a bad cache file: {b:?}");
        }
        // A value that does not parse is read again.
        std::fs::write(&cache_file, good.replace("\"text\"", "\"txet\"")).unwrap();
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        let mut called = false;
        c.get_or(&f, || {
            called = true;
            describe(&f)
        })
        .unwrap();
        assert!(called);
    }
}
