//! The driver: components → fetch → unpack → render → describe → writers → dist/.
//!
//! Everything is fetched and verified before anything is built, and everything is built in a
//! staging directory beside the output before anything is moved into it: a failure at any
//! point leaves the output directory exactly as it was.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;

use crate::component::Component;
use crate::elf::ElfInfo;
use crate::fetch::{Fetcher, Pending, VerifiedArtifact};
use crate::package::{
    Arch, Compression, Content, DirEntry, FileEntry, FileKind, Format, Layout, Package,
    ServiceBehaviour, Written,
};
use crate::render::{RenderedFile, Templates};
use crate::unpack::{self, ArchiveKind, Extracted, Limits};

pub const DEFAULT_MAINTAINER: &str =
    "observability-stack packagers <packagers@observability-stack.org>";

/// What to build.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Component names; empty = all.
    pub components: Vec<String>,
    /// Arches; empty = every pinned arch.
    pub arches: Vec<Arch>,
}

/// The jobs of a run, and a note for each asked-for arch that is skipped.
pub type Plan = (Vec<(Component, Arch)>, Vec<String>);

/// One (component, arch) job, with why an asked-for arch is skipped.
pub fn plan(all: &[Component], sel: &Selection) -> Result<Plan> {
    let mut notes = Vec::new();
    for n in &sel.components {
        if !all.iter().any(|c| &c.name == n) {
            let known: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
            bail!("unknown component {n:?} (known: {})", known.join(", "));
        }
    }
    let mut jobs = Vec::new();
    for c in all {
        if !sel.components.is_empty() && !sel.components.contains(&c.name) {
            continue;
        }
        let arches: Vec<Arch> = if sel.arches.is_empty() {
            Arch::ALL.to_vec()
        } else {
            sel.arches.clone()
        };
        for a in arches {
            if c.source.sha256.contains_key(&a) {
                jobs.push((c.clone(), a));
            } else {
                notes.push(format!(
                    "{} {a}: no sha256 pin in {}: not built",
                    c.name,
                    c.file.display()
                ));
            }
        }
    }
    Ok((jobs, notes))
}

/// Fetch and verify every job's asset. All or nothing: any failure fails the whole run, and
/// then nothing is added to the cache (downloads are only moved into it once all verified).
pub fn fetch_all(
    fetcher: &Fetcher,
    jobs: &[(Component, Arch)],
    progress: &Progress,
) -> Result<Vec<VerifiedArtifact>> {
    let results: Vec<Result<Pending>> = jobs
        .par_iter()
        .map(|(c, a)| {
            let url = c.url(*a);
            let pb = progress.bar(&format!("fetch {} {a}", c.name));
            let sig = crate::fetch::SignatureCheck::of(c, *a);
            let r = fetcher.fetch_pending_signed(
                &c.name,
                *a,
                &url,
                &c.source.sha256[a],
                sig.as_ref(),
                pb.as_ref(),
            );
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            r
        })
        .collect();
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        // Deletes the temporary files of the downloads that did verify.
        drop(ok);
        fetcher.discard_created_dirs();
        let way_out = match fetcher.mirror() {
            Some(m) => format!(
                "From the mirror {m}: an HTTP 404 above means it does not carry the pinned \
                 version (`cargo xtask pin NAME VERSION --mirror {m}` pins one it has), a \
                 certificate error wants `--ca-cert FILE`; see the README, \"Pointing at a \
                 mirror\""
            ),
            None => "Where the upstream hosts cannot be reached: `--mirror URL` (a mirror in \
                     the upstream layout, `--ca-cert` for its CA; a `file://` copy works too) \
                     or `--offline` (the cache only); see the README, \"Pointing at a mirror\""
                .to_string(),
        };
        bail!(
            "{}\n{} of {} download(s) failed, nothing was built. {way_out}",
            errors.join("\n"),
            errors.len(),
            jobs.len()
        );
    }
    ok.into_iter().map(|p| fetcher.commit(p)).collect()
}

/// Progress bars on a terminal; nothing otherwise.
pub struct Progress {
    multi: Option<indicatif::MultiProgress>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        let on = enabled && std::io::stderr().is_terminal();
        Progress {
            multi: on.then(indicatif::MultiProgress::new),
        }
    }
    pub fn bar(&self, msg: &str) -> Option<indicatif::ProgressBar> {
        let m = self.multi.as_ref()?;
        let pb = m.add(indicatif::ProgressBar::new(0));
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:32} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_message(msg.to_string());
        Some(pb)
    }
    pub fn spinner(&self, msg: &str) -> Option<indicatif::ProgressBar> {
        let m = self.multi.as_ref()?;
        let pb = m.add(indicatif::ProgressBar::new_spinner());
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(pb)
    }
}

/// Options of a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out_dir: PathBuf,
    pub deb_compression: Compression,
    pub rpm_compression: Compression,
    pub maintainer: String,
    pub source_date_epoch: Option<u64>,
}

/// A package that was built, as the final table and `--json` report it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    pub component: String,
    pub package: String,
    pub format: Format,
    pub version: String,
    pub arch: Arch,
    /// Path relative to the output directory.
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// SOURCE_DATE_EPOCH: the environment's, else the last commit touching the component file,
/// else the file's modification time. Never the wall clock.
pub fn source_date_epoch(c: &Component, explicit: Option<u64>) -> u64 {
    if let Some(e) = explicit {
        return e;
    }
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return e;
    }
    // One answer per component file for the whole run: the fingerprint of the no-op check and
    // the build that follows it must not see two values (a commit or touch in between).
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<PathBuf, u64>>> =
        std::sync::OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(e) = seen.lock().unwrap_or_else(|p| p.into_inner()).get(&c.file) {
        return *e;
    }
    let e = file_epoch(&c.file);
    *seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(c.file.clone())
        .or_insert(e)
}

/// The last commit time of `file`, or its mtime outside git (0 if neither can be read).
fn file_epoch(file: &Path) -> u64 {
    let dir = file.parent().unwrap_or(Path::new("."));
    if let Ok(out) = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["log", "-1", "--format=%ct", "--"])
        .arg(file)
        .stderr(std::process::Stdio::null())
        .output()
    {
        if let Some(e) = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .ok()
            .filter(|e| *e > 0)
        {
            return e;
        }
    }
    std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The staged inputs of one (component, arch): verified binary, license, ELF facts.
pub struct Staged {
    pub binary: Extracted,
    pub license: Option<Extracted>,
    pub elf: ElfInfo,
    /// Archive members installed as configuration: (config path, extracted member), in the
    /// order of the component's `[[config]]` entries with a `source`.
    pub configs: Vec<(String, Extracted)>,
}

/// Safe extraction of the declared members, then ELF inspection.
pub fn stage(c: &Component, art: &VerifiedArtifact, work: &Path) -> Result<Staged> {
    let kind = ArchiveKind::from_name(&art.url)
        .ok_or_else(|| anyhow!("{}: {}: not a .tar.gz or .zip", c.name, art.url))?;
    let mut members = vec![c.expand(&c.source.binary, art.arch)];
    let sources: Vec<(String, String)> = c
        .config
        .iter()
        .filter_map(|f| {
            f.source
                .as_ref()
                .map(|m| (f.path.clone(), c.expand(m, art.arch)))
        })
        .collect();
    members.extend(sources.iter().map(|(_, m)| m.clone()));
    if let Some(l) = &c.source.license_file {
        members.push(c.expand(l, art.arch));
    }
    std::fs::create_dir_all(work)?;
    let mut got = unpack::extract_members(&art.path, kind, &members, work, &Limits::default())
        .map_err(|e| {
            anyhow!(
                "{} {}: {} (from {}): {e}",
                c.name,
                art.arch,
                art.path.display(),
                art.url
            )
        })?;
    let license = if got.len() > 1 + sources.len() {
        got.pop()
    } else {
        None
    };
    let configs: Vec<(String, Extracted)> = sources
        .iter()
        .map(|(p, _)| p.clone())
        .zip(got.drain(1..))
        .collect();
    let binary = got
        .pop()
        .ok_or_else(|| anyhow!("{}: binary not extracted", c.name))?;
    let elf = crate::elf::inspect(&binary.path, art.arch)
        .with_context(|| format!("{} {}: {}", c.name, art.arch, members[0]))?;
    Ok(Staged {
        binary,
        license,
        elf,
        configs,
    })
}

/// The format-neutral description of one package.
pub fn describe(
    c: &Component,
    arch: Arch,
    layout: &Layout,
    staged: &Staged,
    rendered: Vec<RenderedFile>,
    opts: &BuildOptions,
    sde: u64,
) -> Result<Package> {
    let bin_path = format!("/usr/bin/{}", c.name);
    let mut files = vec![FileEntry {
        path: bin_path.clone(),
        mode: 0o755,
        owner: "root".into(),
        group: "root".into(),
        kind: FileKind::Regular,
        content: Content::File(staged.binary.path.clone()),
        sha256: staged.binary.sha256.clone(),
        size: staged.binary.size,
    }];
    for (path, x) in &staged.configs {
        let f = c
            .config
            .iter()
            .find(|f| f.path == *path)
            .ok_or_else(|| anyhow!("{}: staged config {path} is not declared", c.name))?;
        files.push(FileEntry {
            path: path.clone(),
            mode: f.mode,
            owner: f.owner.clone(),
            group: f.group.clone(),
            kind: FileKind::Config,
            content: Content::File(x.path.clone()),
            sha256: x.sha256.clone(),
            size: x.size,
        });
    }
    let web_config = c.web_config_path();
    for r in rendered {
        let owner_group = c
            .config
            .iter()
            .find(|f| f.path == r.path)
            .map(|f| (f.owner.clone(), f.group.clone()))
            // The web config may name a TLS key and password hashes: root:<service group>.
            .or_else(|| {
                (web_config.as_deref() == Some(r.path.as_str()))
                    .then(|| ("root".to_string(), c.service.group.clone()))
            })
            .unwrap_or_else(|| ("root".into(), "root".into()));
        let bytes = r.text.into_bytes();
        files.push(FileEntry {
            path: r.path,
            mode: r.mode,
            owner: owner_group.0,
            group: owner_group.1,
            kind: if r.config {
                FileKind::Config
            } else {
                FileKind::Regular
            },
            sha256: crate::digest::sha256_hex(&bytes),
            size: bytes.len() as u64,
            content: Content::Bytes(bytes),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut dirs = Vec::new();
    let mut purge_paths = Vec::new();
    // A directory of its own under /etc for config files (e.g. /etc/mysqld_exporter).
    let own_etc = format!("/etc/{}", c.name);
    if files
        .iter()
        .any(|f| f.path.starts_with(&format!("{own_etc}/")))
    {
        dirs.push(DirEntry {
            path: own_etc.clone(),
            mode: 0o755,
            owner: "root".into(),
            group: "root".into(),
        });
        purge_paths.push(own_etc);
    }
    if let Some(d) = &c.service.state_directory {
        purge_paths.push(format!("/var/lib/{d}"));
    }
    let (name, conflicts, depends) = match layout.format {
        Format::Deb => (
            c.deb_name.clone(),
            c.conflicts_deb.clone(),
            staged.elf.deb_depends()?,
        ),
        Format::Rpm => (
            c.name.clone(),
            c.conflicts_rpm.clone(),
            staged.elf.rpm_requires(),
        ),
    };
    let rel_bin = bin_path.trim_start_matches('/');
    let mut lintian_overrides = vec![(
        format!("no-manual-page [{rel_bin}]"),
        "upstream ships no manual page; `--help` documents every flag".to_string(),
    )];
    if !staged.elf.pie {
        lintian_overrides.push((
            format!("hardening-no-pie [{rel_bin}]"),
            "upstream Go release binary is not PIE; packaging cannot change how it was linked"
                .into(),
        ));
    }
    if staged.elf.is_static() {
        lintian_overrides.push((
            format!("statically-linked-binary [{rel_bin}]"),
            "upstream ships a statically linked Go binary".into(),
        ));
    }
    Ok(Package {
        name,
        version: c.version.clone(),
        revision: c.revision,
        arch,
        summary: c.summary.clone(),
        description: c.description.clone(),
        license: c.license.clone(),
        homepage: c.homepage.clone(),
        maintainer: opts.maintainer.clone(),
        conflicts,
        depends,
        files,
        dirs,
        service: Some(ServiceBehaviour {
            unit: c.unit_name(),
            user: c.service.user.clone(),
            group: c.service.group.clone(),
            sysusers_file: format!("{}/{}.conf", layout.sysusers_dir, c.name),
            enable_on_install: true,
            restart_on_upgrade: true,
            purge_paths,
        }),
        changelog: vec![format!(
            "Package {} {} from the verified upstream release (sha256 {}).",
            c.name, c.version, c.source.sha256[&arch]
        )],
        source_date_epoch: sde,
        lintian_overrides,
        copyright_holder: c.copyright.clone(),
        upstream_license: staged
            .license
            .as_ref()
            .map(|l| Content::File(l.path.clone())),
    })
}

/// Build every job into `staging/{deb,rpm}`; returns what was built (paths relative to
/// staging). Every .rpm is signed by `rpm_signer`, every .deb carries a debsigs origin
/// signature by `deb_signer` (the same key).
#[allow(clippy::too_many_arguments)]
pub fn build_all<S>(
    templates: &Templates,
    jobs: &[(Component, Arch)],
    artifacts: &[VerifiedArtifact],
    staging: &Path,
    opts: &BuildOptions,
    rpm_signer: &S,
    deb_signer: &dyn crate::signer::Signer,
    progress: &Progress,
) -> Result<Vec<Built>>
where
    S: rpm::signature::Signing<Signature = Vec<u8>> + Sync,
{
    build_all_cached(
        templates, jobs, artifacts, staging, opts, rpm_signer, deb_signer, progress, None,
    )
    .map(|(b, _)| b)
}

/// How many packages came from the build cache and how many were built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: usize,
    pub built: usize,
}

/// As [`build_all`], reusing packages from `cache` whose key (every input of their bytes, see
/// [`crate::build_cache`]) is already there, and storing the ones it builds. The cache's
/// signer id must name the key behind `rpm_signer` and `deb_signer`. A job whose packages
/// all hit is not even unpacked.
#[allow(clippy::too_many_arguments)]
pub fn build_all_cached<S>(
    templates: &Templates,
    jobs: &[(Component, Arch)],
    artifacts: &[VerifiedArtifact],
    staging: &Path,
    opts: &BuildOptions,
    rpm_signer: &S,
    deb_signer: &dyn crate::signer::Signer,
    progress: &Progress,
    cache: Option<&crate::build_cache::BuildCache>,
) -> Result<(Vec<Built>, CacheStats)>
where
    S: rpm::signature::Signing<Signature = Vec<u8>> + Sync,
{
    let work = staging.join(".work");
    let results: Vec<Result<(Vec<Built>, CacheStats)>> = jobs
        .par_iter()
        .zip(artifacts.par_iter())
        .map(|((c, arch), art)| {
            let sp = progress.spinner(&format!("build {} {arch}", c.name));
            let r = build_one(
                templates,
                c,
                *arch,
                art,
                &work.join(format!("{}-{arch}", c.name)),
                staging,
                opts,
                rpm_signer,
                deb_signer,
                cache,
            );
            if let Some(sp) = sp {
                sp.finish_and_clear();
            }
            r
        })
        .collect();
    let mut built = Vec::new();
    let mut stats = CacheStats::default();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok((b, s)) => {
                built.extend(b);
                stats.hits += s.hits;
                stats.built += s.built;
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    std::fs::remove_dir_all(&work).ok();
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    built.sort_by(|a, b| a.file.cmp(&b.file));
    Ok((built, stats))
}

/// The build-cache keys of one job's packages (deb, then rpm: the order of `build_one`'s
/// layouts). They are made from the component's pin, not from the asset's bytes (`build_one`
/// only ever packages an asset that verified against that pin), so they are known before
/// anything is fetched: `dist`'s no-op check fingerprints a run from them. `content`: the keys
/// without the tool digest ([`crate::build_cache::BuildCache::content_key`]).
pub fn package_keys(
    bc: &crate::build_cache::BuildCache,
    templates: &Templates,
    c: &Component,
    arch: Arch,
    opts: &BuildOptions,
    source_date_epoch: u64,
    content: bool,
) -> Result<[String; 2]> {
    let pin = c
        .source
        .sha256
        .get(&arch)
        .ok_or_else(|| anyhow!("{} {arch}: no sha256 pin in {}", c.name, c.file.display()))?;
    let inputs = |format: Format| crate::build_cache::KeyInputs {
        format,
        arch,
        component_file_sha256: &c.file_sha256,
        asset_sha256: pin,
        templates: &templates.digests,
        compression: match format {
            Format::Deb => opts.deb_compression,
            Format::Rpm => opts.rpm_compression,
        },
        maintainer: &opts.maintainer,
        source_date_epoch,
    };
    Ok(if content {
        [
            bc.content_key(&inputs(Format::Deb)),
            bc.content_key(&inputs(Format::Rpm)),
        ]
    } else {
        [bc.key(&inputs(Format::Deb)), bc.key(&inputs(Format::Rpm))]
    })
}

#[allow(clippy::too_many_arguments)]
fn build_one<S>(
    templates: &Templates,
    c: &Component,
    arch: Arch,
    art: &VerifiedArtifact,
    work: &Path,
    staging: &Path,
    opts: &BuildOptions,
    rpm_signer: &S,
    deb_signer: &dyn crate::signer::Signer,
    cache: Option<&crate::build_cache::BuildCache>,
) -> Result<(Vec<Built>, CacheStats)>
where
    S: rpm::signature::Signing<Signature = Vec<u8>>,
{
    let sde = source_date_epoch(c, opts.source_date_epoch);
    let sub = |f: Format| match f {
        Format::Deb => "deb",
        Format::Rpm => "rpm",
    };
    let layouts = [Layout::DEB, Layout::RPM];
    let keys: Vec<Option<String>> = match cache {
        Some(bc) => {
            // (Always so: fetch verified the asset against the pin the keys are made from.)
            if c.source.sha256.get(&arch) != Some(&art.sha256) {
                bail!(
                    "{} {arch}: the asset's sha256 {} is not the pin",
                    c.name,
                    art.sha256
                );
            }
            package_keys(bc, templates, c, arch, opts, sde, false)?
                .into_iter()
                .map(Some)
                .collect()
        }
        None => vec![None, None],
    };
    let mut out: Vec<Option<Built>> = vec![None, None];
    let mut stats = CacheStats::default();
    if let Some(bc) = cache {
        for (i, l) in layouts.iter().enumerate() {
            let key = keys[i].as_deref().unwrap_or_default();
            let dir = staging.join(sub(l.format));
            // A hit needs the package and its SBOM and provenance (cached beside it under
            // derived keys); any of them missing means the package is built again.
            let attest_hit = |key: &str| -> Result<bool> {
                for (adir, tag) in [
                    (crate::attest::SBOM_DIR, "sbom"),
                    (crate::attest::PROVENANCE_DIR, "provenance"),
                ] {
                    if bc
                        .fetch(&format!("{key}-{tag}"), &staging.join(adir))?
                        .is_none()
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            };
            if let Some(e) = bc.fetch(key, &dir)? {
                if !attest_hit(key)? {
                    // Built again below: drop the placed link first, so that the writer never
                    // writes through a hard link into the cache entry.
                    let _ = std::fs::remove_file(dir.join(&e.file_name));
                    continue;
                }
                out[i] = Some(Built {
                    component: c.name.clone(),
                    package: e.package,
                    format: l.format,
                    version: e.version,
                    arch,
                    file: format!("{}/{}", sub(l.format), e.file_name),
                    size: e.size,
                    sha256: e.sha256,
                });
                stats.hits += 1;
            }
        }
    }
    if out.iter().any(Option::is_none) {
        let staged = stage(c, art, work)?;
        for (i, layout) in layouts.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let rendered = crate::render::render_component(templates, c, layout)?;
            let pkg = describe(c, arch, layout, &staged, rendered, opts, sde)?;
            let d = staging.join(sub(layout.format));
            std::fs::create_dir_all(&d)?;
            let w: Written = match layout.format {
                Format::Deb => crate::deb::write_deb_signed(
                    &pkg,
                    templates,
                    &d,
                    opts.deb_compression,
                    Some(deb_signer),
                )?,
                Format::Rpm => crate::rpm_writer::write_rpm_signed(
                    &pkg,
                    templates,
                    &d,
                    opts.rpm_compression,
                    Some(rpm_signer),
                )?,
            };
            crate::attest::write(
                staging,
                &crate::attest::Inputs {
                    component: c,
                    arch,
                    format: layout.format,
                    artifact: art,
                    templates: &templates.digests,
                    package: &pkg,
                    written: &w,
                    source_date_epoch: sde,
                    compression: format!(
                        "{:?}",
                        match layout.format {
                            Format::Deb => opts.deb_compression,
                            Format::Rpm => opts.rpm_compression,
                        }
                    )
                    .to_lowercase(),
                },
            )
            .with_context(|| format!("{}: SBOM and provenance", w.file_name))?;
            let version = format!("{}-{}", pkg.version, pkg.revision);
            if let (Some(bc), Some(key)) = (cache, keys[i].as_deref()) {
                let entry =
                    |file_name: String, size: u64, sha256: String| crate::build_cache::Entry {
                        file_name,
                        package: pkg.name.clone(),
                        version: version.clone(),
                        size,
                        sha256,
                    };
                let mut stored = bc.store(
                    key,
                    &w.path,
                    &entry(w.file_name.clone(), w.size, w.sha256.clone()),
                );
                for (adir, suffix, tag) in [
                    (crate::attest::SBOM_DIR, crate::attest::SBOM_SUFFIX, "sbom"),
                    (
                        crate::attest::PROVENANCE_DIR,
                        crate::attest::PROVENANCE_SUFFIX,
                        "provenance",
                    ),
                ] {
                    if stored.is_err() {
                        break;
                    }
                    let name = format!("{}{suffix}", w.file_name);
                    let path = staging.join(adir).join(&name);
                    stored = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))
                        .and_then(|bytes| {
                            bc.store(
                                &format!("{key}-{tag}"),
                                &path,
                                &entry(name, bytes.len() as u64, crate::digest::sha256_hex(&bytes)),
                            )
                        });
                }
                if let Err(e) = stored {
                    eprintln!("warning: build cache: {e:#}");
                }
            }
            out[i] = Some(Built {
                component: c.name.clone(),
                package: pkg.name.clone(),
                format: layout.format,
                version,
                arch,
                file: format!("{}/{}", sub(layout.format), w.file_name),
                size: w.size,
                sha256: w.sha256,
            });
            stats.built += 1;
        }
    }
    Ok((out.into_iter().flatten().collect(), stats))
}

/// How the repositories of a generation are made.
#[derive(Debug, Clone)]
pub struct RepoOptions {
    pub apt: crate::apt_repo::AptSettings,
    pub dnf: crate::dnf_repo::Settings,
    /// Stem of the client files (`keys/<name>.asc`, `<name>.sources`, `<name>.repo`).
    pub client_name: String,
    /// Where hosts reach the generation's root (`…/apt`, `…/dnf`, `…/keys` below it).
    pub base_url: String,
}

/// Turn the packages written under `gen/.build/{deb,rpm}` into the generation's signed apt and
/// dnf repositories, client files, carried-over older index files, `SHA256SUMS` and
/// `manifest.json`. `built[].file` is rewritten to the package's path in its repository.
pub fn assemble_repositories(
    gen: &Path,
    built: &mut [Built],
    opts: &RepoOptions,
    signer: &dyn crate::signer::Signer,
    previous: &[PathBuf],
    inputs: Option<&str>,
) -> Result<()> {
    let build = gen.join(BUILD_DIR);
    let of = |f: Format| -> Vec<PathBuf> {
        built
            .iter()
            .filter(|b| b.format == f)
            .map(|b| build.join(&b.file))
            .collect()
    };
    let (debs, rpms) = (of(Format::Deb), of(Format::Rpm));
    let apt = crate::apt_repo::write_apt_repo(&gen.join("apt"), &debs, &opts.apt, signer)
        .context("writing the apt repository")?;
    let dnf = crate::dnf_repo::write_repo(&gen.join("dnf"), &rpms, &opts.dnf, signer)
        .context("writing the dnf repository")?;
    for b in built.iter_mut() {
        let name = b.file.rsplit('/').next().unwrap_or_default().to_string();
        let new = match b.format {
            Format::Deb => apt
                .packages
                .iter()
                .find(|p| p.filename.ends_with(&format!("/{name}")))
                .map(|p| format!("apt/{}", p.filename)),
            Format::Rpm => dnf
                .packages
                .iter()
                .find(|p| p.href.ends_with(&format!("/{name}")))
                .map(|p| format!("dnf/{}", p.href)),
        };
        b.file = new.ok_or_else(|| anyhow!("{name}: not placed in its repository"))?;
    }
    // SBOM and provenance of each package, each with a detached signature.
    let mut attestations = Vec::new();
    for b in built.iter() {
        let name = b.file.rsplit('/').next().unwrap_or_default();
        let mut entry = serde_json::Map::new();
        entry.insert("package".into(), b.file.clone().into());
        for (dir, suffix, key) in [
            (crate::attest::SBOM_DIR, crate::attest::SBOM_SUFFIX, "sbom"),
            (
                crate::attest::PROVENANCE_DIR,
                crate::attest::PROVENANCE_SUFFIX,
                "provenance",
            ),
        ] {
            let rel = format!("{dir}/{name}{suffix}");
            let from = build.join(&rel);
            if !from.is_file() {
                continue;
            }
            let to = gen.join(&rel);
            std::fs::create_dir_all(to.parent().unwrap())?;
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} into place", from.display()))?;
            let bytes = std::fs::read(&to)?;
            write_atomic(
                &gen.join(format!("{rel}.asc")),
                signer.detach_sign_armored(&bytes)?.as_bytes(),
            )?;
            entry.insert(key.into(), rel.into());
            entry.insert(
                format!("{key}_sha256"),
                crate::digest::sha256_hex(&bytes).into(),
            );
        }
        if entry.len() > 1 {
            attestations.push(serde_json::Value::Object(entry));
        }
    }
    std::fs::remove_dir_all(&build).with_context(|| format!("removing {}", build.display()))?;

    let base = opts.base_url.trim_end_matches('/');
    crate::apt_repo::client_files(
        &opts.apt,
        &crate::apt_repo::ClientSettings {
            name: opts.client_name.clone(),
            base_url: format!("{base}/apt"),
            signed_by: None,
        },
        signer,
    )?
    .write(gen)?;
    crate::debsig::write_debsig_policy(&gen.join(DEBSIG_DIR), signer)
        .context("writing the debsig-verify policy")?;
    crate::dnf_repo::write_repo_file(
        &gen.join(format!("{}.repo", opts.client_name)),
        &crate::dnf_repo::RepoFile {
            id: opts.client_name.clone(),
            name: format!("{} packages", opts.client_name),
            baseurl: format!("{base}/dnf"),
            gpgkey: format!("{base}/keys/{}.asc", opts.client_name),
        },
    )?;

    // Older indexes stay fetchable: the by-hash files and repodata they name come along —
    // for the suites this generation publishes (an older generation's other suite, e.g. after
    // `--suite` changed, has no Release here to name its by-hash files: it is not carried).
    // Each previous generation's files are named from its signed SHA256SUMS (checked against
    // this signing key: after a key change, nothing older is carried).
    let trusted = crate::verify::TrustedKeys::from_armored(&signer.public_key_armored()?)?;
    crate::publish::carry_over(previous, gen, |prev| {
        let sums = match crate::verify::signed_sums(prev, &trusted) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "warning: not carrying over anything from {}: {e:#}",
                    prev.display()
                );
                return Vec::new();
            }
        };
        own_index_files(prev, &sums)
            .into_iter()
            .filter(|named| match named.rel.strip_prefix("apt/dists") {
                Ok(r) => r.components().next().is_some_and(|suite| {
                    gen.join("apt/dists").join(suite).join("Release").is_file()
                }),
                Err(_) => true,
            })
            .collect()
    })?;

    // `inputs`: the fingerprint of what `dist` made this generation from (`crate::inputs`),
    // signed with the rest through SHA256SUMS: the no-op check compares it, not just a record
    // beside the tree.
    let mut manifest = serde_json::json!({
        "packages": built,
        "attestations": attestations,
    });
    if let Some(f) = inputs {
        manifest["inputs"] = serde_json::Value::String(f.to_string());
    }
    let manifest = serde_json::to_string_pretty(&manifest)?;
    write_atomic(&gen.join("manifest.json"), manifest.as_bytes())?;
    // SHA256SUMS names every file of the generation (client files and keys included), and its
    // detached signature makes the whole tree checkable offline, byte for byte.
    let known: std::collections::BTreeMap<&str, &str> = built
        .iter()
        .map(|b| (b.file.as_str(), b.sha256.as_str()))
        .collect();
    let mut sums = String::new();
    for f in tree_files(gen)? {
        if f == SUMS_FILE || f == SUMS_SIGNATURE {
            continue;
        }
        let h = match known.get(f.as_str()) {
            Some(h) => h.to_string(),
            None => {
                crate::digest::sha256_file(&gen.join(&f))
                    .with_context(|| format!("hashing {f}"))?
                    .0
            }
        };
        sums.push_str(&format!("{h}  {f}\n"));
    }
    write_atomic(&gen.join(SUMS_FILE), sums.as_bytes())?;
    write_atomic(
        &gen.join(SUMS_SIGNATURE),
        signer.detach_sign_armored(sums.as_bytes())?.as_bytes(),
    )?;
    Ok(())
}

/// The list of every file of a generation with its sha256, and its detached signature.
pub const SUMS_FILE: &str = "SHA256SUMS";
pub const SUMS_SIGNATURE: &str = "SHA256SUMS.asc";

/// Every regular file below `root`, as sorted `/`-separated relative paths. Anything else
/// (a symlink, a device) is an error: a generation holds files and directories only.
pub fn tree_files(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            let p = e.path();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                out.push(rel.to_string_lossy().into_owned());
            } else {
                bail!("{}: neither a file nor a directory", p.display());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Where the debsig-verify policy and keyring go inside a generation (`policies/<KEYID>/`
/// for /etc/debsig/policies, `keyrings/<KEYID>/` for /usr/share/debsig/keyrings).
pub const DEBSIG_DIR: &str = "keys/debsig";

/// Where `build_all` writes packages inside a generation before they are placed in the
/// repositories.
pub const BUILD_DIR: &str = ".build";

/// The files a generation's own indexes name, relative to the generation, with the digest
/// each is named by: the by-hash copies of every index each apt suite's `Release` lists, and
/// the repodata files `repomd.xml` names. `sums` is the generation's signed `SHA256SUMS`
/// ([`crate::verify::signed_sums`]): an index is read only when its bytes are the ones listed
/// there, a file is named only when it is listed too (with that sha256) and has the shape this
/// writer gives it (`…/by-hash/SHA256/<64 hex>`, `…/by-hash/SHA512/<128 hex>`,
/// `dnf/repodata/<name>`). What is named is checked again as it is carried over
/// ([`crate::publish::carry_over`]).
pub fn own_index_files(
    gen: &Path,
    sums: &std::collections::BTreeMap<String, String>,
) -> Vec<crate::publish::Named> {
    use crate::publish::{Named, NamedDigest};
    use std::path::Component as C;
    const INDEX_LIMIT: u64 = 64 << 20;
    // An index file's bytes, when they are what the signed listing says.
    let index = |rel: &str| -> Option<Vec<u8>> {
        let listed = sums.get(rel)?;
        match crate::verify::read_in_tree_limited(gen, &gen.join(rel), INDEX_LIMIT) {
            Ok(b) if crate::digest::sha256_hex(&b) == *listed => Some(b),
            Ok(_) => {
                eprintln!(
                    "warning: not carrying over what {} names: it is not the file its SHA256SUMS lists",
                    gen.join(rel).display()
                );
                None
            }
            Err(e) => {
                eprintln!(
                    "warning: not carrying over what {} names: {e:#}",
                    gen.join(rel).display()
                );
                None
            }
        }
    };
    let is_hex = |h: &str, len: usize| {
        h.len() == len
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut out = Vec::new();
    let mut push = |rel: PathBuf, digest: NamedDigest| {
        let normal = rel.components().all(|c| matches!(c, C::Normal(_)));
        if let Some(signed) = rel.to_str().filter(|_| normal).and_then(|r| sums.get(r)) {
            out.push(Named {
                rel,
                digest,
                signed_sha256: signed.clone(),
            });
        }
    };
    let suites = sums.keys().filter_map(|k| {
        k.strip_prefix("apt/dists/")?
            .strip_suffix("/Release")
            .filter(|s| !s.contains('/'))
    });
    for suite in suites {
        let Some(text) =
            index(&format!("apt/dists/{suite}/Release")).and_then(|b| String::from_utf8(b).ok())
        else {
            continue;
        };
        let Ok(Some(para)) = crate::verify::parse_deb822(&text).map(|p| p.into_iter().next())
        else {
            continue;
        };
        for (algo, len) in [("SHA256", 64), ("SHA512", 128)] {
            for (hash, _, path) in para
                .get(algo)
                .map(|v| crate::verify::release_sums(v))
                .unwrap_or_default()
            {
                if !is_hex(&hash, len) {
                    continue;
                }
                let dir = Path::new(&path).parent().unwrap_or(Path::new(""));
                let rel = Path::new("apt/dists")
                    .join(suite)
                    .join(dir)
                    .join("by-hash")
                    .join(algo)
                    .join(&hash);
                let digest = match algo {
                    "SHA256" => NamedDigest::Sha256(hash),
                    _ => NamedDigest::Sha512(hash),
                };
                push(rel, digest);
            }
        }
    }
    if let Some(xml) = index("dnf/repodata/repomd.xml") {
        if let Ok(data) = crate::verify::parse_repomd(&xml) {
            for d in data {
                let name = d.href.strip_prefix("repodata/").unwrap_or("");
                if name.is_empty() || name.contains('/') || !is_hex(&d.checksum, 64) {
                    continue;
                }
                push(
                    Path::new("dnf/repodata").join(name),
                    NamedDigest::Sha256(d.checksum),
                );
            }
        }
    }
    out
}

pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut t = tempfile::NamedTempFile::new_in(dir)?;
    t.write_all(data)?;
    t.as_file().sync_all()?;
    // Published files are for everyone to read (a temporary file starts out 0600).
    t.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    t.persist(path)
        .map_err(|e| anyhow!("{}: {}", path.display(), e.error))?;
    Ok(())
}
