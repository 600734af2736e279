//! RPM writer: a [`Package`] becomes `<name>-<version>-<release>.<arch>.rpm` through the `rpm`
//! crate (v4 format), with scriptlets rendered from `templates/rpm/*.hbs`.
//!
//! Reproducibility: build time, every file mtime and the signature time are the package's
//! `source_date_epoch`; the build host is a fixed string; owners are names, not host ids;
//! the crate sorts files and dependencies. The only things the crate adds by itself are
//! deterministic: `name = EVR` and `name(x86-64) = EVR` provides, `config(name)` provides and
//! requires (the package has %config files), `user()`/`group()` provides from the sysusers.d
//! file (what rpm >= 4.19 generates), a `group()` recommends for files owned by a non-root
//! group, `rpmlib(...)` requires and `/bin/sh` interpreter requires for each scriptlet.
//!
//! Streaming: the crate builds the header from the description with every on-disk file as an
//! empty stub (it reads nothing large and holds a tiny payload); this module then streams the
//! cpio payload itself (SVR4 `newc`, the header's file order and inodes) through the
//! multi-threaded compressor into a temporary file while hashing each file (FILEDIGESTS), the
//! uncompressed stream (PAYLOADSHA256ALT) and the compressed one (PAYLOADSHA256), puts the real
//! sizes and digests into the header, computes the signature header (header SHA-256/SHA-1,
//! header+payload size, RSA header signature) and writes lead, signature, header and payload.
//! Peak memory is the compressor's own state, independent of the file sizes.

use std::collections::BTreeSet;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::Digest;

use anyhow::{anyhow, bail, Context, Result};
use rpm::{BuildConfig, CompressionWithLevel, Dependency, FileOptions, PackageBuilder, Scriptlet};

use crate::package::{Compression, Content, FileKind, Package, Written};
use crate::render::Templates;

/// The build host written into every package: never the real host name.
pub const BUILD_HOST: &str = "reproducible.observability-stack.invalid";
/// RPM group (legacy tag; rpm still writes it).
pub const GROUP: &str = "System Environment/Daemons";
/// Where rpm's %license puts license texts.
pub const LICENSE_DIR: &str = "/usr/share/licenses";

/// Payload compression levels: rpmbuild's usual choices, not the crate's slowest ones.
fn compression(c: Compression) -> CompressionWithLevel {
    match c {
        Compression::Xz => CompressionWithLevel::Xz(PAYLOAD_LEVELS.xz),
        Compression::Zstd => CompressionWithLevel::Zstd(PAYLOAD_LEVELS.zstd),
        Compression::Gzip => CompressionWithLevel::Gzip(PAYLOAD_LEVELS.gzip),
        Compression::None => CompressionWithLevel::None,
    }
}

/// File name of the package: `<name>-<version>-<revision>.<arch>.rpm`.
pub fn file_name(pkg: &Package) -> String {
    format!(
        "{}-{}-{}.{}.rpm",
        pkg.name,
        pkg.version,
        pkg.revision,
        pkg.arch.rpm()
    )
}

/// Write the unsigned package into `out_dir`.
pub fn write_rpm(pkg: &Package, t: &Templates, out_dir: &Path, c: Compression) -> Result<Written> {
    write_rpm_signed(pkg, t, out_dir, c, None::<&rpm::signature::pgp::Signer>)
}

/// Write the package into `out_dir`, signed with `signer` when given (header signature, made
/// at `source_date_epoch`, so a signed package is reproducible too).
///
/// The payload is streamed: the cpio archive goes through the (multi-threaded) compressor into
/// a temporary file while the file digests, the uncompressed digest (PAYLOADDIGESTALT) and the
/// compressed digest (PAYLOADDIGEST) are computed; only then are the lead, the signature header
/// and the header written, and the payload copied after them. Memory stays bounded by the
/// compressor's own state, whatever the size of the files.
pub fn write_rpm_signed<S>(
    pkg: &Package,
    t: &Templates,
    out_dir: &Path,
    c: Compression,
    signer: Option<&S>,
) -> Result<Written>
where
    S: rpm::signature::Signing<Signature = Vec<u8>>,
{
    let what = || format!("rpm {} {} {}", pkg.name, pkg.version, pkg.arch);
    let name = file_name(pkg);
    let path = out_dir.join(&name);

    // The crate builds the header from the description with every on-disk file as an empty
    // stub (so it reads and holds nothing large); the stubs' sizes and digests are then put in.
    let mut b = builder(pkg, t, c).with_context(what)?;
    let stub = b.build().map_err(|e| anyhow!("{e}")).with_context(what)?;

    let payload = tempfile::tempfile_in(out_dir)
        .with_context(|| format!("creating a temporary file in {}", out_dir.display()))?;
    let streamed = write_payload(pkg, &stub.metadata.header, &payload, c).with_context(what)?;
    let header = patched_header(&stub.metadata.header, &streamed).with_context(what)?;

    let mut metadata = rpm::PackageMetadata {
        lead: stub.metadata.lead,
        signature: stub.metadata.signature,
        header,
    };
    let header_bytes = metadata.header_bytes().map_err(|e| anyhow!("{e}"))?;
    metadata.signature = rpm::SignatureHeaderBuilder::new()
        .format(rpm::RpmFormat::V4)
        .set_content_length(header_bytes.len() as u64 + streamed.compressed_size)
        .calculate_digests(&header_bytes)
        .build()
        .map_err(|e| anyhow!("{e}"))
        .with_context(what)?;
    let metadata = match signer {
        None => metadata,
        Some(s) => {
            let sde = u32::try_from(pkg.source_date_epoch).expect("checked by builder");
            let now: u32 = rpm::Timestamp::now().into();
            let mut p = rpm::Package {
                metadata,
                payload: Vec::new(),
            };
            p.sign_with_timestamp(s, sde.min(now))
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("signing {}", what()))?;
            p.metadata
        }
    };

    let tmp = tempfile::NamedTempFile::new_in(out_dir)
        .with_context(|| format!("creating a temporary file in {}", out_dir.display()))?;
    let mut w = crate::digest::HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
    metadata
        .write(&mut w)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("writing {}", path.display()))?;
    let mut payload = payload;
    payload.seek(SeekFrom::Start(0))?;
    let copied =
        io::copy(&mut payload, &mut w).with_context(|| format!("writing {}", path.display()))?;
    if copied != streamed.compressed_size {
        bail!(
            "{}: payload temporary file holds {copied} bytes, expected {}",
            path.display(),
            streamed.compressed_size
        );
    }
    let (inner, sha256, size) = w.finish();
    inner
        .into_inner()
        .map_err(|e| anyhow!("{}: {}", path.display(), e.error()))?
        .sync_all()?;
    // A package is published: readable by everyone (a temporary file starts out 0600).
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(&path)
        .map_err(|e| anyhow!("{}: {}", path.display(), e.error))?;
    Ok(Written {
        path,
        file_name: name,
        size,
        sha256,
    })
}

/// Payload compression levels: rpmbuild's usual choices (`w6.xzdio`, `w19.zstdio`,
/// `w9.gzdio`), written into PAYLOADFLAGS by the crate.
const PAYLOAD_LEVELS: crate::deb::Levels = crate::deb::Levels {
    xz: 6,
    zstd: 19,
    gzip: 9,
};

/// What streaming the payload found out: per header file index, the size and sha256 of
/// regular files; digests of the uncompressed and the compressed stream.
struct Streamed {
    files: Vec<Option<(u64, String)>>,
    raw_sha256: String,
    compressed_sha256: String,
    compressed_size: u64,
}

/// Where the bytes of each packaged path come from.
fn sources(pkg: &Package) -> std::collections::BTreeMap<String, &Content> {
    let mut m: std::collections::BTreeMap<String, &Content> = pkg
        .files
        .iter()
        .map(|f| (f.path.clone(), &f.content))
        .collect();
    if let Some(l) = &pkg.upstream_license {
        m.entry(format!("{LICENSE_DIR}/{}/LICENSE", pkg.name))
            .or_insert(l);
    }
    m
}

/// Writes one SVR4 `newc` cpio header (+ name, padded to 4 bytes).
fn cpio_header(w: &mut impl Write, name: &str, f: [u32; 6], size: u32) -> io::Result<()> {
    let [ino, mode, nlink, mtime, uid, gid] = f;
    let namesize = name.len() + 1;
    let mut h = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
         {:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 0, 0, 0
    )
    .into_bytes();
    h.extend_from_slice(name.as_bytes());
    h.push(0);
    while h.len() % 4 != 0 {
        h.push(0);
    }
    w.write_all(&h)
}

fn pad4(w: &mut impl Write, len: u64) -> io::Result<()> {
    let pad = (4 - (len % 4) as usize) % 4;
    w.write_all(&[0u8; 3][..pad])
}

/// Streams the cpio payload of the files the stub header lists, in its order, into `out`.
fn write_payload(
    pkg: &Package,
    header: &rpm::Header<rpm::IndexTag>,
    out: &std::fs::File,
    c: Compression,
) -> Result<Streamed> {
    use rpm::IndexTag as T;
    let err = |e: rpm::Error| anyhow!("reading the built header: {e}");
    let basenames = header
        .get_entry_data_as_string_array(T::RPMTAG_BASENAMES)
        .map_err(err)?;
    let dirnames = header
        .get_entry_data_as_string_array(T::RPMTAG_DIRNAMES)
        .map_err(err)?;
    let dirindexes = header
        .get_entry_data_as_u32_array(T::RPMTAG_DIRINDEXES)
        .map_err(err)?;
    let modes = header
        .get_entry_data_as_u16_array(T::RPMTAG_FILEMODES)
        .map_err(err)?;
    let inodes = header
        .get_entry_data_as_u32_array(T::RPMTAG_FILEINODES)
        .map_err(err)?;
    let mtimes = header
        .get_entry_data_as_u32_array(T::RPMTAG_FILEMTIMES)
        .map_err(err)?;
    let src = sources(pkg);

    let file = crate::digest::HashingWriter::new(BufWriter::with_capacity(1 << 20, out));
    // About the cpio archive's size (a header per entry, the license text): it sizes the xz
    // dictionary.
    let license = match &pkg.upstream_license {
        Some(Content::Bytes(b)) => b.len() as u64,
        Some(Content::File(p)) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        None => 0,
    };
    let cpio_size = pkg.installed_size() + license + 512 * (basenames.len() as u64 + 1);
    let enc = crate::deb::Encoder::with_levels(
        file,
        c,
        crate::deb::threads(),
        PAYLOAD_LEVELS,
        cpio_size,
    )?;
    let mut raw = crate::digest::HashingWriter::new(enc);
    let mut files = Vec::with_capacity(basenames.len());
    let mut buf = vec![0u8; 1 << 20];
    for (i, base) in basenames.iter().enumerate() {
        let dir = dirindexes
            .get(i)
            .and_then(|&d| dirnames.get(d as usize))
            .ok_or_else(|| anyhow!("header file {i}: no directory"))?;
        let path = format!("{dir}{base}");
        let mode = u32::from(modes[i]);
        let regular = mode & 0o170000 == 0o100000;
        let meta = [inodes[i], mode, 1, mtimes[i], 0, 0];
        if !regular {
            cpio_header(&mut raw, &format!(".{path}"), meta, 0)?;
            files.push(None);
            continue;
        }
        let content = src
            .get(&path)
            .ok_or_else(|| anyhow!("header file {path} has no content in the package"))?;
        let (size, digest) = match content {
            Content::Bytes(bytes) => {
                let size =
                    u32::try_from(bytes.len()).map_err(|_| anyhow!("{path}: larger than 4 GiB"))?;
                cpio_header(&mut raw, &format!(".{path}"), meta, size)?;
                raw.write_all(bytes)?;
                (bytes.len() as u64, crate::digest::sha256_hex(bytes))
            }
            Content::File(p) => {
                let mut f = std::fs::File::open(p)
                    .with_context(|| format!("reading {} for {path}", p.display()))?;
                let len = f.metadata()?.len();
                let size = u32::try_from(len).map_err(|_| {
                    anyhow!(
                        "{} ({path}): {len} bytes; rpm v4 file sizes are 32-bit",
                        p.display()
                    )
                })?;
                cpio_header(&mut raw, &format!(".{path}"), meta, size)?;
                let mut h = sha2::Sha256::new();
                let mut n = 0u64;
                loop {
                    let k = f
                        .read(&mut buf)
                        .with_context(|| format!("reading {}", p.display()))?;
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                    if n > len {
                        break;
                    }
                    h.update(&buf[..k]);
                    raw.write_all(&buf[..k])?;
                }
                if n != len {
                    bail!(
                        "{} ({path}) changed while it was packaged: {len} bytes, then {n}",
                        p.display()
                    );
                }
                (len, hex::encode(h.finalize()))
            }
        };
        pad4(&mut raw, size)?;
        files.push(Some((size, digest)));
    }
    cpio_header(&mut raw, "TRAILER!!!", [0, 0, 1, 0, 0, 0], 0)?;
    let (enc, raw_sha256, _) = raw.finish();
    let file = enc.finish().context("finishing the payload compression")?;
    let (bw, compressed_sha256, compressed_size) = file.finish();
    bw.into_inner()
        .map_err(|e| anyhow!("writing the payload: {}", e.error()))?;
    Ok(Streamed {
        files,
        raw_sha256,
        compressed_sha256,
        compressed_size,
    })
}

/// The stub header with the real file sizes and digests, installed size and payload digests.
fn patched_header(
    stub: &rpm::Header<rpm::IndexTag>,
    s: &Streamed,
) -> Result<rpm::Header<rpm::IndexTag>> {
    use rpm::{IndexData, IndexTag as T};
    let mut entries = stub
        .get_all_entries()
        .map_err(|e| anyhow!("reading the built header: {e}"))?;
    let total: u64 = s.files.iter().flatten().map(|(n, _)| n).sum();
    let total = u32::try_from(total)
        .map_err(|_| anyhow!("{total} bytes of files: rpm v4 sizes are 32-bit"))?;
    let mut seen = BTreeSet::new();
    for (tag, data) in entries.iter_mut() {
        let t = *tag;
        match data {
            IndexData::Int32(v) if t == T::RPMTAG_FILESIZES as u32 => {
                for (x, f) in v.iter_mut().zip(&s.files) {
                    if let Some((n, _)) = f {
                        *x = u32::try_from(*n).expect("checked while streaming");
                    }
                }
            }
            IndexData::Int32(v) if t == T::RPMTAG_SIZE as u32 => *v = vec![total],
            IndexData::StringArray(v) if t == T::RPMTAG_FILEDIGESTS as u32 => {
                for (x, f) in v.iter_mut().zip(&s.files) {
                    if let Some((_, d)) = f {
                        x.clone_from(d);
                    }
                }
            }
            IndexData::StringArray(v) if t == T::RPMTAG_PAYLOADSHA256 as u32 => {
                *v = vec![s.compressed_sha256.clone()]
            }
            IndexData::StringArray(v) if t == T::RPMTAG_PAYLOADSHA256ALT as u32 => {
                *v = vec![s.raw_sha256.clone()]
            }
            _ => continue,
        }
        seen.insert(t);
    }
    for t in [
        T::RPMTAG_FILESIZES,
        T::RPMTAG_SIZE,
        T::RPMTAG_FILEDIGESTS,
        T::RPMTAG_PAYLOADSHA256,
        T::RPMTAG_PAYLOADSHA256ALT,
    ] {
        if !seen.contains(&(t as u32)) {
            bail!("the built header has no {t:?} of the expected type");
        }
    }
    let region = T::RPMTAG_HEADERIMMUTABLE as u32;
    Ok(rpm::Header::from_entries(
        entries
            .into_iter()
            .filter(|(t, _)| *t != region)
            .map(|(t, d)| rpm::HeaderEntry::new(t, d)),
        T::RPMTAG_HEADERIMMUTABLE,
    ))
}

/// A value that lands in a one-line header tag or a dependency.
fn one_line(field: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.chars().any(|c| c.is_control()) {
        bail!("{field} {v:?}: empty or contains a control character");
    }
    Ok(())
}

/// A dependency name: one token, no rich (`(…)`-first) or versioned syntax.
fn dep_name(field: &str, v: &str) -> Result<()> {
    one_line(field, v)?;
    if v.chars().any(char::is_whitespace) || v.starts_with('(') {
        bail!("{field} {v:?}: not a plain dependency name");
    }
    Ok(())
}

fn builder(pkg: &Package, t: &Templates, c: Compression) -> Result<PackageBuilder> {
    let sde = u32::try_from(pkg.source_date_epoch).map_err(|_| {
        anyhow!(
            "SOURCE_DATE_EPOCH {} does not fit rpm's 32-bit timestamps",
            pkg.source_date_epoch
        )
    })?;
    for (f, v) in [
        ("summary", &pkg.summary),
        ("license", &pkg.license),
        ("homepage", &pkg.homepage),
        ("maintainer", &pkg.maintainer),
    ] {
        one_line(f, v)?;
    }
    let release = pkg.revision.to_string();
    let mut b = PackageBuilder::new(
        &pkg.name,
        &pkg.version,
        &pkg.license,
        pkg.arch.rpm(),
        &pkg.summary,
    );
    b.using_config(
        BuildConfig::v4()
            .source_date(sde)
            .compression(compression(c)),
    )
    .release(release.clone())
    .description(pkg.description.trim_end())
    .url(pkg.homepage.clone())
    .packager(pkg.maintainer.clone())
    .vendor(pkg.maintainer.clone())
    .group(GROUP)
    .build_host(BUILD_HOST);
    for line in &pkg.changelog {
        one_line("changelog", line)?;
    }
    if !pkg.changelog.is_empty() {
        let text: Vec<String> = pkg.changelog.iter().map(|l| format!("- {l}")).collect();
        b.add_changelog_entry(
            format!("{} - {}-{}", pkg.maintainer, pkg.version, release),
            text.join("\n"),
            sde,
        );
    }

    // Files. Directories that hold %license/%doc files are owned too, as rpmbuild does.
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let mut paths: BTreeSet<&str> = BTreeSet::new();
    for f in &pkg.files {
        one_line("file path", &f.path)?;
        if !f.path.starts_with('/') || f.path.split('/').any(|s| s == "..") {
            bail!("file path {:?}: not absolute and normal", f.path);
        }
        if !paths.insert(&f.path) {
            bail!("file {:?} listed twice", f.path);
        }
        let mode = u16::try_from(f.mode & 0o7777).expect("masked");
        let mut o = FileOptions::new(f.path.clone())
            .permissions(mode)
            .user(f.owner.clone())
            .group(f.group.clone())
            .modified_at(sde.into());
        o = match f.kind {
            FileKind::Regular => o,
            FileKind::Config => o.config().noreplace(),
            FileKind::Doc => o.doc(),
            FileKind::License => o.license(),
        };
        if matches!(f.kind, FileKind::Doc | FileKind::License) {
            if let Some((d, _)) = f.path.rsplit_once('/') {
                if d.starts_with("/usr/share/doc/") || d.starts_with(&format!("{LICENSE_DIR}/")) {
                    dirs.insert(d.to_string());
                }
            }
        }
        // The crate reads sysusers.d files for its user()/group() provides: never a stub.
        let stub = !f.path.starts_with("/usr/lib/sysusers.d/");
        add_content(&mut b, &f.content, o, stub)
            .with_context(|| format!("adding {} to the package", f.path))?;
    }
    if let Some(l) = &pkg.upstream_license {
        let dir = format!("{LICENSE_DIR}/{}", pkg.name);
        let path = format!("{dir}/LICENSE");
        if !paths.contains(path.as_str()) {
            let o = FileOptions::new(path.clone())
                .permissions(0o644)
                .user("root")
                .group("root")
                .modified_at(sde.into())
                .license();
            add_content(&mut b, l, o, true)
                .with_context(|| format!("adding {path} to the package"))?;
            dirs.insert(dir);
        }
    }
    for d in &pkg.dirs {
        one_line("directory", &d.path)?;
        dirs.remove(&d.path);
        let mode = u16::try_from(d.mode & 0o7777).expect("masked");
        b.with_dir_entry(
            FileOptions::dir(d.path.clone())
                .permissions(mode)
                .user(d.owner.clone())
                .group(d.group.clone())
                .modified_at(sde.into()),
        )
        .map_err(|e| anyhow!("directory {}: {e}", d.path))?;
    }
    for d in dirs {
        b.with_dir_entry(
            FileOptions::dir(d.clone())
                .permissions(0o755)
                .user("root")
                .group("root")
                .modified_at(sde.into()),
        )
        .map_err(|e| anyhow!("directory {d}: {e}"))?;
    }

    // Relations.
    for d in &pkg.depends {
        dep_name("requires", d)?;
        b.requires(Dependency::any(d.clone()));
    }
    for d in &pkg.conflicts {
        dep_name("conflicts", d)?;
        b.conflicts(Dependency::any(d.clone()));
    }

    // Scriptlets and what they run.
    if pkg.service.is_some() {
        let ctx = script_context(pkg)?;
        let sh = |name: &str| -> Result<Scriptlet> {
            let text = t.render(name, &ctx)?;
            Ok(Scriptlet::new(text).prog(vec!["/bin/sh"]))
        };
        b.pre_install_script(sh("rpm/pre")?)
            .post_install_script(sh("rpm/post")?)
            .pre_uninstall_script(sh("rpm/preun")?)
            .post_uninstall_script(sh("rpm/postun")?);
        for tool in PRE_TOOLS {
            b.requires(Dependency::script_pre(*tool));
        }
        b.requires(Dependency::script_post("systemd"))
            .requires(Dependency::script_preun("systemd"))
            .requires(Dependency::script_postun("systemd"));
    }
    Ok(b)
}

/// What %pre runs (by path: shadow-utils on Fedora/EL, shadow on SUSE; getent is glibc's).
pub const PRE_TOOLS: &[&str] = &["/usr/bin/getent", "/usr/sbin/groupadd", "/usr/sbin/useradd"];

/// With `stub`, a file on disk is added empty (its size and digest are filled in after the
/// payload is streamed), so the crate never reads it.
fn add_content(
    b: &mut PackageBuilder,
    c: &Content,
    o: rpm::FileOptionsBuilder,
    stub: bool,
) -> Result<()> {
    match c {
        Content::Bytes(bytes) => b.with_file_contents(bytes.clone(), o),
        Content::File(_) if stub => b.with_file_contents(Vec::new(), o),
        Content::File(p) => b.with_file(p, o),
    }
    .map(|_| ())
    .map_err(|e| anyhow!("{e}"))
}

/// One `u` line of a sysusers.d file, as %pre creates it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SysUser {
    pub name: String,
    pub group: String,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// Groups and users of a sysusers.d file, in the order %pre must create them (every group
/// first). Only what our template writes is accepted: `g NAME -` and
/// `u NAME -[:GROUP] ["GECOS"] [HOME] [SHELL]`; anything else is refused rather than guessed.
pub fn parse_sysusers(text: &str) -> Result<(Vec<String>, Vec<SysUser>)> {
    let mut groups: Vec<String> = Vec::new();
    let mut users = Vec::new();
    let add_group = |g: &str, groups: &mut Vec<String>| {
        if !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f = split_fields(line).map_err(|e| anyhow!("sysusers line {}: {e}", i + 1))?;
        let get = |k: usize| {
            f.get(k)
                .map(String::as_str)
                .filter(|s| !s.is_empty() && *s != "-")
        };
        let name = get(1).ok_or_else(|| anyhow!("sysusers line {}: no name", i + 1))?;
        valid_account(name).map_err(|e| anyhow!("sysusers line {}: {e}", i + 1))?;
        match f[0].as_str() {
            "g" => {
                if get(2).is_some() || f.len() > 3 {
                    bail!(
                        "sysusers line {}: only `g NAME -` is supported: {line:?}",
                        i + 1
                    );
                }
                add_group(name, &mut groups);
            }
            "u" => {
                let group = match get(2) {
                    None => name.to_string(),
                    Some(id) => match id.strip_prefix("-:") {
                        Some(g) => g.to_string(),
                        None => bail!(
                            "sysusers line {}: only a dynamic id (`-` or `-:GROUP`) is supported: {line:?}",
                            i + 1
                        ),
                    },
                };
                valid_account(&group).map_err(|e| anyhow!("sysusers line {}: {e}", i + 1))?;
                if f.len() > 6 {
                    bail!("sysusers line {}: too many fields: {line:?}", i + 1);
                }
                add_group(&group, &mut groups);
                let gecos = get(3).unwrap_or("").to_string();
                let home = get(4).unwrap_or("/").to_string();
                let shell = get(5).unwrap_or("/usr/sbin/nologin").to_string();
                for (k, v) in [("home", &home), ("shell", &shell)] {
                    if !v.starts_with('/') {
                        bail!("sysusers line {}: {k} {v:?} is not absolute", i + 1);
                    }
                }
                users.push(SysUser {
                    name: name.to_string(),
                    group,
                    gecos,
                    home,
                    shell,
                });
            }
            other => bail!(
                "sysusers line {}: type {other:?} is not supported by the rpm %pre",
                i + 1
            ),
        }
    }
    Ok((groups, users))
}

fn valid_account(n: &str) -> Result<()> {
    let ok = n.len() <= 32
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        bail!("{n:?} is not a valid system account name");
    }
    Ok(())
}

/// Whitespace-separated fields; a field may be double-quoted (no escapes inside).
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else { break };
        let mut field = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => return Err("escapes in quoted fields are not supported".into()),
                    Some(ch) if ch.is_control() => return Err("control character".into()),
                    Some(ch) => field.push(ch),
                    None => return Err("unterminated quote".into()),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err("text right after a closing quote".into());
            }
        } else {
            while let Some(ch) = chars.next_if(|c| !c.is_whitespace()) {
                if ch == '"' || ch.is_control() {
                    return Err("quote or control character inside a field".into());
                }
                field.push(ch);
            }
        }
        out.push(field);
    }
    Ok(out)
}

/// Paths %postun removes on erase: the state the service leaves behind (not /etc: rpm's own
/// %config rules decide what happens to configuration).
pub fn state_paths(purge: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in purge {
        one_line("purge path", p)?;
        let parts: Vec<&str> = p.split('/').collect();
        let normal = p.starts_with('/')
            && parts.len() >= 3
            && parts[1..]
                .iter()
                .all(|s| !s.is_empty() && *s != "." && *s != "..");
        if !normal {
            bail!("purge path {p:?}: not an absolute, normal path at least two levels deep");
        }
        if p.starts_with("/etc/") {
            continue;
        }
        if !["/var/lib/", "/var/cache/", "/var/log/"]
            .iter()
            .any(|d| p.starts_with(d))
        {
            bail!("purge path {p:?}: state must live under /var/lib, /var/cache or /var/log");
        }
        out.push(p.clone());
    }
    Ok(out)
}

/// The template context of the scriptlets.
pub fn script_context(pkg: &Package) -> Result<serde_json::Value> {
    let s = pkg
        .service
        .as_ref()
        .ok_or_else(|| anyhow!("package {} has no service", pkg.name))?;
    let sysusers = pkg
        .files
        .iter()
        .find(|f| f.path == s.sysusers_file)
        .ok_or_else(|| anyhow!("sysusers file {} is not in the package", s.sysusers_file))?;
    let text = match &sysusers.content {
        Content::Bytes(b) => String::from_utf8(b.clone())?,
        Content::File(p) => {
            std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?
        }
    };
    let (groups, users) =
        parse_sysusers(&text).with_context(|| format!("sysusers file {}", s.sysusers_file))?;
    if !users.iter().any(|u| u.name == s.user && u.group == s.group) {
        bail!(
            "sysusers file {} does not create user {} in group {}",
            s.sysusers_file,
            s.user,
            s.group
        );
    }
    Ok(serde_json::json!({
        "name": pkg.name,
        "unit": s.unit,
        "sysusers_file": s.sysusers_file,
        "groups": groups,
        "users": users,
        "enable_on_install": s.enable_on_install,
        "restart_on_upgrade": s.restart_on_upgrade,
        "state_paths": state_paths(&s.purge_paths)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysusers_lines_become_groups_then_users() {
        let (g, u) = parse_sysusers(
            "# c\ng obs -\nu obs -:obs \"obs service user\" - /usr/sbin/nologin\n\
             u node_exporter - \"n e\" /var/lib/ne\n",
        )
        .unwrap();
        assert_eq!(g, ["obs", "node_exporter"]);
        assert_eq!(u[0].home, "/");
        assert_eq!(u[0].gecos, "obs service user");
        assert_eq!(u[1].group, "node_exporter");
        assert_eq!(u[1].home, "/var/lib/ne");
        assert_eq!(u[1].shell, "/usr/sbin/nologin");
    }

    #[test]
    fn unsupported_sysusers_lines_are_refused() {
        for bad in [
            "u x 123 \"a\"",
            "m x grp",
            "u x - \"unterminated",
            "u X -",
            "u x - \"a\" home",
            "g x 12",
            "u x - \"a\\\"b\"",
        ] {
            assert!(parse_sysusers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn state_paths_skip_etc_and_refuse_odd_paths() {
        let ok = state_paths(&["/etc/x".into(), "/var/lib/x".into()]).unwrap();
        assert_eq!(ok, ["/var/lib/x"]);
        for bad in [
            "/",
            "/var",
            "/var/lib/../etc",
            "var/lib/x",
            "/usr/bin/x",
            "/var//x",
        ] {
            assert!(state_paths(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
