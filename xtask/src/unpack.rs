//! Safe extraction of declared members from upstream release archives (tar.gz, zip).
//!
//! Every entry of the archive is inspected, not just the wanted ones, and the whole archive is
//! refused if any entry is unsafe or odd: absolute paths, `..` components, links whose target is
//! absolute or leaves the archive root, device/fifo/other special entries, duplicate names,
//! non-UTF-8 or NUL-containing names, too many entries, or too many decompressed bytes.
//!
//! Only the declared members are written, each to `dest_dir/<basename>`, streamed through a
//! sha256 hasher, created with `create_new` (never follows or replaces an existing path) and mode
//! 0600. On any error every file this call created is removed before the error is returned.
//!
//! Size accounting (never trusting headers for what is actually decompressed):
//! - tar.gz: every byte the gzip decoder produces (tar headers and padding included) counts
//!   towards `max_total_size`; the stream is cut off as soon as the limit is passed, so a gzip
//!   bomb is stopped while streaming. Each entry's size is checked against `max_member_size`
//!   before its data is read and again while copying a wanted member.
//! - zip: entries are random-access, so only wanted members and symlink targets are decompressed;
//!   their actually decompressed bytes are counted while reading. Entries that are not read count
//!   with their declared size (nothing is decompressed for them, so nothing can explode).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::digest::HashingWriter;

/// Longest symlink target accepted in a zip entry (read into memory to be checked).
const MAX_LINK_TARGET: u64 = 4096;
/// How many existing entry names a "member not found" error lists.
const LIST_EXISTING: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    TarGz,
    Zip,
}

impl ArchiveKind {
    /// `.tar.gz`/`.tgz` → TarGz, `.zip` → Zip (case-insensitive), anything else → None.
    pub fn from_name(name: &str) -> Option<ArchiveKind> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(ArchiveKind::TarGz)
        } else if lower.ends_with(".zip") {
            Some(ArchiveKind::Zip)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most entries (of any type) the archive may hold.
    pub max_entries: u64,
    /// Most decompressed bytes for any one entry.
    pub max_member_size: u64,
    /// Most decompressed bytes overall (see module docs for what counts).
    pub max_total_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 100_000,
            max_member_size: 1 << 30,
            max_total_size: 4 << 30,
        }
    }
}

/// One declared member written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The member name as declared.
    pub member: String,
    /// Where it was written: `dest_dir/<basename>`.
    pub path: PathBuf,
    /// Permission bits recorded in the archive (`& 0o777`); the file on disk is 0600.
    pub mode: u32,
    /// Bytes written.
    pub size: u64,
    /// sha256 (hex) of the bytes written.
    pub sha256: String,
}

/// What kind of link an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Symlink,
    Hardlink,
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkKind::Symlink => "symlink",
            LinkKind::Hardlink => "hardlink",
        })
    }
}

fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(thiserror::Error, Debug)]
pub enum UnpackError {
    #[error("{}: cannot read archive: {source}", archive.display())]
    Read {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: malformed archive{}: {detail}", archive.display(), entry.as_ref().map(|e| format!(" at entry `{e}`")).unwrap_or_default())]
    Malformed {
        archive: PathBuf,
        entry: Option<String>,
        detail: String,
    },
    #[error("{}: entry `{entry}`: absolute path", archive.display())]
    AbsolutePath { archive: PathBuf, entry: String },
    #[error("{}: entry `{entry}`: path escapes the archive root ('..' component)", archive.display())]
    ParentComponent { archive: PathBuf, entry: String },
    #[error("{}: entry `{entry}`: invalid name: {reason}", archive.display())]
    InvalidName {
        archive: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("{}: entry `{entry}`: {kind} target `{target}` {reason}", archive.display())]
    LinkEscapes {
        archive: PathBuf,
        entry: String,
        kind: LinkKind,
        target: String,
        reason: &'static str,
    },
    #[error("{}: entry `{entry}`: {kind} entries are not allowed", archive.display())]
    SpecialEntry {
        archive: PathBuf,
        entry: String,
        kind: String,
    },
    #[error("{}: entry `{entry}`: duplicate entry name", archive.display())]
    Duplicate { archive: PathBuf, entry: String },
    #[error("{}: more than {limit} entries (limit exceeded at entry `{entry}`)", archive.display())]
    TooManyEntries {
        archive: PathBuf,
        entry: String,
        limit: u64,
    },
    #[error("{}: entry `{entry}`: decompressed size exceeds the per-member limit of {limit} bytes", archive.display())]
    MemberTooLarge {
        archive: PathBuf,
        entry: String,
        limit: u64,
    },
    #[error("{}: entry `{entry}`: decompressed archive exceeds the total limit of {limit} bytes", archive.display())]
    TotalTooLarge {
        archive: PathBuf,
        entry: String,
        limit: u64,
    },
    #[error("{}: declared member `{member}` not found; entries present include: {}", archive.display(), list_names(present))]
    MissingMember {
        archive: PathBuf,
        member: String,
        present: Vec<String>,
    },
    #[error("{}: declared member `{member}` is a {kind}, not a regular file", archive.display())]
    NotRegularFile {
        archive: PathBuf,
        member: String,
        kind: &'static str,
    },
    #[error("{}: declared member `{member}`: {reason}", archive.display())]
    BadDeclaredMember {
        archive: PathBuf,
        member: String,
        reason: String,
    },
    #[error("{}: entry `{entry}`: writing {}: {source}", archive.display(), path.display())]
    Write {
        archive: PathBuf,
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why a name was refused, before the archive path is attached.
#[derive(Debug, PartialEq, Eq)]
enum NameProblem {
    Absolute,
    Parent,
    Invalid(&'static str),
}

/// Validate an entry name and normalise it: drop `.` and empty components (`./x`, `x/`, `a//b`).
/// Returns the components joined by `/`; the empty string is the archive root itself.
fn normalise(raw: &[u8]) -> Result<String, NameProblem> {
    let s = std::str::from_utf8(raw).map_err(|_| NameProblem::Invalid("not valid UTF-8"))?;
    if s.contains('\0') {
        return Err(NameProblem::Invalid("contains a NUL byte"));
    }
    if s.is_empty() {
        return Err(NameProblem::Invalid("empty name"));
    }
    if s.starts_with('/') {
        return Err(NameProblem::Absolute);
    }
    if s.contains('\\') {
        return Err(NameProblem::Invalid("contains a backslash"));
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(NameProblem::Parent),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Check a link target. `base` is the normalised directory the target is relative to (the
/// link's parent for symlinks, the archive root for hardlinks).
fn check_link_target(base: &str, target: &[u8]) -> Result<(), &'static str> {
    let t = std::str::from_utf8(target).map_err(|_| "is not valid UTF-8")?;
    if t.is_empty() {
        return Err("is empty");
    }
    if t.contains('\0') {
        return Err("contains a NUL byte");
    }
    if t.starts_with('/') {
        return Err("is absolute");
    }
    if t.contains('\\') {
        return Err("contains a backslash");
    }
    let mut depth: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    for c in t.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return Err("resolves outside the archive root");
                }
            }
            c => depth.push(c),
        }
    }
    Ok(())
}

fn parent_of(norm: &str) -> &str {
    norm.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// The type of an archive entry, as far as policy is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Link(LinkKind, Vec<u8>),
    /// Metadata-only entries (pax global header): no path of their own.
    Meta,
}

impl Kind {
    fn describe(&self) -> &'static str {
        match self {
            Kind::File => "regular file",
            Kind::Dir => "directory",
            Kind::Link(LinkKind::Symlink, _) => "symlink",
            Kind::Link(LinkKind::Hardlink, _) => "hardlink",
            Kind::Meta => "metadata entry",
        }
    }
}

/// State shared by both formats: declared members, names seen, files written, limits.
struct Session<'a> {
    archive: &'a Path,
    dest_dir: &'a Path,
    limits: &'a Limits,
    /// normalised member name → index into `members`
    wanted: HashMap<String, usize>,
    members: &'a [String],
    found: Vec<Option<Extracted>>,
    seen: HashSet<String>,
    /// First few names, in archive order, for "not found" errors.
    sample: Vec<String>,
    entries: u64,
    /// Files created by this call (removed on error).
    created: Vec<PathBuf>,
}

impl<'a> Session<'a> {
    fn new(
        archive: &'a Path,
        members: &'a [String],
        dest_dir: &'a Path,
        limits: &'a Limits,
    ) -> Result<Self, UnpackError> {
        let mut wanted = HashMap::new();
        let mut basenames: BTreeMap<String, &str> = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            let bad = |reason: String| UnpackError::BadDeclaredMember {
                archive: archive.to_path_buf(),
                member: m.clone(),
                reason,
            };
            let norm = match normalise(m.as_bytes()) {
                Ok(n) if n.is_empty() => return Err(bad("names the archive root".into())),
                Ok(n) => n,
                Err(NameProblem::Absolute) => return Err(bad("absolute path".into())),
                Err(NameProblem::Parent) => return Err(bad("contains a '..' component".into())),
                Err(NameProblem::Invalid(r)) => return Err(bad(r.into())),
            };
            let base = norm.rsplit('/').next().unwrap_or(&norm).to_string();
            if let Some(other) = basenames.insert(base.clone(), m) {
                return Err(bad(format!(
                    "its file name `{base}` collides with declared member `{other}`"
                )));
            }
            if wanted.insert(norm, i).is_some() {
                return Err(bad("declared twice".into()));
            }
        }
        Ok(Session {
            archive,
            dest_dir,
            limits,
            wanted,
            members,
            found: vec![None; members.len()],
            seen: HashSet::new(),
            sample: Vec::new(),
            entries: 0,
            created: Vec::new(),
        })
    }

    fn a(&self) -> PathBuf {
        self.archive.to_path_buf()
    }

    /// Count one entry, validate its name, type and link target, and detect duplicates.
    /// Returns the index of the declared member this entry is, if any (only for regular files;
    /// a declared member of another type is an error).
    fn admit(&mut self, raw_name: &[u8], kind: &Kind) -> Result<Option<usize>, UnpackError> {
        let lossy = String::from_utf8_lossy(raw_name).into_owned();
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                archive: self.a(),
                entry: lossy,
                limit: self.limits.max_entries,
            });
        }
        if *kind == Kind::Meta {
            return Ok(None);
        }
        let norm = match normalise(raw_name) {
            Ok(n) => n,
            Err(NameProblem::Absolute) => {
                return Err(UnpackError::AbsolutePath {
                    archive: self.a(),
                    entry: lossy,
                })
            }
            Err(NameProblem::Parent) => {
                return Err(UnpackError::ParentComponent {
                    archive: self.a(),
                    entry: lossy,
                })
            }
            Err(NameProblem::Invalid(reason)) => {
                return Err(UnpackError::InvalidName {
                    archive: self.a(),
                    entry: lossy,
                    reason,
                })
            }
        };
        if norm.is_empty() && *kind != Kind::Dir {
            return Err(UnpackError::InvalidName {
                archive: self.a(),
                entry: lossy,
                reason: "a non-directory entry names the archive root",
            });
        }
        if let Kind::Link(lk, target) = kind {
            let base = match lk {
                LinkKind::Symlink => parent_of(&norm),
                LinkKind::Hardlink => "",
            };
            if let Err(reason) = check_link_target(base, target) {
                return Err(UnpackError::LinkEscapes {
                    archive: self.a(),
                    entry: lossy,
                    kind: *lk,
                    target: String::from_utf8_lossy(target).into_owned(),
                    reason,
                });
            }
        }
        // The root directory entry ("./") carries no name to collide with; skip it.
        if !norm.is_empty() {
            if !self.seen.insert(norm.clone()) {
                return Err(UnpackError::Duplicate {
                    archive: self.a(),
                    entry: lossy,
                });
            }
            if self.sample.len() < LIST_EXISTING {
                self.sample.push(norm.clone());
            }
        }
        match self.wanted.get(&norm) {
            None => Ok(None),
            Some(&i) if *kind == Kind::File => Ok(Some(i)),
            Some(&i) => Err(UnpackError::NotRegularFile {
                archive: self.a(),
                member: self.members[i].clone(),
                kind: kind.describe(),
            }),
        }
    }

    /// Stream `r` into `dest_dir/<basename>`, hashing and counting actual bytes.
    /// `total` is the running total to check against `max_total_size`, if the caller counts
    /// totals this way (zip); tar counts the whole decompressed stream instead.
    fn write_member(
        &mut self,
        i: usize,
        raw_name: &[u8],
        mode: u32,
        r: &mut dyn Read,
        mut total: Option<&mut u64>,
    ) -> Result<(), UnpackError> {
        let entry = String::from_utf8_lossy(raw_name).into_owned();
        let member = self.members[i].clone();
        let norm = normalise(member.as_bytes()).unwrap_or_default();
        let base = norm.rsplit('/').next().unwrap_or(&norm).to_string();
        let path = self.dest_dir.join(&base);
        let werr = |path: &Path, source: io::Error| UnpackError::Write {
            archive: self.archive.to_path_buf(),
            entry: entry.clone(),
            path: path.to_path_buf(),
            source,
        };
        // create_new = O_CREAT|O_EXCL: fails on any existing path, including a symlink, which is
        // never followed.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| werr(&path, e))?;
        self.created.push(path.clone());
        let mut w = HashingWriter::new(io::BufWriter::new(file));
        let mut buf = vec![0u8; 64 * 1024];
        let mut n: u64 = 0;
        loop {
            let k = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(Some(&entry), e)),
            };
            n += k as u64;
            if n > self.limits.max_member_size {
                return Err(UnpackError::MemberTooLarge {
                    archive: self.a(),
                    entry,
                    limit: self.limits.max_member_size,
                });
            }
            if let Some(t) = total.as_deref_mut() {
                *t += k as u64;
                if *t > self.limits.max_total_size {
                    return Err(UnpackError::TotalTooLarge {
                        archive: self.a(),
                        entry,
                        limit: self.limits.max_total_size,
                    });
                }
            }
            w.write_all(&buf[..k]).map_err(|e| werr(&path, e))?;
        }
        let (bw, sha256, size) = w.finish();
        let file = bw.into_inner().map_err(|e| werr(&path, e.into_error()))?;
        file.sync_all().map_err(|e| werr(&path, e))?;
        self.found[i] = Some(Extracted {
            member,
            path,
            mode: mode & 0o777,
            size,
            sha256,
        });
        Ok(())
    }

    /// Turn an I/O error from reading the archive into the right error. Overridden by the tar
    /// path when the total-size cut-off fired.
    fn read_error(&self, entry: Option<&str>, e: io::Error) -> UnpackError {
        if let Some(limit) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<StreamLimit>())
        {
            return UnpackError::TotalTooLarge {
                archive: self.a(),
                entry: entry.unwrap_or("(archive stream)").to_string(),
                limit: limit.0,
            };
        }
        UnpackError::Malformed {
            archive: self.a(),
            entry: entry.map(str::to_string),
            detail: e.to_string(),
        }
    }

    /// All declared members, in declaration order, or the first one that was not found.
    fn finish(&self) -> Result<Vec<Extracted>, UnpackError> {
        let mut out = Vec::with_capacity(self.found.len());
        for (i, f) in self.found.iter().enumerate() {
            match f {
                Some(x) => out.push(x.clone()),
                None => {
                    return Err(UnpackError::MissingMember {
                        archive: self.a(),
                        member: self.members[i].clone(),
                        present: self.sample.clone(),
                    })
                }
            }
        }
        Ok(out)
    }

    fn cleanup(&self) {
        for p in &self.created {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Extract the declared `members` of `archive` into `dest_dir` (which must exist; it should be
/// private). See the module docs for what is refused. On error nothing written by this call is
/// left behind.
pub fn extract_members(
    archive: &Path,
    kind: ArchiveKind,
    members: &[String],
    dest_dir: &Path,
    limits: &Limits,
) -> Result<Vec<Extracted>, UnpackError> {
    let mut s = Session::new(archive, members, dest_dir, limits)?;
    let r = match kind {
        ArchiveKind::TarGz => scan_tar_gz(&mut s),
        ArchiveKind::Zip => scan_zip(&mut s),
    };
    match r.and_then(|()| s.finish()) {
        Ok(v) => Ok(v),
        Err(e) => {
            s.cleanup();
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tar.gz

/// Marker error: the decompressed stream passed `max_total_size`.
#[derive(Debug)]
struct StreamLimit(u64);

impl fmt::Display for StreamLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "decompressed stream exceeds {} bytes", self.0)
    }
}

impl std::error::Error for StreamLimit {}

/// Counts every byte the decompressor produces and fails once more than `limit` were produced.
struct CountingReader<R> {
    inner: R,
    count: u64,
    limit: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.count > self.limit {
            self.tripped.set(true);
            return Err(io::Error::other(StreamLimit(self.limit)));
        }
        // Never hand out more than one byte past the limit, so the overrun is noticed on the
        // very next read without decompressing a large chunk first.
        let room = (self.limit - self.count).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.count += n as u64;
        if self.count > self.limit {
            self.tripped.set(true);
            return Err(io::Error::other(StreamLimit(self.limit)));
        }
        Ok(n)
    }
}

fn scan_tar_gz(s: &mut Session<'_>) -> Result<(), UnpackError> {
    let file = File::open(s.archive).map_err(|source| UnpackError::Read {
        archive: s.a(),
        source,
    })?;
    let tripped = Rc::new(Cell::new(false));
    let counting = CountingReader {
        inner: flate2::read::MultiGzDecoder::new(BufReader::new(file)),
        count: 0,
        limit: s.limits.max_total_size,
        tripped: tripped.clone(),
    };
    let mut ar = tar::Archive::new(counting);
    let mut last = String::new();
    // The tar crate may wrap our error; the shared flag tells us the cut-off fired regardless.
    let map_err = |s: &Session<'_>, last: &str, e: io::Error| {
        let entry = if last.is_empty() { None } else { Some(last) };
        if tripped.get() {
            UnpackError::TotalTooLarge {
                archive: s.a(),
                entry: entry.unwrap_or("(archive stream)").to_string(),
                limit: s.limits.max_total_size,
            }
        } else {
            s.read_error(entry, e)
        }
    };
    let entries = ar.entries().map_err(|e| map_err(s, "", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| map_err(s, &last, e))?;
        let raw = entry.path_bytes().into_owned();
        last = String::from_utf8_lossy(&raw).into_owned();
        let et = entry.header().entry_type();
        let kind = match et {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let lk = if et == tar::EntryType::Symlink {
                    LinkKind::Symlink
                } else {
                    LinkKind::Hardlink
                };
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                Kind::Link(lk, target)
            }
            tar::EntryType::XGlobalHeader => Kind::Meta,
            other => {
                // Count it first so the entry limit still reads naturally, then refuse.
                let what = match other {
                    tar::EntryType::Char => "character device".to_string(),
                    tar::EntryType::Block => "block device".to_string(),
                    tar::EntryType::Fifo => "fifo".to_string(),
                    tar::EntryType::GNUSparse => "GNU sparse file".to_string(),
                    o => format!("unsupported type {:?} ({})", o, o.as_byte() as char),
                };
                return Err(UnpackError::SpecialEntry {
                    archive: s.a(),
                    entry: last,
                    kind: what,
                });
            }
        };
        let want = s.admit(&raw, &kind)?;
        // The tar crate reads exactly `size` bytes for this entry (header or pax size); refuse
        // before decompressing them if that is already too much.
        let size = entry.size();
        if size > s.limits.max_member_size && kind != Kind::Meta {
            return Err(UnpackError::MemberTooLarge {
                archive: s.a(),
                entry: last,
                limit: s.limits.max_member_size,
            });
        }
        if let Some(i) = want {
            let mode = entry.header().mode().map_err(|e| UnpackError::Malformed {
                archive: s.a(),
                entry: Some(last.clone()),
                detail: format!("bad mode field: {e}"),
            })?;
            if let Err(e) = s.write_member(i, &raw, mode, &mut entry, None) {
                return Err(match e {
                    UnpackError::Malformed { .. } if tripped.get() => UnpackError::TotalTooLarge {
                        archive: s.a(),
                        entry: last,
                        limit: s.limits.max_total_size,
                    },
                    e => e,
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// zip

const S_IFMT: u32 = 0o170000;
const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFSOCK: u32 = 0o140000;

/// Raw names of the central directory records, in order, read straight from the file. The zip
/// crate indexes entries by name, which silently collapses exact duplicates; this walk sees them.
fn central_directory_names(s: &Session<'_>, start: u64) -> Result<Vec<Vec<u8>>, UnpackError> {
    let rerr = |source| UnpackError::Read {
        archive: s.a(),
        source,
    };
    let mut f = BufReader::new(File::open(s.archive).map_err(rerr)?);
    f.seek(SeekFrom::Start(start)).map_err(rerr)?;
    let mut names = Vec::new();
    loop {
        let mut fixed = [0u8; 46];
        match f.read_exact(&mut fixed[..4]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(rerr(e)),
        }
        if fixed[..4] != *b"PK\x01\x02" {
            break;
        }
        f.read_exact(&mut fixed[4..]).map_err(rerr)?;
        let le = |o: usize| u16::from_le_bytes([fixed[o], fixed[o + 1]]);
        let (name_len, extra_len, comment_len) = (le(28), le(30), le(32));
        let mut name = vec![0u8; usize::from(name_len)];
        f.read_exact(&mut name).map_err(rerr)?;
        f.seek_relative(i64::from(extra_len) + i64::from(comment_len))
            .map_err(rerr)?;
        names.push(name);
        if names.len() as u64 > s.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                archive: s.a(),
                entry: String::from_utf8_lossy(names.last().map(Vec::as_slice).unwrap_or(b""))
                    .into_owned(),
                limit: s.limits.max_entries,
            });
        }
    }
    Ok(names)
}

fn zip_err(s: &Session<'_>, entry: Option<&str>, e: zip::result::ZipError) -> UnpackError {
    match e {
        zip::result::ZipError::Io(e) => s.read_error(entry, e),
        e => UnpackError::Malformed {
            archive: s.a(),
            entry: entry.map(str::to_string),
            detail: e.to_string(),
        },
    }
}

fn scan_zip(s: &mut Session<'_>) -> Result<(), UnpackError> {
    let file = File::open(s.archive).map_err(|source| UnpackError::Read {
        archive: s.a(),
        source,
    })?;
    let mut za = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| zip_err(s, None, e))?;

    // Duplicates and entry count from the raw central directory.
    let cd = central_directory_names(s, za.central_directory_start())?;
    {
        let mut seen = HashSet::new();
        for raw in &cd {
            // Names that do not normalise are reported by the per-entry pass below.
            if let Ok(n) = normalise(raw) {
                if !n.is_empty() && !seen.insert(n) {
                    return Err(UnpackError::Duplicate {
                        archive: s.a(),
                        entry: String::from_utf8_lossy(raw).into_owned(),
                    });
                }
            }
        }
    }
    if cd.len() != za.len() {
        return Err(UnpackError::Malformed {
            archive: s.a(),
            entry: None,
            detail: format!(
                "central directory holds {} records but {} distinct entries",
                cd.len(),
                za.len()
            ),
        });
    }

    let mut total: u64 = 0;
    for idx in 0..za.len() {
        let mut zf = za.by_index(idx).map_err(|e| {
            let name = za_name(&cd, idx);
            zip_err(s, Some(&name), e)
        })?;
        let raw = zf.name_raw().to_vec();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let declared = zf.size();
        if declared > s.limits.max_member_size {
            return Err(UnpackError::MemberTooLarge {
                archive: s.a(),
                entry: name,
                limit: s.limits.max_member_size,
            });
        }
        let mode = zf.unix_mode();
        let ftype = mode.map(|m| m & S_IFMT).unwrap_or(0);
        let kind = match ftype {
            S_IFLNK => {
                // The target is the entry's content; read it, bounded.
                let mut target = Vec::new();
                (&mut zf)
                    .take(MAX_LINK_TARGET + 1)
                    .read_to_end(&mut target)
                    .map_err(|e| s.read_error(Some(&name), e))?;
                if target.len() as u64 > MAX_LINK_TARGET {
                    return Err(UnpackError::LinkEscapes {
                        archive: s.a(),
                        entry: name,
                        kind: LinkKind::Symlink,
                        target: String::from_utf8_lossy(&target[..64]).into_owned() + "…",
                        reason: "is too long",
                    });
                }
                total += target.len() as u64;
                Kind::Link(LinkKind::Symlink, target)
            }
            S_IFDIR => Kind::Dir,
            0 | S_IFREG if raw.ends_with(b"/") => Kind::Dir,
            0 | S_IFREG => Kind::File,
            S_IFIFO | S_IFCHR | S_IFBLK | S_IFSOCK => {
                let what = match ftype {
                    S_IFIFO => "fifo",
                    S_IFCHR => "character device",
                    S_IFBLK => "block device",
                    _ => "socket",
                };
                return Err(UnpackError::SpecialEntry {
                    archive: s.a(),
                    entry: name,
                    kind: what.to_string(),
                });
            }
            other => {
                return Err(UnpackError::SpecialEntry {
                    archive: s.a(),
                    entry: name,
                    kind: format!("unknown file type {other:o}"),
                })
            }
        };
        let want = s.admit(&raw, &kind)?;
        match want {
            Some(i) => {
                let perm = mode.unwrap_or(0o644);
                s.write_member(i, &raw, perm, &mut zf, Some(&mut total))?;
            }
            None => {
                // Not decompressed: count what it claims.
                if !matches!(kind, Kind::Link(..)) {
                    total = total.saturating_add(declared);
                }
            }
        }
        if total > s.limits.max_total_size {
            return Err(UnpackError::TotalTooLarge {
                archive: s.a(),
                entry: name,
                limit: s.limits.max_total_size,
            });
        }
    }
    Ok(())
}

fn za_name(cd: &[Vec<u8>], idx: usize) -> String {
    cd.get(idx)
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_else(|| format!("#{idx}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_from_name() {
        assert_eq!(ArchiveKind::from_name("a.tar.gz"), Some(ArchiveKind::TarGz));
        assert_eq!(ArchiveKind::from_name("a.TGZ"), Some(ArchiveKind::TarGz));
        assert_eq!(ArchiveKind::from_name("a.zip"), Some(ArchiveKind::Zip));
        assert_eq!(ArchiveKind::from_name("a.tar.xz"), None);
        assert_eq!(ArchiveKind::from_name("a.tar"), None);
    }

    #[test]
    fn normalise_names() {
        assert_eq!(normalise(b"./a/b/").unwrap(), "a/b");
        assert_eq!(normalise(b"a//./b").unwrap(), "a/b");
        assert_eq!(normalise(b"./").unwrap(), "");
        assert_eq!(normalise(b"/etc/passwd"), Err(NameProblem::Absolute));
        assert_eq!(normalise(b"a/../../b"), Err(NameProblem::Parent));
        assert_eq!(normalise(b"a/.."), Err(NameProblem::Parent));
        assert!(matches!(normalise(b"a\0b"), Err(NameProblem::Invalid(_))));
        assert!(matches!(normalise(b"a\xffb"), Err(NameProblem::Invalid(_))));
        assert!(matches!(normalise(b"..\\x"), Err(NameProblem::Invalid(_))));
        assert!(matches!(normalise(b""), Err(NameProblem::Invalid(_))));
        // a name that merely starts with dots is fine
        assert_eq!(normalise(b"..a/b..").unwrap(), "..a/b..");
    }

    #[test]
    fn link_targets() {
        assert!(check_link_target("d", b"x").is_ok());
        assert!(check_link_target("d", b"../x").is_ok());
        assert!(check_link_target("d/e", b"../../x").is_ok());
        assert!(check_link_target("d", b"../../x").is_err());
        assert!(check_link_target("", b"../x").is_err());
        assert!(check_link_target("d", b"/etc/passwd").is_err());
        assert!(check_link_target("d", b"a/../../..").is_err());
        assert!(check_link_target("d", b"").is_err());
    }

    #[test]
    fn counting_reader_cuts_off() {
        let data = vec![7u8; 1000];
        let tripped = Rc::new(Cell::new(false));
        let mut r = CountingReader {
            inner: &data[..],
            count: 0,
            limit: 100,
            tripped: tripped.clone(),
        };
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("exceeds 100 bytes"), "{e}");
        assert!(tripped.get());
        assert!(out.len() <= 101);
        // exactly at the limit is fine
        let mut r = CountingReader {
            inner: &data[..100],
            count: 0,
            limit: 100,
            tripped: Rc::new(Cell::new(false)),
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 100);
    }
}
