//! dnf (rpm-md) repository index writer: `Packages/`, `repodata/*-{primary,filelists,other}.xml.*`,
//! `repodata/repomd.xml` and its detached signature `repodata/repomd.xml.asc`, the `.repo` client
//! file and the armored public key.
//!
//! Everything the index says about a package is read from the .rpm file itself (its lead,
//! signature header and main header), so the index can be rebuilt from any set of rpm files.
//! The file is streamed for its sha256; only the headers are parsed.
//!
//! Layout under the repository root:
//! ```text
//! Packages/<first letter of the package name, lower case>/<file name>.rpm
//! repodata/<sha256>-primary.xml.gz      (or .xml.zst with MetadataCompression::Zstd)
//! repodata/<sha256>-filelists.xml.gz
//! repodata/<sha256>-other.xml.gz
//! repodata/repomd.xml                   (written after every file it names)
//! repodata/repomd.xml.asc               (detached armored signature over repomd.xml)
//! keys/<name>.asc                       (write_public_key)
//! ```
//! Packages are copied into `Packages/` (mode 0644; an input already at its place is left
//! there). Old `*-primary.xml.*`
//! files from an earlier run in the same root are not removed (their names are content
//! addressed, so they never collide): keeping or pruning generations is the publish step's job.
//!
//! What follows createrepo_c (checked against it in tests/dnf_repo.rs) and where we differ:
//! - requires: `rpmlib(…)` entries are dropped, as are requires on a primary file the package
//!   itself contains, requires equal (name, flags, version) to one of its own provides, and
//!   repeated identical requires; `pre="1"` marks requires flagged PREREQ, SCRIPT_PRE or
//!   SCRIPT_POST.
//! - primary file list: files under `/etc/`, any path containing `bin/`, and
//!   `/usr/lib/sendmail`; filelists.xml has every file, directory (`type="dir"`) and ghost
//!   (`type="ghost"`).
//! - other.xml: the newest `changelog_limit` entries (createrepo_c's default is 10), oldest first.
//! - Differences (documented, allowed): every `libc.so.6(…)` require is kept (createrepo_c keeps
//!   only the one with the highest GLIBC version); changelog entries with equal timestamps keep
//!   their timestamps (createrepo_c bumps earlier ones by a second each); `<time file=…>` is
//!   the package's build time, not the file's mtime (deterministic, independent of when a file
//!   was copied); no sqlite databases (`*_db` entries) are produced — dnf reads the XML; no
//!   `vcs` attribute and no weak-dependency legacy (MISSINGOK requires) conversion.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use rpm::{DependencyFlags, IndexSignatureTag, IndexTag, PackageMetadata};

use crate::digest::{sha256_file, HashingWriter};
use crate::signer::Signer;

/// Compression of the primary/filelists/other XML files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MetadataCompression {
    #[default]
    Gzip,
    Zstd,
}

impl MetadataCompression {
    pub fn extension(self) -> &'static str {
        match self {
            MetadataCompression::Gzip => "gz",
            MetadataCompression::Zstd => "zst",
        }
    }
}

/// Repository settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// SOURCE_DATE_EPOCH: `<revision>` and every `<timestamp>` of repomd.xml.
    pub date: u64,
    pub compression: MetadataCompression,
    /// How many changelog entries (newest first) go into other.xml.
    pub changelog_limit: usize,
}

impl Settings {
    pub fn new(date: u64) -> Settings {
        Settings {
            date,
            compression: MetadataCompression::Gzip,
            changelog_limit: 10,
        }
    }
}

/// Byte range of the main header inside an rpm file (`rpm:header-range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeaderRange {
    pub start: u64,
    pub end: u64,
}

/// One dependency entry as the repository metadata writes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Dep {
    pub name: String,
    /// EQ, LT, LE, GT, GE or none.
    pub flags: Option<&'static str>,
    pub epoch: Option<String>,
    pub ver: Option<String>,
    pub rel: Option<String>,
    /// Only for requires: needed by a %pre/%post scriptlet (or legacy PreReq).
    pub pre: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Ghost,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileItem {
    pub path: String,
    pub kind: FileKind,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub author: String,
    pub date: u64,
    pub text: String,
}

/// What the index says about one package, read from the rpm file.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RpmInfo {
    pub name: String,
    pub arch: String,
    pub epoch: u32,
    pub version: String,
    pub release: String,
    pub summary: String,
    pub description: String,
    pub packager: String,
    pub url: String,
    pub build_time: u64,
    pub installed_size: u64,
    pub archive_size: u64,
    pub license: String,
    pub vendor: String,
    pub group: String,
    pub buildhost: String,
    pub sourcerpm: String,
    pub header_range: HeaderRange,
    pub provides: Vec<Dep>,
    pub requires: Vec<Dep>,
    pub conflicts: Vec<Dep>,
    pub obsoletes: Vec<Dep>,
    pub suggests: Vec<Dep>,
    pub enhances: Vec<Dep>,
    pub recommends: Vec<Dep>,
    pub supplements: Vec<Dep>,
    pub files: Vec<FileItem>,
    /// Newest first, as in the header (all of them; the limit applies when writing).
    pub changelog: Vec<Change>,
}

/// A package as placed in the repository.
#[derive(Clone, Debug)]
pub struct IndexedPackage {
    pub info: RpmInfo,
    /// sha256 of the whole file (the pkgid).
    pub sha256: String,
    pub size: u64,
    /// Location relative to the repository root, e.g. `Packages/n/node_exporter-….rpm`.
    pub href: String,
}

/// One `<data>` entry of repomd.xml.
#[derive(Clone, Debug)]
pub struct RepoData {
    pub kind: &'static str,
    pub href: String,
    pub sha256: String,
    pub size: u64,
    pub open_sha256: String,
    pub open_size: u64,
}

/// What `write_repo` wrote.
#[derive(Clone, Debug)]
pub struct DnfRepo {
    pub packages: Vec<IndexedPackage>,
    pub data: Vec<RepoData>,
    pub repomd: PathBuf,
    pub repomd_asc: PathBuf,
}

const LEAD_SIZE: u64 = 96;
const HEADER_MAGIC: [u8; 3] = [0x8e, 0xad, 0xe8];
/// Headers larger than this are refused (rpm itself caps a header at 256 MiB).
const MAX_HEADER_BYTES: u64 = 256 << 20;

/// Where the main header lies in an rpm file: after the 96-byte lead and the signature header
/// (padded to a multiple of 8 bytes). Reads only the lead and the two 16-byte header intros.
pub fn header_range(path: &Path) -> Result<HeaderRange> {
    let (f, m) = crate::index_cache::open_regular(path)?;
    header_range_of(&f, m.len(), path)
}

/// [`header_range`] of an open file of `file_len` bytes (positioned reads: the file offset is
/// not moved).
fn header_range_of(f: &File, file_len: u64, path: &Path) -> Result<HeaderRange> {
    header_range_in(f, &[], file_len, path)
}

/// [`header_range_of`], taking bytes from `prefix` (the file's first bytes, already read)
/// where it covers them.
fn header_range_in(f: &File, prefix: &[u8], file_len: u64, path: &Path) -> Result<HeaderRange> {
    let read_at = |buf: &mut [u8], at: u64| -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        match prefix.get(at as usize..at as usize + buf.len()) {
            Some(b) => {
                buf.copy_from_slice(b);
                Ok(())
            }
            None => f.read_exact_at(buf, at),
        }
    };
    let mut lead = [0u8; LEAD_SIZE as usize];
    read_at(&mut lead, 0)
        .with_context(|| format!("{}: shorter than an rpm lead", path.display()))?;
    if lead[..4] != [0xed, 0xab, 0xee, 0xdb] {
        bail!("{}: not an rpm file (bad lead magic)", path.display());
    }
    let (sig_index, sig_data) = read_header_intro(&read_at, LEAD_SIZE, path, "signature")?;
    let sig_len = sig_index * 16 + sig_data;
    let pad = (8 - sig_len % 8) % 8;
    let start = LEAD_SIZE + 16 + sig_len + pad;
    if start > file_len {
        bail!("{}: truncated signature header", path.display());
    }
    let (index, data) = read_header_intro(&read_at, start, path, "main")?;
    let end = start + 16 + index * 16 + data;
    if end > file_len {
        bail!(
            "{}: main header ends at byte {end}, past the end of the file ({file_len})",
            path.display()
        );
    }
    Ok(HeaderRange { start, end })
}

fn read_header_intro(
    read_at: &dyn Fn(&mut [u8], u64) -> io::Result<()>,
    at: u64,
    path: &Path,
    which: &str,
) -> Result<(u64, u64)> {
    let mut intro = [0u8; 16];
    read_at(&mut intro, at)
        .with_context(|| format!("{}: truncated {which} header", path.display()))?;
    if intro[..3] != HEADER_MAGIC || intro[3] != 1 {
        bail!("{}: bad {which} header magic", path.display());
    }
    let index = u32::from_be_bytes(intro[8..12].try_into().unwrap()) as u64;
    let data = u32::from_be_bytes(intro[12..16].try_into().unwrap()) as u64;
    if index * 16 + data > MAX_HEADER_BYTES {
        bail!("{}: {which} header is implausibly large", path.display());
    }
    check_header_index(read_at, at + 16, index, data)
        .with_context(|| format!("{}: {which} header", path.display()))?;
    Ok((index, data))
}

/// The index of a header (`count` entries at `at`, then `data` bytes of store) as librpm would
/// accept it: no tag twice (librpm reads the last of two, the rpm crate the first: an index
/// built from one would describe another package than the one installed), and a region tag
/// first (62/63: signature or immutable header) whose trailer in the store names the same tag.
fn check_header_index(
    read_at: &dyn Fn(&mut [u8], u64) -> io::Result<()>,
    at: u64,
    count: u64,
    data: u64,
) -> Result<()> {
    let mut index = vec![0u8; count as usize * 16];
    read_at(&mut index, at).context("truncated index")?;
    let word = |e: &[u8], i: usize| u32::from_be_bytes(e[i * 4..i * 4 + 4].try_into().unwrap());
    let mut seen = std::collections::BTreeSet::new();
    for e in index.chunks_exact(16) {
        if !seen.insert(word(e, 0)) {
            bail!("tag {} appears twice", word(e, 0));
        }
    }
    if let Some(first) = index.chunks_exact(16).next() {
        let (tag, kind, offset, n) = (
            word(first, 0),
            word(first, 1),
            word(first, 2),
            word(first, 3),
        );
        if (61..=63).contains(&tag) {
            if kind != 7 || n != 16 || offset as u64 + 16 > data {
                bail!("region tag {tag}: malformed entry");
            }
            let mut trailer = [0u8; 16];
            read_at(&mut trailer, at + count * 16 + offset as u64).context("truncated store")?;
            if word(&trailer, 0) != tag {
                bail!(
                    "region tag {tag}: its trailer names tag {}",
                    word(&trailer, 0)
                );
            }
        }
    }
    Ok(())
}

fn not_found(e: &rpm::Error) -> bool {
    matches!(e, rpm::Error::TagNotFound(_))
}

/// A string tag, empty when absent.
fn opt_str(h: &rpm::Header<IndexTag>, tag: IndexTag) -> Result<String> {
    match h.get_entry_data_as_string(tag) {
        Ok(s) => Ok(s.to_string()),
        Err(e) if not_found(&e) => match h.get_entry_data_as_i18n_string(tag) {
            Ok(s) => Ok(s.to_string()),
            Err(e) if not_found(&e) => Ok(String::new()),
            Err(e) => Err(anyhow!("{tag:?}: {e}")),
        },
        Err(rpm::Error::UnexpectedTagDataType { .. }) => h
            .get_entry_data_as_i18n_string(tag)
            .map(str::to_string)
            .map_err(|e| anyhow!("{tag:?}: {e}")),
        Err(e) => Err(anyhow!("{tag:?}: {e}")),
    }
}

fn opt_str_array(h: &rpm::Header<IndexTag>, tag: IndexTag) -> Result<Vec<String>> {
    match h.get_entry_data_as_string_array(tag) {
        Ok(v) => Ok(v.into_iter().map(str::to_string).collect()),
        Err(e) if not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(anyhow!("{tag:?}: {e}")),
    }
}

fn opt_u32_array(h: &rpm::Header<IndexTag>, tag: IndexTag) -> Result<Vec<u32>> {
    match h.get_entry_data_as_u32_array(tag) {
        Ok(v) => Ok(v),
        Err(e) if not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(anyhow!("{tag:?}: {e}")),
    }
}

/// A number stored as int32 or int64 (first element).
fn number<T: rpm::Tag>(h: &rpm::Header<T>, tag: T) -> Result<Option<u64>> {
    match h.get_entry_data_as_u64(tag) {
        Ok(v) => return Ok(Some(v)),
        Err(e) if not_found(&e) => return Ok(None),
        Err(_) => {}
    }
    match h.get_entry_data_as_u32(tag) {
        Ok(v) => Ok(Some(v as u64)),
        Err(e) => Err(anyhow!("tag {}: {e}", tag.into())),
    }
}

/// [`Dep`] as the index cache stores it: `flags` read back to the same constants.
#[derive(serde::Deserialize)]
struct DepRepr {
    name: String,
    flags: Option<String>,
    epoch: Option<String>,
    ver: Option<String>,
    rel: Option<String>,
    pre: bool,
}

impl<'de> serde::Deserialize<'de> for Dep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dep, D::Error> {
        let r = <DepRepr as serde::Deserialize>::deserialize(d)?;
        Dep::try_from(r).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<DepRepr> for Dep {
    type Error = String;
    fn try_from(d: DepRepr) -> Result<Dep, String> {
        let flags = match d.flags.as_deref() {
            None => None,
            Some(f) => Some(
                ["EQ", "LT", "LE", "GT", "GE"]
                    .into_iter()
                    .find(|x| *x == f)
                    .ok_or_else(|| format!("dependency flags {f:?}"))?,
            ),
        };
        Ok(Dep {
            name: d.name,
            flags,
            epoch: d.epoch,
            ver: d.ver,
            rel: d.rel,
            pre: d.pre,
        })
    }
}

fn flags_str(flags: u32) -> Option<&'static str> {
    let f = DependencyFlags::from_bits_retain(flags);
    let cmp = f & (DependencyFlags::LESS | DependencyFlags::GREATER | DependencyFlags::EQUAL);
    match cmp {
        x if x == DependencyFlags::EQUAL => Some("EQ"),
        x if x == DependencyFlags::LESS => Some("LT"),
        x if x == DependencyFlags::GREATER => Some("GT"),
        x if x == DependencyFlags::LE => Some("LE"),
        x if x == DependencyFlags::GE => Some("GE"),
        _ => None,
    }
}

/// Split `[epoch:]version[-release]` as rpm-md writes it (epoch defaults to 0).
fn split_evr(evr: &str) -> Result<(Option<String>, Option<String>, Option<String>)> {
    if evr.is_empty() {
        return Ok((None, None, None));
    }
    let (epoch, rest) = match evr.split_once(':') {
        Some((e, rest)) => {
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                bail!("bad epoch in version {evr:?}");
            }
            (e.to_string(), rest)
        }
        None => ("0".to_string(), evr),
    };
    let (ver, rel) = match rest.split_once('-') {
        Some((v, r)) => (v, Some(r.to_string())),
        None => (rest, None),
    };
    let ver = (!ver.is_empty()).then(|| ver.to_string());
    let rel = rel.filter(|r| !r.is_empty());
    Ok((Some(epoch), ver, rel))
}

fn deps(
    h: &rpm::Header<IndexTag>,
    names: IndexTag,
    flags: IndexTag,
    versions: IndexTag,
) -> Result<Vec<(String, u32, String)>> {
    let n = opt_str_array(h, names)?;
    let f = opt_u32_array(h, flags)?;
    let v = opt_str_array(h, versions)?;
    if n.len() != f.len() || n.len() != v.len() {
        bail!("{names:?}: names, flags and versions differ in length");
    }
    Ok(n.into_iter()
        .zip(f)
        .zip(v)
        .map(|((n, f), v)| (n, f, v))
        .collect())
}

fn to_dep(name: String, flags: u32, version: &str, pre: bool) -> Result<Dep> {
    let fl = flags_str(flags);
    let (epoch, ver, rel) = if fl.is_some() {
        split_evr(version).with_context(|| format!("dependency {name:?}"))?
    } else {
        (None, None, None)
    };
    Ok(Dep {
        name,
        flags: fl,
        epoch,
        ver,
        rel,
        pre,
    })
}

/// Files that go into primary.xml as well as filelists.xml (and satisfy file requires without
/// filelists).
pub fn is_primary_file(path: &str) -> bool {
    path.starts_with("/etc/") || path.contains("bin/") || path == "/usr/lib/sendmail"
}

/// Read everything the index needs from an rpm file (headers only).
pub fn read_rpm(path: &Path) -> Result<RpmInfo> {
    let (f, m) = crate::index_cache::open_regular(path)?;
    Ok(read_rpm_hashed(path, &f, m.len(), false)?.0)
}

/// A `BufRead` that hashes (sha256) and counts every byte consumed from it.
struct HashingBufReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
}

impl<R: BufRead> Read for HashingBufReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for HashingBufReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        use sha2::Digest;
        if let Ok(b) = self.inner.fill_buf() {
            self.hasher.update(&b[..amt.min(b.len())]);
        }
        self.count += amt as u64;
        self.inner.consume(amt);
    }
}

/// [`read_rpm`] of the open file `f` (`len` bytes, read from its start), named `path`; with
/// `hash`, the whole file is streamed on through sha256 after the headers:
/// (info, Some((sha256, size))).
fn read_rpm_hashed(
    path: &Path,
    f: &File,
    len: u64,
    hash: bool,
) -> Result<(RpmInfo, Option<(String, u64)>)> {
    let ctx = || format!("{}", path.display());
    // Sized to the file (at most 1 MiB): small packages need no large buffer each.
    let cap = if hash { len } else { len.min(64 << 10) }.clamp(8192, 1 << 20) as usize;
    let mut inner = io::BufReader::with_capacity(cap, f);
    inner.fill_buf().with_context(ctx)?;
    // Our own reading first (from the buffered start of the file where it reaches): it names
    // what is wrong with a file that is not an rpm.
    let range = header_range_in(inner.get_ref(), inner.buffer(), len, path)?;
    let mut r = HashingBufReader {
        inner,
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
        count: 0,
    };
    let meta = PackageMetadata::parse(&mut r)
        .map_err(|e| anyhow!("{e}"))
        .with_context(ctx)?;
    let offsets = meta.get_package_segment_offsets();
    if offsets.header != range.start || offsets.payload != range.end {
        bail!(
            "{}: header range {}..{} from the file's bytes disagrees with the parsed headers {}..{}",
            path.display(),
            range.start,
            range.end,
            offsets.header,
            offsets.payload
        );
    }
    let info = read_info(&meta, range).with_context(ctx)?;
    if !hash {
        return Ok((info, None));
    }
    io::copy(&mut r, &mut io::sink()).with_context(|| format!("hash {}", path.display()))?;
    let sha256 = hex::encode(sha2::Digest::finalize(r.hasher));
    Ok((info, Some((sha256, r.count))))
}

fn read_info(meta: &PackageMetadata, header_range: HeaderRange) -> Result<RpmInfo> {
    let h = &meta.header;
    let s = &meta.signature;
    let name = meta
        .get_name()
        .map_err(|e| anyhow!("name: {e}"))?
        .to_string();
    let arch = if meta.is_source_package() {
        "src".to_string()
    } else {
        meta.get_arch()
            .map_err(|e| anyhow!("arch: {e}"))?
            .to_string()
    };
    let epoch = match meta.get_epoch() {
        Ok(e) => e,
        Err(e) if not_found(&e) => 0,
        Err(e) => bail!("epoch: {e}"),
    };
    let version = meta
        .get_version()
        .map_err(|e| anyhow!("version: {e}"))?
        .to_string();
    let release = meta
        .get_release()
        .map_err(|e| anyhow!("release: {e}"))?
        .to_string();

    let installed_size = match number(h, IndexTag::RPMTAG_LONGSIZE)? {
        Some(v) => v,
        None => number(h, IndexTag::RPMTAG_SIZE)?.unwrap_or(0),
    };
    // rpmbuild records the payload size in the signature header (LONGARCHIVESIZE or
    // PAYLOADSIZE); other writers may put it in the main header. Absent (the rpm crate's v4
    // packages carry none) means 0, as createrepo_c writes.
    let archive_size = match number(s, IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE)? {
        Some(v) => v,
        None => match number(s, IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE)? {
            Some(v) => v,
            None => match number(h, IndexTag::RPMTAG_LONGARCHIVESIZE)? {
                Some(v) => v,
                None => number(h, IndexTag::RPMTAG_ARCHIVESIZE)?.unwrap_or(0),
            },
        },
    };

    // Files.
    let basenames = opt_str_array(h, IndexTag::RPMTAG_BASENAMES)?;
    let dirnames = opt_str_array(h, IndexTag::RPMTAG_DIRNAMES)?;
    let dirindexes = opt_u32_array(h, IndexTag::RPMTAG_DIRINDEXES)?;
    let fileflags = opt_u32_array(h, IndexTag::RPMTAG_FILEFLAGS)?;
    let filemodes = match h.get_entry_data_as_u16_array(IndexTag::RPMTAG_FILEMODES) {
        Ok(v) => v,
        Err(e) if not_found(&e) => Vec::new(),
        Err(e) => bail!("file modes: {e}"),
    };
    let n = basenames.len();
    if dirindexes.len() != n || fileflags.len() != n || filemodes.len() != n {
        bail!("file tags differ in length");
    }
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let dir = dirnames
            .get(dirindexes[i] as usize)
            .ok_or_else(|| anyhow!("file {}: directory index out of range", basenames[i]))?;
        let path = format!("{dir}{}", basenames[i]);
        let kind = if filemodes[i] & 0o170000 == 0o040000 {
            FileKind::Dir
        } else if fileflags[i] & rpm::FileFlags::GHOST.bits() != 0 {
            FileKind::Ghost
        } else {
            FileKind::File
        };
        files.push(FileItem { path, kind });
    }
    let primary_files: HashSet<&str> = files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| is_primary_file(p))
        .collect();

    // Dependencies.
    let mut provides = Vec::new();
    let mut provided = HashSet::new();
    for (n, f, v) in deps(
        h,
        IndexTag::RPMTAG_PROVIDENAME,
        IndexTag::RPMTAG_PROVIDEFLAGS,
        IndexTag::RPMTAG_PROVIDEVERSION,
    )? {
        provided.insert((n.clone(), flags_str(f), v.clone()));
        provides.push(to_dep(n, f, &v, false)?);
    }
    let mut requires = Vec::new();
    let mut seen: HashMap<String, (Option<&'static str>, String, bool)> = HashMap::new();
    let pre_mask =
        (DependencyFlags::PREREQ | DependencyFlags::SCRIPT_PRE | DependencyFlags::SCRIPT_POST)
            .bits();
    for (n, f, v) in deps(
        h,
        IndexTag::RPMTAG_REQUIRENAME,
        IndexTag::RPMTAG_REQUIREFLAGS,
        IndexTag::RPMTAG_REQUIREVERSION,
    )? {
        if n.starts_with("rpmlib(") {
            continue;
        }
        if n.starts_with('/') && primary_files.contains(n.as_str()) {
            continue;
        }
        let fl = flags_str(f);
        if provided.contains(&(n.clone(), fl, v.clone())) {
            continue;
        }
        let pre = f & pre_mask != 0;
        if seen.get(&n) == Some(&(fl, v.clone(), pre)) {
            continue;
        }
        seen.insert(n.clone(), (fl, v.clone(), pre));
        requires.push(to_dep(n, f, &v, pre)?);
    }
    let plain = |names, flags, versions| -> Result<Vec<Dep>> {
        deps(h, names, flags, versions)?
            .into_iter()
            .map(|(n, f, v)| to_dep(n, f, &v, false))
            .collect()
    };
    use IndexTag as T;
    let conflicts = plain(
        T::RPMTAG_CONFLICTNAME,
        T::RPMTAG_CONFLICTFLAGS,
        T::RPMTAG_CONFLICTVERSION,
    )?;
    let obsoletes = plain(
        T::RPMTAG_OBSOLETENAME,
        T::RPMTAG_OBSOLETEFLAGS,
        T::RPMTAG_OBSOLETEVERSION,
    )?;
    let suggests = plain(
        T::RPMTAG_SUGGESTNAME,
        T::RPMTAG_SUGGESTFLAGS,
        T::RPMTAG_SUGGESTVERSION,
    )?;
    let enhances = plain(
        T::RPMTAG_ENHANCENAME,
        T::RPMTAG_ENHANCEFLAGS,
        T::RPMTAG_ENHANCEVERSION,
    )?;
    let recommends = plain(
        T::RPMTAG_RECOMMENDNAME,
        T::RPMTAG_RECOMMENDFLAGS,
        T::RPMTAG_RECOMMENDVERSION,
    )?;
    let supplements = plain(
        T::RPMTAG_SUPPLEMENTNAME,
        T::RPMTAG_SUPPLEMENTFLAGS,
        T::RPMTAG_SUPPLEMENTVERSION,
    )?;

    // Changelog (newest first in the header).
    let cl_names = opt_str_array(h, T::RPMTAG_CHANGELOGNAME)?;
    let cl_times = opt_u32_array(h, T::RPMTAG_CHANGELOGTIME)?;
    let cl_texts = opt_str_array(h, T::RPMTAG_CHANGELOGTEXT)?;
    if cl_names.len() != cl_times.len() || cl_names.len() != cl_texts.len() {
        bail!("changelog tags differ in length");
    }
    let changelog = cl_names
        .into_iter()
        .zip(cl_times)
        .zip(cl_texts)
        .map(|((a, t), text)| Change {
            author: a.trim_end_matches(' ').to_string(),
            date: t as u64,
            text,
        })
        .collect();

    Ok(RpmInfo {
        name,
        arch,
        epoch,
        version,
        release,
        summary: opt_str(h, T::RPMTAG_SUMMARY)?,
        description: opt_str(h, T::RPMTAG_DESCRIPTION)?,
        packager: opt_str(h, T::RPMTAG_PACKAGER)?,
        url: opt_str(h, T::RPMTAG_URL)?,
        build_time: number(h, T::RPMTAG_BUILDTIME)?.unwrap_or(0),
        installed_size,
        archive_size,
        license: opt_str(h, T::RPMTAG_LICENSE)?,
        vendor: opt_str(h, T::RPMTAG_VENDOR)?,
        group: opt_str(h, T::RPMTAG_GROUP)?,
        buildhost: opt_str(h, T::RPMTAG_BUILDHOST)?,
        sourcerpm: opt_str(h, T::RPMTAG_SOURCERPM)?,
        header_range,
        provides,
        requires,
        conflicts,
        obsoletes,
        suggests,
        enhances,
        recommends,
        supplements,
        files,
        changelog,
    })
}

// ---------------------------------------------------------------------------------------------
// XML

fn check_xml_chars(s: &str) -> Result<()> {
    // Fast path: no C0 control other than tab/LF/CR and no 0xEF lead byte (U+FFFE/U+FFFF
    // start with it) means nothing to refuse.
    if !s
        .bytes()
        .any(|b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0xEF)
    {
        return Ok(());
    }
    if let Some(c) = s.chars().find(|&c| {
        matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
    }) {
        bail!("{s:?} contains {c:?}, which XML cannot carry");
    }
    Ok(())
}

/// Escape character data.
pub fn xml_text(s: &str) -> Result<String> {
    let mut o = String::with_capacity(s.len());
    push_text(&mut o, s)?;
    Ok(o)
}

/// Append `s` escaped as character data (refused if XML cannot carry it).
fn push_text(o: &mut String, s: &str) -> Result<()> {
    check_xml_chars(s)?;
    if !s.bytes().any(|b| matches!(b, b'&' | b'<' | b'>' | b'\r')) {
        o.push_str(s);
        return Ok(());
    }
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '\r' => o.push_str("&#13;"),
            c => o.push(c),
        }
    }
    Ok(())
}

/// Escape an attribute value (double-quoted); whitespace that attribute-value normalization
/// would turn into spaces is written as character references.
pub fn xml_attr(s: &str) -> Result<String> {
    let mut o = String::with_capacity(s.len());
    push_attr(&mut o, s)?;
    Ok(o)
}

/// Append `s` escaped as a double-quoted attribute value (see [`xml_attr`]).
fn push_attr(o: &mut String, s: &str) -> Result<()> {
    check_xml_chars(s)?;
    if !s
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'' | b'\t' | b'\n' | b'\r'))
    {
        o.push_str(s);
        return Ok(());
    }
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' => o.push_str("&#9;"),
            '\n' => o.push_str("&#10;"),
            '\r' => o.push_str("&#13;"),
            c => o.push(c),
        }
    }
    Ok(())
}

/// Whether `s` is `len` lower-case hex digits.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Append a sha256 (refused unless 64 lower-case hex digits: it is written unescaped).
fn push_hex(o: &mut String, s: &str) -> Result<()> {
    if !is_hex(s, 64) {
        bail!("sha256 {s:?} is not 64 lower-case hex digits");
    }
    o.push_str(s);
    Ok(())
}

/// Append a number (no `format!` allocation).
fn push_num(o: &mut String, n: impl std::fmt::Display) {
    use std::fmt::Write as _;
    let _ = write!(o, "{n}");
}

// The renderers below append to one String per package, with no intermediate allocation
// (a profile of a cold 10,000-package index had allocator calls near the top).

fn text_elem(o: &mut String, indent: &str, tag: &str, value: &str) -> Result<()> {
    o.push_str(indent);
    o.push('<');
    o.push_str(tag);
    if value.is_empty() {
        o.push_str("/>\n");
    } else {
        o.push('>');
        push_text(o, value)?;
        o.push_str("</");
        o.push_str(tag);
        o.push_str(">\n");
    }
    Ok(())
}

fn version_elem(o: &mut String, indent: &str, i: &RpmInfo) -> Result<()> {
    o.push_str(indent);
    o.push_str("<version epoch=\"");
    push_num(o, i.epoch);
    o.push_str("\" ver=\"");
    push_attr(o, &i.version)?;
    o.push_str("\" rel=\"");
    push_attr(o, &i.release)?;
    o.push_str("\"/>\n");
    Ok(())
}

/// `<rpm:TAG>` with its entries; the element at `indent`, its entries two spaces deeper.
fn deps_elem(o: &mut String, indent: &str, tag: &str, deps: &[Dep]) -> Result<()> {
    if deps.iter().all(|d| d.name.is_empty()) {
        return Ok(());
    }
    o.push_str(indent);
    o.push_str("<rpm:");
    o.push_str(tag);
    o.push_str(">\n");
    for d in deps.iter().filter(|d| !d.name.is_empty()) {
        o.push_str(indent);
        o.push_str("  <rpm:entry name=\"");
        push_attr(o, &d.name)?;
        o.push('"');
        if let Some(f) = d.flags {
            o.push_str(" flags=\"");
            o.push_str(f);
            o.push('"');
            for (k, v) in [("epoch", &d.epoch), ("ver", &d.ver), ("rel", &d.rel)] {
                if let Some(v) = v {
                    o.push(' ');
                    o.push_str(k);
                    o.push_str("=\"");
                    push_attr(o, v)?;
                    o.push('"');
                }
            }
        }
        if d.pre {
            o.push_str(" pre=\"1\"");
        }
        o.push_str("/>\n");
    }
    o.push_str(indent);
    o.push_str("</rpm:");
    o.push_str(tag);
    o.push_str(">\n");
    Ok(())
}

fn file_elem(o: &mut String, indent: &str, f: &FileItem) -> Result<()> {
    let ty = match f.kind {
        FileKind::File => "",
        FileKind::Dir => " type=\"dir\"",
        FileKind::Ghost => " type=\"ghost\"",
    };
    o.push_str(indent);
    o.push_str("<file");
    o.push_str(ty);
    o.push('>');
    push_text(o, &f.path)?;
    o.push_str("</file>\n");
    Ok(())
}

fn primary_package(p: &IndexedPackage) -> Result<String> {
    let i = &p.info;
    let mut o = String::with_capacity(2048);
    let o = &mut o;
    o.push_str("<package type=\"rpm\">\n");
    text_elem(o, "  ", "name", &i.name)?;
    text_elem(o, "  ", "arch", &i.arch)?;
    version_elem(o, "  ", i)?;
    o.push_str("  <checksum type=\"sha256\" pkgid=\"YES\">");
    push_hex(o, &p.sha256)?;
    o.push_str("</checksum>\n");
    text_elem(o, "  ", "summary", &i.summary)?;
    text_elem(o, "  ", "description", &i.description)?;
    text_elem(o, "  ", "packager", &i.packager)?;
    text_elem(o, "  ", "url", &i.url)?;
    o.push_str("  <time file=\"");
    push_num(o, i.build_time);
    o.push_str("\" build=\"");
    push_num(o, i.build_time);
    o.push_str("\"/>\n  <size package=\"");
    push_num(o, p.size);
    o.push_str("\" installed=\"");
    push_num(o, i.installed_size);
    o.push_str("\" archive=\"");
    push_num(o, i.archive_size);
    o.push_str("\"/>\n  <location href=\"");
    push_attr(o, &p.href)?;
    o.push_str("\"/>\n  <format>\n");
    text_elem(o, "    ", "rpm:license", &i.license)?;
    text_elem(o, "    ", "rpm:vendor", &i.vendor)?;
    text_elem(o, "    ", "rpm:group", &i.group)?;
    text_elem(o, "    ", "rpm:buildhost", &i.buildhost)?;
    text_elem(o, "    ", "rpm:sourcerpm", &i.sourcerpm)?;
    o.push_str("    <rpm:header-range start=\"");
    push_num(o, i.header_range.start);
    o.push_str("\" end=\"");
    push_num(o, i.header_range.end);
    o.push_str("\"/>\n");
    deps_elem(o, "    ", "provides", &i.provides)?;
    deps_elem(o, "    ", "requires", &i.requires)?;
    deps_elem(o, "    ", "conflicts", &i.conflicts)?;
    deps_elem(o, "    ", "obsoletes", &i.obsoletes)?;
    deps_elem(o, "    ", "suggests", &i.suggests)?;
    deps_elem(o, "    ", "enhances", &i.enhances)?;
    deps_elem(o, "    ", "recommends", &i.recommends)?;
    deps_elem(o, "    ", "supplements", &i.supplements)?;
    for f in i.files.iter().filter(|f| is_primary_file(&f.path)) {
        file_elem(o, "    ", f)?;
    }
    o.push_str("  </format>\n</package>\n");
    Ok(std::mem::take(o))
}

fn package_open(o: &mut String, p: &IndexedPackage) -> Result<()> {
    o.push_str("<package pkgid=\"");
    push_hex(o, &p.sha256)?;
    o.push_str("\" name=\"");
    push_attr(o, &p.info.name)?;
    o.push_str("\" arch=\"");
    push_attr(o, &p.info.arch)?;
    o.push_str("\">\n");
    version_elem(o, "  ", &p.info)
}

fn filelists_package(p: &IndexedPackage) -> Result<String> {
    let mut o = String::with_capacity(1024);
    package_open(&mut o, p)?;
    for f in &p.info.files {
        file_elem(&mut o, "  ", f)?;
    }
    o.push_str("</package>\n");
    Ok(o)
}

fn other_package(p: &IndexedPackage, limit: usize) -> Result<String> {
    let mut o = String::with_capacity(1024);
    package_open(&mut o, p)?;
    let newest: Vec<&Change> = p.info.changelog.iter().take(limit).collect();
    for c in newest.into_iter().rev() {
        o.push_str("  <changelog author=\"");
        push_attr(&mut o, &c.author)?;
        o.push_str("\" date=\"");
        push_num(&mut o, c.date);
        o.push_str("\">");
        push_text(&mut o, &c.text)?;
        o.push_str("</changelog>\n");
    }
    o.push_str("</package>\n");
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Files

/// gzip level of the metadata (zlib's default, as createrepo_c).
const GZIP_LEVEL: u32 = 6;

enum Encoder {
    Gz(flate2::write::GzEncoder<HashingWriter<BufWriter<File>>>),
    Zst(zstd::Encoder<'static, HashingWriter<BufWriter<File>>>),
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gz(e) => e.write(buf),
            Encoder::Zst(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gz(e) => e.flush(),
            Encoder::Zst(e) => e.flush(),
        }
    }
}

impl Encoder {
    fn new(c: MetadataCompression, out: HashingWriter<BufWriter<File>>) -> io::Result<Encoder> {
        Ok(match c {
            // No file name, mtime 0: the bytes depend only on the content.
            MetadataCompression::Gzip => Encoder::Gz(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(out, flate2::Compression::new(GZIP_LEVEL)),
            ),
            MetadataCompression::Zstd => Encoder::Zst(zstd::Encoder::new(out, 10)?),
        })
    }
    fn finish(self) -> io::Result<HashingWriter<BufWriter<File>>> {
        match self {
            Encoder::Gz(e) => e.finish(),
            Encoder::Zst(e) => e.finish(),
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// [`set_mode`] only where the mode differs (a chmod moves the ctime, which the index cache
/// keys on); whether it changed anything.
fn ensure_mode(path: &Path, mode: u32) -> Result<bool> {
    let m = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if m.permissions().mode() & 0o7777 == mode {
        return Ok(false);
    }
    set_mode(path, mode)?;
    Ok(true)
}

/// Write an XML document (header, open tag, one chunk per package, close tag), compressed and
/// content-addressed, into `repodata/`. Streams: only one package's XML is in memory at a time.
/// Where and how [`write_data`] writes: `repodata/`, the compression, the chunk cache.
struct DataOut<'a> {
    repodata: &'a Path,
    c: MetadataCompression,
    chunks: &'a crate::apt_repo::ChunkCache,
}

fn write_data(
    out: &DataOut,
    kind: &'static str,
    head: &str,
    packages: &[IndexedPackage],
    chunk: &(dyn Fn(&IndexedPackage) -> Result<String> + Sync),
    tail: &str,
) -> Result<RepoData> {
    let (repodata, c, chunks) = (out.repodata, out.c, out.chunks);
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(repodata)
        .with_context(|| format!("temporary file in {}", repodata.display()))?;
    if c == MetadataCompression::Gzip {
        // The whole document in memory (10,000 packages: a few MiB), each package rendered in
        // parallel, then gzip in content-defined chunks (compressed in parallel; with a cache,
        // unchanged chunks are reused).
        let t0 = std::time::Instant::now();
        let pieces: Vec<String> = packages.par_iter().map(chunk).collect::<Result<_>>()?;
        let t0 = crate::index_cache::span(&format!("dnf: {kind}: render"), t0);
        let mut text = String::with_capacity(
            head.len() + tail.len() + pieces.iter().map(String::len).sum::<usize>(),
        );
        text.push_str(head);
        let mut ends = Vec::with_capacity(pieces.len());
        for p in &pieces {
            text.push_str(p);
            ends.push((text.len(), crate::apt_repo::piece_hash(p.as_bytes())));
        }
        text.push_str(tail);
        drop(pieces);
        let ranges = crate::apt_repo::chunk_bounds(&ends, text.len());
        let t0 = crate::index_cache::span(&format!("dnf: {kind}: concatenate, chunk bounds"), t0);
        let gz = crate::apt_repo::gzip_chunked(text.as_bytes(), &ranges, GZIP_LEVEL, chunks)?;
        let t0 = crate::index_cache::span(&format!("dnf: {kind}: gzip chunks"), t0);
        let open_sha256 = crate::digest::sha256_hex(text.as_bytes());
        let sha256 = crate::digest::sha256_hex(&gz);
        let t0 = crate::index_cache::span(&format!("dnf: {kind}: sha256"), t0);
        {
            let mut f = tmp.as_file();
            f.write_all(&gz)?;
            f.sync_all()?;
        }
        crate::index_cache::span(&format!("dnf: {kind}: write, sync"), t0);
        let name = format!("{sha256}-{kind}.xml.{}", c.extension());
        let dest = repodata.join(&name);
        set_mode(tmp.path(), 0o644)?;
        tmp.persist(&dest)
            .map_err(|e| anyhow!("rename to {}: {}", dest.display(), e.error))?;
        return Ok(RepoData {
            kind,
            href: format!("repodata/{name}"),
            sha256,
            size: gz.len() as u64,
            open_sha256,
            open_size: text.len() as u64,
        });
    }
    let file = tmp.reopen()?;
    let mut w = HashingWriter::new(Encoder::new(c, HashingWriter::new(BufWriter::new(file)))?);
    w.write_all(head.as_bytes())?;
    for p in packages {
        w.write_all(chunk(p)?.as_bytes())?;
    }
    w.write_all(tail.as_bytes())?;
    let (enc, open_sha256, open_size) = w.finish();
    let (buf, sha256, size) = enc.finish()?.finish();
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    let name = format!("{sha256}-{kind}.xml.{}", c.extension());
    let dest = repodata.join(&name);
    set_mode(tmp.path(), 0o644)?;
    tmp.persist(&dest)
        .map_err(|e| anyhow!("rename to {}: {}", dest.display(), e.error))?;
    Ok(RepoData {
        kind,
        href: format!("repodata/{name}"),
        sha256,
        size,
        open_sha256,
        open_size,
    })
}

/// Write `bytes` to `dest` atomically (temporary file in the same directory, then rename).
fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let dir = dest.parent().context("destination has no parent")?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    set_mode(tmp.path(), 0o644)?;
    tmp.persist(dest)
        .map_err(|e| anyhow!("rename to {}: {}", dest.display(), e.error))?;
    Ok(())
}

/// A package file name we are willing to put into a URL and an XML attribute unchanged.
fn check_file_name(name: &str) -> Result<()> {
    let ok = name.len() > 4
        && name.ends_with(".rpm")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~^-".contains(&b));
    if !ok {
        bail!("rpm file name {name:?}: expected [A-Za-z0-9._+~^-]+.rpm");
    }
    Ok(())
}

/// Put a copy of `src` at `dest` (mode 0644), replacing `dest` atomically. A copy, not a hard
/// link: a later change to one (re-signing in place, a test's tampering) must not silently change
/// the other. `fs::copy` uses copy_file_range, so a CoW filesystem shares the blocks anyway.
/// Whether two paths name one file (same device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Index every `.rpm` below `dir` into the repository at `root` (as `createrepo_c` over a
/// directory would; `dir` may be `root/Packages` itself: packages already in place stay).
///
/// With `cache_file` (in a build-state or cache directory, not in the published tree), only
/// packages whose path, size, mtime, ctime, inode or device changed (or whose entry is racy)
/// are read (and copied).
pub fn index_dir(
    dir: &Path,
    root: &Path,
    settings: &Settings,
    signer: &dyn Signer,
    cache_file: Option<&Path>,
) -> Result<DnfRepo> {
    use crate::index_cache::span;
    let t = std::time::Instant::now();
    let rpms = crate::index_cache::files_under(dir, ".rpm")?;
    let t = span("dnf: list packages", t);
    let cache = crate::index_cache::IndexCache::open_opt(cache_file);
    let t = span("dnf: open cache", t);
    let repo = write_repo_cached(root, &rpms, settings, signer, &cache)?;
    let t = span("dnf: write repo", t);
    cache.save()?;
    span("dnf: save cache", t);
    Ok(repo)
}

fn place(src: &Path, dest: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (fs::canonicalize(src), fs::canonicalize(dest)) {
        if a == b {
            return ensure_mode(dest, 0o644).map(|_| ());
        }
    }
    let dir = dest.parent().context("destination has no parent")?;
    fs::create_dir_all(dir)?;
    // Not followed if a symlink, not waited on if a FIFO; io::copy between two files is
    // copy_file_range (a CoW file system shares the blocks).
    let (mut from, _) = crate::index_cache::open_regular(src)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    io::copy(&mut from, tmp.as_file_mut()).with_context(|| format!("copy {}", src.display()))?;
    set_mode(tmp.path(), 0o644)?;
    tmp.persist(dest)
        .map_err(|e| anyhow!("rename to {}: {}", dest.display(), e.error))?;
    Ok(())
}

/// [`place`] `src` (described by `d`) at `dest`, then check that the copy has `d`'s sha256 and
/// size, so `d` describes the placed file too (the input may have changed since it was read).
fn place_checked(src: &Path, dest: &Path, d: Described) -> Result<Described> {
    place(src, dest)?;
    let (sha256, size) = sha256_file(dest).with_context(|| format!("hash {}", dest.display()))?;
    if sha256 != d.sha256 || size != d.size {
        bail!("{} changed while the index was being built", src.display());
    }
    Ok(d)
}

/// Whether `p` is at a place this writer gives packages: `root/Packages/<one letter>/<file>`.
fn placed_copy(root: &Path, p: &Path) -> bool {
    let Some(letter_dir) = p.parent() else {
        return false;
    };
    let one_letter = letter_dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() == 1);
    match (
        letter_dir.parent().map(fs::canonicalize),
        fs::canonicalize(root.join("Packages")),
    ) {
        (Some(Ok(a)), Ok(b)) => one_letter && a == b,
        _ => false,
    }
}

/// Place `rpms` under `root/Packages/`, write the repodata and sign repomd.xml.
pub fn write_repo(
    root: &Path,
    rpms: &[PathBuf],
    settings: &Settings,
    signer: &dyn Signer,
) -> Result<DnfRepo> {
    write_repo_cached(
        root,
        rpms,
        settings,
        signer,
        &crate::index_cache::IndexCache::none(),
    )
}

/// What the index cache keeps about one rpm file.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Described {
    info: RpmInfo,
    sha256: String,
    size: u64,
}

impl crate::index_cache::Cached for Described {
    fn sha256(&self) -> &str {
        &self.sha256
    }
    fn check(&self, size: u64) -> Result<()> {
        Described::check(self, size)
    }
}

impl Described {
    /// What a read checks of what it derived, and a cached entry must pass too (one function):
    /// the digest's form, the size (the file's), and [`check_info`].
    fn check(&self, size: u64) -> Result<()> {
        if !is_hex(&self.sha256, 64) {
            bail!("sha256 {:?} is not 64 lower-case hex digits", self.sha256);
        }
        if self.size != size {
            bail!("size {} is not the file's {size}", self.size);
        }
        check_info(&self.info, size)
    }
}

/// The checks of what the index writes about a package: a name the placement can use, a
/// header range inside a file of `size` bytes, and every string one that XML can carry (all of
/// them are escaped when written).
fn check_info(i: &RpmInfo, size: u64) -> Result<()> {
    if !i
        .name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        bail!(
            "package name {:?} does not start with a letter or digit",
            i.name
        );
    }
    let r = i.header_range;
    if r.start < LEAD_SIZE + 16 || r.start >= r.end || r.end > size {
        bail!(
            "header range {}..{} does not fit a {size}-byte rpm",
            r.start,
            r.end
        );
    }
    let strings = [
        &i.name,
        &i.arch,
        &i.version,
        &i.release,
        &i.summary,
        &i.description,
        &i.packager,
        &i.url,
        &i.license,
        &i.vendor,
        &i.group,
        &i.buildhost,
        &i.sourcerpm,
    ];
    for s in strings {
        check_xml_chars(s)?;
    }
    for list in [
        &i.provides,
        &i.requires,
        &i.conflicts,
        &i.obsoletes,
        &i.suggests,
        &i.enhances,
        &i.recommends,
        &i.supplements,
    ] {
        for d in list {
            check_xml_chars(&d.name)?;
            for v in [&d.epoch, &d.ver, &d.rel].into_iter().flatten() {
                check_xml_chars(v)?;
            }
        }
    }
    for f in &i.files {
        check_xml_chars(&f.path)?;
    }
    for c in &i.changelog {
        check_xml_chars(&c.author)?;
        check_xml_chars(&c.text)?;
    }
    Ok(())
}

/// Headers and sha256 of the open rpm file `f` (`len` bytes), in one pass over it, checked.
fn describe_rpm(path: &Path, f: &File, len: u64) -> Result<Described> {
    let (info, hashed) = read_rpm_hashed(path, f, len, true)?;
    let (sha256, size) = hashed.expect("hashed");
    let d = Described { info, sha256, size };
    d.check(len)
        .with_context(|| format!("{}", path.display()))?;
    Ok(d)
}

/// [`write_repo`] with a per-package metadata cache (see `index_cache`): a package whose
/// source file and placed file are both unchanged is neither read nor copied again.
pub fn write_repo_cached(
    root: &Path,
    rpms: &[PathBuf],
    settings: &Settings,
    signer: &dyn Signer,
    cache: &crate::index_cache::IndexCache<Described>,
) -> Result<DnfRepo> {
    use crate::index_cache::span;
    let t = std::time::Instant::now();
    let repodata = root.join("repodata");

    let mut by_name: BTreeMap<String, &Path> = BTreeMap::new();
    for r in rpms {
        let name = r
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{}: no usable file name", r.display()))?;
        check_file_name(name)?;
        if let Some(prev) = by_name.insert(name.to_string(), r) {
            // A directory that holds the repository lists the copies an earlier run placed
            // in it beside their sources: the source is the package, the copy its place.
            match (placed_copy(root, prev), placed_copy(root, r)) {
                (true, false) => {}
                (false, true) => {
                    by_name.insert(name.to_string(), prev);
                }
                _ => bail!(
                    "two packages named {name}: {} and {}",
                    prev.display(),
                    r.display()
                ),
            }
        }
    }

    // Packages are read and placed in parallel (each read once when it is already in place);
    // duplicates are then checked in file-name order.
    let entries: Vec<(&String, &&Path)> = by_name.iter().collect();
    let packages: Vec<IndexedPackage> = entries
        .par_iter()
        .map(|(file_name, src)| -> Result<IndexedPackage> {
            let from_src = if cache.enabled() {
                Some(cache.get_or(src, |f, m| describe_rpm(src, f, m.len()))?)
            } else {
                None
            };
            let place_of = |info: &RpmInfo| -> Result<(String, PathBuf)> {
                let first = info
                    .name
                    .chars()
                    .next()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .ok_or_else(|| anyhow!("{}: package name {:?}", src.display(), info.name))?
                    .to_ascii_lowercase();
                let href = format!("Packages/{first}/{file_name}");
                let dest = root.join(&href);
                Ok((href, dest))
            };
            let done = |d: Described, href: String| IndexedPackage {
                info: d.info,
                sha256: d.sha256,
                size: d.size,
                href,
            };
            if let Some(d) = from_src {
                let (href, dest) = place_of(&d.info)?;
                if **src == dest || same_file(src, &dest) {
                    if ensure_mode(&dest, 0o644)? {
                        cache.restat(src)?;
                    }
                    return Ok(done(d, href));
                }
                // Placed by an earlier run and unchanged since: nothing to copy or read.
                if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file()) {
                    let placed: Described =
                        cache.get_or(&dest, |f, m| describe_rpm(&dest, f, m.len()))?;
                    if placed.sha256 == d.sha256 {
                        return Ok(done(placed, href));
                    }
                }
                let placed = place_checked(src, &dest, d)?;
                let placed: Described = cache.get_or(&dest, |_, _| Ok(placed))?;
                return Ok(done(placed, href));
            }
            // No cache. Already in place: one pass (headers + sha256) over the file. Else the
            // input's headers name the place, and the placed copy is described: the index must
            // match the bytes a client downloads.
            let (f, m) = crate::index_cache::open_regular(src)?;
            let d = describe_rpm(src, &f, m.len())?;
            drop(f);
            let (href, dest) = place_of(&d.info)?;
            if **src == dest || same_file(src, &dest) {
                ensure_mode(&dest, 0o644)?;
                return Ok(done(d, href));
            }
            let placed = place_checked(src, &dest, d)?;
            Ok(done(placed, href))
        })
        .collect::<Result<_>>()?;
    let t = span("dnf: read and place packages", t);
    let mut nevras: HashMap<String, String> = HashMap::new();
    for (p, (file_name, _)) in packages.iter().zip(&entries) {
        let info = &p.info;
        let nevra = format!(
            "{}-{}:{}-{}.{}",
            info.name, info.epoch, info.version, info.release, info.arch
        );
        if let Some(other) = nevras.insert(nevra.clone(), file_name.to_string()) {
            bail!("{nevra} is in both {other} and {file_name}");
        }
    }

    let t = span("dnf: duplicate check", t);
    let n = packages.len();
    let c = settings.compression;
    let chunks = crate::apt_repo::ChunkCache::new(cache.side_dir("xml-chunks", None));
    // Made once every package has been read and checked: a refused package leaves no
    // repodata/ behind.
    fs::create_dir_all(&repodata).with_context(|| format!("create {}", repodata.display()))?;
    let out = DataOut {
        repodata: &repodata,
        c,
        chunks: &chunks,
    };
    let limit = settings.changelog_limit;
    // The three files are independent: written (rendered and compressed) in parallel.
    let primary = || {
        write_data(
        &out,
        "primary",
        &format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"{n}\">\n"
        ),
        &packages,
        &primary_package,
        "</metadata>\n",
        )
    };
    let filelists = || {
        write_data(
        &out,
        "filelists",
        &format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<filelists xmlns=\"http://linux.duke.edu/metadata/filelists\" packages=\"{n}\">\n"
        ),
        &packages,
        &filelists_package,
        "</filelists>\n",
        )
    };
    let other = || {
        write_data(
        &out,
        "other",
        &format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<otherdata xmlns=\"http://linux.duke.edu/metadata/other\" packages=\"{n}\">\n"
        ),
        &packages,
        &|p| other_package(p, limit),
        "</otherdata>\n",
        )
    };
    let timed = |what: &'static str, f: &(dyn Fn() -> Result<RepoData> + Sync)| {
        let t = std::time::Instant::now();
        let r = f();
        span(what, t);
        r
    };
    let (primary, (filelists, other)) = rayon::join(
        || timed("dnf: primary.xml (parallel with the other two)", &primary),
        || {
            rayon::join(
                || timed("dnf: filelists.xml", &filelists),
                || timed("dnf: other.xml", &other),
            )
        },
    );
    let (primary, filelists, other) = (primary?, filelists?, other?);
    let data = vec![primary, filelists, other];
    let t = span("dnf: the three XML files", t);
    chunks.prune()?;
    let t = span("dnf: prune chunks", t);

    let repomd = repomd_xml(settings.date, &data);
    // Signed before it is written: a signature that cannot be made leaves the old repomd.xml
    // and its signature in place (the new data files beside them are new names).
    let asc = signer
        .detach_sign_armored(repomd.as_bytes())
        .context("sign repomd.xml")?;
    let repomd_path = repodata.join("repomd.xml");
    write_atomic(&repomd_path, repomd.as_bytes())?;
    let asc_path = repodata.join("repomd.xml.asc");
    write_atomic(&asc_path, asc.as_bytes())?;
    span("dnf: repomd.xml, sign", t);

    Ok(DnfRepo {
        packages,
        data,
        repomd: repomd_path,
        repomd_asc: asc_path,
    })
}

fn repomd_xml(date: u64, data: &[RepoData]) -> String {
    let mut o = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n",
    );
    o.push_str(&format!("  <revision>{date}</revision>\n"));
    for d in data {
        // kind, href and digests are ours: [a-z], [0-9a-f] and fixed punctuation only.
        o.push_str(&format!(
            "  <data type=\"{}\">\n    <checksum type=\"sha256\">{}</checksum>\n    <open-checksum type=\"sha256\">{}</open-checksum>\n    <location href=\"{}\"/>\n    <timestamp>{date}</timestamp>\n    <size>{}</size>\n    <open-size>{}</open-size>\n  </data>\n",
            d.kind, d.sha256, d.open_sha256, d.href, d.size, d.open_size
        ));
    }
    o.push_str("</repomd>\n");
    o
}

// ---------------------------------------------------------------------------------------------
// Client configuration

/// A `.repo` file for dnf/yum.
#[derive(Clone, Debug)]
pub struct RepoFile {
    /// Section name: `[A-Za-z0-9._:-]+`.
    pub id: String,
    pub name: String,
    pub baseurl: String,
    /// URL (`https://…`, `file:///…`) of the armored public key.
    pub gpgkey: String,
}

fn check_ini_value(what: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.trim() != v || v.chars().any(|c| c.is_control()) {
        bail!("repo file {what} {v:?}: must be non-empty, one line, no surrounding spaces");
    }
    // dnf substitutes $releasever, $basearch, … in values; a literal '$' would be rewritten.
    if v.contains('$') {
        bail!("repo file {what} {v:?}: '$' would be taken as a dnf variable");
    }
    Ok(())
}

/// Render the `.repo` file: gpgcheck and repo_gpgcheck on.
pub fn repo_file(r: &RepoFile) -> Result<String> {
    if r.id.is_empty()
        || !r
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        bail!("repo id {:?}: expected [A-Za-z0-9._:-]+", r.id);
    }
    check_ini_value("name", &r.name)?;
    for (what, url) in [("baseurl", &r.baseurl), ("gpgkey", &r.gpgkey)] {
        check_ini_value(what, url)?;
        if url.contains(char::is_whitespace) || url.contains(',') {
            bail!("repo file {what} {url:?}: a URL without spaces or commas expected");
        }
        if !(url.starts_with("https://")
            || url.starts_with("http://")
            || url.starts_with("file:///"))
        {
            bail!("repo file {what} {url:?}: expected an http(s):// or file:/// URL");
        }
    }
    Ok(format!(
        "[{}]\nname={}\nbaseurl={}\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\ngpgkey={}\n",
        r.id, r.name, r.baseurl, r.gpgkey
    ))
}

/// Write the `.repo` file to `path` (atomically, 0644).
pub fn write_repo_file(path: &Path, r: &RepoFile) -> Result<()> {
    let text = repo_file(r)?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    write_atomic(path, text.as_bytes())
}

/// Write `root/keys/<name>.asc`, the armored public key that `gpgkey=` points at.
pub fn write_public_key(root: &Path, name: &str, signer: &dyn Signer) -> Result<PathBuf> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        bail!("key file name {name:?}: expected [A-Za-z0-9._-]+");
    }
    let dir = root.join("keys");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.asc"));
    write_atomic(&path, signer.public_key_armored()?.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evr_split() {
        assert_eq!(
            split_evr("1:2.3-4.el9").unwrap(),
            (Some("1".into()), Some("2.3".into()), Some("4.el9".into()))
        );
        assert_eq!(
            split_evr("2.3").unwrap(),
            (Some("0".into()), Some("2.3".into()), None)
        );
        assert_eq!(split_evr("").unwrap(), (None, None, None));
        assert!(split_evr("x:1").is_err());
    }

    #[test]
    fn escaping() {
        assert_eq!(xml_text("a<b&c>\r").unwrap(), "a&lt;b&amp;c&gt;&#13;");
        assert_eq!(xml_attr("\"'\t\n").unwrap(), "&quot;&apos;&#9;&#10;");
        assert!(xml_text("bell\u{7}").is_err());
        assert!(xml_attr("\u{1b}[31m").is_err());
    }

    #[test]
    fn flags() {
        assert_eq!(flags_str(8), Some("EQ"));
        assert_eq!(flags_str(12 | (1 << 9)), Some("GE"));
        assert_eq!(flags_str(10), Some("LE"));
        assert_eq!(flags_str(2), Some("LT"));
        assert_eq!(flags_str(4), Some("GT"));
        assert_eq!(flags_str(1 << 24), None);
    }

    #[test]
    fn primary_files() {
        assert!(is_primary_file("/usr/bin/node_exporter"));
        assert!(is_primary_file("/usr/sbin/x"));
        assert!(is_primary_file("/etc/default/x"));
        assert!(!is_primary_file("/usr/share/doc/x"));
        assert!(!is_primary_file("/etc"));
    }

    #[test]
    fn repo_file_values_checked() {
        let ok = RepoFile {
            id: "obs".into(),
            name: "Observability".into(),
            baseurl: "https://example.org/rpm".into(),
            gpgkey: "https://example.org/keys/obs.asc".into(),
        };
        let t = repo_file(&ok).unwrap();
        assert!(t.contains("\nrepo_gpgcheck=1\n"), "{t}");
        for bad in [
            RepoFile {
                id: "a b".into(),
                ..ok.clone()
            },
            RepoFile {
                name: "x\nbaseurl=evil".into(),
                ..ok.clone()
            },
            RepoFile {
                baseurl: "ftp://x".into(),
                ..ok.clone()
            },
            RepoFile {
                gpgkey: "https://x/$basearch".into(),
                ..ok.clone()
            },
        ] {
            assert!(repo_file(&bad).is_err(), "{bad:?}");
        }
    }
}
