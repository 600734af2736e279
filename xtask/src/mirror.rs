//! Air-gapped transfer: a signed bundle of the published tree, and its import.
//!
//! A bundle is one tar archive (optionally zstd-compressed) holding, in this order:
//!
//! ```text
//! MANIFEST                      "observability-stack mirror bundle 1", then `sha256  size  path`
//!                               for every other entry, sorted by path
//! keys/mirror-bundle.minisign.pub   the public half of the key that signed the bundle
//! repo/…                        every file of the published generation (dist/current), which
//!                               carries its own signed SHA256SUMS, OpenPGP keys and indexes
//! ```
//!
//! with a detached minisign signature `BUNDLE.minisig` over the archive file. Entries are
//! regular files only, written in sorted order with fixed owner, mode and time, so the same
//! tree gives the same archive.
//!
//! Import checks the signature against a key the receiving side already trusts, then reads the
//! archive once to check it completely (the MANIFEST first; every other entry must be a regular
//! file with a safe, unique path that the manifest names with that size and sha256; every
//! manifest line must be present) before the output directory is touched at all. Only then it
//! locks the output directory, extracts `repo/` into a staging generation (hashing again) and
//! publishes it with [`crate::publish::commit`]: the previous generation stays `current` until
//! the switch.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::minisign::SecretKey;

pub const MANIFEST: &str = "MANIFEST";
pub const MANIFEST_HEADER: &str = "observability-stack mirror bundle 1";
pub const BUNDLE_KEY: &str = "keys/mirror-bundle.minisign.pub";
const MAX_MANIFEST: u64 = 64 << 20;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The signature file of a bundle: `BUNDLE.minisig`.
pub fn signature_path(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

/// What a bundle was made from.
#[derive(Debug)]
pub struct BundleReport {
    pub generation: PathBuf,
    pub files: usize,
    pub bytes: u64,
    pub key_id: String,
}

/// Write `out` (and `out.minisig`) from the published generation of `dist`.
pub fn bundle(dist: &Path, out: &Path, key: &SecretKey, zstd: bool) -> Result<BundleReport> {
    let gen = crate::publish::current(dist).ok_or_else(|| {
        anyhow!(
            "{}: no published generation (no `current` link): run `cargo xtask dist` first",
            dist.display()
        )
    })?;
    // Regular files and directories only (tree_files refuses anything else).
    let files = crate::dist::tree_files(&gen)?;
    let pubkey = key.public_key_text();
    let mut entries: Vec<(String, String, u64)> = Vec::new();
    entries.push((
        BUNDLE_KEY.into(),
        crate::digest::sha256_hex(pubkey.as_bytes()),
        pubkey.len() as u64,
    ));
    for f in &files {
        let (h, n) = crate::digest::sha256_file(&gen.join(f))
            .with_context(|| format!("hashing {}", gen.join(f).display()))?;
        entries.push((format!("repo/{f}"), h, n));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut manifest = format!("{MANIFEST_HEADER}\n");
    for (p, h, n) in &entries {
        if p.contains(['\n', '\r']) || p.contains("  ") {
            bail!("{p:?}: a file name the manifest cannot carry");
        }
        manifest.push_str(&format!("{h}  {n}  {p}\n"));
    }
    let mtime = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);

    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let file = io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        let sink: Box<dyn Write> = if zstd {
            let mut e = zstd::Encoder::new(file, 19)?;
            e.multithread(2).ok();
            Box::new(e.auto_finish())
        } else {
            Box::new(file)
        };
        let mut tar = tar::Builder::new(sink);
        tar.mode(tar::HeaderMode::Deterministic);
        let header = |size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            h
        };
        let mut h = header(manifest.len() as u64);
        tar.append_data(&mut h, MANIFEST, manifest.as_bytes())?;
        for (p, _, n) in &entries {
            let mut h = header(*n);
            if p == BUNDLE_KEY {
                tar.append_data(&mut h, p, pubkey.as_bytes())?;
            } else {
                let src = gen.join(p.trim_start_matches("repo/"));
                let f = std::fs::File::open(&src)
                    .with_context(|| format!("reading {}", src.display()))?;
                tar.append_data(&mut h, p, f.take(*n))?;
            }
        }
        tar.into_inner()?.flush()?;
    }
    tmp.as_file().sync_all()?;
    let mut f = std::fs::File::open(tmp.path())?;
    let bytes = f.metadata()?.len();
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sig = key.sign_reader(
        &mut BufReader::new(&mut f),
        &format!("timestamp:{mtime}\tfile:{name}\thashed"),
    )?;
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(out)
        .map_err(|e| anyhow!("{}: {}", out.display(), e.error))?;
    crate::dist::write_atomic(&signature_path(out), sig.as_bytes())?;
    Ok(BundleReport {
        generation: gen,
        files: entries.len(),
        bytes,
        key_id: key.key_id(),
    })
}

/// One line of a MANIFEST.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    sha256: String,
    size: u64,
}

fn parse_manifest(text: &str) -> Result<BTreeMap<String, Entry>> {
    let mut lines = text.lines();
    if lines.next() != Some(MANIFEST_HEADER) {
        bail!("{MANIFEST}: first line is not {MANIFEST_HEADER:?}");
    }
    let mut out = BTreeMap::new();
    for (i, l) in lines.enumerate() {
        let mut it = l.splitn(3, "  ");
        let (Some(h), Some(n), Some(p)) = (it.next(), it.next(), it.next()) else {
            bail!("{MANIFEST} line {}: malformed {l:?}", i + 2);
        };
        crate::component::valid_sha256(h)
            .map_err(|e| anyhow!("{MANIFEST} line {}: sha256 {h:?}: {e}", i + 2))?;
        let size = n
            .parse()
            .map_err(|_| anyhow!("{MANIFEST} line {}: size {n:?} is not a number", i + 2))?;
        safe_path(p).map_err(|e| anyhow!("{MANIFEST} line {}: {e}", i + 2))?;
        if !(p.starts_with("repo/") || p.starts_with("keys/")) {
            bail!(
                "{MANIFEST} line {}: {p:?} is neither under repo/ nor keys/",
                i + 2
            );
        }
        let e = Entry {
            sha256: h.into(),
            size,
        };
        if out.insert(p.to_string(), e).is_some() {
            bail!("{MANIFEST} line {}: {p:?} is listed twice", i + 2);
        }
    }
    Ok(out)
}

/// A relative path of normal components only.
fn safe_path(p: &str) -> Result<()> {
    let path = Path::new(p);
    if p.is_empty()
        || p.contains('\\')
        || p.contains(char::is_control)
        || path.is_absolute()
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        || !path.components().all(|c| matches!(c, Component::Normal(_)))
    {
        bail!("unsafe path {p:?}");
    }
    Ok(())
}

fn open_archive(bundle: &Path) -> Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(bundle).with_context(|| format!("{}", bundle.display()))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic)?;
    f.seek(io::SeekFrom::Start(0))?;
    let r = BufReader::with_capacity(1 << 20, f);
    Ok(if n == 4 && magic == ZSTD_MAGIC {
        Box::new(zstd::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// Walk the archive: the manifest (from the first entry, or the given one), and for every other
/// entry a check against it; `sink` gets each checked entry's path and bytes (streamed).
fn walk(
    bundle: &Path,
    known: Option<&BTreeMap<String, Entry>>,
    mut sink: impl FnMut(&str, &mut dyn Read) -> Result<(String, u64)>,
) -> Result<BTreeMap<String, Entry>> {
    let mut ar = tar::Archive::new(open_archive(bundle)?);
    let mut entries = ar.entries().context("reading the archive")?;
    let first = entries
        .next()
        .ok_or_else(|| anyhow!("empty archive (no {MANIFEST})"))?
        .context("reading the archive")?;
    if first.path_bytes().as_ref() != MANIFEST.as_bytes()
        || first.header().entry_type() != tar::EntryType::Regular
    {
        bail!("the first entry is not the regular file {MANIFEST}");
    }
    if first.size() > MAX_MANIFEST {
        bail!("{MANIFEST}: {} bytes is too large", first.size());
    }
    let mut text = String::new();
    first
        .take(MAX_MANIFEST)
        .read_to_string(&mut text)
        .with_context(|| format!("{MANIFEST}: not UTF-8 text"))?;
    let manifest = parse_manifest(&text)?;
    if let Some(k) = known {
        if k != &manifest {
            bail!("{MANIFEST} changed between two reads of the bundle");
        }
    }
    let mut seen = BTreeSet::new();
    for e in entries {
        let mut e = e.context("reading the archive (truncated or damaged?)")?;
        let raw = e.path_bytes().into_owned();
        let name = String::from_utf8(raw.clone()).map_err(|_| {
            anyhow!(
                "entry {:?}: name is not UTF-8",
                String::from_utf8_lossy(&raw)
            )
        })?;
        let t = e.header().entry_type();
        if t != tar::EntryType::Regular {
            bail!(
                "entry {name:?}: a {} (only regular files may be in a bundle)",
                match t {
                    tar::EntryType::Symlink => "symlink",
                    tar::EntryType::Link => "hard link",
                    tar::EntryType::Directory => "directory",
                    tar::EntryType::Char | tar::EntryType::Block => "device",
                    tar::EntryType::Fifo => "FIFO",
                    _ => "special entry",
                }
            );
        }
        safe_path(&name).map_err(|e| anyhow!("entry {name:?}: {e}"))?;
        if name == MANIFEST || !seen.insert(name.clone()) {
            bail!("entry {name:?}: appears twice in the archive");
        }
        let want = manifest
            .get(&name)
            .ok_or_else(|| anyhow!("entry {name:?}: not in the {MANIFEST}"))?;
        if e.size() != want.size {
            bail!(
                "entry {name:?}: {} bytes, the {MANIFEST} says {}",
                e.size(),
                want.size
            );
        }
        let (h, n) = sink(&name, &mut e).with_context(|| format!("entry {name:?}"))?;
        if n != want.size {
            bail!(
                "entry {name:?}: {n} bytes read, the {MANIFEST} says {} (truncated?)",
                want.size
            );
        }
        if h != want.sha256 {
            bail!(
                "entry {name:?}: sha256 {h}, the {MANIFEST} says {}",
                want.sha256
            );
        }
    }
    let missing: Vec<&String> = manifest.keys().filter(|k| !seen.contains(*k)).collect();
    if !missing.is_empty() {
        bail!(
            "{} file(s) of the {MANIFEST} are missing from the archive (truncated?), first {:?}",
            missing.len(),
            missing[0]
        );
    }
    Ok(manifest)
}

/// What an import published.
#[derive(Debug)]
pub struct ImportReport {
    pub generation: PathBuf,
    pub files: usize,
}

/// Verify `bundle` against `keys` (any of them may have signed it) and publish its repository
/// tree as a new generation of `into`. On any failure `into` is left as it was.
pub fn import(
    bundle: &Path,
    into: &Path,
    keys: &[minisign_verify::PublicKey],
) -> Result<ImportReport> {
    let sig_path = signature_path(bundle);
    let sig = std::fs::read_to_string(&sig_path).map_err(|e| {
        anyhow!(
            "{}: cannot read its signature {}: {e}; nothing was imported",
            bundle.display(),
            sig_path.display()
        )
    })?;
    if keys.is_empty() {
        bail!("no minisign public key to check {} with", bundle.display());
    }
    let mut errs = Vec::new();
    let mut good = false;
    for k in keys {
        let mut f = std::fs::File::open(bundle).with_context(|| format!("{}", bundle.display()))?;
        match crate::minisign::verify_reader(k, &sig, &mut BufReader::new(&mut f)) {
            Ok(()) => {
                good = true;
                break;
            }
            Err(e) => errs.push(format!("{e:#}")),
        }
    }
    if !good {
        bail!(
            "{}: the minisign signature {} does not verify with the trusted key(s): {}; \
             nothing was imported",
            bundle.display(),
            sig_path.display(),
            errs.join("; ")
        );
    }
    let refuse =
        |e: anyhow::Error| anyhow!("{}: refused: {e:#}; nothing was imported", bundle.display());
    // Pass 1: check everything, touch nothing.
    let manifest =
        walk(bundle, None, |_, r| Ok(crate::digest::sha256_reader(r)?)).map_err(refuse)?;
    if !manifest.keys().any(|k| k.starts_with("repo/")) {
        return Err(refuse(anyhow!(
            "the bundle holds no repository (no repo/ files)"
        )));
    }
    // Pass 2: extract repo/ into a staging generation, checking again as it is written.
    let lock = crate::publish::lock(into)?;
    let staging = crate::publish::begin(&lock)?;
    let root = staging.path().to_path_buf();
    walk(bundle, Some(&manifest), |name, r| {
        let Some(rel) = name.strip_prefix("repo/") else {
            return Ok(crate::digest::sha256_reader(r)?);
        };
        let dest = root.join(rel);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p)?;
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .with_context(|| format!("creating {}", dest.display()))?;
        let mut w = crate::digest::HashingWriter::new(io::BufWriter::new(f));
        io::copy(r, &mut w)?;
        w.flush()?;
        let (f, h, n) = w.finish();
        let f = f.into_inner().map_err(|e| anyhow!("{}", e.error()))?;
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        Ok((h, n))
    })
    .map_err(refuse)?;
    set_dir_modes(&root)?;
    let files = manifest.keys().filter(|k| k.starts_with("repo/")).count();
    let generation = crate::publish::commit(&lock, staging)?;
    Ok(ImportReport { generation, files })
}

fn set_dir_modes(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(root)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755))?;
            set_dir_modes(&e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for p in [
            "", "/etc/x", "a/../b", "..", "a//b", "./a", "a/", "a\\b", "a\nb",
        ] {
            assert!(safe_path(p).is_err(), "{p:?}");
        }
        safe_path("repo/apt/dists/stable/Release").unwrap();
    }

    #[test]
    fn manifest_lines_are_checked() {
        let h = "a".repeat(64);
        let ok = format!("{MANIFEST_HEADER}\n{h}  3  repo/x\n");
        assert_eq!(parse_manifest(&ok).unwrap().len(), 1);
        let dup = format!("{MANIFEST_HEADER}\n{h}  3  repo/x\n{h}  3  repo/x\n");
        assert!(parse_manifest(&dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let out = format!("{MANIFEST_HEADER}\n{h}  3  other/x\n");
        assert!(parse_manifest(&out).is_err());
        let up = format!("{MANIFEST_HEADER}\n{h}  3  repo/../x\n");
        assert!(parse_manifest(&up)
            .unwrap_err()
            .to_string()
            .contains("unsafe"));
    }
}
