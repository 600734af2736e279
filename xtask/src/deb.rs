//! The Debian writer: a [`Package`] in, a `.deb` out.
//!
//! A .deb is an `ar` archive of three members, in this order: `debian-binary` (`2.0\n`),
//! `control.tar.<ext>` (control, md5sums, conffiles, maintainer scripts) and `data.tar.<ext>`
//! (the files). Everything is written deterministically: entries sorted, every mtime is
//! `pkg.source_date_epoch`, owners are 0/0 `root:root`, GNU tar headers carry no host data,
//! gzip streams carry no name and no mtime, and gzip ([`crate::pgzip`]), xz and zstd always
//! run their multi-threaded encoders (whose output does not depend on the number of threads).
//!
//! Files are streamed from disk into the data tarball while their md5 (for `md5sums`) and
//! sha256 (checked against the description) are computed; nothing is held whole in memory.
//!
//! Ownership: dpkg unpacks files before `postinst` creates the service user, so an entry
//! owned by anyone but root (e.g. `/etc/mysqld_exporter/my.cnf`, 0640 root:mysqld_exporter)
//! is shipped as root:root with its mode, and `postinst` registers the real owner with
//! `dpkg-statoverride --update --add` (only when no override exists yet, so an admin's own
//! override wins); dpkg then applies it on every later upgrade, and `postrm purge` removes it.
//!
//! Every value that lands in the control file or a maintainer script is checked here again,
//! even though `component` validated it: a [`Package`] can also be built by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::component::{valid_abs_path, valid_deb_name, valid_https_url, valid_version};
use crate::digest::HashingWriter;
use crate::package::{Compression, Content, FileKind, Package, Written};
use crate::render::Templates;

/// The `debian-binary` member: format 2.0.
const DEBIAN_BINARY: &[u8] = b"2.0\n";
/// Maintainer scripts, in the order they are rendered (each from `templates/deb/<name>.hbs`).
pub const SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// xz preset (dpkg-deb's default), gzip level (dpkg-deb's default), zstd level.
const XZ_PRESET: u32 = 6;
const GZIP_LEVEL: u32 = 9;
const ZSTD_LEVEL: i32 = 9;
/// xz: preset 6's settings (nice_len 64, bt4), but a dictionary of at most 1 MiB (preset 6
/// has 8 MiB) in fixed 4 MiB blocks, so that packaging stays within a bounded memory whatever
/// the file size (B6: ≤ 64 MiB peak RSS for the whole process). liblzma's encoder needs about
/// 11.5× the dictionary per thread plus 3× the block size (input buffer and output queue):
/// 8 MiB/8 MiB = 118 MiB per thread, 1 MiB/4 MiB = 25 MiB. On real exporter binaries the
/// smaller dictionary and blocks cost 2-3% of compressed size (node_exporter 1.5.0 amd64:
/// data.tar.xz +1.8% vs dpkg-deb -Zxz -z6) and compress faster (smaller match-finder tree). A smaller
/// input gets a smaller dictionary (the next power of two ≥ its size: a dictionary larger
/// than the input gains nothing and only costs memory). Block boundaries depend on the block
/// size alone, never on the thread count, so the bytes are the same on any machine.
pub(crate) const XZ_DICT_MAX: u32 = 1 << 20;
const XZ_BLOCK_SIZE: u64 = 4 << 20;
/// Upper bound for liblzma's own estimate of the xz encoder's memory
/// (`lzma_stream_encoder_mt_memusage`): threads are only added while the estimate fits, so
/// 2 threads at most with the constants above (liblzma's estimate, ~50 MiB, is the worst case;
/// measured RSS of the whole process stays below it).
const XZ_MEMORY_BUDGET: u64 = 52 << 20;
/// Where systemd-sysusers looks for the package's entry (by name, also under --root).
const SYSUSERS_DIR: &str = "/usr/lib/sysusers.d/";
/// Upper bound for a license text read into the copyright file.
const MAX_LICENSE_TEXT: u64 = 1 << 20;

/// The file name dpkg-name would give: `<name>_<version>-<revision>_<arch>.deb`.
pub fn file_name(pkg: &Package) -> String {
    format!(
        "{}_{}-{}_{}.deb",
        pkg.name,
        pkg.version,
        pkg.revision,
        pkg.arch.deb()
    )
}

/// Write `pkg` as a .deb into `out_dir`; returns its path, size and sha256.
pub fn write_deb(pkg: &Package, t: &Templates, out_dir: &Path, c: Compression) -> Result<Written> {
    write_deb_signed(pkg, t, out_dir, c, None)
}

/// As [`write_deb`]; with a `signer`, the package also carries a debsigs origin signature
/// (`_gpgorigin`, see [`crate::debsig`]) and the lintian override that member needs.
pub fn write_deb_signed(
    pkg: &Package,
    t: &Templates,
    out_dir: &Path,
    c: Compression,
    signer: Option<&dyn crate::signer::Signer>,
) -> Result<Written> {
    validate(pkg)?;
    let signed = signer.is_some();
    let ctx = || format!("{} {} ({})", pkg.name, pkg.arch, file_name(pkg));
    let entries = data_entries(pkg, signed).with_context(ctx)?;
    let dirs = data_dirs(pkg, &entries).with_context(ctx)?;
    let overrides = stat_overrides(pkg);

    let tmp = tempfile::Builder::new()
        .prefix(".deb-build-")
        .tempdir_in(out_dir)
        .with_context(|| format!("creating a build directory in {}", out_dir.display()))?;
    let ext = extension(c);

    // data.tar first: the control file needs the md5 sums and the installed size.
    let data_path = tmp.path().join(format!("data.tar{ext}"));
    let md5sums = write_data_tar(&data_path, pkg, &entries, &dirs, c).with_context(ctx)?;

    let mut control_files: Vec<(String, u32, Vec<u8>)> = Vec::new();
    control_files.push((
        "control".into(),
        0o644,
        control_text(pkg, installed_size(&entries, &dirs)).into_bytes(),
    ));
    let md5_text: String = md5sums
        .iter()
        .map(|(path, sum)| format!("{sum}  {}\n", path.trim_start_matches('/')))
        .collect();
    control_files.push(("md5sums".into(), 0o644, md5_text.into_bytes()));
    let conffiles: String = entries
        .iter()
        .filter(|e| e.kind == FileKind::Config)
        .map(|e| format!("{}\n", e.path))
        .collect();
    if !conffiles.is_empty() {
        control_files.push(("conffiles".into(), 0o644, conffiles.into_bytes()));
    }
    for (name, text) in render_scripts(pkg, t, &overrides).with_context(ctx)? {
        control_files.push((name, 0o755, text.into_bytes()));
    }
    control_files.sort_by(|a, b| a.0.cmp(&b.0));
    let control_path = tmp.path().join(format!("control.tar{ext}"));
    write_control_tar(&control_path, pkg, &control_files, c).with_context(ctx)?;
    let origin = match signer {
        Some(s) => Some(
            crate::debsig::origin_signature(s, DEBIAN_BINARY, &control_path, &data_path)
                .with_context(ctx)?,
        ),
        None => None,
    };

    // The ar archive, hashed as it is written, renamed into place when complete.
    let name = file_name(pkg);
    let dest = out_dir.join(&name);
    let out = tempfile::NamedTempFile::new_in(tmp.path())?;
    let mut hw = HashingWriter::new(BufWriter::new(out.reopen()?));
    {
        let mut ar = ar::Builder::new(&mut hw);
        let member = |id: &str, size: u64| {
            let mut h = ar::Header::new(id.as_bytes().to_vec(), size);
            h.set_mtime(pkg.source_date_epoch);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mode(0o100644);
            h
        };
        ar.append(
            &member("debian-binary", DEBIAN_BINARY.len() as u64),
            DEBIAN_BINARY,
        )?;
        for (id, path) in [
            (format!("control.tar{ext}"), &control_path),
            (format!("data.tar{ext}"), &data_path),
        ] {
            let f = File::open(path)?;
            let size = f.metadata()?.len();
            ar.append(&member(&id, size), f)
                .with_context(|| format!("writing {id} into {name}"))?;
        }
        if let Some(sig) = &origin {
            let id = crate::debsig::ORIGIN_MEMBER;
            ar.append(&member(id, sig.len() as u64), &sig[..])
                .with_context(|| format!("writing {id} into {name}"))?;
        }
    }
    let (bw, sha256, size) = hw.finish();
    let f = bw.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    out.persist(&dest)
        .map_err(|e| anyhow!("{}: {}", dest.display(), e.error))?;
    Ok(Written {
        path: dest,
        file_name: name,
        size,
        sha256,
    })
}

fn extension(c: Compression) -> &'static str {
    match c {
        Compression::Xz => ".xz",
        Compression::Zstd => ".zst",
        Compression::Gzip => ".gz",
        Compression::None => "",
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

fn no_controls(what: &str, v: &str) -> Result<()> {
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        bail!(
            "{what} {v:?} contains the control character U+{:04X}",
            c as u32
        );
    }
    Ok(())
}

fn valid_user_name(what: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        bail!("{what} {v:?} is not a valid user or group name ([a-z_][a-z0-9_-]*, at most 32)");
    }
    Ok(())
}

/// One `Depends:`/`Conflicts:` entry: `name [(op version)]` alternatives joined by ` | `.
fn valid_relation(v: &str) -> Result<()> {
    let bad = || anyhow!("relation {v:?} is not `name [(op version)]` (alternatives with ` | `)");
    for alt in v.split(" | ") {
        let (name, rest) = match alt.split_once(' ') {
            Some((n, r)) => (n, Some(r)),
            None => (alt, None),
        };
        let name = name.strip_suffix(":any").unwrap_or(name);
        valid_deb_name(name).map_err(|e| anyhow!("relation {v:?}: {e}"))?;
        if let Some(r) = rest {
            let inner = r
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?;
            let (op, ver) = inner.split_once(' ').ok_or_else(bad)?;
            if !["<<", "<=", "=", ">=", ">>"].contains(&op) {
                return Err(bad());
            }
            if ver.is_empty()
                || !ver.starts_with(|c: char| c.is_ascii_digit())
                || !ver
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c))
            {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// A lintian tag with an optional `[context]`.
fn valid_override(tag: &str, reason: &str) -> Result<()> {
    no_controls("lintian override", tag)?;
    no_controls("lintian override reason", reason)?;
    let (name, ctx) = match tag.split_once(' ') {
        Some((n, c)) => (n, Some(c)),
        None => (tag, None),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-_".contains(c))
    {
        bail!("lintian override {tag:?}: {name:?} is not a lintian tag name");
    }
    if let Some(c) = ctx {
        if !(c.starts_with('[') && c.ends_with(']')) {
            bail!("lintian override {tag:?}: the context must be written as [context]");
        }
    }
    if reason.trim().is_empty() {
        bail!("lintian override {tag:?} needs a reason");
    }
    Ok(())
}

fn validate(pkg: &Package) -> Result<()> {
    valid_deb_name(&pkg.name).map_err(|e| anyhow!("package name {:?}: {e}", pkg.name))?;
    valid_version(&pkg.version).map_err(|e| anyhow!("version {:?}: {e}", pkg.version))?;
    valid_https_url(&pkg.homepage).map_err(|e| anyhow!("homepage {:?}: {e}", pkg.homepage))?;
    no_controls("summary", &pkg.summary)?;
    if pkg.summary.trim().is_empty() || pkg.summary.trim() != pkg.summary {
        bail!(
            "summary {:?} must be one non-empty line without surrounding space",
            pkg.summary
        );
    }
    if let Some(c) = pkg
        .description
        .chars()
        .find(|c| c.is_control() && *c != '\n')
    {
        bail!(
            "description contains the control character U+{:04X} (only newlines are allowed)",
            c as u32
        );
    }
    no_controls("maintainer", &pkg.maintainer)?;
    let m = &pkg.maintainer;
    if !(m.ends_with('>') && m.contains(" <") && m.matches('<').count() == 1 && !m.contains(',')) {
        bail!("maintainer {m:?} is not `Name <address>`");
    }
    no_controls("copyright holder", &pkg.copyright_holder)?;
    if pkg.copyright_holder.trim().is_empty() {
        bail!("the copyright holder is empty");
    }
    no_controls("license", &pkg.license)?;
    if pkg.license.is_empty()
        || !pkg
            .license
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-() ".contains(c))
    {
        bail!("license {:?} is not an SPDX expression", pkg.license);
    }
    for c in &pkg.conflicts {
        valid_deb_name(c).map_err(|e| anyhow!("conflicting package {c:?}: {e}"))?;
    }
    for d in &pkg.depends {
        valid_relation(d)?;
    }
    for l in &pkg.changelog {
        no_controls("changelog entry", l)?;
    }
    for (tag, reason) in &pkg.lintian_overrides {
        valid_override(tag, reason)?;
    }
    for f in &pkg.files {
        valid_abs_path(&f.path).map_err(|e| anyhow!("file {:?}: {e}", f.path))?;
        valid_mode(&f.path, f.mode)?;
        valid_user_name_or_root("owner", &f.path, &f.owner)?;
        valid_user_name_or_root("group", &f.path, &f.group)?;
    }
    for d in &pkg.dirs {
        valid_abs_path(&d.path).map_err(|e| anyhow!("directory {:?}: {e}", d.path))?;
        valid_mode(&d.path, d.mode)?;
        valid_user_name_or_root("owner", &d.path, &d.owner)?;
        valid_user_name_or_root("group", &d.path, &d.group)?;
    }
    if let Some(s) = &pkg.service {
        let stem = s.unit.strip_suffix(".service").unwrap_or("");
        if stem.is_empty()
            || !stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            bail!("unit {:?} is not NAME.service", s.unit);
        }
        valid_user_name("service user", &s.user)?;
        valid_user_name("service group", &s.group)?;
        valid_abs_path(&s.sysusers_file)
            .map_err(|e| anyhow!("sysusers file {:?}: {e}", s.sysusers_file))?;
        if !s.sysusers_file.starts_with(SYSUSERS_DIR)
            || s.sysusers_file[SYSUSERS_DIR.len()..].contains('/')
            || !s.sysusers_file.ends_with(".conf")
        {
            bail!(
                "the sysusers file {} must be {SYSUSERS_DIR}NAME.conf (systemd-sysusers finds it by name)",
                s.sysusers_file
            );
        }
        if !pkg.files.iter().any(|f| f.path == s.sysusers_file) {
            bail!(
                "the sysusers file {} is not one of the package's files",
                s.sysusers_file
            );
        }
        for p in &s.purge_paths {
            valid_purge_path(pkg, p)?;
        }
    }
    Ok(())
}

fn valid_user_name_or_root(what: &str, path: &str, v: &str) -> Result<()> {
    if v == "root" {
        return Ok(());
    }
    valid_user_name(&format!("{what} of {path}"), v)
}

fn valid_mode(path: &str, mode: u32) -> Result<()> {
    if mode > 0o777 {
        bail!("{path}: mode {mode:o} has setuid/setgid/sticky bits");
    }
    if mode & 0o002 != 0 {
        bail!("{path}: mode {mode:04o} is world-writable");
    }
    Ok(())
}

/// What `postrm purge` may `rm -rf`: a validated absolute path in a place that holds
/// configuration or state (`/etc/X`, `/var/lib/X`, `/var/cache/X`, `/var/log/X`, or below),
/// and never a directory this package shares with others (a parent of its files that it
/// does not own itself, such as `/etc/default`).
fn valid_purge_path(pkg: &Package, p: &str) -> Result<()> {
    valid_abs_path(p).map_err(|e| anyhow!("purge path {p:?}: {e}"))?;
    let depth_ok = ["/etc/", "/var/lib/", "/var/cache/", "/var/log/"]
        .iter()
        .any(|root| p.strip_prefix(root).is_some_and(|rest| !rest.is_empty()));
    if !depth_ok {
        bail!("purge path {p:?}: only paths below /etc, /var/lib, /var/cache or /var/log are removed on purge");
    }
    let own_dirs: BTreeSet<&str> = pkg.dirs.iter().map(|d| d.path.as_str()).collect();
    for f in &pkg.files {
        let mut parent = Path::new(&f.path).parent();
        while let Some(d) = parent {
            let d = d.to_str().unwrap_or("/");
            if d == p && !own_dirs.contains(d) {
                bail!(
                    "purge path {p:?} is a shared directory (it holds {} but the package does not own it)",
                    f.path
                );
            }
            parent = Path::new(d).parent();
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Data

/// A file as it goes into data.tar (the package's files plus the Debian documentation).
struct DataEntry<'a> {
    path: String,
    mode: u32,
    kind: FileKind,
    content: DataContent<'a>,
    size: u64,
    /// Expected sha256 (files from the description), checked while streaming.
    sha256: Option<&'a str>,
}

enum DataContent<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
    File(&'a Path),
}

fn doc_dir(pkg: &Package) -> String {
    format!("/usr/share/doc/{}", pkg.name)
}

/// `signed`: the package carries a debsigs origin signature (one more lintian override).
fn data_entries(pkg: &Package, signed: bool) -> Result<Vec<DataEntry<'_>>> {
    let mut out: Vec<DataEntry<'_>> = Vec::new();
    for f in &pkg.files {
        let content = match &f.content {
            Content::Bytes(b) => {
                if b.len() as u64 != f.size {
                    bail!(
                        "{}: size {} in the description, {} bytes of content",
                        f.path,
                        f.size,
                        b.len()
                    );
                }
                DataContent::Borrowed(b)
            }
            Content::File(p) => DataContent::File(p),
        };
        out.push(DataEntry {
            path: f.path.clone(),
            mode: f.mode,
            kind: f.kind,
            content,
            size: f.size,
            sha256: Some(&f.sha256),
        });
    }
    let doc = doc_dir(pkg);
    let mut extra = vec![
        (
            format!("{doc}/copyright"),
            copyright_text(pkg)?.into_bytes(),
        ),
        (format!("{doc}/changelog.Debian.gz"), changelog_gz(pkg)?),
    ];
    {
        extra.push((
            format!("/usr/share/lintian/overrides/{}", pkg.name),
            lintian_overrides_text(pkg, signed).into_bytes(),
        ));
    }
    for (path, bytes) in extra {
        out.push(DataEntry {
            path,
            mode: 0o644,
            kind: FileKind::Doc,
            size: bytes.len() as u64,
            content: DataContent::Owned(bytes),
            sha256: None,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    for w in out.windows(2) {
        if w[0].path == w[1].path {
            bail!("{} is in the package twice", w[0].path);
        }
    }
    Ok(out)
}

/// A directory in data.tar: mode, owner, group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DirInfo {
    mode: u32,
    owner: String,
    group: String,
}

/// Every directory of the package: `/` (as `./`), every parent of a file (0755 root:root),
/// and the package's own directories with their modes.
fn data_dirs(pkg: &Package, entries: &[DataEntry<'_>]) -> Result<BTreeMap<String, DirInfo>> {
    let root = || DirInfo {
        mode: 0o755,
        owner: "root".into(),
        group: "root".into(),
    };
    let mut dirs: BTreeMap<String, DirInfo> = BTreeMap::new();
    dirs.insert("/".into(), root());
    let add_parents = |path: &str, dirs: &mut BTreeMap<String, DirInfo>| {
        let mut p = Path::new(path).parent();
        while let Some(d) = p {
            let s = d.to_string_lossy().into_owned();
            dirs.entry(s).or_insert_with(root);
            p = d.parent();
        }
    };
    for e in entries {
        add_parents(&e.path, &mut dirs);
    }
    for d in &pkg.dirs {
        add_parents(&d.path, &mut dirs);
    }
    for d in &pkg.dirs {
        if entries.iter().any(|e| e.path == d.path) {
            bail!("{} is both a file and a directory", d.path);
        }
        dirs.insert(
            d.path.clone(),
            DirInfo {
                mode: d.mode,
                owner: d.owner.clone(),
                group: d.group.clone(),
            },
        );
    }
    Ok(dirs)
}

/// dpkg-gencontrol's Installed-Size: each file's size in KiB rounded up, plus 1 KiB for every
/// directory (including the root of the tree).
fn installed_size(entries: &[DataEntry<'_>], dirs: &BTreeMap<String, DirInfo>) -> u64 {
    entries.iter().map(|e| e.size.div_ceil(1024)).sum::<u64>() + dirs.len() as u64
}

/// (path, owner, group, mode) of every entry that is not root:root.
#[derive(Debug, Clone, serde::Serialize)]
struct StatOverride {
    path: String,
    owner: String,
    group: String,
    mode: String,
    #[serde(skip)]
    dir: bool,
}

/// Every file and directory of the package that is not root:root. Only the package's own
/// entries can be: the parents and the documents this writer adds are root's.
fn stat_overrides(pkg: &Package) -> Vec<StatOverride> {
    let files = pkg
        .files
        .iter()
        .map(|f| (&f.path, &f.owner, &f.group, f.mode, false));
    let dirs = pkg
        .dirs
        .iter()
        .map(|d| (&d.path, &d.owner, &d.group, d.mode, true));
    let mut out: Vec<StatOverride> = files
        .chain(dirs)
        .filter(|(_, o, g, _, _)| *o != "root" || *g != "root")
        .map(|(path, owner, group, mode, dir)| StatOverride {
            path: path.clone(),
            owner: owner.clone(),
            group: group.clone(),
            mode: format!("{mode:04o}"),
            dir,
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn tar_header(pkg: &Package, mode: u32, size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(pkg.source_date_epoch);
    h.set_uid(0);
    h.set_gid(0);
    // Cannot fail: both names fit the header field.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

/// `./usr/bin/x` for files, `./usr/bin/` for directories, `./` for the root.
fn tar_path(path: &str, dir: bool) -> String {
    if path == "/" {
        return "./".into();
    }
    if dir {
        format!(".{path}/")
    } else {
        format!(".{path}")
    }
}

/// Append an entry under exactly `path` (the tar crate's own path handling drops the `./`
/// prefix that dpkg-deb writes). Names longer than the header field get a GNU long-name
/// record first, as GNU tar writes it.
fn append<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    pkg: &Package,
    h: &mut tar::Header,
    path: &str,
    data: R,
) -> io::Result<()> {
    let bytes = path.as_bytes();
    let field_len = h.as_old().name.len();
    if bytes.len() > field_len {
        let mut long = tar_header(pkg, 0o644, bytes.len() as u64 + 1, false);
        long.set_entry_type(tar::EntryType::GNULongName);
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_cksum();
        let mut name = bytes.to_vec();
        name.push(0);
        tar.append(&long, &name[..])?;
    }
    let n = bytes.len().min(field_len);
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..n].copy_from_slice(&bytes[..n]);
    h.set_cksum();
    tar.append(h, data)
}

/// A reader that hashes (md5 + sha256) and counts what is read through it.
struct HashingReader<R> {
    inner: R,
    md5: Md5,
    sha256: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.md5.update(&buf[..n]);
        self.sha256.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Write data.tar; returns (path, md5) of every file, sorted by path.
fn write_data_tar(
    dest: &Path,
    pkg: &Package,
    entries: &[DataEntry<'_>],
    dirs: &BTreeMap<String, DirInfo>,
    c: Compression,
) -> Result<Vec<(String, String)>> {
    // Directories and files in one sorted walk, so each directory precedes its contents.
    enum Item<'a> {
        Dir(&'a DirInfo),
        File(&'a DataEntry<'a>),
    }
    let mut items: Vec<(String, Item<'_>)> = dirs
        .iter()
        .map(|(p, d)| (tar_path(p, true), Item::Dir(d)))
        .chain(
            entries
                .iter()
                .map(|e| (tar_path(&e.path, false), Item::File(e))),
        )
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));

    // The tarball's size (headers and padding of 512-byte records, two end records): it sizes
    // the xz dictionary.
    let tar_size: u64 = items
        .iter()
        .map(|(_, item)| match item {
            Item::Dir(_) => 512,
            Item::File(e) => 1024 + e.size.div_ceil(512) * 512,
        })
        .sum::<u64>()
        + 1024;
    let mut tar = tar::Builder::new(Encoder::new(File::create(dest)?, c, tar_size)?);
    let mut sums = Vec::new();
    for (tp, item) in &items {
        match item {
            Item::Dir(d) => {
                let mut h = tar_header(pkg, d.mode, 0, true);
                append(&mut tar, pkg, &mut h, tp, io::empty())?;
            }
            Item::File(e) => {
                let mut h = tar_header(pkg, e.mode, e.size, false);
                let reader: Box<dyn Read> = match &e.content {
                    DataContent::Borrowed(b) => Box::new(*b),
                    DataContent::Owned(b) => Box::new(&b[..]),
                    DataContent::File(p) => Box::new(
                        File::open(p)
                            .with_context(|| format!("{}: {}", e.path, p.display()))?
                            .take(e.size),
                    ),
                };
                let mut hr = HashingReader {
                    inner: reader,
                    md5: Md5::new(),
                    sha256: Sha256::new(),
                    count: 0,
                };
                append(&mut tar, pkg, &mut h, tp, &mut hr)
                    .with_context(|| format!("adding {} to data.tar", e.path))?;
                if hr.count != e.size {
                    bail!(
                        "{}: {} bytes read, {} expected (the file changed or is short)",
                        e.path,
                        hr.count,
                        e.size
                    );
                }
                let sha = hex::encode(hr.sha256.finalize());
                if let Some(want) = e.sha256 {
                    if want != sha {
                        bail!(
                            "{}: content sha256 {sha} differs from the description's {want}",
                            e.path
                        );
                    }
                }
                sums.push((e.path.clone(), hex::encode(hr.md5.finalize())));
            }
        }
    }
    let enc = tar.into_inner()?;
    enc.finish()?.sync_all()?;
    sums.sort();
    Ok(sums)
}

fn write_control_tar(
    dest: &Path,
    pkg: &Package,
    files: &[(String, u32, Vec<u8>)],
    c: Compression,
) -> Result<()> {
    let tar_size: u64 = files
        .iter()
        .map(|(_, _, b)| 1024 + (b.len() as u64).div_ceil(512) * 512)
        .sum::<u64>()
        + 2048;
    let mut tar = tar::Builder::new(Encoder::new(File::create(dest)?, c, tar_size)?);
    let mut h = tar_header(pkg, 0o755, 0, true);
    append(&mut tar, pkg, &mut h, "./", io::empty())?;
    for (name, mode, bytes) in files {
        let mut h = tar_header(pkg, *mode, bytes.len() as u64, false);
        append(&mut tar, pkg, &mut h, &format!("./{name}"), &bytes[..])?;
    }
    let enc = tar.into_inner()?;
    enc.finish()?.sync_all()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Compression

/// The compressor of a tarball member. xz and zstd use their multi-threaded encoders even
/// with one thread: their output depends on the block/job size, not on the thread count.
/// Compression levels of an [`Encoder`] (the .deb and the .rpm payload use different ones).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Levels {
    pub xz: u32,
    pub zstd: i32,
    pub gzip: u32,
}

/// The .deb levels.
const DEB_LEVELS: Levels = Levels {
    xz: XZ_PRESET,
    zstd: ZSTD_LEVEL,
    gzip: GZIP_LEVEL,
};

/// Deterministic streaming compressor (xz and zstd multi-threaded; output independent of the
/// thread count). Shared with the rpm writer's payload.
pub(crate) enum Encoder<W: Write> {
    Xz(liblzma::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(crate::pgzip::ParGzEncoder<W>),
    None(W),
}

/// The xz dictionary for an input of `size` bytes: the next power of two ≥ `size`, between
/// liblzma's minimum (4 KiB) and [`XZ_DICT_MAX`].
pub(crate) fn xz_dict_size(size: u64) -> u32 {
    size.clamp(4096, u64::from(XZ_DICT_MAX))
        .next_power_of_two()
        .min(u64::from(XZ_DICT_MAX)) as u32
}

/// The multi-threaded xz encoder's settings: LZMA2 at `preset` with the dictionary for `size`,
/// blocks of `block_size`, CRC64, and as many of `threads` as fit [`XZ_MEMORY_BUDGET`] (at
/// least one). Nothing here but `threads` depends on the machine, and the thread count does
/// not change the output.
fn xz_builder(
    preset: u32,
    size: u64,
    block_size: u64,
    threads: u32,
) -> Result<liblzma::stream::MtStreamBuilder> {
    let mut opts = liblzma::stream::LzmaOptions::new_preset(preset)
        .map_err(|e| anyhow!("xz preset {preset}: {e}"))?;
    opts.dict_size(xz_dict_size(size));
    let mut filters = liblzma::stream::Filters::new();
    filters.lzma2(&opts);
    // An input smaller than a block is one block whatever the block size (the size itself is
    // not in the output), so a small input does not pay for the full-size buffers.
    let block_size = block_size.min(size.max(4096).next_power_of_two());
    let mut b = liblzma::stream::MtStreamBuilder::new();
    b.filters(filters)
        .block_size(block_size)
        .check(liblzma::stream::Check::Crc64);
    let mut n = 1;
    while n < threads.max(1) {
        b.threads(n + 1);
        if b.memusage() > XZ_MEMORY_BUDGET {
            break;
        }
        n += 1;
    }
    b.threads(n);
    Ok(b)
}

pub(crate) fn threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8) as u32
}

impl<W: Write> Encoder<W> {
    /// `size` is (about) how many bytes will be written: it caps the xz dictionary.
    fn new(w: W, c: Compression, size: u64) -> Result<Encoder<W>> {
        Self::with_levels(w, c, threads(), DEB_LEVELS, size)
    }

    pub(crate) fn with_levels(
        w: W,
        c: Compression,
        threads: u32,
        levels: Levels,
        size: u64,
    ) -> Result<Encoder<W>> {
        Ok(match c {
            Compression::Xz => {
                let stream = xz_builder(levels.xz, size, XZ_BLOCK_SIZE, threads)?
                    .encoder()
                    .context("initialising the xz encoder")?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(w, stream))
            }
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, levels.zstd)?;
                e.multithread(threads)?;
                e.include_checksum(true)?;
                Encoder::Zstd(e)
            }
            Compression::Gzip => Encoder::Gzip(crate::pgzip::ParGzEncoder::new(w, levels.gzip)),
            Compression::None => Encoder::None(w),
        })
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Xz(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Xz(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Xz(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// Deterministic gzip (like `gzip -9n`): no name, mtime 0, Unix, maximum compression.
pub fn gzip_bytes(data: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::GzBuilder::new()
        .operating_system(3)
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    e.write_all(data)?;
    Ok(e.finish()?)
}

// ---------------------------------------------------------------------------------------------
// Control file and documents

/// Greedy word wrap to `width` columns; the first line starts with `first`, the others with
/// `rest`.
fn wrap(text: &str, width: usize, first: &str, rest: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::replace(&mut cur, rest.to_string()));
            empty = true;
        }
        if !empty {
            cur.push(' ');
        }
        cur.push_str(word);
        empty = false;
    }
    if !empty {
        lines.push(cur);
    }
    lines
}

/// The extended description in Debian's format: every line starts with one space, an empty
/// line is ` .`. Lines that start with white space are kept verbatim (Debian shows them
/// as-is); others are wrapped to 80 columns. Because every line starts with a space, no line
/// of the description can ever be read as a field of its own.
pub fn format_description(summary: &str, description: &str) -> String {
    let mut out = format!("Description: {summary}\n");
    let lines: Vec<&str> = description.lines().map(str::trim_end).collect();
    let start = lines.iter().position(|l| !l.is_empty()).unwrap_or(0);
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    let mut prev_empty = false;
    let mut para = String::new();
    let flush = |para: &mut String, out: &mut String| {
        for l in wrap(para, 80, " ", " ") {
            out.push_str(&l);
            out.push('\n');
        }
        para.clear();
    };
    for l in &lines[start..end.max(start)] {
        if l.is_empty() {
            flush(&mut para, &mut out);
            if !prev_empty {
                out.push_str(" .\n");
            }
            prev_empty = true;
            continue;
        }
        prev_empty = false;
        if l.starts_with([' ', '\t']) {
            flush(&mut para, &mut out);
            // Verbatim line (tabs expanded: dpkg and apt show them inconsistently).
            out.push(' ');
            out.push_str(&l.replace('\t', "    "));
            out.push('\n');
        } else {
            if !para.is_empty() {
                para.push(' ');
            }
            para.push_str(l);
        }
    }
    flush(&mut para, &mut out);
    out
}

fn control_text(pkg: &Package, installed_size: u64) -> String {
    let mut c = String::new();
    c.push_str(&format!("Package: {}\n", pkg.name));
    c.push_str(&format!("Version: {}-{}\n", pkg.version, pkg.revision));
    c.push_str(&format!("Architecture: {}\n", pkg.arch.deb()));
    c.push_str(&format!("Maintainer: {}\n", pkg.maintainer));
    c.push_str(&format!("Installed-Size: {installed_size}\n"));
    if !pkg.depends.is_empty() {
        c.push_str(&format!("Depends: {}\n", pkg.depends.join(", ")));
    }
    // Conflicts, not Replaces: the distribution's packages ship the same program under other
    // file names (prometheus-node-exporter, /usr/bin/prometheus-node-exporter) and the same
    // port, so the two must not be installed together, but no file of theirs is taken over.
    if !pkg.conflicts.is_empty() {
        c.push_str(&format!("Conflicts: {}\n", pkg.conflicts.join(", ")));
    }
    c.push_str("Section: net\n");
    c.push_str("Priority: optional\n");
    c.push_str(&format!("Homepage: {}\n", pkg.homepage));
    c.push_str(&format_description(&pkg.summary, &pkg.description));
    c
}

/// The upstream project's name, for `Upstream-Name:`: the homepage's last path segment.
fn upstream_name(pkg: &Package) -> String {
    pkg.homepage
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty() && !s.contains(':'))
        .unwrap_or(&pkg.name)
        .to_string()
}

/// Licenses whose full text Debian ships in /usr/share/common-licenses: (SPDX, DEP-5 short
/// name, file name there).
const COMMON_LICENSES: &[(&str, &str, &str)] = &[
    ("Apache-2.0", "Apache-2.0", "Apache-2.0"),
    ("GPL-2.0-only", "GPL-2", "GPL-2"),
    ("GPL-2.0-or-later", "GPL-2+", "GPL-2"),
    ("GPL-3.0-only", "GPL-3", "GPL-3"),
    ("GPL-3.0-or-later", "GPL-3+", "GPL-3"),
    ("LGPL-2.1-only", "LGPL-2.1", "LGPL-2.1"),
    ("LGPL-2.1-or-later", "LGPL-2.1+", "LGPL-2.1"),
    ("LGPL-3.0-only", "LGPL-3", "LGPL-3"),
    ("LGPL-3.0-or-later", "LGPL-3+", "LGPL-3"),
    ("MPL-2.0", "MPL-2.0", "MPL-2.0"),
    ("CC0-1.0", "CC0-1.0", "CC0-1.0"),
];

/// Text as a DEP-5 field continuation: each line indented by one space, empty lines ` .`.
fn dep5_block(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.trim_end();
            if l.is_empty() {
                " .\n".to_string()
            } else {
                format!(" {l}\n")
            }
        })
        .collect()
}

fn read_license(c: &Content) -> Result<String> {
    let bytes = match c {
        Content::Bytes(b) => b.clone(),
        Content::File(p) => {
            let mut v = Vec::new();
            File::open(p)
                .with_context(|| format!("{}", p.display()))?
                .take(MAX_LICENSE_TEXT + 1)
                .read_to_end(&mut v)?;
            if v.len() as u64 > MAX_LICENSE_TEXT {
                bail!("{}: license text larger than 1 MiB", p.display());
            }
            v
        }
    };
    let s = String::from_utf8(bytes).map_err(|_| anyhow!("the license text is not UTF-8"))?;
    if let Some(ch) = s
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r' | '\u{c}'))
    {
        bail!(
            "the license text contains the control character U+{:04X}",
            ch as u32
        );
    }
    Ok(s.replace(['\r', '\u{c}'], "").replace('\t', "    "))
}

/// debian/copyright in the machine-readable format (DEP-5).
fn copyright_text(pkg: &Package) -> Result<String> {
    let (short, body) = match COMMON_LICENSES.iter().find(|l| l.0 == pkg.license) {
        Some(&(_, short, file)) => {
            let body = if file == "Apache-2.0" {
                "Licensed under the Apache License, Version 2.0 (the \"License\");\n\
                 you may not use this file except in compliance with the License.\n\
                 You may obtain a copy of the License at\n\
                 \n\
                 http://www.apache.org/licenses/LICENSE-2.0\n\
                 \n\
                 Unless required by applicable law or agreed to in writing, software\n\
                 distributed under the License is distributed on an \"AS IS\" BASIS,\n\
                 WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.\n\
                 See the License for the specific language governing permissions and\n\
                 limitations under the License.\n\
                 \n\
                 On Debian systems, the complete text of the Apache License, Version 2.0\n\
                 can be found in \"/usr/share/common-licenses/Apache-2.0\"."
                    .to_string()
            } else {
                format!(
                    "On Debian systems, the complete text of this license can be found in\n\
                     \"/usr/share/common-licenses/{file}\"."
                )
            };
            (short.to_string(), body)
        }
        None => {
            let text = pkg.upstream_license.as_ref().ok_or_else(|| {
                anyhow!(
                    "license {} is not in /usr/share/common-licenses and the release ships no \
                     license text to put into the copyright file",
                    pkg.license
                )
            })?;
            let short = if pkg.license == "MIT" {
                "Expat".to_string()
            } else {
                pkg.license.clone()
            };
            (short, read_license(text)?)
        }
    };
    Ok(format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: {}\n\
         Source: {}\n\
         \n\
         Files: *\n\
         Copyright: {}\n\
         License: {short}\n\
         \n\
         License: {short}\n\
         {}",
        upstream_name(pkg),
        pkg.homepage,
        pkg.copyright_holder,
        dep5_block(&body)
    ))
}

/// The Debian changelog (one entry), uncompressed.
pub fn changelog_text(pkg: &Package) -> String {
    let mut s = format!(
        "{} ({}-{}) unstable; urgency=medium\n\n",
        pkg.name, pkg.version, pkg.revision
    );
    let default = [format!("Package {} {}.", pkg.name, pkg.version)];
    let items: &[String] = if pkg.changelog.is_empty() {
        &default
    } else {
        &pkg.changelog
    };
    for item in items {
        for l in wrap(item, 78, "  * ", "    ") {
            s.push_str(&l);
            s.push('\n');
        }
    }
    s.push_str(&format!(
        "\n -- {}  {}\n",
        pkg.maintainer,
        crate::date::rfc2822(pkg.source_date_epoch, "+0000")
    ));
    s
}

fn changelog_gz(pkg: &Package) -> Result<Vec<u8>> {
    gzip_bytes(changelog_text(pkg).as_bytes())
}

/// Overrides this writer adds for what is true of every package it builds.
fn writer_overrides(pkg: &Package, signed: bool) -> Vec<(String, String)> {
    let mut out = vec![(
        format!(
            "initial-upload-closes-no-bugs [{}/changelog.Debian.gz:1]",
            doc_dir(pkg).trim_start_matches('/')
        ),
        "built outside Debian's archive: there is no ITP bug to close".to_string(),
    )];
    if signed {
        // deb(5) allows extra members whose names start with `_` after data.tar; Debian's
        // archive defines none, so lintian's Debian profile reports every one.
        out.push((
            format!(
                "misplaced-extra-member-in-deb {} (unexpected _member at position 3)",
                crate::debsig::ORIGIN_MEMBER
            ),
            "debsigs origin signature (debsig-verify), appended after data.tar as debsigs does"
                .to_string(),
        ));
    }
    // Entries whose owner is applied by dpkg-statoverride carry modes meant for that owner.
    for o in stat_overrides(pkg) {
        let (tag, standard, suffix) = if o.dir {
            ("non-standard-dir-perm", "0755", "/")
        } else if o.mode.ends_with(['1', '3', '5', '7']) {
            ("non-standard-file-perm", "0755", "")
        } else {
            ("non-standard-file-perm", "0644", "")
        };
        if o.mode != standard {
            out.push((
                format!(
                    "{tag} {} != {standard} [{}{suffix}]",
                    o.mode,
                    o.path.trim_start_matches('/')
                ),
                format!(
                    "for {}:{} only; postinst applies that owner with dpkg-statoverride",
                    o.owner, o.group
                ),
            ));
        }
    }
    if !pkg
        .copyright_holder
        .split(|c: char| !c.is_ascii_digit())
        .any(|w| w.len() == 4)
    {
        out.push((
            "copyright-without-copyright-notice".into(),
            format!(
                "upstream's notice names no years; the holder is {:?}",
                pkg.copyright_holder
            ),
        ));
    }
    out
}

fn lintian_overrides_text(pkg: &Package, signed: bool) -> String {
    let mut s = String::new();
    for (tag, reason) in pkg
        .lintian_overrides
        .iter()
        .chain(&writer_overrides(pkg, signed))
    {
        s.push_str(&format!("# {reason}\n{}: {tag}\n", pkg.name));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Maintainer scripts

/// The template context of the maintainer scripts.
fn script_context(pkg: &Package, overrides: &[StatOverride]) -> serde_json::Value {
    use serde_json::json;
    let service = pkg.service.as_ref().map(|s| {
        let stem = s.unit.trim_end_matches(".service");
        json!({
            "unit": s.unit,
            "user": s.user,
            "group": s.group,
            "gecos": format!("{stem} service user"),
            "sysusers_file": s.sysusers_file,
            "sysusers_name": s.sysusers_file.rsplit('/').next().unwrap_or_default(),
            "enable_on_install": s.enable_on_install,
            "restart_on_upgrade": s.restart_on_upgrade,
        })
    });
    let purge_paths: Vec<&str> = pkg
        .service
        .iter()
        .flat_map(|s| s.purge_paths.iter().map(String::as_str))
        .collect();
    json!({
        "package": pkg.name,
        "service": service,
        "statoverrides": overrides,
        "purge_paths": purge_paths,
    })
}

/// (name, text) of each maintainer script; none when there is nothing to do.
fn render_scripts(
    pkg: &Package,
    t: &Templates,
    overrides: &[StatOverride],
) -> Result<Vec<(String, String)>> {
    if pkg.service.is_none() && overrides.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = script_context(pkg, overrides);
    let mut out = Vec::new();
    for name in SCRIPTS {
        let text = t.render(&format!("deb/{name}"), &ctx)?;
        if !text.starts_with("#!/bin/sh\n") {
            bail!("templates/deb/{name}.hbs must start with #!/bin/sh");
        }
        out.push((name.to_string(), text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_lines_never_start_a_field() {
        let d = format_description("S", "first line\nDepends: evil\n\n\n  verbatim\n.\n\nlast");
        assert_eq!(
            d,
            "Description: S\n first line Depends: evil\n .\n   verbatim\n .\n .\n last\n"
        );
        for l in d.lines().skip(1) {
            assert!(l.starts_with(' '), "{l:?}");
        }
    }

    #[test]
    fn relations() {
        valid_relation("libc6 (>= 2.34)").unwrap();
        valid_relation("aa | bb (<< 1:2.0-1)").unwrap();
        assert!(valid_relation("libc6\nEvil: x").is_err());
        assert!(valid_relation("libc6 (>= 2.34), x").is_err());
        assert!(valid_relation("libc6 (~ 2)").is_err());
    }

    fn compress(c: Compression, threads: u32, data: &[u8]) -> Vec<u8> {
        let mut e =
            Encoder::with_levels(Vec::new(), c, threads, DEB_LEVELS, data.len() as u64).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn mixed_data(n: u32) -> Vec<u8> {
        (0u32..n)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3f)
            .collect()
    }

    #[test]
    fn compression_does_not_depend_on_the_thread_count() {
        let data = mixed_data(3_000_000);
        for c in [Compression::Xz, Compression::Zstd] {
            assert_eq!(
                compress(c, 1, &data),
                compress(c, 4, &data),
                "{c:?} output differs with the thread count"
            );
        }
        // Many xz blocks (64 KiB here; the real size would make the test slow), so that
        // several threads really share one stream.
        let xz = |threads: u32| {
            let b = xz_builder(XZ_PRESET, data.len() as u64, 64 << 10, threads).unwrap();
            let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), b.encoder().unwrap());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let one = xz(1);
        assert_eq!(one, xz(2), "xz output differs between 1 and 2 threads");
        assert_eq!(one, xz(8), "xz output differs between 1 and 8 threads");
        let mut back = Vec::new();
        liblzma::read::XzDecoder::new_multi_decoder(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data, "xz round trip");
    }

    #[test]
    fn xz_memory_is_bounded_and_the_dictionary_fits_the_input() {
        assert_eq!(xz_dict_size(0), 4096);
        assert_eq!(xz_dict_size(5000), 8192);
        assert_eq!(xz_dict_size(300 << 10), 512 << 10);
        assert_eq!(xz_dict_size(1 << 20), 1 << 20);
        assert_eq!(xz_dict_size(1 << 30), XZ_DICT_MAX);
        // A 1 GiB input on a 64-core machine: liblzma's own estimate stays in the budget, and
        // still uses two threads (both cores of a small builder).
        let b = xz_builder(XZ_PRESET, 1 << 30, XZ_BLOCK_SIZE, 64).unwrap();
        let used = b.memusage();
        assert!(used <= XZ_MEMORY_BUDGET, "{used} bytes");
        let two = xz_builder(XZ_PRESET, 1 << 30, XZ_BLOCK_SIZE, 2).unwrap();
        assert_eq!(two.memusage(), used, "two threads fit the budget");
        let one = xz_builder(XZ_PRESET, 1 << 30, XZ_BLOCK_SIZE, 1).unwrap();
        assert!(one.memusage() < used);
        // A small input needs little.
        let small = xz_builder(XZ_PRESET, 100 << 10, XZ_BLOCK_SIZE, 2).unwrap();
        assert!(small.memusage() < 8 << 20, "{}", small.memusage());
        eprintln!(
            "xz memusage: 1 GiB input {} MiB (2 threads), 1 thread {} MiB, 100 KiB input {} MiB",
            used >> 20,
            one.memusage() >> 20,
            small.memusage() >> 20
        );
    }
}
