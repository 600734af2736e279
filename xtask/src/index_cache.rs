//! Per-package index metadata cache, for re-indexing a directory of packages where only a few
//! changed (`apt_repo::index_dir`, `dnf_repo::index_dir`).
//!
//! Every package is opened once, by [`open_regular`] (`O_NOFOLLOW|O_NONBLOCK`, then `fstat`
//! of that descriptor: a symlink or FIFO swapped in after the listing is refused, never followed
//! or waited on), and that one open file gives the stat, the hash and the parse.
//!
//! An entry is found by the package file's absolute path and is used only if the file's
//! current `stat` matches the one the entry was made from in size, mtime (ns), ctime (ns),
//! inode and device, and if its value passes the same checks a read makes ([`Cached::check`]:
//! control fields, names, digests, that it describes a file of the stat's size); a value that
//! fails them is dropped with a warning and the file is read again.
//!
//! What the stat key can and cannot see. Any write through `write(2)` moves a file's mtime and
//! ctime, and ctime cannot be set from user space (`utimensat` sets mtime and atime and moves
//! ctime to "now"), so a rewrite in place with the same size and a restored mtime (`touch -r`,
//! a backup restore, `cp -p`, a `set_modified`) is a miss; a file replaced by a rename is a new
//! inode. It cannot see:
//! - a change in the same clock tick as the stat the entry was made from (timestamps are
//!   coarse: a jiffy, or a second or two on some file systems). An entry whose mtime or ctime
//!   is less than [`RACY`] older than the moment it was made is stored as *racy* and, on its
//!   next use, checked by a streaming sha256 against the entry's own sha256
//!   ([`Cached::sha256`], which stays what is published), as Git does for its index;
//! - a second write through a shared writable `mmap` to a page that is already dirty: the
//!   kernel updates the timestamps on the first write fault of a clean page only;
//! - changes on NFS/FUSE file systems whose attribute caching serves an old stat.
//!
//! So the stat alone is trusted only where nobody else could have made such a change: a file
//! owned by the current user (or root) with no group/other write bit, in a directory owned by
//! the current user (or root) that is not writable by group/others (or is sticky). Any other
//! hit is checked by a streaming sha256 of the open file. The mmap case stays a limit for the
//! user's own files; `OBS_INDEX_FULL_HASH=1` (or [`IndexCache::with_full_hash`]) checks every
//! hit by sha256 (a read of every byte, still no parse).
//!
//! The cache is one file the caller places in its build state or cache directory, never in a
//! published tree. It is written mode 0600; a cache file (or a chunk directory beside it, see
//! [`IndexCache::side_dir`]) that is a symlink, not owned by the current user, or group/other
//! writable is refused with a warning and the run goes without a cache. Format (version
//! [`VERSION`]): a header line `obs-index-cache <VERSION>`, then one line per entry,
//! tab-separated: size, mtime `s.ns`, ctime `s.ns`, inode, device, racy flag (`0`/`1`), the
//! absolute path as a JSON string, the value as compact JSON (neither JSON can hold a raw tab
//! or newline); then `end <entry count>`. Loading splits the lines and keeps each value's text;
//! a value is parsed only when it is used (in the caller's parallel workers), and an unchanged
//! entry is written back as the same text. A missing cache is an empty one; a cache of another
//! version, or one that is malformed anywhere (a bad line, a missing or wrong end line, a value
//! that does not parse) is dropped with a warning and everything is read again. Only entries
//! used by the latest run are saved, and the file is not rewritten when nothing changed.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, Metadata};
use std::io::{Read, Seek, Write};
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Cache format version (bumped when the cached values, the key or the file layout change, or
/// when reading a package starts refusing what it accepted: an entry made by an older reader
/// would carry what the new one refuses — 4: a second control file, an rpm tag twice).
const VERSION: u32 = 4;
const MAGIC: &str = "obs-index-cache";

/// How much older than the moment an entry is made a file's mtime and ctime must be for the
/// entry to be trusted on its stat alone (more than the coarsest timestamp granularity of the
/// file systems a pool lives on).
pub const RACY: Duration = Duration::from_secs(2);

/// A value the cache can hold: it knows the sha256 of the file it was derived from, and how to
/// check itself as a read of the file would.
pub trait Cached: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// Lower-case hex sha256 of the whole package file the value describes.
    fn sha256(&self) -> &str;
    /// The checks a read of the file makes on what it derives (the same function), and that the
    /// value describes a file of `size` bytes.
    fn check(&self, size: u64) -> Result<()>;
}

/// Open `path` for reading without following a symlink and without blocking on a FIFO, and
/// `fstat` that descriptor: it must be a regular file. The caller uses this one `File` for
/// everything it learns about the file.
pub fn open_regular(path: &Path) -> Result<(File, Metadata)> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                anyhow!("{}: is a symbolic link (not followed)", path.display())
            } else {
                anyhow!("open {}: {e}", path.display())
            }
        })?;
    let m = f
        .metadata()
        .with_context(|| format!("fstat {}", path.display()))?;
    if !m.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    Ok((f, m))
}

/// Whether a cache may be kept at `path`: nothing there yet, or a regular file (not a
/// symlink, device, FIFO or directory) that begins as a cache file does. Anything else (a
/// secret key given by mistake, `/dev/null`) is an error naming it: it is never replaced.
pub fn check_cache_path(path: &Path) -> Result<()> {
    let m = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("index cache {}: {e}", path.display()),
        Ok(m) => m,
    };
    if !m.is_file() {
        bail!(
            "index cache {}: exists and is not a regular file (left alone)",
            path.display()
        );
    }
    let mut head = [0u8; MAGIC.len() + 1];
    let n = open_regular(path)?
        .0
        .read(&mut head)
        .with_context(|| format!("index cache {}", path.display()))?;
    if n != 0 && head[..n] != format!("{MAGIC} ").as_bytes()[..n] {
        bail!(
            "index cache {}: exists and is not an index cache (left alone)",
            path.display()
        );
    }
    Ok(())
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why a cache file, chunk file or chunk directory we keep is not ours alone (owned by the
/// current user, no group/other write bit), or `None`.
pub(crate) fn not_private(m: &Metadata) -> Option<String> {
    if m.file_type().is_symlink() {
        return Some("is a symbolic link".into());
    }
    if m.uid() != euid() {
        return Some(format!(
            "is owned by uid {}, not the current user ({})",
            m.uid(),
            euid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Some(format!(
            "is writable by group or others (mode {:o})",
            m.mode() & 0o7777
        ));
    }
    None
}

/// Create `leaf` (and what is missing above it) with mode 0700, then check every directory
/// from `top` down to `leaf` (not followed if a symlink): each must be a directory of ours
/// alone ([`not_private`]). `None` (with a warning) if one is not.
pub fn private_dir(top: &Path, leaf: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(leaf)
    {
        tracing::warn!("cache directory {}: {e}; going without it", leaf.display());
        return None;
    }
    let mut dirs = vec![top.to_path_buf()];
    if let Ok(rest) = leaf.strip_prefix(top) {
        let mut d = top.to_path_buf();
        for c in rest.components() {
            d.push(c);
            dirs.push(d.clone());
        }
    }
    for d in dirs {
        let why = match std::fs::symlink_metadata(&d) {
            Err(e) => Some(e.to_string()),
            Ok(m) if m.file_type().is_symlink() => Some("is a symbolic link".into()),
            Ok(m) if !m.is_dir() => Some("is not a directory".into()),
            Ok(m) => not_private(&m),
        };
        if let Some(why) = why {
            tracing::warn!(
                "cache directory {}: {why}; going without the cache kept there",
                d.display()
            );
            return None;
        }
    }
    Some(leaf.to_path_buf())
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
    fn of(m: &Metadata) -> Stat {
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

/// Owned by us (or root, who can change any file anyway) and not writable by group/others.
fn owner_only_writes(m: &Metadata) -> bool {
    (m.uid() == euid() || m.uid() == 0) && m.mode() & 0o022 == 0
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
    /// Check every hit by sha256, whoever owns the file.
    full_hash: bool,
    /// Whether a directory's files may be trusted on their stat ([`owner_only_writes`], or
    /// sticky), by directory.
    dirs: Mutex<HashMap<PathBuf, bool>>,
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
            full_hash: false,
            dirs: Mutex::new(HashMap::new()),
            _t: std::marker::PhantomData,
        }
    }

    /// The cache stored in `path` (created by [`IndexCache::save`]); with
    /// `OBS_INDEX_FULL_HASH=1` in the environment, every hit is checked by sha256.
    pub fn open(path: &Path) -> IndexCache<T> {
        let full = std::env::var_os("OBS_INDEX_FULL_HASH").is_some_and(|v| v == "1");
        Self::open_with(path, RACY).with_full_hash(full)
    }

    /// [`IndexCache::open`] for a cache file, [`IndexCache::none`] without one.
    pub fn open_opt(path: Option<&Path>) -> IndexCache<T> {
        path.map_or_else(Self::none, Self::open)
    }

    /// Check every hit by a streaming sha256 of the file (not only racy entries and files
    /// others could write), when `on`.
    pub fn with_full_hash(mut self, on: bool) -> IndexCache<T> {
        self.full_hash = on;
        self
    }

    fn open_with(path: &Path, window: Duration) -> IndexCache<T> {
        let mut text = String::new();
        // Whatever else is at the path is never replaced by a cache: going without one.
        if let Err(e) = check_cache_path(path) {
            tracing::warn!("{e:#}; reading every package, keeping no cache");
            return Self::none();
        }
        let loaded = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(e) => Err(e.to_string()),
            Ok(_) => match open_regular(path) {
                Err(e) => Err(format!("{e:#}")),
                Ok((mut f, m)) => match not_private(&m) {
                    Some(why) => {
                        tracing::warn!(
                            "index cache {}: {why}; not using it (reading every package, \
                             keeping no cache)",
                            path.display()
                        );
                        return Self::none();
                    }
                    None => match f.read_to_string(&mut text) {
                        Ok(_) => parse(&text),
                        Err(e) => Err(e.to_string()),
                    },
                },
            },
        };
        let old = loaded.unwrap_or_else(|e| {
            tracing::warn!(
                "index cache {}: {e}; ignoring it and reading every package",
                path.display()
            );
            HashMap::new()
        });
        IndexCache {
            path: Some(path.to_path_buf()),
            text,
            old,
            new: Mutex::new(BTreeMap::new()),
            window,
            full_hash: false,
            dirs: Mutex::new(HashMap::new()),
            _t: std::marker::PhantomData,
        }
    }

    /// A directory beside the cache file for what a writer keeps besides the entries
    /// (`<cache file>.<what>`, and `sub` below it), created mode 0700 and checked to be ours
    /// alone ([`private_dir`]); `None` without a cache file or (with a warning) when it is
    /// not ours alone.
    pub fn side_dir(&self, what: &str, sub: Option<&str>) -> Option<PathBuf> {
        let p = self.path.as_ref()?;
        let mut name = p.file_name()?.to_os_string();
        name.push(format!(".{what}"));
        let top = p.with_file_name(name);
        let leaf = match sub {
            Some(s) => top.join(s),
            None => top.clone(),
        };
        private_dir(&top, &leaf)
    }

    /// Whether entries are kept (a cache file was given).
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Whether the stat of the file at `abs` (of metadata `m`) may be trusted on its own (see the module
    /// docs): the file and its directory can be changed by their owner (us, or root) only.
    fn stat_trusted(&self, abs: &Path, m: &Metadata) -> bool {
        if self.full_hash || !owner_only_writes(m) {
            return false;
        }
        let Some(dir) = abs.parent().map(Path::to_path_buf) else {
            return false;
        };
        if let Some(&ok) = self.dirs.lock().expect("cache lock").get(&dir) {
            return ok;
        }
        let ok = std::fs::metadata(&dir).is_ok_and(|d| {
            (d.uid() == euid() || d.uid() == 0) && (d.mode() & 0o022 == 0 || d.mode() & 0o1000 != 0)
        });
        self.dirs.lock().expect("cache lock").insert(dir, ok);
        ok
    }

    /// The cached value for `file` if its entry's stat is the file's, its value passes
    /// [`Cached::check`] and (for a racy entry, or a file others could have changed) its
    /// sha256 is the file's; else `compute(file, metadata)`'s (then remembered). The file is
    /// opened once ([`open_regular`]) and `compute` reads that open file (from its start).
    /// Without a cache file, just `compute`.
    pub fn get_or<F>(&self, path: &Path, compute: F) -> Result<T>
    where
        F: FnOnce(&File, &Metadata) -> Result<T>,
    {
        let (mut f, m) = open_regular(path)?;
        if self.path.is_none() {
            return compute(&f, &m);
        }
        let abs = std::path::absolute(path).with_context(|| format!("{}", path.display()))?;
        // A path that is not UTF-8 has no key (a lossy one could name two files): read.
        let Some(key) = abs.to_str().map(str::to_string) else {
            return compute(&f, &m);
        };
        let stat = Stat::of(&m);
        if let Some(o) = self.old.get(&key).filter(|o| o.stat == stat) {
            let cache = self.path.as_ref().expect("enabled").display();
            match serde_json::from_str::<T>(&self.text[o.value.clone()]) {
                Ok(v) => match v.check(stat.size) {
                    Err(e) => tracing::warn!(
                        "index cache {cache}: the entry of {key} fails the checks of a read \
                         ({e:#}); reading the file"
                    ),
                    Ok(()) => {
                        let verify = o.racy || !self.stat_trusted(&abs, &m);
                        if !verify || sha256_of(&mut f, path, stat.size)? == v.sha256() {
                            let racy = o.racy && stat.racy(SystemTime::now(), self.window);
                            let e = New {
                                stat,
                                racy,
                                json: None,
                            };
                            self.new.lock().expect("cache lock").insert(key, e);
                            return Ok(v);
                        }
                        f.rewind().with_context(|| format!("{}", path.display()))?;
                    }
                },
                Err(e) => tracing::warn!(
                    "index cache {cache}: the entry of {key} does not parse ({e}); reading the file"
                ),
            }
        }
        let t = compute(&f, &m)?;
        let e = New {
            stat,
            racy: stat.racy(SystemTime::now(), self.window),
            json: Some(serde_json::to_string(&t)?),
        };
        self.new.lock().expect("cache lock").insert(key, e);
        Ok(t)
    }

    /// Take `file`'s stat again for its entry of this run, after the caller changed its
    /// metadata (a chmod or a new hard link moves the ctime) without changing its bytes.
    pub fn restat(&self, file: &Path) -> Result<()> {
        if self.path.is_none() {
            return Ok(());
        }
        let m =
            std::fs::symlink_metadata(file).with_context(|| format!("stat {}", file.display()))?;
        if !m.is_file() {
            bail!("{}: not a regular file", file.display());
        }
        let abs = std::path::absolute(file).with_context(|| format!("{}", file.display()))?;
        let Some(key) = abs.to_str().map(str::to_string) else {
            return Ok(());
        };
        let stat = Stat::of(&m);
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

/// Streaming sha256 of an open file expected to be `size` bytes, from its start (the buffer is
/// sized to the file, at most 1 MiB: most packages in an index are small, and a 1 MiB buffer
/// per file costs an mmap/munmap pair each).
fn sha256_of(f: &mut File, path: &Path, size: u64) -> Result<String> {
    let ctx = || format!("hashing {}", path.display());
    f.rewind().with_context(ctx)?;
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
            } else if t.is_symlink() && p.to_string_lossy().ends_with(ext) {
                // Never followed (its target could be anything, anywhere): said, not hidden.
                eprintln!(
                    "warning: {}: a symbolic link, not indexed (links are not followed)",
                    p.display()
                );
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

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    struct V {
        sha256: String,
        text: String,
    }
    impl Cached for V {
        fn sha256(&self) -> &str {
            &self.sha256
        }
        fn check(&self, size: u64) -> Result<()> {
            if self.text.len() as u64 != size {
                bail!("size {} is not the file's {size}", self.text.len());
            }
            if self.text.contains("INJECTED") {
                bail!("bad text");
            }
            Ok(())
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
        assert_eq!(c.get_or(&f, |_, _| describe(&f)).unwrap().text, "first");
        c.save().unwrap();

        // Unchanged: served from the cache (compute is not called).
        let c = open();
        let v = c
            .get_or(&f, |_, _| panic!("unchanged file read again"))
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
        assert_eq!(c.get_or(&f, |_, _| describe(&f)).unwrap().text, "other");
        c.save().unwrap();
        let c = open();
        let v = c.get_or(&f, |_, _| panic!("read again")).unwrap();
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
        c.get_or(&f, |_, _| describe(&f)).unwrap();
        c.save().unwrap();
        assert!(std::fs::read_to_string(&cache_file)
            .unwrap()
            .contains("\t1\t\""));
        forge_sha256(&cache_file);
        let c = IndexCache::<V>::open(&cache_file);
        let mut called = false;
        c.get_or(&f, |_, _| {
            called = true;
            describe(&f)
        })
        .unwrap();
        assert!(called, "a racy entry was trusted without its sha256");

        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        c.get_or(&f, |_, _| describe(&f)).unwrap();
        c.save().unwrap();
        forge_sha256(&cache_file);
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        let v = c.get_or(&f, |_, _| panic!("read again")).unwrap();
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
        c.get_or(&f, |_, _| describe(&f)).unwrap();
        c.save().unwrap();
        let ino = std::fs::metadata(&cache_file).unwrap().ino();
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        c.get_or(&f, |_, _| panic!("read again")).unwrap();
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
        c.get_or(&f, |_, _| describe(&f)).unwrap();
        c.save().unwrap();
        let cache_file = tmp.path().join("cache");
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        c.get_or(&f, |_, _| describe(&f)).unwrap();
        c.save().unwrap();
        let good = std::fs::read_to_string(&cache_file).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        assert_eq!(lines.len(), 3);
        // Not a cache file at all (a key given by mistake): not used, never replaced.
        for (other, what) in [("{not json", "file"), ("", "symlink")] {
            let p = tmp.path().join(format!("other-{what}"));
            if what == "symlink" {
                std::os::unix::fs::symlink(&cache_file, &p).unwrap();
            } else {
                std::fs::write(&p, other).unwrap();
            }
            let before = std::fs::symlink_metadata(&p).unwrap().file_type();
            let c = IndexCache::<V>::open_with(&p, Duration::ZERO);
            assert!(!c.enabled(), "{what}");
            c.get_or(&f, |_, _| describe(&f)).unwrap();
            c.save().unwrap();
            assert_eq!(std::fs::symlink_metadata(&p).unwrap().file_type(), before);
            if what == "file" {
                assert_eq!(std::fs::read_to_string(&p).unwrap(), other);
            }
            assert!(check_cache_path(&p).is_err(), "{what}");
        }
        let bad = [
            format!("{}\n{}\n", lines[0], lines[1]),
            good.replace("obs-index-cache 4", "obs-index-cache 3"),
            good.replace("end 1", "end 2"),
            good.replace("\t0\t\"", "\tx\t\""),
            format!("{good}{}\n", lines[1]),
        ];
        for b in bad {
            std::fs::write(&cache_file, &b).unwrap();
            let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
            assert!(c.enabled());
            let mut called = false;
            c.get_or(&f, |_, _| {
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
        c.get_or(&f, |_, _| {
            called = true;
            describe(&f)
        })
        .unwrap();
        assert!(called);
    }

    fn chmod(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Make an entry for `f` (window zero: not racy), then forge its sha256; whether the next
    /// lookup read the file again.
    fn forged_entry_read_again(f: &Path, cache_file: &Path, full_hash: bool) -> bool {
        let _ = std::fs::remove_file(cache_file);
        let c = IndexCache::<V>::open_with(cache_file, Duration::ZERO);
        c.get_or(f, |_, _| describe(f)).unwrap();
        c.save().unwrap();
        forge_sha256(cache_file);
        let c = IndexCache::<V>::open_with(cache_file, Duration::ZERO).with_full_hash(full_hash);
        let mut called = false;
        let v = c
            .get_or(f, |_, _| {
                called = true;
                describe(f)
            })
            .unwrap();
        assert_eq!(v.text, "first");
        called
    }

    /// The stat alone serves only files nobody but their owner (us or root) can change, in a
    /// directory likewise; any other hit is checked by sha256 (a forged digest is caught), and
    /// so is every hit in full-hash mode.
    #[test]
    fn files_others_could_change_are_hashed() {
        let tmp = tempfile::tempdir().unwrap();
        let cache_file = tmp.path().join("cache");
        let d = tmp.path().join("pool");
        std::fs::create_dir(&d).unwrap();
        chmod(&d, 0o755);
        let f = d.join("a.deb");
        std::fs::write(&f, "first").unwrap();
        chmod(&f, 0o644);
        assert!(!forged_entry_read_again(&f, &cache_file, false), "own file");
        assert!(forged_entry_read_again(&f, &cache_file, true), "full hash");
        chmod(&f, 0o664);
        assert!(
            forged_entry_read_again(&f, &cache_file, false),
            "group-writable file"
        );
        chmod(&f, 0o646);
        assert!(
            forged_entry_read_again(&f, &cache_file, false),
            "other-writable file"
        );
        chmod(&f, 0o644);
        chmod(&d, 0o777);
        assert!(
            forged_entry_read_again(&f, &cache_file, false),
            "other-writable directory"
        );
        chmod(&d, 0o775);
        assert!(
            forged_entry_read_again(&f, &cache_file, false),
            "group-writable directory"
        );
        // A sticky directory: others cannot rename or remove our file there.
        chmod(&d, 0o1777);
        assert!(
            !forged_entry_read_again(&f, &cache_file, false),
            "sticky directory"
        );
    }

    /// A hit runs the checks a read makes (here: the value's own) and must describe a file of
    /// the stat's size; one that fails them is read again.
    #[test]
    fn hits_are_checked_like_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.deb");
        std::fs::write(&f, "harmless").unwrap();
        let cache_file = tmp.path().join("cache");
        for (from, to) in [("harmless", "INJECTED"), ("\"harmless\"", "\"harmles\"")] {
            let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
            c.get_or(&f, |_, _| describe(&f)).unwrap();
            c.save().unwrap();
            let text = std::fs::read_to_string(&cache_file).unwrap();
            std::fs::write(&cache_file, text.replacen(from, to, 1)).unwrap();
            let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
            let mut called = false;
            let v = c
                .get_or(&f, |_, _| {
                    called = true;
                    describe(&f)
                })
                .unwrap();
            assert!(called, "{to}: a value failing the checks was used");
            assert_eq!(v.text, "harmless");
            c.save().unwrap();
        }
    }

    /// A symlink or a FIFO where a package was listed is refused at once: not followed, not
    /// waited on; `compute` gets the one open file.
    #[test]
    fn symlinks_and_fifos_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real.deb");
        std::fs::write(&real, "first").unwrap();
        let link = tmp.path().join("link.deb");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let fifo = tmp.path().join("fifo.deb");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        for c in [
            IndexCache::<V>::none(),
            IndexCache::<V>::open_with(&tmp.path().join("cache"), Duration::ZERO),
        ] {
            let e = c
                .get_or(&link, |_, _| panic!("followed a symlink"))
                .unwrap_err();
            assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
            let e = c.get_or(&fifo, |_, _| panic!("read a FIFO")).unwrap_err();
            assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
            let v = c
                .get_or(&real, |mut file, m| {
                    let mut s = String::new();
                    file.read_to_string(&mut s).unwrap();
                    assert_eq!(m.len(), 5);
                    Ok(V {
                        sha256: crate::digest::sha256_hex(s.as_bytes()),
                        text: s,
                    })
                })
                .unwrap();
            assert_eq!(v.text, "first");
        }
    }

    /// The cache file is written 0600; one others can write (or not ours) is not used and not
    /// replaced; the side directories are made 0700 and refused when others can write them or
    /// when they are symlinks.
    #[test]
    fn cache_and_side_dirs_must_be_ours_alone() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.deb");
        std::fs::write(&f, "first").unwrap();
        let cache_file = tmp.path().join("state/cache");
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        c.get_or(&f, |_, _| describe(&f)).unwrap();
        c.save().unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&cache_file), 0o600);
        let side = c.side_dir("chunks", Some("stable")).unwrap();
        assert_eq!(side, tmp.path().join("state/cache.chunks/stable"));
        assert_eq!(mode(&side), 0o700);
        assert_eq!(mode(side.parent().unwrap()), 0o700);

        chmod(&cache_file, 0o666);
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        assert!(!c.enabled());
        assert!(c.side_dir("chunks", Some("stable")).is_none());
        let mut called = false;
        c.get_or(&f, |_, _| {
            called = true;
            describe(&f)
        })
        .unwrap();
        assert!(called, "used a cache file others can write");
        c.save().unwrap();
        assert_eq!(mode(&cache_file), 0o666, "replaced a refused cache file");

        chmod(&cache_file, 0o600);
        let c = IndexCache::<V>::open_with(&cache_file, Duration::ZERO);
        assert!(c.enabled());
        chmod(side.parent().unwrap(), 0o777);
        assert!(c.side_dir("chunks", Some("stable")).is_none());
        chmod(side.parent().unwrap(), 0o700);
        chmod(&side, 0o770);
        assert!(c.side_dir("chunks", Some("stable")).is_none());
        chmod(&side, 0o700);
        assert!(c.side_dir("chunks", Some("stable")).is_some());
        // A symlinked side directory is refused, not followed.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        chmod(&elsewhere, 0o700);
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join("state/cache.other")).unwrap();
        assert!(c.side_dir("other", None).is_none());
    }
}
