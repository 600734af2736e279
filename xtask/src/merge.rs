//! `index --merge`: one repository generation from several shard outputs (each a `dist`
//! output directory, e.g. one per component × arch built on its own CI runner).
//!
//! Each shard is verified first (signatures, indexes, package digests, SHA256SUMS) against the
//! trusted keys; its packages are then taken from its `manifest.json` (format, name, version,
//! arch, file, sha256 — re-checked against the file). The same (format, package, version, arch)
//! in two shards is fine when the bytes are identical (taken once) and an error naming both
//! shards when they differ. Nothing is written before every shard has been checked:
//! [`collect`] only reads; [`place`] then links (or copies) the packages into a staging
//! generation's build directory, from where `dist::assemble_repositories` indexes and signs
//! them as `dist` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::dist::Built;
use crate::package::{Arch, Format};
use crate::verify::TrustedKeys;

/// One package taken from a shard.
#[derive(Debug, Clone)]
pub struct ShardPackage {
    /// The shard directory it came from (as given).
    pub shard: PathBuf,
    /// The file inside the shard's current generation.
    pub source: PathBuf,
    /// The shard's generation directory (where its `sbom/` and `provenance/` are).
    pub root: PathBuf,
    pub built: Built,
}

/// What the shards hold, checked and de-duplicated, in a stable order.
#[derive(Debug, Clone)]
pub struct Collected {
    pub packages: Vec<ShardPackage>,
    /// The newest apt `Release` date among the shards (seconds), if any has one.
    pub newest_date: Option<u64>,
}

fn field<'a>(v: &'a serde_json::Value, k: &str, manifest: &Path, i: usize) -> Result<&'a str> {
    v.get(k).and_then(|x| x.as_str()).ok_or_else(|| {
        anyhow!(
            "{}: packages[{i}].{k} is missing or not a string",
            manifest.display()
        )
    })
}

/// Read one shard's manifest; every listed file must be a plain relative path in the tree.
fn read_manifest(shard: &Path, root: &Path) -> Result<Vec<ShardPackage>> {
    let packages = manifest_packages(root).with_context(|| format!("shard {}", shard.display()))?;
    Ok(packages
        .into_iter()
        .map(|built| ShardPackage {
            shard: shard.to_path_buf(),
            source: root.join(&built.file),
            root: root.to_path_buf(),
            built,
        })
        .collect())
}

/// The packages a generation's `manifest.json` lists (as `dist` reported them when it
/// published), each field checked: format, arch, a plain relative path to a .deb/.rpm in the
/// tree, a sha256, a size. Reads the manifest only, not the packages.
pub fn manifest_packages(root: &Path) -> Result<Vec<Built>> {
    const MANIFEST_LIMIT: u64 = 64 << 20;
    let manifest = root.join("manifest.json");
    // In the tree (a regular file, no link followed, no FIFO waited on), bounded.
    let bytes = crate::verify::read_in_tree_limited(root, &manifest, MANIFEST_LIMIT)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", manifest.display()))?;
    let list = v
        .get("packages")
        .and_then(|p| p.as_array())
        .ok_or_else(|| anyhow!("{}: no `packages` array", manifest.display()))?;
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let format = match field(p, "format", &manifest, i)? {
            "deb" => Format::Deb,
            "rpm" => Format::Rpm,
            f => bail!(
                "{}: packages[{i}].format {f:?}: deb or rpm",
                manifest.display()
            ),
        };
        let arch_s = field(p, "arch", &manifest, i)?;
        let arch = Arch::parse(arch_s).ok_or_else(|| {
            anyhow!(
                "{}: packages[{i}].arch {arch_s:?}: amd64 or arm64",
                manifest.display()
            )
        })?;
        let file = field(p, "file", &manifest, i)?;
        let normal = !file.starts_with('/')
            && file
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..");
        let ext = match format {
            Format::Deb => ".deb",
            Format::Rpm => ".rpm",
        };
        if !normal || !file.ends_with(ext) {
            bail!(
                "{}: packages[{i}].file {file:?}: not a relative path to a {ext} in the tree",
                manifest.display()
            );
        }
        let sha256 = field(p, "sha256", &manifest, i)?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "{}: packages[{i}].sha256 {sha256:?}: not a sha256",
                manifest.display()
            );
        }
        let size = p.get("size").and_then(|s| s.as_u64()).ok_or_else(|| {
            anyhow!(
                "{}: packages[{i}].size is missing or not a number",
                manifest.display()
            )
        })?;
        out.push(Built {
            component: field(p, "component", &manifest, i)?.to_string(),
            package: field(p, "package", &manifest, i)?.to_string(),
            format,
            version: field(p, "version", &manifest, i)?.to_string(),
            arch,
            file: file.to_string(),
            size,
            sha256: sha256.to_string(),
        });
    }
    Ok(out)
}

/// The `Date:` of the shard's apt suite(s), newest.
fn release_date(root: &Path) -> Option<u64> {
    let dists = root.join("apt").join("dists");
    let mut best = None;
    for e in std::fs::read_dir(dists).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("Release")) else {
            continue;
        };
        for line in text.lines() {
            if let Some(d) = line.strip_prefix("Date:") {
                if let Some(s) = crate::date::parse_rfc2822(d.trim()) {
                    if let Ok(s) = u64::try_from(s) {
                        best = best.max(Some(s));
                    }
                }
            }
        }
    }
    best
}

/// Verify every shard and gather its packages; refuse conflicting duplicates. Reads only.
pub fn collect(shards: &[PathBuf], trusted: &TrustedKeys) -> Result<Collected> {
    if shards.is_empty() {
        bail!("--merge needs at least one shard directory");
    }
    let mut by_key: BTreeMap<(String, String, String, String), ShardPackage> = BTreeMap::new();
    let mut newest_date = None;
    for shard in shards {
        let root = crate::verify::resolve_root(shard);
        let report = crate::verify::verify_tree(shard, trusted)
            .with_context(|| format!("verifying shard {}", shard.display()))?;
        if !report.ok() {
            bail!(
                "shard {} does not verify (nothing was merged):\n{}",
                shard.display(),
                report.failures.join("\n")
            );
        }
        newest_date = newest_date.max(release_date(&root));
        for p in read_manifest(shard, &root)? {
            let (sha, size) = crate::digest::sha256_file(&p.source).with_context(|| {
                format!("shard {}: reading {}", shard.display(), p.source.display())
            })?;
            if sha != p.built.sha256 || size != p.built.size {
                bail!(
                    "shard {}: {} has sha256 {sha} ({size} bytes), its manifest says {} ({} bytes)",
                    shard.display(),
                    p.built.file,
                    p.built.sha256,
                    p.built.size
                );
            }
            let fmt = match p.built.format {
                Format::Deb => "deb",
                Format::Rpm => "rpm",
            };
            let key = (
                fmt.to_string(),
                p.built.package.clone(),
                p.built.version.clone(),
                p.built.arch.to_string(),
            );
            match by_key.get(&key) {
                Some(prev) if prev.built.sha256 == p.built.sha256 => {}
                Some(prev) => bail!(
                    "{} {} {} ({fmt}) differs between shard {} ({}, sha256 {}) and shard {} ({}, sha256 {})",
                    key.1,
                    key.2,
                    key.3,
                    prev.shard.display(),
                    prev.built.file,
                    prev.built.sha256,
                    shard.display(),
                    p.built.file,
                    p.built.sha256
                ),
                None => {
                    by_key.insert(key, p);
                }
            }
        }
    }
    Ok(Collected {
        packages: by_key.into_values().collect(),
        newest_date,
    })
}

/// Hard-link (or copy, across file systems) the collected packages into `build_dir`
/// (`deb/<file>`, `rpm/<file>`, as `dist::build_all` lays them out) and return their `Built`
/// records pointing there. Two different packages with one file name are refused.
pub fn place(c: &Collected, build_dir: &Path) -> Result<Vec<Built>> {
    let mut out = Vec::new();
    let mut names: BTreeMap<String, &Path> = BTreeMap::new();
    for p in &c.packages {
        let name = p
            .built
            .file
            .rsplit('/')
            .next()
            .expect("checked")
            .to_string();
        let sub = match p.built.format {
            Format::Deb => "deb",
            Format::Rpm => "rpm",
        };
        let rel = format!("{sub}/{name}");
        if let Some(prev) = names.insert(rel.clone(), &p.shard) {
            bail!(
                "{name}: two different packages of that file name (shards {} and {})",
                prev.display(),
                p.shard.display()
            );
        }
        let dir = build_dir.join(sub);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dest = dir.join(&name);
        if std::fs::hard_link(&p.source, &dest).is_err() {
            std::fs::copy(&p.source, &dest)
                .with_context(|| format!("copying {} to {}", p.source.display(), dest.display()))?;
        }
        // The shard's SBOM and provenance (verified with the shard) go along; assembling the
        // merged generation signs them again with the merge's key.
        for (adir, suffix) in [
            (crate::attest::SBOM_DIR, crate::attest::SBOM_SUFFIX),
            (
                crate::attest::PROVENANCE_DIR,
                crate::attest::PROVENANCE_SUFFIX,
            ),
        ] {
            let from = p.root.join(adir).join(format!("{name}{suffix}"));
            if !from.is_file() {
                continue;
            }
            let to_dir = build_dir.join(adir);
            std::fs::create_dir_all(&to_dir)
                .with_context(|| format!("creating {}", to_dir.display()))?;
            let to = to_dir.join(format!("{name}{suffix}"));
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        let mut b = p.built.clone();
        b.file = rel;
        out.push(b);
    }
    Ok(out)
}
