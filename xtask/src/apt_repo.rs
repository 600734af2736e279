//! The apt repository index writer: pool, `Packages{,.gz,.xz}`, per-architecture `Release`,
//! `by-hash/`, the suite's `Release`, `Release.gpg` and `InRelease`, and the client files
//! (public key, binary keyring, deb822 `.sources`).
//!
//! Everything in the index is read back from the `.deb` files themselves (the `control` member
//! inside `control.tar.{xz,gz,zst}` or an uncompressed `control.tar`), so the index can be rebuilt
//! from any set of `.deb` files (for example shards built on different machines). Each `.deb` is
//! streamed once through SHA-256 and SHA-512 while its `ar` members are read; nothing is held in
//! memory but the control file.
//!
//! Layout under the root the caller gives:
//! ```text
//! pool/main/<p>/<source>/<package>_<version without epoch>_<arch>.deb   p = first letter, or libX
//! dists/<suite>/main/binary-<arch>/{Packages,Packages.gz,Packages.xz,Release}
//! dists/<suite>/main/binary-<arch>/by-hash/{SHA256,SHA512}/<hex>           copies of the above
//! dists/<suite>/{Release,Release.gpg,InRelease}                            written last
//! ```
//!
//! Decisions:
//! - Checksums are SHA256 and SHA512 only, in `Packages` and in `Release`. apt (since 1.1)
//!   treats MD5 and SHA1 as too weak to establish trust and needs at least one of SHA256/SHA512;
//!   `apt-ftparchive` also emits `MD5sum`/`SHA1`, and our cross-check test lists that as an
//!   allowed difference. Nothing else needs them.
//! - `Architecture: all` packages are listed in the `Packages` file of every concrete
//!   architecture (the classic Debian layout); no `binary-all` index is published and `all` is not
//!   listed in `Architectures:`, so apt never looks for one.
//! - Field order of a stanza: the package's own control file as written, then `Filename`, `Size`,
//!   `SHA256`, `SHA512`. A control file that already carries one of those fields is refused.
//! - Stanzas are sorted by (package, version in dpkg order, version text, architecture).
//! - The same (package, version, architecture) given twice with identical bytes is one entry;
//!   with different bytes it is an error, as is a pool file that already exists with other bytes.
//! - Existing `by-hash/` files are never removed (clients that fetched an older `InRelease` keep
//!   finding the indexes it names); pruning old generations is the publisher's job.
//! - Every file is written to a temporary name in its directory, synced, and renamed, with mode
//!   0644 (directories 0755) whatever the umask. `Release`, `Release.gpg` and `InRelease` are
//!   signed before any of them is written, and renamed in that order after everything else.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;

use crate::pgzip::{self, crc32};
use sha2::{Digest, Sha256, Sha512};

use crate::signer::Signer;

/// The only component we publish.
pub const COMPONENT: &str = "main";

/// Largest `control` file accepted from a package (dpkg's own are a few KiB).
const MAX_CONTROL: u64 = 1 << 20;

/// Fields the index adds to each stanza; a package's control file must not carry them.
const INDEX_FIELDS: &[&str] = &["Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512"];

/// How pool files are placed under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolLink {
    /// Hard-link the input (same file system, a file of the current user's that group and
    /// others cannot write), copy otherwise.
    #[default]
    HardLinkOrCopy,
    /// Always copy (the pool never shares an inode with the input).
    Copy,
}

/// Repository settings. Every value that lands in `Release` is validated by [`AptSettings::validate`].
#[derive(Debug, Clone)]
pub struct AptSettings {
    pub origin: String,
    pub label: String,
    /// `Suite:` and the directory under `dists/`: `[A-Za-z0-9._-]+`.
    pub suite: String,
    /// `Codename:`: `[A-Za-z0-9._-]+`.
    pub codename: String,
    /// One line; empty omits the field.
    pub description: String,
    /// Architectures always published (with empty indexes if no package has them), in addition
    /// to those of the packages. `all` is not an architecture here (see the module docs).
    pub architectures: Vec<String>,
    /// `Valid-Until:` = `date` + this, if set.
    pub valid_until: Option<Duration>,
    /// `Date:` in seconds since the epoch (SOURCE_DATE_EPOCH).
    pub date: u64,
    pub pool_link: PoolLink,
}

impl Default for AptSettings {
    fn default() -> Self {
        AptSettings {
            origin: "observability-stack".into(),
            label: "observability-stack".into(),
            suite: "stable".into(),
            codename: "stable".into(),
            description: "Hardened packages of Prometheus exporters".into(),
            architectures: Vec::new(),
            valid_until: None,
            date: 0,
            pool_link: PoolLink::default(),
        }
    }
}

fn check_line(what: &str, v: &str, allow_empty: bool) -> Result<()> {
    if v.is_empty() && !allow_empty {
        bail!("apt repository {what} must not be empty");
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        bail!("apt repository {what} {v:?} contains the control character {c:?}");
    }
    if v.trim() != v {
        bail!("apt repository {what} {v:?} has leading or trailing white space");
    }
    Ok(())
}

fn check_suite(what: &str, v: &str) -> Result<()> {
    if v.is_empty()
        || v.starts_with('.')
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        bail!("apt repository {what} {v:?} must match [A-Za-z0-9._-]+ and not start with '.'");
    }
    Ok(())
}

/// Debian architecture name: `[a-z0-9][a-z0-9-]*`, not `source` nor a wildcard (`any`,
/// `linux-any`, `any-amd64`), which no binary package can be built for.
fn valid_arch(a: &str) -> bool {
    let b = a.as_bytes();
    !b.is_empty()
        && a != "source"
        && !a.split('-').any(|part| part == "any")
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Debian package name: `[a-z0-9][a-z0-9+.-]+`.
pub fn valid_package_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+.-".contains(c))
}

/// Debian version syntax: `[epoch:]upstream[-revision]`, upstream starting with a digit.
pub fn valid_version(v: &str) -> bool {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) => (Some(e), r),
        None => (None, v),
    };
    if let Some(e) = epoch {
        if e.is_empty() || !e.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    let (upstream, revision) = match rest.rfind('-') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let up_ok = upstream.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && upstream.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || b".+~".contains(&c)
                || (c == b'-' && revision.is_some())
                || (c == b':' && epoch.is_some())
        });
    let rev_ok = revision.is_none_or(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".+~".contains(&c))
    });
    up_ok && rev_ok
}

impl AptSettings {
    pub fn components(&self) -> &'static [&'static str] {
        &[COMPONENT]
    }

    pub fn validate(&self) -> Result<()> {
        check_line("Origin", &self.origin, false)?;
        check_line("Label", &self.label, false)?;
        check_line("Description", &self.description, true)?;
        check_suite("Suite", &self.suite)?;
        check_suite("Codename", &self.codename)?;
        for a in &self.architectures {
            if a == "all" || !valid_arch(a) {
                bail!(
                    "apt repository architecture {a:?} is not a concrete Debian architecture name"
                );
            }
        }
        if let Some(d) = self.valid_until {
            if d.as_secs() == 0 {
                bail!("apt repository Valid-Until must be at least one second after Date");
            }
            self.date
                .checked_add(d.as_secs())
                .filter(|t| *t < 253_402_300_800) // year 10000
                .ok_or_else(|| anyhow!("apt repository Valid-Until is out of range"))?;
        }
        if self.date >= 253_402_300_800 {
            bail!("apt repository Date {} is out of range", self.date);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// dpkg version ordering

fn char_order(c: Option<&u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(*c),
        Some(c) => i32::from(*c) + 256,
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ac, bc) = (char_order(a.get(i)), char_order(b.get(j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while a.get(i).is_some_and(u8::is_ascii_digit) && b.get(j).is_some_and(u8::is_ascii_digit) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if a.get(i).is_some_and(u8::is_ascii_digit) {
            return Ordering::Greater;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

fn split_version(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) => (e.parse().unwrap_or(0), r),
        None => (0, v),
    };
    match rest.rfind('-') {
        Some(i) => (epoch, &rest[..i], &rest[i + 1..]),
        None => (epoch, rest, ""),
    }
}

/// Compare two Debian versions the way dpkg does.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_version(a);
    let (eb, ub, rb) = split_version(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Reading a .deb

/// A control file paragraph: fields in their original order. A multi-line value keeps its
/// continuation lines exactly (each starting with a space or tab), joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Control {
    pub fields: Vec<(String, String)>,
}

impl Control {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parse one deb822 paragraph (a binary package's `control` file), strictly.
    pub fn parse(text: &str) -> Result<Control> {
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut ended = false;
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
                bail!("control line {n}: control character {c:?}");
            }
            if line.trim().is_empty() {
                ended = !fields.is_empty();
                continue;
            }
            if ended {
                bail!("control line {n}: more than one paragraph");
            }
            if line.starts_with([' ', '\t']) {
                let Some((_, v)) = fields.last_mut() else {
                    bail!("control line {n}: continuation line before any field");
                };
                v.push('\n');
                v.push_str(line.trim_end());
                continue;
            }
            if line.starts_with('#') {
                bail!("control line {n}: comment lines are not allowed in a binary control file");
            }
            let Some((name, value)) = line.split_once(':') else {
                bail!("control line {n}: expected `Field: value`");
            };
            if name.is_empty()
                || name.starts_with('-')
                || !name
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
            {
                bail!("control line {n}: invalid field name {name:?}");
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                bail!("control line {n}: field {name} given twice");
            }
            fields.push((name.to_string(), value.trim().to_string()));
        }
        if fields.is_empty() {
            bail!("control file is empty");
        }
        let c = Control { fields };
        c.check()?;
        Ok(c)
    }

    /// The shape [`Control::parse`] gives (checked on every use of a cached control file too,
    /// so a stanza written from it is one stanza with these fields and no others): at least one
    /// field; field names of printable ASCII without `:`, not starting with `-` or `#`, given
    /// once (case-insensitively); a value's first line without control characters (tab
    /// allowed) or surrounding white space; each continuation line starting with a space or
    /// tab, not blank, without control characters or trailing white space.
    pub fn check(&self) -> Result<()> {
        if self.fields.is_empty() {
            bail!("control file is empty");
        }
        let mut seen = std::collections::HashSet::with_capacity(self.fields.len());
        for (name, value) in &self.fields {
            if name.is_empty()
                || name.starts_with(['-', '#'])
                || !name
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
            {
                bail!("control field name {name:?} is invalid");
            }
            // A set, not a scan of the fields before: a hostile control file of many fields
            // costs linear time, not quadratic.
            if !seen.insert(name.to_ascii_lowercase()) {
                bail!("control field {name} given twice");
            }
            let bad_char = |l: &str| l.chars().find(|c| c.is_control() && *c != '\t');
            let mut lines = value.split('\n');
            let first = lines.next().unwrap_or("");
            if let Some(c) = bad_char(first) {
                bail!("control field {name}: control character {c:?}");
            }
            if first.trim() != first {
                bail!("control field {name}: value {first:?} has surrounding white space");
            }
            for l in lines {
                if let Some(c) = bad_char(l) {
                    bail!("control field {name}: control character {c:?}");
                }
                if !l.starts_with([' ', '\t']) || l.trim().is_empty() || l.trim_end() != l {
                    bail!("control field {name}: continuation line {l:?} is malformed");
                }
            }
        }
        Ok(())
    }
}

/// One `.deb` as the index sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DebFile {
    /// Where it was read from.
    pub path: PathBuf,
    pub control: Control,
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Source package name (the `Source:` field without a version, or the package name).
    pub source: String,
    pub size: u64,
    pub sha256: String,
    pub sha512: String,
}

impl crate::index_cache::Cached for DebFile {
    fn sha256(&self) -> &str {
        &self.sha256
    }
    fn check(&self, size: u64) -> Result<()> {
        DebFile::check(self)?;
        if self.size != size {
            bail!("size {} is not the file's {size}", self.size);
        }
        Ok(())
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Package, version, architecture and source name of a control file, each checked:
/// what [`read_deb`] derives, and what a cached [`DebFile`] must agree with.
fn identity(control: &Control) -> Result<(&str, &str, &str, &str)> {
    control.check()?;
    for f in INDEX_FIELDS {
        if control.get(f).is_some() {
            bail!("control file carries the index field {f}");
        }
    }
    let field = |n: &str| {
        control
            .get(n)
            .ok_or_else(|| anyhow!("control file has no {n} field"))
    };
    let package = field("Package")?;
    let version = field("Version")?;
    let architecture = field("Architecture")?;
    if !valid_package_name(package) {
        bail!("invalid package name {package:?}");
    }
    if !valid_version(version) {
        bail!("invalid version {version:?}");
    }
    if !valid_arch(architecture) {
        bail!("invalid architecture {architecture:?}");
    }
    let source = match control.get("Source") {
        None => package,
        Some(s) => {
            let name = s.split_whitespace().next().unwrap_or("");
            if !valid_package_name(name) {
                bail!("invalid Source field {s:?}");
            }
            name
        }
    };
    Ok((package, version, architecture, source))
}

impl DebFile {
    /// Everything a stanza is written from, checked as [`read_deb`] checks it (the one
    /// function for a read and for a cached entry): the control file's shape and identity
    /// fields (which the `package`, `version`, `architecture` and `source` must equal), the
    /// digests' form.
    pub fn check(&self) -> Result<()> {
        let (package, version, architecture, source) = identity(&self.control)?;
        if package != self.package
            || version != self.version
            || architecture != self.architecture
            || source != self.source
        {
            bail!(
                "package, version, architecture or source ({} {} {} {}) disagree with the control file",
                self.package,
                self.version,
                self.architecture,
                self.source
            );
        }
        if !is_hex(&self.sha256, 64) || !is_hex(&self.sha512, 128) {
            bail!("sha256 or sha512 is not lower-case hex of the right length");
        }
        // With the identity fields valid, `pool_path` cannot fail (it checks them again).
        Ok(())
    }

    /// `pool/main/<prefix>/<source>/<package>_<version without epoch>_<arch>.deb`; an error for
    /// a name, version or architecture that is not valid (so never a path outside the pool).
    pub fn pool_path(&self) -> Result<String> {
        if !valid_package_name(&self.source)
            || !valid_package_name(&self.package)
            || !valid_version(&self.version)
            || !valid_arch(&self.architecture)
        {
            bail!(
                "no pool path for source {:?}, package {:?}, version {:?}, architecture {:?}",
                self.source,
                self.package,
                self.version,
                self.architecture
            );
        }
        // Valid names are ASCII of at least two bytes.
        let prefix = if self.source.starts_with("lib") && self.source.len() > 3 {
            &self.source[..4]
        } else {
            &self.source[..1]
        };
        let version = self
            .version
            .split_once(':')
            .map_or(self.version.as_str(), |(_, v)| v);
        Ok(format!(
            "pool/{COMPONENT}/{prefix}/{}/{}_{}_{}.deb",
            self.source, self.package, version, self.architecture
        ))
    }
}

/// A reader that feeds SHA-256 and SHA-512 with everything read through it.
struct HashingReader<R> {
    inner: R,
    sha256: Sha256,
    sha512: Sha512,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha256.update(&buf[..n]);
        self.sha512.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The `control` file of a control.tar. Every entry is looked at: dpkg takes the last of
/// several entries that name `control` (`./control`, `control`, `.//control`, `/control`, …),
/// an index that took another one would sign a lie, so more than one is refused.
fn control_from_tar(r: impl Read) -> Result<Option<Vec<u8>>> {
    let mut tar = tar::Archive::new(r);
    let mut found: Option<(String, Vec<u8>)> = None;
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path_bytes().into_owned();
        let parts: Vec<&[u8]> = path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if parts != [b"control".as_slice()] {
            continue;
        }
        let name = String::from_utf8_lossy(&path).into_owned();
        if let Some((first, _)) = &found {
            bail!("control.tar names the control file twice ({first:?} and {name:?})");
        }
        if !entry.header().entry_type().is_file() {
            bail!("{name:?} in control.tar is not a regular file");
        }
        if entry.size() > MAX_CONTROL {
            bail!("{name:?} is larger than {MAX_CONTROL} bytes");
        }
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf)?;
        found = Some((name, buf));
    }
    Ok(found.map(|(_, b)| b))
}

fn read_control_member(name: &str, r: impl Read) -> Result<Option<Vec<u8>>> {
    match name {
        "control.tar" => control_from_tar(r),
        "control.tar.gz" => control_from_tar(flate2::read::GzDecoder::new(r)),
        "control.tar.xz" => control_from_tar(liblzma::read::XzDecoder::new(r)),
        "control.tar.zst" => control_from_tar(zstd::stream::read::Decoder::new(r)?),
        _ => bail!("unsupported control member {name}"),
    }
}

/// Read a `.deb`: its control file (validated) and its size and hashes, in one streaming pass
/// (opened with [`crate::index_cache::open_regular`]: a symlink or FIFO is refused).
pub fn read_deb(path: &Path) -> Result<DebFile> {
    let (f, m) = crate::index_cache::open_regular(path)?;
    read_deb_from(path, &f, m.len())
}

/// [`read_deb`] of the open file `f` (`len` bytes, read from its current offset), named `path`.
pub fn read_deb_from(path: &Path, f: &File, len: u64) -> Result<DebFile> {
    let ctx = || format!("{}", path.display());
    // A buffer the size of the file, at most 1 MiB: most packages are small, and a large
    // buffer per file is an mmap/munmap pair each.
    let mut hr = HashingReader {
        inner: io::BufReader::with_capacity(len.clamp(8192, 1 << 20) as usize, f),
        sha256: Sha256::new(),
        sha512: Sha512::new(),
        count: 0,
    };
    let mut control: Option<Vec<u8>> = None;
    let mut has_data = false;
    {
        let mut ar = ar::Archive::new(&mut hr);
        let mut index = 0;
        while let Some(entry) = ar.next_entry() {
            let mut entry = entry.with_context(|| format!("{}: not a valid ar archive", ctx()))?;
            let id = String::from_utf8_lossy(entry.header().identifier())
                .trim_end_matches('/')
                .to_string();
            if index == 0 {
                let mut magic = Vec::new();
                (&mut entry).take(64).read_to_end(&mut magic)?;
                if id != "debian-binary" || !magic.starts_with(b"2.") {
                    bail!(
                        "{}: not a Debian binary package (no debian-binary 2.x first)",
                        ctx()
                    );
                }
            } else if id.starts_with("control.tar") {
                if control.is_some() {
                    bail!("{}: more than one control member", ctx());
                }
                let c = read_control_member(&id, &mut entry)
                    .with_context(|| format!("{}: reading {id}", ctx()))?;
                control = Some(c.ok_or_else(|| anyhow!("{}: {id} has no ./control", ctx()))?);
            } else if id.starts_with("data.tar") {
                has_data = true;
            }
            index += 1;
            // Dropping the entry consumes (and so hashes) the rest of it.
        }
    }
    // Whatever trails the last member is part of the file too.
    io::copy(&mut hr, &mut io::sink()).with_context(ctx)?;
    let control = control.ok_or_else(|| anyhow!("{}: no control.tar member", ctx()))?;
    if !has_data {
        bail!("{}: no data.tar member", ctx());
    }
    let text =
        String::from_utf8(control).map_err(|_| anyhow!("{}: control file is not UTF-8", ctx()))?;
    let control = Control::parse(&text).with_context(ctx)?;
    let (package, version, architecture, source) = {
        let (p, v, a, s) = identity(&control).with_context(ctx)?;
        (p.to_string(), v.to_string(), a.to_string(), s.to_string())
    };
    let d = DebFile {
        path: path.to_path_buf(),
        control,
        package,
        version,
        architecture,
        source,
        size: hr.count,
        sha256: hex::encode(hr.sha256.finalize()),
        sha512: hex::encode(hr.sha512.finalize()),
    };
    if d.size != len {
        bail!("{}: changed size while it was read", ctx());
    }
    d.check().with_context(ctx)?;
    Ok(d)
}

// ---------------------------------------------------------------------------------------------
// Writing

/// One file listed in the suite's `Release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// Path relative to `dists/<suite>/`, e.g. `main/binary-amd64/Packages.xz`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub sha512: String,
}

/// One package in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Relative to the root (the `Filename:` field).
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

/// What [`write_apt_repo`] wrote.
#[derive(Debug, Clone)]
pub struct AptRepo {
    /// `<root>/dists/<suite>`.
    pub suite_dir: PathBuf,
    pub architectures: Vec<String>,
    pub packages: Vec<PoolEntry>,
    pub index_files: Vec<IndexFile>,
    /// The text of `Release` (what `InRelease` clear-signs).
    pub release: String,
}

fn create_dir_0755(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", dir.display()))
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Write `data` to `path` via a synced temporary file renamed over it, mode 0644.
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = write_temp(path, data)?;
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

/// Give the written file `src` the name `dest` too (a hard link, atomically replacing `dest`);
/// where hard links are not possible, write `data` there instead.
fn link_or_copy(src: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    let tmp = temp_name(dest);
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(src, &tmp).is_ok() {
        return fs::rename(&tmp, dest).with_context(|| format!("renaming into {}", dest.display()));
    }
    write_file(dest, data)
}

fn write_temp(path: &Path, data: &[u8]) -> Result<PathBuf> {
    let tmp = temp_name(path);
    let ctx = || format!("writing {}", tmp.display());
    let mut f = File::create(&tmp).with_context(ctx)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .with_context(ctx)?;
    f.write_all(data).with_context(ctx)?;
    f.sync_all().with_context(ctx)?;
    Ok(tmp)
}

fn sha256_file(path: &Path) -> Result<String> {
    let (mut f, _) = crate::index_cache::open_regular(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).with_context(|| format!("{}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Put `deb` at `dest` (hard link or verified copy); if `dest` exists it must hold the same bytes.
/// Whether two paths name one file (same device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Put `deb` at `dest` (hard link or verified copy); if `dest` exists it must hold the same
/// bytes. Returns whether `deb.path` was hard-linked (which moves its ctime: the caller
/// re-stats it for the index cache).
fn place_in_pool(deb: &DebFile, dest: &Path, link: PoolLink) -> Result<bool> {
    // Read from its pool path (indexing `root/pool` itself): the very file, nothing to do.
    if dest == deb.path {
        return Ok(false);
    }
    if dest.exists() {
        // The very file that was read (or hard-linked there by an earlier run): nothing to do.
        if same_file(dest, &deb.path) {
            return Ok(false);
        }
        if sha256_file(dest)? == deb.sha256 {
            return Ok(false);
        }
        bail!(
            "{} already exists with different contents than {} ({} {} {})",
            dest.display(),
            deb.path.display(),
            deb.package,
            deb.version,
            deb.architecture
        );
    }
    create_dir_0755(dest.parent().expect("pool path has a parent"))?;
    let tmp = temp_name(dest);
    let _ = fs::remove_file(&tmp);
    // A hard link shares the inode: only with a file nobody else can write (an uploader's file
    // could be changed under the signed index through the link), else a copy.
    let own = fs::symlink_metadata(&deb.path)
        .is_ok_and(|m| crate::index_cache::not_private(&m).is_none());
    let linked = link == PoolLink::HardLinkOrCopy && own && fs::hard_link(&deb.path, &tmp).is_ok();
    if linked {
        // The input may have changed since it was read: the pool must hold what was indexed.
        if sha256_file(&tmp)? != deb.sha256 {
            let _ = fs::remove_file(&tmp);
            bail!(
                "{} changed while the index was being built",
                deb.path.display()
            );
        }
    } else {
        let ctx = || format!("copying {} to {}", deb.path.display(), tmp.display());
        let (mut src, _) = crate::index_cache::open_regular(&deb.path)?;
        let mut out = File::create(&tmp).with_context(ctx)?;
        out.set_permissions(fs::Permissions::from_mode(0o644))
            .with_context(ctx)?;
        let mut h = HashWriter {
            inner: &mut out,
            sha256: Sha256::new(),
        };
        io::copy(&mut src, &mut h).with_context(ctx)?;
        let got = hex::encode(h.sha256.finalize());
        out.sync_all().with_context(ctx)?;
        if got != deb.sha256 {
            let _ = fs::remove_file(&tmp);
            bail!(
                "{} changed while the index was being built",
                deb.path.display()
            );
        }
    }
    fs::rename(&tmp, dest).with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(linked)
}

struct HashWriter<W> {
    inner: W,
    sha256: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha256.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn stanza(deb: &DebFile) -> Result<String> {
    let mut s = String::new();
    for (k, v) in &deb.control.fields {
        if v.starts_with('\n') || v.is_empty() {
            let _ = writeln!(s, "{k}:{v}");
        } else {
            let _ = writeln!(s, "{k}: {v}");
        }
    }
    let _ = writeln!(s, "Filename: {}", deb.pool_path()?);
    let _ = writeln!(s, "Size: {}", deb.size);
    let _ = writeln!(s, "SHA256: {}", deb.sha256);
    let _ = writeln!(s, "SHA512: {}", deb.sha512);
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Packages compression in content-defined chunks

/// A chunk of `Packages` ends after a stanza once it holds at least this many bytes and the
/// stanza's FNV-1a hash is 0 mod [`CHUNK_SPREAD`], or once it holds [`CHUNK_MAX`] bytes. The
/// boundaries depend on the text only (never on the thread count or on what is cached), and a
/// package added or changed changes only the chunk around it (the boundaries after it fall on
/// the same stanzas again), so an add recompresses about one chunk, not the whole file.
const CHUNK_MIN: usize = 512 << 10;
const CHUNK_MAX: usize = 1 << 20;
const CHUNK_SPREAD: u64 = 256;
/// xz dictionary: a chunk (an xz block of its own) never refers past its start.
const XZ_DICT: u32 = CHUNK_MAX as u32;
/// The LZMA2 dictionary-size property byte for [`XZ_DICT`] (2^(16/2 + 12) = 1 MiB).
const XZ_DICT_PROP: u8 = 16;
/// Names cached chunk files (with the encoders' library versions, [`ChunkKind::name`]): bumped
/// when the encoders' parameters change.
const CHUNK_FORMAT: &str = "c3";

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Split the stanzas (joined by "\n" in `Packages`) into the chunks' byte ranges of the text.
fn chunk_ranges(stanzas: &[String]) -> Vec<std::ops::Range<usize>> {
    let mut ends = Vec::with_capacity(stanzas.len());
    let mut pos = 0;
    for (i, s) in stanzas.iter().enumerate() {
        pos += s.len() + usize::from(i + 1 < stanzas.len());
        ends.push((pos, fnv1a(s.as_bytes())));
    }
    chunk_bounds(&ends, pos)
}

/// Chunks of a text made of pieces: `ends` = (end offset of each piece, hash of the piece),
/// `total` = the text's length (anything after the last piece joins the last chunk).
pub(crate) fn chunk_bounds(ends: &[(usize, u64)], total: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for &(pos, h) in ends {
        let len = pos - start;
        if len >= CHUNK_MAX || (len >= CHUNK_MIN && h % CHUNK_SPREAD == 0) {
            out.push(start..pos);
            start = pos;
        }
    }
    if total > start {
        out.push(start..total);
    }
    out
}

/// FNV-1a of a piece (what chunk boundaries are drawn by).
pub(crate) fn piece_hash(b: &[u8]) -> u64 {
    fnv1a(b)
}

/// gzip (no name, mtime 0) of `bytes` at `level`, one sync-flushed deflate run per range
/// (compressed in parallel, taken from `cache` when an earlier run made the same one).
pub(crate) fn gzip_chunked(
    bytes: &[u8],
    ranges: &[std::ops::Range<usize>],
    level: u32,
    cache: &ChunkCache,
) -> Result<Vec<u8>> {
    let n = ranges.len();
    let parts: Vec<Vec<u8>> = ranges
        .par_iter()
        .enumerate()
        .map(|(i, r)| {
            let plain = &bytes[r.clone()];
            let last = i + 1 == n;
            let sum = hex::encode(Sha256::digest(plain));
            cache.get(ChunkKind::Deflate { level, last }, &sum, plain, || {
                deflate_chunk(plain, last, level)
            })
        })
        .collect::<Result<_>>()?;
    let mut gz = pgzip::gzip_header(level, pgzip::OS_UNKNOWN).to_vec();
    for p in parts {
        gz.extend_from_slice(&p);
    }
    if n == 0 {
        gz.extend_from_slice(&deflate_chunk(b"", true, level)?);
    }
    gz.extend_from_slice(&pgzip::gzip_trailer(crc32(&[bytes]), bytes.len() as u64));
    Ok(gz)
}

/// Which encoder made a cached chunk (part of its name), and how a reused one is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChunkKind {
    /// Raw LZMA2 ([`lzma2_chunk`]).
    Xz,
    /// Raw deflate at `level`, sync-flushed, or ending the stream when `last`.
    Deflate { level: u32, last: bool },
}

/// The version of the liblzma this process runs with (`lzma_version_string()`: the library
/// actually linked, static or shared).
pub(crate) fn lzma_version() -> String {
    extern "C" {
        fn lzma_version_string() -> *const std::os::raw::c_char;
    }
    // SAFETY: liblzma (linked through liblzma-sys) returns a pointer to a static
    // NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(lzma_version_string()) }
        .to_string_lossy()
        .into_owned()
}

/// The deflate implementation: flate2's version and its backend's (zlib-rs) from Cargo.lock,
/// embedded by build.rs.
pub(crate) const DEFLATE_VERSION: &str = env!("XTASK_DEFLATE_VERSION");

/// `s` with every byte outside `[A-Za-z0-9.+_]` as `_` (a part of a chunk file name).
fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".+_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl ChunkKind {
    /// `<sha256 of the plaintext>-<format>-<encoder, settings>-<library versions>`: a chunk made
    /// by another liblzma or deflate version (whose bytes may differ) is another name, so the
    /// output never depends on what an older build left in the cache.
    fn name(self, sum: &str) -> String {
        static LIBS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
        let (lzma, deflate) = LIBS.get_or_init(|| {
            (
                format!("liblzma_{}", name_part(&lzma_version())),
                name_part(DEFLATE_VERSION),
            )
        });
        match self {
            ChunkKind::Xz => format!("{sum}-{CHUNK_FORMAT}-xz6-{lzma}"),
            ChunkKind::Deflate { level, last } => format!(
                "{sum}-{CHUNK_FORMAT}-gz{level}{}-{deflate}",
                if last { "-last" } else { "" }
            ),
        }
    }
}

/// Whether `name` has the shape of a chunk file name (any format or version): 64 lower-case
/// hex digits, `-`, then `[A-Za-z0-9.+_-]+`. Only such names are ever removed by a prune.
fn is_chunk_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 65
        && b[..64]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        && b[64] == b'-'
        && b[65..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b".+_-".contains(c))
}

/// Whether the raw deflate `comp` decodes to exactly `plain` (streaming, 64 KiB at a time). A
/// chunk that is not the last must end with the sync flush's empty stored block and, followed
/// by a final empty stored block, end the stream exactly there (so the next chunk starts on a
/// block and byte boundary); the last chunk must end the stream at its last byte.
fn deflate_decodes_to(comp: &[u8], plain: &[u8], last: bool) -> bool {
    const SYNC: [u8; 4] = [0, 0, 0xff, 0xff];
    const FINAL_EMPTY: [u8; 5] = [1, 0, 0, 0xff, 0xff];
    if !last && !comp.ends_with(&SYNC) {
        return false;
    }
    let with_end: [&[u8]; 2] = [comp, &FINAL_EMPTY];
    let segs = if last { &with_end[..1] } else { &with_end[..] };
    let mut d = flate2::Decompress::new(false);
    let mut buf = vec![0u8; 64 << 10];
    let (mut seg, mut off, mut matched) = (0usize, 0usize, 0usize);
    loop {
        if off == segs[seg].len() && seg + 1 < segs.len() {
            seg += 1;
            off = 0;
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        let st = match d.decompress(&segs[seg][off..], &mut buf, flate2::FlushDecompress::None) {
            Ok(st) => st,
            Err(_) => return false,
        };
        let used = (d.total_in() - in0) as usize;
        let produced = (d.total_out() - out0) as usize;
        off += used;
        if matched + produced > plain.len() || buf[..produced] != plain[matched..matched + produced]
        {
            return false;
        }
        matched += produced;
        if st == flate2::Status::StreamEnd {
            return matched == plain.len() && seg + 1 == segs.len() && off == segs[seg].len();
        }
        if used == 0 && produced == 0 {
            return false;
        }
    }
}

/// Whether the raw LZMA2 `comp` decodes to exactly `plain` and ends (end marker) at its last
/// byte (streaming, 64 KiB at a time; the dictionary is ours, 1 MiB).
fn lzma2_decodes_to(comp: &[u8], plain: &[u8]) -> bool {
    let Ok(filters) = lzma2_filters() else {
        return false;
    };
    let Ok(mut s) = liblzma::stream::Stream::new_raw_decoder(&filters) else {
        return false;
    };
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut matched = 0usize;
    loop {
        buf.clear();
        let consumed = s.total_in() as usize;
        let st = match s.process_vec(&comp[consumed..], &mut buf, liblzma::stream::Action::Run) {
            Ok(st) => st,
            Err(_) => return false,
        };
        let produced = buf.len();
        if matched + produced > plain.len() || buf[..] != plain[matched..matched + produced] {
            return false;
        }
        matched += produced;
        if st == liblzma::stream::Status::StreamEnd {
            return matched == plain.len() && s.total_in() as usize == comp.len();
        }
        if produced == 0 && s.total_in() as usize == consumed {
            return false;
        }
    }
}

/// Compressed chunks kept between runs (in a directory beside the index cache file, see
/// `IndexCache::side_dir`: mode 0700, ours alone), named by the sha256 of the uncompressed
/// chunk and the encoder ([`ChunkKind::name`]). A chunk is reused only after it is checked to
/// decode to the very plaintext it is named by; files are written 0600 and must stay ours
/// alone.
pub(crate) struct ChunkCache {
    dir: Option<PathBuf>,
    used: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl ChunkCache {
    /// A cache in `dir` (already checked to be ours alone), or none.
    pub(crate) fn new(dir: Option<PathBuf>) -> ChunkCache {
        ChunkCache {
            dir,
            used: Default::default(),
        }
    }

    /// The compressed chunk of `plain` (whose sha256 is `sum`) by `kind`'s encoder: from the
    /// cache if a stored one passes every check, else `compress()`'s (then stored). A stored
    /// chunk is the sha256 of the compressed bytes followed by them, in a regular file of ours
    /// alone (not a symlink), at most a little larger than the plaintext, and it must decode to
    /// `plain` exactly; one that fails any of this is reported, made again and replaced.
    fn get(
        &self,
        kind: ChunkKind,
        sum: &str,
        plain: &[u8],
        compress: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let Some(dir) = &self.dir else {
            return compress();
        };
        let name = kind.name(sum);
        let path = dir.join(&name);
        self.used.lock().expect("chunk cache").insert(name);
        match Self::load(&path, kind, plain) {
            Ok(Some(c)) => return Ok(c),
            Ok(None) => {}
            Err(why) => tracing::warn!(
                "chunk cache {}: {why}; compressing the chunk again",
                path.display()
            ),
        }
        let c = compress()?;
        if let Err(e) = Self::store(dir, &path, &c) {
            tracing::warn!("chunk cache {}: {e:#}; not kept", path.display());
        }
        Ok(c)
    }

    /// A stored chunk that passes every check, `None` if there is none, or why it is refused.
    fn load(
        path: &Path,
        kind: ChunkKind,
        plain: &[u8],
    ) -> std::result::Result<Option<Vec<u8>>, String> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
            Ok(_) => {}
        }
        let (f, m) = crate::index_cache::open_regular(path).map_err(|e| format!("{e:#}"))?;
        if let Some(why) = crate::index_cache::not_private(&m) {
            return Err(why);
        }
        // Worst-case expansion of either encoder is far below an eighth, plus framing.
        let max = 32 + plain.len() as u64 + plain.len() as u64 / 8 + (64 << 10);
        if m.len() < 32 || m.len() > max {
            return Err(format!("{} bytes is not the size of such a chunk", m.len()));
        }
        let mut c = Vec::with_capacity(m.len() as usize);
        (&f).take(max + 1)
            .read_to_end(&mut c)
            .map_err(|e| e.to_string())?;
        if c.len() < 32 || Sha256::digest(&c[32..])[..] != c[..32] {
            return Err("damaged or truncated (digest mismatch)".into());
        }
        c.drain(..32);
        let ok = match kind {
            ChunkKind::Xz => lzma2_decodes_to(&c, plain),
            ChunkKind::Deflate { last, .. } => deflate_decodes_to(&c, plain, last),
        };
        if !ok {
            return Err("does not decode to the chunk it is named by".into());
        }
        Ok(Some(c))
    }

    /// Store `c` as `path` (a unique temporary file, mode 0600, renamed over the name: a
    /// concurrent identical write of the same chunk by another worker is harmless).
    fn store(dir: &Path, path: &Path, c: &[u8]) -> Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-chunk-")
            .tempfile_in(dir)
            .with_context(|| format!("a temporary file in {}", dir.display()))?;
        tmp.write_all(&Sha256::digest(c))?;
        tmp.write_all(c)?;
        tmp.persist(path)
            .map_err(|e| anyhow!("renaming into {}: {}", path.display(), e.error))?;
        Ok(())
    }

    /// Remove the chunk files this run did not use: only names of the chunk-name shape
    /// ([`is_chunk_name`]), never following a symlink (a symlinked directory is refused).
    pub(crate) fn prune(&self) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() && crate::index_cache::not_private(&m).is_none() => {}
            Ok(_) => {
                tracing::warn!(
                    "chunk cache {}: not a directory of ours alone; not pruned",
                    dir.display()
                );
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
        let used = self.used.lock().expect("chunk cache");
        let Ok(rd) = fs::read_dir(dir) else {
            return Ok(());
        };
        for e in rd {
            let e = e?;
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if !is_chunk_name(name) || used.contains(name) {
                continue;
            }
            // file_type() does not follow a symlink; remove_file removes a link, not its target.
            if e.file_type().is_ok_and(|t| !t.is_dir()) {
                let _ = fs::remove_file(dir.join(name));
            }
        }
        Ok(())
    }
}

/// Raw deflate (at `level`, no dictionary) of one chunk, sync-flushed or final
/// ([`pgzip::deflate_chunk`]).
fn deflate_chunk(data: &[u8], last: bool, level: u32) -> Result<Vec<u8>> {
    Ok(pgzip::deflate_chunk(level, &[], data, last)?)
}

/// Raw LZMA2 (preset 6, dictionary [`XZ_DICT`]) of one chunk.
fn lzma2_filters() -> Result<liblzma::stream::Filters> {
    let mut o = liblzma::stream::LzmaOptions::new_preset(6).context("xz preset 6")?;
    o.dict_size(XZ_DICT);
    let mut f = liblzma::stream::Filters::new();
    f.lzma2(&o);
    Ok(f)
}

fn lzma2_chunk(data: &[u8]) -> Result<Vec<u8>> {
    let mut s = liblzma::stream::Stream::new_raw_encoder(&lzma2_filters()?)
        .context("initialising the xz encoder")?;
    let mut out = Vec::with_capacity(data.len() / 4 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 << 10);
        }
        let consumed = s.total_in() as usize;
        let st = s.process_vec(&data[consumed..], &mut out, liblzma::stream::Action::Finish)?;
        if st == liblzma::stream::Status::StreamEnd {
            return Ok(out);
        }
    }
}

/// CRC-64/XZ (ECMA-182 polynomial, reflected), the check of each xz block.
fn crc64(data: &[u8]) -> u64 {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xC96C_5795_D787_0F42
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u64, |c, &b| {
        t[((c ^ u64::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

fn xz_vli(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// An .xz stream (CRC64 checks) of one block per chunk: (raw LZMA2 data, uncompressed bytes).
fn xz_stream(blocks: &[(Vec<u8>, &[u8])]) -> Vec<u8> {
    const FLAGS: [u8; 2] = [0x00, 0x04];
    let mut out = vec![0xFD, b'7', b'z', b'X', b'Z', 0x00];
    out.extend_from_slice(&FLAGS);
    out.extend_from_slice(&crc32(&[&FLAGS]).to_le_bytes());
    let mut records = Vec::new();
    for (raw, plain) in blocks {
        // Header: size/4-1, flags (one filter, no sizes), LZMA2 id, 1 property byte, padding.
        let mut h = vec![0x02, 0x00, 0x21, 0x01, XZ_DICT_PROP, 0, 0, 0];
        h.extend_from_slice(&crc32(&[&h]).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(raw);
        out.resize(out.len() + (4 - raw.len() % 4) % 4, 0);
        out.extend_from_slice(&crc64(plain).to_le_bytes());
        records.push(((h.len() + raw.len() + 8) as u64, plain.len() as u64));
    }
    let mut index = vec![0x00];
    xz_vli(&mut index, records.len() as u64);
    for (unpadded, size) in &records {
        xz_vli(&mut index, *unpadded);
        xz_vli(&mut index, *size);
    }
    index.resize(index.len() + (4 - index.len() % 4) % 4, 0);
    let c = crc32(&[&index]);
    index.extend_from_slice(&c.to_le_bytes());
    let backward = ((index.len() / 4) - 1) as u32;
    out.extend_from_slice(&index);
    let mut tail = backward.to_le_bytes().to_vec();
    tail.extend_from_slice(&FLAGS);
    out.extend_from_slice(&crc32(&[&tail]).to_le_bytes());
    out.extend_from_slice(&tail);
    out.extend_from_slice(b"YZ");
    out
}

/// `Packages.gz` (gzip -9, no name, mtime 0) and `Packages.xz` (xz preset 6, CRC64) of the
/// stanzas joined by "\n": each content-defined chunk is compressed on its own, all of them in
/// parallel, and taken from `cache` when an earlier run compressed the same chunk.
fn compress_packages(
    text: &str,
    stanzas: &[String],
    cache: &ChunkCache,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let ranges = chunk_ranges(stanzas);
    let n = ranges.len();
    let bytes = text.as_bytes();
    let sums: Vec<String> = ranges
        .par_iter()
        .map(|r| hex::encode(Sha256::digest(&bytes[r.clone()])))
        .collect();
    // (chunk, is xz) pairs, compressed in parallel.
    let jobs: Vec<(usize, bool)> = (0..n).flat_map(|i| [(i, true), (i, false)]).collect();
    let parts: Vec<Vec<u8>> = jobs
        .par_iter()
        .map(|&(i, is_xz)| {
            let plain = &bytes[ranges[i].clone()];
            if is_xz {
                cache.get(ChunkKind::Xz, &sums[i], plain, || lzma2_chunk(plain))
            } else {
                let last = i + 1 == n;
                cache.get(
                    ChunkKind::Deflate { level: 9, last },
                    &sums[i],
                    plain,
                    || deflate_chunk(plain, last, 9),
                )
            }
        })
        .collect::<Result<_>>()?;
    let mut gz = pgzip::gzip_header(9, pgzip::OS_UNKNOWN).to_vec();
    let mut xz_blocks = Vec::with_capacity(n);
    for (k, p) in parts.into_iter().enumerate() {
        let (i, is_xz) = jobs[k];
        if is_xz {
            xz_blocks.push((p, &bytes[ranges[i].clone()]));
        } else {
            gz.extend_from_slice(&p);
        }
    }
    if n == 0 {
        gz.extend_from_slice(&deflate_chunk(b"", true, 9)?);
    }
    gz.extend_from_slice(&pgzip::gzip_trailer(crc32(&[bytes]), bytes.len() as u64));
    Ok((gz, xz_stream(&xz_blocks)))
}

fn index_entry(path: String, data: &[u8]) -> IndexFile {
    IndexFile {
        path,
        size: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
        sha512: hex::encode(Sha512::digest(data)),
    }
}

/// Read, check and de-duplicate the packages; sorted as the index lists them.
pub fn read_debs(debs: &[PathBuf]) -> Result<Vec<DebFile>> {
    read_debs_cached(debs, &crate::index_cache::IndexCache::none())
}

/// [`read_debs`], taking what `cache` knows about unchanged files instead of reading them.
pub fn read_debs_cached(
    debs: &[PathBuf],
    cache: &crate::index_cache::IndexCache<DebFile>,
) -> Result<Vec<DebFile>> {
    let read: Vec<DebFile> = debs
        .par_iter()
        .map(|p| {
            let mut d: DebFile = cache.get_or(p, |f, m| read_deb_from(p, f, m.len()))?;
            d.path = p.clone();
            Ok(d)
        })
        .collect::<Result<_>>()?;
    let mut by_key: BTreeMap<(String, String, String), DebFile> = BTreeMap::new();
    let mut by_pool: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    for d in read {
        let key = (d.package.clone(), d.version.clone(), d.architecture.clone());
        if let Some(prev) = by_key.get(&key) {
            if prev.sha256 != d.sha256 {
                bail!(
                    "{} and {} are both {} {} {} but differ (sha256 {} vs {})",
                    prev.path.display(),
                    d.path.display(),
                    key.0,
                    key.1,
                    key.2,
                    prev.sha256,
                    d.sha256
                );
            }
            continue;
        }
        let pool = d.pool_path()?;
        if let Some((v, p)) = by_pool.get(&pool) {
            bail!(
                "{} ({}) and {} ({}) would both be {pool}",
                p.display(),
                v,
                d.path.display(),
                d.version
            );
        }
        by_pool.insert(pool, (d.version.clone(), d.path.clone()));
        by_key.insert(key, d);
    }
    let mut out: Vec<DebFile> = by_key.into_values().collect();
    out.sort_by(|a, b| {
        a.package
            .cmp(&b.package)
            .then_with(|| compare_versions(&a.version, &b.version))
            .then_with(|| a.version.cmp(&b.version))
            .then_with(|| a.architecture.cmp(&b.architecture))
    });
    Ok(out)
}

/// One architecture's index files: (name, bytes).
type ArchIndexes = Vec<(&'static str, Vec<u8>)>;

/// Build (or rebuild) the apt repository under `root` from `debs`, signed by `signer`.
///
/// Pool files already present with the same bytes are kept; index files are replaced;
/// `Release`, `Release.gpg` and `InRelease` come last.
pub fn write_apt_repo(
    root: &Path,
    debs: &[PathBuf],
    settings: &AptSettings,
    signer: &dyn Signer,
) -> Result<AptRepo> {
    write_apt_repo_cached(
        root,
        debs,
        settings,
        signer,
        &crate::index_cache::IndexCache::none(),
    )
}

/// Index every `.deb` below `pool_dir` into the repository at `root` (as `apt-ftparchive
/// packages` + `release` over a pool would), reading only packages `cache_file` does not
/// already describe (path, size, mtime, ctime, inode and device, a racy entry checked by
/// sha256; see `index_cache`). The cache file belongs
/// to the caller's build state or cache directory, not to the published tree. `pool_dir` may be
/// `root/pool` itself: packages already at their pool path stay where they are.
pub fn index_dir(
    pool_dir: &Path,
    root: &Path,
    settings: &AptSettings,
    signer: &dyn Signer,
    cache_file: Option<&Path>,
) -> Result<AptRepo> {
    use crate::index_cache::span;
    let t = std::time::Instant::now();
    let debs = crate::index_cache::files_under(pool_dir, ".deb")?;
    if debs.is_empty() && settings.architectures.is_empty() {
        bail!("{}: no .deb file below it", pool_dir.display());
    }
    let t = span("apt: list packages", t);
    let cache = crate::index_cache::IndexCache::open_opt(cache_file);
    let t = span("apt: open cache", t);
    let repo = write_apt_repo_cached(root, &debs, settings, signer, &cache)?;
    let t = span("apt: write repo", t);
    cache.save()?;
    span("apt: save cache", t);
    Ok(repo)
}

/// [`write_apt_repo`] with a per-package metadata cache.
pub fn write_apt_repo_cached(
    root: &Path,
    debs: &[PathBuf],
    settings: &AptSettings,
    signer: &dyn Signer,
    cache: &crate::index_cache::IndexCache<DebFile>,
) -> Result<AptRepo> {
    use crate::index_cache::span;
    let t = std::time::Instant::now();
    settings.validate()?;
    let debs = read_debs_cached(debs, cache)?;
    let t = span("apt: read packages", t);

    let mut arches: Vec<String> = settings.architectures.clone();
    arches.extend(
        debs.iter()
            .filter(|d| d.architecture != "all")
            .map(|d| d.architecture.clone()),
    );
    arches.sort();
    arches.dedup();
    if arches.is_empty() {
        bail!(
            "no architecture to publish: no architecture-specific package and none given in the settings"
        );
    }

    create_dir_0755(root)?;
    debs.par_iter()
        .map(|d| {
            if place_in_pool(d, &root.join(d.pool_path()?), settings.pool_link)? {
                cache.restat(&d.path)?;
            }
            Ok(())
        })
        .collect::<Result<()>>()?;
    let t = span("apt: place in pool", t);

    let suite_dir = root.join("dists").join(&settings.suite);
    // Each architecture's Packages, rendered and compressed (gzip and xz side by side) in
    // parallel; written in order below.
    let chunks = ChunkCache::new(cache.side_dir("packages-chunks", Some(&settings.suite)));
    let rendered: Vec<(String, ArchIndexes)> = arches
        .par_iter()
        .map(|arch| -> Result<(String, ArchIndexes)> {
            let stanzas: Vec<String> = debs
                .iter()
                .filter(|d| &d.architecture == arch || d.architecture == "all")
                .map(stanza)
                .collect::<Result<_>>()?;
            let text = stanzas.join("\n");
            let component_release = format!(
                "Archive: {}\nOrigin: {}\nLabel: {}\nAcquire-By-Hash: yes\nComponent: {COMPONENT}\nArchitecture: {arch}\n",
                settings.suite, settings.origin, settings.label
            );
            let (gz, xzd) = compress_packages(&text, &stanzas, &chunks)?;
            Ok((
                arch.clone(),
                vec![
                    ("Packages", text.into_bytes()),
                    ("Packages.gz", gz),
                    ("Packages.xz", xzd),
                    ("Release", component_release.into_bytes()),
                ],
            ))
        })
        .collect::<Result<_>>()?;
    let t = span("apt: render and compress Packages", t);
    // Every index file is written (and synced) once, all of them in parallel (the fsyncs of
    // one run overlap instead of queueing); the by-hash names are hard links to it, made
    // before the file gets its own name: a client that already has the new Release finds
    // them at once.
    let mut staged = Vec::new();
    for (arch, files) in rendered {
        let rel_dir = format!("{COMPONENT}/binary-{arch}");
        let dir = suite_dir.join(&rel_dir);
        for d in ["", "by-hash", "by-hash/SHA256", "by-hash/SHA512"] {
            create_dir_0755(&dir.join(d))?;
        }
        for (name, data) in files {
            let entry = index_entry(format!("{rel_dir}/{name}"), &data);
            staged.push((dir.join(name), entry, data));
        }
    }
    // Release is signed before anything is renamed into place: a signature that cannot be
    // made (a key that will not sign, a date it refuses) leaves the repository as it was.
    let mut index_files: Vec<IndexFile> = staged.iter().map(|(_, e, _)| e.clone()).collect();
    index_files.sort_by(|a, b| a.path.cmp(&b.path));
    let release = release_text(settings, &arches, &index_files);
    // Two signatures of the same text: made on two cores.
    let (detached, inline) = rayon::join(
        || {
            signer
                .detach_sign_armored(release.as_bytes())
                .context("signing Release")
        },
        || signer.clearsign(&release).context("clear-signing Release"),
    );
    let (detached, inline) = (detached?, inline?);
    let t = span("apt: Release, sign", t);
    let temps = staged
        .par_iter()
        .map(|(path, _, data)| write_temp(path, data))
        .collect::<Result<Vec<_>>>()?;
    for ((path, entry, data), tmp) in staged.into_iter().zip(temps) {
        let by_hash = path
            .parent()
            .expect("index file has a directory")
            .join("by-hash");
        link_or_copy(&tmp, &by_hash.join("SHA256").join(&entry.sha256), &data)?;
        link_or_copy(&tmp, &by_hash.join("SHA512").join(&entry.sha512), &data)?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming into {}", path.display()))?;
    }
    let t = span("apt: write index files, by-hash", t);
    chunks.prune()?;
    let files = [
        ("Release", release.as_bytes()),
        ("Release.gpg", detached.as_bytes()),
        ("InRelease", inline.as_bytes()),
    ];
    let temps = files
        .par_iter()
        .map(|(name, data)| write_temp(&suite_dir.join(name), data))
        .collect::<Result<Vec<_>>>()?;
    for ((name, _), tmp) in files.iter().zip(temps) {
        fs::rename(&tmp, suite_dir.join(name))
            .with_context(|| format!("renaming into {}", suite_dir.join(name).display()))?;
    }
    span("apt: write Release files", t);

    let packages = debs
        .iter()
        .map(|d| {
            Ok(PoolEntry {
                package: d.package.clone(),
                version: d.version.clone(),
                architecture: d.architecture.clone(),
                filename: d.pool_path()?,
                size: d.size,
                sha256: d.sha256.clone(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(AptRepo {
        suite_dir,
        architectures: arches,
        packages,
        index_files,
        release,
    })
}

fn release_text(settings: &AptSettings, arches: &[String], files: &[IndexFile]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Origin: {}", settings.origin);
    let _ = writeln!(s, "Label: {}", settings.label);
    let _ = writeln!(s, "Suite: {}", settings.suite);
    let _ = writeln!(s, "Codename: {}", settings.codename);
    let _ = writeln!(s, "Date: {}", crate::date::rfc2822(settings.date, "UTC"));
    if let Some(d) = settings.valid_until {
        let _ = writeln!(
            s,
            "Valid-Until: {}",
            crate::date::rfc2822(settings.date + d.as_secs(), "UTC")
        );
    }
    let _ = writeln!(s, "Architectures: {}", arches.join(" "));
    let _ = writeln!(s, "Components: {}", settings.components().join(" "));
    if !settings.description.is_empty() {
        let _ = writeln!(s, "Description: {}", settings.description);
    }
    let _ = writeln!(s, "Acquire-By-Hash: yes");
    let _ = writeln!(s, "SHA256:");
    for f in files {
        let _ = writeln!(s, " {} {:>16} {}", f.sha256, f.size, f.path);
    }
    let _ = writeln!(s, "SHA512:");
    for f in files {
        let _ = writeln!(s, " {} {:>16} {}", f.sha512, f.size, f.path);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Client files

/// What a host needs to use the repository.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// File stem for the key and `.sources` files: `[a-z0-9][a-z0-9._-]*`.
    pub name: String,
    /// Where the repository root is served, e.g. `https://packages.example.org/apt`.
    pub base_url: String,
    /// Absolute path of the keyring on the host; default `/usr/share/keyrings/<name>.gpg`.
    pub signed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    pub name: String,
    /// `keys/<name>.asc`
    pub key_armored: String,
    /// `keys/<name>.gpg`
    pub keyring: Vec<u8>,
    /// `<name>.sources`
    pub sources: String,
}

fn check_url(u: &str) -> Result<()> {
    let ok_scheme = ["http://", "https://", "file:/"]
        .iter()
        .any(|s| u.starts_with(s));
    if !ok_scheme
        || u.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '#')
    {
        bail!("apt base URL {u:?} must be an http://, https:// or file:/ URL without white space");
    }
    Ok(())
}

/// The client files for `settings`' suite, signed-by `signer`'s key.
pub fn client_files(
    settings: &AptSettings,
    client: &ClientSettings,
    signer: &dyn Signer,
) -> Result<ClientFiles> {
    settings.validate()?;
    let n = client.name.as_bytes();
    if n.is_empty()
        || !(n[0].is_ascii_lowercase() || n[0].is_ascii_digit())
        || !n
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
    {
        bail!(
            "client file name {:?} must match [a-z0-9][a-z0-9._-]*",
            client.name
        );
    }
    check_url(&client.base_url)?;
    let signed_by = client
        .signed_by
        .clone()
        .unwrap_or_else(|| format!("/usr/share/keyrings/{}.gpg", client.name));
    if !signed_by.starts_with('/')
        || signed_by
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        bail!("Signed-By path {signed_by:?} must be absolute, without white space");
    }
    let sources = format!(
        "Types: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: {signed_by}\n",
        client.base_url,
        settings.suite,
        settings.components().join(" ")
    );
    Ok(ClientFiles {
        name: client.name.clone(),
        key_armored: signer.public_key_armored()?,
        keyring: signer.public_key_binary()?,
        sources,
    })
}

impl ClientFiles {
    /// Write `keys/<name>.asc`, `keys/<name>.gpg` and `<name>.sources` under `dir`; returns the
    /// paths written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let keys = dir.join("keys");
        create_dir_0755(&keys)?;
        let out = vec![
            (
                keys.join(format!("{}.asc", self.name)),
                self.key_armored.as_bytes(),
            ),
            (
                keys.join(format!("{}.gpg", self.name)),
                self.keyring.as_slice(),
            ),
            (
                dir.join(format!("{}.sources", self.name)),
                self.sources.as_bytes(),
            ),
        ];
        let mut paths = Vec::new();
        for (p, data) in out {
            write_file(&p, data)?;
            paths.push(p);
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_names() {
        for good in ["amd64", "arm64", "all", "armhf", "x32", "kfreebsd-amd64"] {
            assert!(valid_arch(good), "{good}");
        }
        for bad in [
            "",
            "any",
            "source",
            "linux-any",
            "any-amd64",
            "Amd64",
            "-amd64",
            "amd64 ",
            "a/b",
        ] {
            assert!(!valid_arch(bad), "{bad}");
        }
    }

    /// Stanza-like text of `n` stanzas (deterministic).
    fn stanzas(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "Package: pkg-{i}\nVersion: {}.{}-1\nArchitecture: amd64\nSize: {}\nSHA256: {:064x}\nDescription: package number {i}\n",
                    i % 7,
                    i % 13,
                    1000 + i * 37 % 9000,
                    (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
                )
            })
            .collect()
    }

    /// The compressed bytes of `Packages.{gz,xz}` and of [`gzip_chunked`] are pinned (sha256 of
    /// the output before the deflate/gzip framing moved to `pgzip`): a refactoring must not
    /// change a published byte.
    #[test]
    fn compressed_index_bytes_are_pinned() {
        let st = stanzas(12_000);
        let text = st.join("\n");
        let none = ChunkCache::new(None);
        let (gz, xz) = compress_packages(&text, &st, &none).unwrap();
        let (e_gz, e_xz) = compress_packages("", &[], &none).unwrap();
        let ends: Vec<(usize, u64)> = {
            let mut pos = 0;
            st.iter()
                .map(|s| {
                    pos += s.len() + 1;
                    (pos.min(text.len()), piece_hash(s.as_bytes()))
                })
                .collect()
        };
        let ranges = chunk_bounds(&ends, text.len());
        assert!(ranges.len() > 2, "{}", ranges.len());
        let g6 = gzip_chunked(text.as_bytes(), &ranges, 6, &none).unwrap();
        let g0 = gzip_chunked(b"", &[], 6, &none).unwrap();
        let got: Vec<String> = [&gz, &xz, &e_gz, &e_xz, &g6, &g0]
            .iter()
            .map(|b| crate::digest::sha256_hex(b))
            .collect();
        let want = [
            "ef69acb1c107c00cfa399f0f75c854a75fa5fe0c8c546924a776e42ec6e3cac0",
            "6f147be8bfd9f0fab4c0a587b513ce299ba76868e581a80d548cd6182aed3b5a",
            "9ceffb7310338057cfe71a4ae1e2c98d2c485d81cdef906532a801f457a38d64",
            "0040f94d11d0039505328a90b2ff48968db873e9e7967307631bf40ef5679275",
            "f656bdf4729f755fd1e017030ecc77a1837ec8dda3f5a4ab105c3f1deaa55daa",
            "ac73670af3abed54ac6fb4695131f4099be9fbe39d6076c5d0264a6bbdae9d83",
        ];
        assert_eq!(got, want);
        let mut back = String::new();
        flate2::read::GzDecoder::new(&g6[..])
            .read_to_string(&mut back)
            .unwrap();
        assert!(back == text);
    }

    #[test]
    fn versions() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.00", Equal),
            ("1.0-1", "1.0-2", Less),
            ("1.10", "1.9", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("1:0.1", "2.0", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0-1", "1.0", Greater),
            ("1.0.0", "1.0", Greater),
            ("2.0-1~bpo1", "2.0-1", Less),
        ] {
            assert_eq!(compare_versions(a, b), o, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), o.reverse(), "{b} vs {a}");
        }
        assert!(valid_version("1.10.2-1"));
        assert!(valid_version("1:2.0~rc1+dfsg-0.1"));
        assert!(!valid_version("v1.0"));
        assert!(!valid_version("1.0-"));
        assert!(!valid_version("1.0 1"));
        assert!(valid_version("1:2:3"));
        assert!(!valid_version("a:1.0"));
        assert!(!valid_version("1.0_1"));
    }

    #[test]
    fn settings_validation() {
        AptSettings::default().validate().unwrap();
        let bad = |f: fn(&mut AptSettings)| {
            let mut s = AptSettings::default();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(bad(|s| s.suite = "a/b".into()).contains("Suite"));
        assert!(bad(|s| s.suite = "..".into()).contains("Suite"));
        assert!(bad(|s| s.codename = String::new()).contains("Codename"));
        assert!(bad(|s| s.origin = "x\nSuite: evil".into()).contains("control character"));
        assert!(bad(|s| s.label = String::new()).contains("empty"));
        assert!(bad(|s| s.description = "a\rb".into()).contains("Description"));
        assert!(bad(|s| s.architectures = vec!["all".into()]).contains("architecture"));
        assert!(bad(|s| s.architectures = vec!["AMD64".into()]).contains("architecture"));
        assert!(bad(|s| s.valid_until = Some(Duration::ZERO)).contains("Valid-Until"));
    }

    #[test]
    fn control_parsing() {
        let c = Control::parse(
            "Package: a-b\nVersion: 1.0-1\nArchitecture: amd64\nDescription: short\n long line\n .\n more\n",
        )
        .unwrap();
        assert_eq!(c.get("package"), Some("a-b"));
        assert_eq!(c.get("Description"), Some("short\n long line\n .\n more"));
        for bad in [
            "Package: a\nPackage: b\n",
            " cont\nPackage: a\n",
            "Package: a\n\nVersion: 1\n",
            "Package a\n",
            "# c\nPackage: a\n",
            "Package: a\x1b\n",
            "",
        ] {
            assert!(Control::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Chunked Packages compression: gzip and xz decode to the text (real tools in
    /// tests/apt_repo.rs); the same bytes with and without cached chunks; an added stanza
    /// changes few chunks; a corrupt cached chunk is not used.
    #[test]
    fn chunked_compression() {
        use std::io::Read as _;
        let stanzas: Vec<String> = (0..6000)
            .map(|i| {
                format!(
                    "Package: p{i:05}\nVersion: 1.{i}\nDescription: {}\nSHA256: {}\n",
                    "x".repeat(i % 300),
                    hex::encode(Sha256::digest(i.to_string()))
                )
            })
            .collect();
        let text = stanzas.join("\n");
        let none = ChunkCache::new(None);
        let (gz, xzd) = compress_packages(&text, &stanzas, &none).unwrap();
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        let mut back = String::new();
        liblzma::read::XzDecoder::new(&xzd[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        let before = chunk_ranges(&stanzas);
        assert!(before.len() > 2);

        let tmp = tempfile::tempdir().unwrap();
        let c = tmp.path().join("c");
        let cache = ChunkCache::new(chunk_dir(&c));
        assert_eq!(
            compress_packages(&text, &stanzas, &cache).unwrap(),
            (gz.clone(), xzd.clone())
        );
        cache.prune().unwrap();
        let files = || std::fs::read_dir(tmp.path().join("c")).unwrap().count();
        assert_eq!(files(), 2 * before.len());
        // Corrupt every cached chunk: not used, the output stays the same.
        for e in std::fs::read_dir(tmp.path().join("c")).unwrap() {
            std::fs::write(e.unwrap().path(), b"garbage").unwrap();
        }
        let cache = ChunkCache::new(chunk_dir(&c));
        assert_eq!(
            compress_packages(&text, &stanzas, &cache).unwrap(),
            (gz, xzd)
        );

        let mut more = stanzas.clone();
        more.insert(3000, "Package: added\nVersion: 1\n".into());
        let after = chunk_ranges(&more);
        let t2 = more.join("\n");
        let same = after
            .iter()
            .filter(|r| before.iter().any(|b| text[b.clone()] == t2[(*r).clone()]))
            .count();
        assert!(
            after.len() - same <= 2,
            "{} of {} chunks changed",
            after.len() - same,
            after.len()
        );
        let cache = ChunkCache::new(chunk_dir(&c));
        let (gz2, xz2) = compress_packages(&t2, &more, &cache).unwrap();
        cache.prune().unwrap();
        assert_eq!(
            files(),
            2 * after.len(),
            "only the chunks of the last run are kept"
        );
        let mut back = String::new();
        liblzma::read::XzDecoder::new(&xz2[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, t2);
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz2[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, t2);
    }

    /// A checked chunk directory (mode 0700) at `p`.
    fn chunk_dir(p: &Path) -> Option<PathBuf> {
        let d = crate::index_cache::private_dir(p, p);
        assert!(d.is_some(), "{}", p.display());
        d
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// A reused chunk must decode to the plaintext it is named by: a chunk file replaced by a
    /// well-framed chunk of other text (its own digest right) is not used, is reported and
    /// replaced; the output is the same bytes as without a cache. Files are 0600, the
    /// directory 0700.
    #[test]
    fn forged_chunks_are_not_used() {
        let st = stanzas(12_000);
        let text = st.join("\n");
        let none = ChunkCache::new(None);
        let want = compress_packages(&text, &st, &none).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let c = tmp.path().join("c");
        let cache = ChunkCache::new(chunk_dir(&c));
        assert_eq!(compress_packages(&text, &st, &cache).unwrap(), want);
        assert_eq!(mode(&c), 0o700);
        let names: Vec<PathBuf> = fs::read_dir(&c)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(names.len() >= 4, "{names:?}");
        let evil = "Package: evil\nFilename: pool/main/e/evil/evil_1_amd64.deb\n".repeat(50);
        for p in &names {
            assert_eq!(mode(p), 0o600, "{}", p.display());
            let n = p.file_name().unwrap().to_str().unwrap();
            let forged = if n.contains("-xz6-") {
                lzma2_chunk(evil.as_bytes()).unwrap()
            } else {
                deflate_chunk(evil.as_bytes(), n.contains("-last-"), 9).unwrap()
            };
            let mut stored = Sha256::digest(&forged).to_vec();
            stored.extend_from_slice(&forged);
            fs::write(p, stored).unwrap();
        }
        let cache = ChunkCache::new(chunk_dir(&c));
        let got = compress_packages(&text, &st, &cache).unwrap();
        assert!(got == want, "a forged chunk was used");
        // Replaced by good ones: a third run reuses them (and still gives the same bytes).
        for p in &names {
            let b = fs::read(p).unwrap();
            let n = p.file_name().unwrap().to_str().unwrap();
            let ok = if n.contains("-xz6-") {
                !lzma2_decodes_to(&b[32..], evil.as_bytes())
            } else {
                !deflate_decodes_to(&b[32..], evil.as_bytes(), n.contains("-last-"))
            };
            assert!(ok, "{n} still forged");
        }
        let cache = ChunkCache::new(chunk_dir(&c));
        assert!(compress_packages(&text, &st, &cache).unwrap() == want);
        // A chunk file others can write is not used either.
        for p in &names {
            fs::set_permissions(p, fs::Permissions::from_mode(0o666)).unwrap();
        }
        let cache = ChunkCache::new(chunk_dir(&c));
        assert!(compress_packages(&text, &st, &cache).unwrap() == want);
        for p in &names {
            assert_eq!(mode(p), 0o600, "{} not replaced", p.display());
        }
    }

    /// What a reused chunk's decoding check accepts: exactly the plaintext, a non-last deflate
    /// chunk sync-flushed (not final), the last one final, an LZMA2 chunk ending at its end
    /// marker.
    #[test]
    fn chunk_decoding_checks() {
        let plain = "Package: a\nVersion: 1\n".repeat(4000);
        let p = plain.as_bytes();
        let mid = deflate_chunk(p, false, 9).unwrap();
        let fin = deflate_chunk(p, true, 9).unwrap();
        assert!(deflate_decodes_to(&mid, p, false));
        assert!(deflate_decodes_to(&fin, p, true));
        assert!(
            !deflate_decodes_to(&fin, p, false),
            "a final block mid-stream"
        );
        assert!(
            !deflate_decodes_to(&mid, p, true),
            "no final block at the end"
        );
        assert!(!deflate_decodes_to(&mid, &p[1..], false));
        assert!(!deflate_decodes_to(&mid[..mid.len() - 5], p, false));
        let x = lzma2_chunk(p).unwrap();
        assert!(lzma2_decodes_to(&x, p));
        assert!(!lzma2_decodes_to(&x, &p[..p.len() - 1]));
        let mut longer = x.clone();
        longer.push(0);
        assert!(!lzma2_decodes_to(&longer, p), "bytes after the end marker");
        assert!(!lzma2_decodes_to(&x[..x.len() - 1], p), "truncated");
    }

    /// A prune removes only unused names of the chunk-name shape, never follows a symlink, and
    /// leaves a symlinked directory alone.
    #[test]
    fn prune_removes_only_chunk_files() {
        let tmp = tempfile::tempdir().unwrap();
        let c = tmp.path().join("c");
        let cache = ChunkCache::new(chunk_dir(&c));
        let text = "Package: a\n";
        compress_packages(text, &[text.to_string()], &cache).unwrap();
        let old = c.join(format!("{}-c2-xz", "a".repeat(64)));
        fs::write(&old, b"old").unwrap();
        let keep = c.join("notes.txt");
        fs::write(&keep, b"mine").unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let target = outside.join("precious");
        fs::write(&target, b"precious").unwrap();
        let link = c.join(format!("{}-c3-xz6-x", "b".repeat(64)));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let subdir = c.join(format!("{}-c3-gz9-x", "c".repeat(64)));
        fs::create_dir(&subdir).unwrap();
        cache.prune().unwrap();
        assert!(!old.exists(), "an unused chunk stayed");
        assert!(keep.exists(), "a name of another shape was removed");
        assert!(target.exists(), "a symlink was followed");
        assert!(
            fs::symlink_metadata(&link).is_err(),
            "the link itself is an unused name"
        );
        assert!(subdir.is_dir());
        // The used xz and gz chunk, notes.txt, the directory.
        assert_eq!(fs::read_dir(&c).unwrap().count(), 4);

        // A side directory that is a symlink: refused when made, never pruned through.
        let stale = outside.join(format!("{}-c2-xz", "d".repeat(64)));
        fs::write(&stale, b"x").unwrap();
        let linked = tmp.path().join("linked");
        std::os::unix::fs::symlink(&outside, &linked).unwrap();
        assert!(crate::index_cache::private_dir(&linked, &linked).is_none());
        ChunkCache::new(Some(linked)).prune().unwrap();
        assert!(stale.exists() && target.exists());
    }

    /// Workers of one process storing the same chunk at once (two architectures sharing a
    /// chunk, cold cache) all succeed (unique temporary files; the last rename wins).
    #[test]
    fn concurrent_writes_of_one_chunk() {
        let tmp = tempfile::tempdir().unwrap();
        let c = tmp.path().join("c");
        let cache = ChunkCache::new(chunk_dir(&c));
        for round in 0..20 {
            let plain = format!("Package: p{round}\n").repeat(2000);
            let sum = hex::encode(Sha256::digest(plain.as_bytes()));
            let barrier = std::sync::Barrier::new(8);
            let outs: Vec<Vec<u8>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            let x = lzma2_chunk(plain.as_bytes()).unwrap();
                            barrier.wait();
                            // Each store must succeed on its own (a failed one would only be
                            // a warning inside `get`).
                            let path = c.join(ChunkKind::Xz.name(&sum));
                            ChunkCache::store(&c, &path, &x).unwrap();
                            cache
                                .get(ChunkKind::Xz, &sum, plain.as_bytes(), || {
                                    lzma2_chunk(plain.as_bytes())
                                })
                                .unwrap()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(outs.windows(2).all(|w| w[0] == w[1]));
        }
        let names: Vec<String> = fs::read_dir(&c)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 20, "{names:?}");
    }

    /// Chunk names carry the liblzma version this process runs with and the deflate
    /// implementation's versions (a dependency bump is another name).
    #[test]
    fn chunk_names_carry_encoder_versions() {
        let v = lzma_version();
        assert!(v.starts_with('5'), "{v}");
        let sum = "0".repeat(64);
        let xz = ChunkKind::Xz.name(&sum);
        assert!(xz.ends_with(&format!("-xz6-liblzma_{v}")), "{xz}");
        let gz = ChunkKind::Deflate {
            level: 9,
            last: true,
        }
        .name(&sum);
        assert!(
            DEFLATE_VERSION.starts_with("flate2-1."),
            "{DEFLATE_VERSION}"
        );
        assert!(DEFLATE_VERSION.contains("+zlib-rs-0."), "{DEFLATE_VERSION}");
        assert!(
            gz.ends_with(&format!("-gz9-last-{}", name_part(DEFLATE_VERSION))),
            "{gz}"
        );
        assert!(is_chunk_name(&xz) && is_chunk_name(&gz));
        assert!(!is_chunk_name(".tmp-chunk-abc") && !is_chunk_name("notes.txt"));
    }

    /// A cached DebFile passes only the checks a read makes: no stanza or field injection, no
    /// pool path outside the pool (and no panic on an empty or non-ASCII source), digests of
    /// the right form, the stat's size.
    #[test]
    fn cached_debs_are_checked_like_reads() {
        use crate::index_cache::Cached;
        let good = DebFile {
            path: PathBuf::from("/x.deb"),
            control: Control::parse(
                "Package: a-b\nVersion: 1.0-1\nArchitecture: amd64\nDescription: x\n more\n",
            )
            .unwrap(),
            package: "a-b".into(),
            version: "1.0-1".into(),
            architecture: "amd64".into(),
            source: "a-b".into(),
            size: 10,
            sha256: "0".repeat(64),
            sha512: "1".repeat(128),
        };
        Cached::check(&good, 10).unwrap();
        assert_eq!(
            good.pool_path().unwrap(),
            "pool/main/a/a-b/a-b_1.0-1_amd64.deb"
        );
        type Edit = fn(&mut DebFile);
        let edits: [(&str, Edit); 14] = [
            ("size", |d| d.size = 11),
            ("stanza", |d| {
                d.control.fields[3].1 = "x\n\nPackage: evil".into()
            }),
            ("field", |d| {
                d.control.fields[3].1 = "x\nFilename: evil".into()
            }),
            ("cr", |d| d.control.fields[3].1 = "x\r".into()),
            ("name", |d| d.control.fields[3].0 = "Desc ription".into()),
            ("index field", |d| {
                d.control.fields.push(("SHA256".into(), "0".into()))
            }),
            ("source ..", |d| d.source = "../../etc".into()),
            ("empty source", |d| d.source = String::new()),
            ("non-ascii source", |d| d.source = "é".into()),
            ("package", |d| d.package = "evil".into()),
            ("version", |d| d.version = "1.0/../x".into()),
            ("arch", |d| d.architecture = "arm64".into()),
            ("sha256", |d| d.sha256 = "<x/>".into()),
            ("sha512", |d| d.sha512 = "F".repeat(128)),
        ];
        for (what, edit) in edits {
            let mut d = good.clone();
            edit(&mut d);
            assert!(Cached::check(&d, 10).is_err(), "{what} accepted");
        }
        let mut d = good.clone();
        d.source = String::new();
        assert!(d.pool_path().is_err());
        d.source = "é".into();
        assert!(d.pool_path().is_err());
    }

    #[test]
    fn crc64_check_value() {
        assert_eq!(crc64(b"123456789"), 0x995D_C9BB_DF19_39FA);
    }

    #[test]
    fn release_layout() {
        let s = AptSettings {
            valid_until: Some(Duration::from_secs(86_400)),
            ..AptSettings::default()
        };
        let f = index_entry("main/binary-amd64/Packages".into(), b"abc");
        let r = release_text(&s, &["amd64".into(), "arm64".into()], &[f]);
        assert!(r.starts_with("Origin: observability-stack\nLabel: observability-stack\nSuite: stable\nCodename: stable\nDate: Thu, 01 Jan 1970 00:00:00 UTC\nValid-Until: Fri, 02 Jan 1970 00:00:00 UTC\nArchitectures: amd64 arm64\nComponents: main\n"), "{r}");
        assert!(r.contains(
            "SHA256:\n ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad                3 main/binary-amd64/Packages\n"
        ));
    }
}
