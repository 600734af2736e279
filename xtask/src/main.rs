//! `cargo xtask …`: the observability-stack command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use xtask::apt_repo::AptSettings;
use xtask::component::{self, Component};
use xtask::dist::{self, BuildOptions, Built, Progress, Selection};
use xtask::fetch::{self, FetchOptions, Fetcher};
use xtask::package::{Arch, Compression, Layout};
use xtask::publish;
use xtask::render::Templates;
use xtask::signing::{self, KeyRequest, SigningKey};
use xtask::verify::{self, TrustedKeys};

/// Verified upstream exporter releases in, hardened .deb and .rpm packages out.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fetch, verify, build every package: the main job.
    Dist(Box<DistArgs>),
    /// Validate component files and templates offline; list arches without pins.
    Check(CheckArgs),
    /// Set a component's version and per-arch pins from the upstream checksum file.
    Pin(PinArgs),
    /// Fetch and verify upstream assets into the cache only.
    Fetch(FetchArgs),
    /// Render a component's unit, env, sysusers and firewall files into a directory.
    Render(RenderArgs),
    /// Check a published tree (or a copy of it) offline: signatures, index and package hashes.
    Verify(VerifyArgs),
    /// Air-gapped transfer: a signed bundle of the published tree, and its import.
    #[command(subcommand)]
    Mirror(MirrorCmd),
    /// Signed repositories from packages already built: one generation from several shard
    /// outputs (`--merge`), or a directory of packages indexed in place (`--pool`).
    Index(IndexArgs),
    /// Measure the pipeline against dpkg-deb, rpmbuild, apt-ftparchive, createrepo_c, sha256sum.
    Bench(xtask::bench::BenchArgs),
    /// One measured step of `bench`, run as its own process (peak RSS per run).
    #[command(hide = true)]
    BenchChild(xtask::bench::ChildArgs),
}

#[derive(Subcommand)]
enum MirrorCmd {
    /// Write OUT (tar, or tar.zst with --zstd) of dist/current, keys and a manifest, and
    /// OUT.minisig.
    Bundle(BundleArgs),
    /// Verify BUNDLE (+ BUNDLE.minisig) and publish it atomically as a generation of DIR.
    Import(ImportArgs),
}

#[derive(Args)]
struct BundleArgs {
    /// The bundle file to write (its signature goes to OUT.minisig).
    out: PathBuf,
    /// Output directory of `dist` whose `current` generation is bundled.
    #[arg(long, value_name = "DIR", default_value_os_t = workspace_path("dist"))]
    dist: PathBuf,
    /// Unencrypted minisign secret key (`minisign -G -W`), mode 0600.
    #[arg(long, value_name = "FILE")]
    minisign_key: PathBuf,
    /// Compress the archive with zstd.
    #[arg(long)]
    zstd: bool,
}

#[derive(Args)]
struct ImportArgs {
    /// The bundle (BUNDLE.minisig beside it).
    bundle: PathBuf,
    /// Output directory to publish into (a new generation; `current` switches last).
    #[arg(long, value_name = "DIR")]
    into: PathBuf,
    /// Trusted minisign public key (default: every keys/*.minisign.pub of the workspace).
    #[arg(long, value_name = "FILE")]
    minisign_pub: Option<PathBuf>,
}

#[derive(Args)]
struct IndexArgs {
    /// Shard output directories (each from `dist --component … --arch … --out DIR`).
    #[arg(long, value_name = "DIR", num_args = 1.., required_unless_present = "pool", conflicts_with_all = ["pool", "format", "index_cache", "no_index_cache"])]
    merge: Vec<PathBuf>,
    /// Index every package below DIR into the repository at OUT, updated in place (as
    /// `apt-ftparchive` or `createrepo_c` over a directory): packages unchanged since the last
    /// run are taken from the metadata cache instead of being read again.
    #[arg(
        long,
        value_name = "DIR",
        requires = "format",
        conflicts_with = "shard_key"
    )]
    pool: Option<PathBuf>,
    /// With --pool: which repository, `apt` (the .deb files below DIR) or `dnf` (the .rpm files).
    #[arg(long, value_enum)]
    format: Option<PoolFormat>,
    /// With --pool: the metadata cache file (default: CACHE/index/<digest of OUT's path>.<format>,
    /// CACHE as for `dist`).
    #[arg(long, value_name = "FILE")]
    index_cache: Option<PathBuf>,
    /// With --pool: read every package again and keep no metadata cache.
    #[arg(long, conflicts_with = "index_cache")]
    no_index_cache: bool,
    /// --merge: output directory of the merged repository (generations, `current`).
    /// --pool: the repository root itself (`dists/`, `pool/` / `repodata/`, `Packages/`).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Keys the shards are checked against (repeatable), in addition to the signing key's
    /// public half. Default: as `verify` (keys/ of the workspace and the development key).
    #[arg(long, value_name = "FILE")]
    shard_key: Vec<PathBuf>,
    /// Machine-readable JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    repo: RepoArgs,
}

#[derive(Args, Clone)]
struct NetArgs {
    /// Replace scheme and host of every upstream URL with this (https:// or file:).
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// Trust this CA certificate (PEM) in addition to the system's.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Limit for one download, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
}

#[derive(Args, Clone)]
struct FetchCommon {
    /// Only these components (repeatable; default: all).
    #[arg(long = "component", value_name = "NAME")]
    components: Vec<String>,
    /// Only these arches (repeatable; default: every pinned arch).
    #[arg(long = "arch", value_name = "ARCH", value_parser = parse_arch)]
    arches: Vec<Arch>,
    /// Component files directory (default: the workspace's components/).
    #[arg(long = "components", value_name = "DIR", default_value_os_t = workspace_path("components"))]
    components_dir: PathBuf,
    #[command(flatten)]
    net: NetArgs,
    /// Download cache (content-addressed by sha256).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Use only the cache; never touch the network.
    #[arg(long)]
    offline: bool,
    /// Machine-readable JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DistArgs {
    #[command(flatten)]
    common: FetchCommon,
    /// Output directory (default: the workspace's dist/).
    #[arg(long, value_name = "DIR", default_value_os_t = workspace_path("dist"))]
    out: PathBuf,
    /// Templates directory overriding the embedded templates.
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
    /// .deb payload compression.
    #[arg(long, value_enum, default_value_t = Compression::Xz)]
    deb_compression: Compression,
    /// .rpm payload compression.
    #[arg(long, value_enum, default_value_t = Compression::Xz)]
    rpm_compression: Compression,
    /// Maintainer / packager field.
    #[arg(long, value_name = "NAME <EMAIL>", default_value = dist::DEFAULT_MAINTAINER)]
    maintainer: String,
    /// Rebuild every package instead of reusing unchanged ones from the build cache
    /// (CACHE/builds, keyed by sha256 of every input of a package's bytes).
    #[arg(long)]
    no_build_cache: bool,
    #[command(flatten)]
    repo: RepoArgs,
}

/// How a generation's repositories are signed and described (`dist` and `index --merge`).
#[derive(Args)]
struct RepoArgs {
    /// Armored OpenPGP secret key (mode 0600) that signs packages and repositories
    /// (or the key text in OBS_SIGNING_KEY). Without one: a local development key.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// File holding the key's passphrase (mode 0600; or OBS_SIGNING_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Refuse to run without a real signing key.
    #[arg(long)]
    release: bool,
    /// URL where hosts reach the published tree, written into the client files (`dist`,
    /// `index --merge`; default: file:// of OUT/current).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// apt suite (and codename).
    #[arg(long, default_value = "stable")]
    suite: String,
    /// apt Origin and Label.
    #[arg(long, default_value = "observability-stack")]
    origin: String,
    /// Write Valid-Until = Date + DAYS into apt's Release.
    #[arg(long, value_name = "DAYS")]
    valid_days: Option<u64>,
    /// Compression of dnf's primary/filelists/other.
    #[arg(long, value_enum, default_value_t = DnfMetadata::Gzip)]
    dnf_metadata: DnfMetadata,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PoolFormat {
    Apt,
    Dnf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DnfMetadata {
    Gzip,
    Zstd,
}

#[derive(Args)]
struct VerifyArgs {
    /// An output directory (its `current` generation is checked) or a copy of one generation.
    dir: PathBuf,
    /// Trusted public key(s), armored or binary (repeatable). Default: keys/*.asc and
    /// keys/*.gpg of the workspace, plus the local development key if one exists.
    #[arg(long, value_name = "FILE")]
    key: Vec<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    #[arg(long = "components", value_name = "DIR", default_value_os_t = workspace_path("components"))]
    components_dir: PathBuf,
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
}

#[derive(Args)]
struct PinArgs {
    /// Component name (file stem in the components directory).
    name: String,
    /// The new upstream version.
    version: String,
    #[arg(long = "components", value_name = "DIR", default_value_os_t = workspace_path("components"))]
    components_dir: PathBuf,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args)]
struct FetchArgs {
    #[command(flatten)]
    common: FetchCommon,
    /// Also copy the verified assets into DIR, laid out as a cache that
    /// `dist --offline --cache DIR` reads (for a machine without network).
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
}

#[derive(Args)]
struct RenderArgs {
    name: String,
    #[arg(long = "components", value_name = "DIR", default_value_os_t = workspace_path("components"))]
    components_dir: PathBuf,
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
    /// Which layout: deb or rpm.
    #[arg(long, default_value = "deb")]
    format: String,
    /// Output root: files land at OUT/<absolute path>.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// A path in the workspace this binary was built from, when it is still there (so `cargo
/// xtask` works from any directory); else relative to the current directory.
fn workspace_path(rel: &str) -> PathBuf {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if ws.join("Cargo.toml").is_file() && ws.join("components").is_dir() {
        let p = ws.join(rel);
        return std::fs::canonicalize(&ws).map(|w| w.join(rel)).unwrap_or(p);
    }
    PathBuf::from(rel)
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::parse(s).ok_or_else(|| format!("unknown arch {s:?} (amd64 or arm64)"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XTASK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Dist(a) => cmd_dist(*a),
        Cmd::Check(a) => cmd_check(a),
        Cmd::Pin(a) => cmd_pin(a),
        Cmd::Fetch(a) => cmd_fetch(a),
        Cmd::Render(a) => cmd_render(a),
        Cmd::Verify(a) => cmd_verify(a),
        Cmd::Mirror(MirrorCmd::Bundle(a)) => cmd_bundle(a),
        Cmd::Mirror(MirrorCmd::Import(a)) => cmd_import(a),
        Cmd::Index(a) => cmd_index(a),
        Cmd::Bench(a) => xtask::bench::run(a),
        Cmd::BenchChild(a) => xtask::bench::child(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn fetch_options(c: &FetchCommon) -> FetchOptions {
    FetchOptions {
        mirror: c.net.mirror.clone(),
        ca_cert: c.net.ca_cert.clone(),
        cache_dir: c.cache.clone().unwrap_or_else(fetch::default_cache_dir),
        offline: c.offline,
        timeout: Duration::from_secs(c.net.timeout.max(1)),
    }
}

fn load(dir: &Path) -> Result<Vec<Component>> {
    component::load_dir(dir)
}

fn plan(c: &FetchCommon) -> Result<dist::Plan> {
    let all = load(&c.components_dir)?;
    dist::plan(
        &all,
        &Selection {
            components: c.components.clone(),
            arches: c.arches.clone(),
        },
    )
}

fn cmd_fetch(a: FetchArgs) -> Result<()> {
    let (jobs, notes) = plan(&a.common)?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    let fetcher = Fetcher::new(fetch_options(&a.common))?;
    let progress = Progress::new(!a.common.json);
    let arts = dist::fetch_all(&fetcher, &jobs, &progress)?;
    if let Some(dir) = &a.export {
        let n = fetch::export(&arts, dir)?;
        eprintln!(
            "{n} verified asset(s) exported to {} (use: dist --offline --cache {})",
            dir.display(),
            dir.display()
        );
    }
    if a.common.json {
        println!("{}", serde_json::to_string_pretty(&arts)?);
    } else {
        for v in &arts {
            println!(
                "{:<20} {:<6} {:>10}  {}  {}",
                v.component,
                v.arch.to_string(),
                v.size,
                v.sha256,
                if v.cached { "cached" } else { "downloaded" }
            );
        }
        eprintln!(
            "{} asset(s) verified into {}",
            arts.len(),
            fetcher.options().cache_dir.display()
        );
    }
    Ok(())
}

/// `dist`: plan, key and lock; then nothing at all when the current generation was made from
/// the same inputs and still verifies (xtask/src/inputs.rs); else fetch, build (reusing the
/// build cache), index, sign, verify and publish a new generation, and record its inputs.
fn cmd_dist(a: DistArgs) -> Result<()> {
    if a.maintainer.chars().any(|c| c.is_control())
        || !a.maintainer.contains('<')
        || !a.maintainer.ends_with('>')
    {
        bail!(
            "--maintainer {:?}: must be `Name <email>` without control characters",
            a.maintainer
        );
    }
    let templates = Templates::load(a.templates.as_deref())?;
    let (jobs, notes) = plan(&a.common)?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    if jobs.is_empty() {
        bail!("nothing to build: no selected component has a pinned arch");
    }
    let key = resolve_key(&a.repo)?;
    let sdes: Vec<u64> = jobs
        .iter()
        .map(|(c, _)| dist::source_date_epoch(c, None))
        .collect();
    let date = sdes.iter().copied().max().unwrap_or(0);
    // Signatures dated like everything else: same inputs, same bytes (raised to the key's
    // creation time when SOURCE_DATE_EPOCH is older than the key).
    let key = key.with_signature_time(Some(date));
    let opts = BuildOptions {
        out_dir: a.out.clone(),
        deb_compression: a.deb_compression,
        rpm_compression: a.rpm_compression,
        maintainer: a.maintainer.clone(),
        source_date_epoch: None,
    };
    let fetch_opts = fetch_options(&a.common);
    // The package keys of the fingerprint are the build cache's, with or without the cache.
    let keys = xtask::build_cache::BuildCache::new(
        &fetch_opts.cache_dir.join("builds"),
        &format!(
            "{} {} t={date}",
            key.fingerprint(),
            key.signing_fingerprint()
        ),
    )?;
    let trusted = TrustedKeys::from_armored(&key.public_key_armored()?)?;
    let fingerprint_of = |p: &Publishing| {
        xtask::inputs::fingerprints(&xtask::inputs::Run {
            keys: &keys,
            templates: &templates,
            jobs: &jobs,
            source_date_epochs: &sdes,
            opts: &opts,
            repo: &p.repo,
            key: &key,
            date,
        })
    };
    // The no-op check holds the lock from before fetching to the end. It is taken that early
    // only when OUT has a record of inputs to compare with: a run into a new directory still
    // leaves it untouched (not even created) when a fetch fails.
    let mut early = None;
    if !a.no_build_cache && publish::has_recorded_inputs(&a.out) {
        let p = begin_publish(&a.repo, &a.out, date)?;
        let fingerprints = fingerprint_of(&p)?;
        match xtask::inputs::check(&p.lock.out, &fingerprints, &trusted, &jobs) {
            xtask::inputs::Verdict::Unchanged {
                generation,
                packages,
            } => {
                drop(p);
                return report_unchanged(&generation, &packages, &key, &a.out, a.common.json);
            }
            xtask::inputs::Verdict::Changed(why) => {
                if let Some(why) = why {
                    eprintln!("note: building a new generation: {why}");
                }
                early = Some((p, fingerprints));
            }
        }
    }
    let fetcher = Fetcher::new(fetch_opts)?;
    let progress = Progress::new(!a.common.json);
    let arts = dist::fetch_all(&fetcher, &jobs, &progress)?;
    let (p, fingerprints) = match early {
        Some(x) => x,
        None => {
            let p = begin_publish(&a.repo, &a.out, date)?;
            let f = fingerprint_of(&p)?;
            (p, f)
        }
    };
    let staging = p.stage()?;
    let rpm_signer = key.rpm_signer()?;
    let build_cache = (!a.no_build_cache).then_some(&keys);
    let (built, stats) = dist::build_all_cached(
        &templates,
        &jobs,
        &arts,
        &staging.path().join(dist::BUILD_DIR),
        &opts,
        &rpm_signer,
        &key,
        &progress,
        build_cache,
    )?;
    if let Some(bc) = build_cache {
        eprintln!(
            "build cache {}: {} package(s) reused, {} built",
            bc.dir().display(),
            stats.hits,
            stats.built
        );
    }
    publish_generation(
        p,
        staging,
        built,
        &key,
        &trusted,
        &a.out,
        a.common.json,
        Some(&fingerprints),
    )
}

/// `dist` with nothing to do: the packages of the current generation, reported as
/// [`publish_generation`] reports a new one (table or the same JSON object).
fn report_unchanged(
    generation: &Path,
    packages: &[Built],
    key: &SigningKey,
    out_arg: &Path,
    json: bool,
) -> Result<()> {
    let name = generation
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if json {
        print_json(out_arg, generation, key, packages)?;
    } else {
        print_table(packages);
    }
    eprintln!(
        "nothing changed: generation {name} has the same inputs and verifies; {} package(s), \
         0 built, nothing published",
        packages.len()
    );
    if !json {
        print_summary(out_arg, &name, key, packages.len())?;
    }
    Ok(())
}

/// An output directory locked for a new generation (`dist` and `index --merge`): the lock,
/// the repository options (the default base URL names OUT's canonical path) and the
/// generations whose indexes the new one carries over.
struct Publishing {
    lock: publish::OutLock,
    repo: dist::RepoOptions,
    previous: Vec<PathBuf>,
}

fn begin_publish(r: &RepoArgs, out: &Path, date: u64) -> Result<Publishing> {
    let lock = publish::lock(out)?;
    let canonical = std::fs::canonicalize(out)?;
    let repo = repo_options(r, &canonical, date)?;
    let previous = publish::previous(&canonical)?;
    Ok(Publishing {
        lock,
        repo,
        previous,
    })
}

impl Publishing {
    /// The staging directory of the new generation.
    fn stage(&self) -> Result<publish::Staging> {
        publish::begin(&self.lock)
    }
}

/// The signing key of `dist`/`index` (notes about development keys and subkeys on stderr).
fn resolve_key(r: &RepoArgs) -> Result<SigningKey> {
    let key = SigningKey::resolve(&KeyRequest {
        key_file: r.signing_key.clone(),
        passphrase_file: r.passphrase_file.clone(),
        release: r.release,
        dev_key_dir: None,
    })?;
    if key.is_development() {
        eprintln!("{}", signing::DEV_KEY_WARNING);
        publish_dev_public_key(&key);
    }
    if key.signing_fingerprint() != key.fingerprint() {
        eprintln!(
            "note: {} signs with its subkey {}: apt, dnf, rpm and `verify` accept that, but \
             debsig-verify (0.28) checks .deb origin signatures against primary keys only",
            key.fingerprint(),
            key.signing_fingerprint()
        );
    }
    Ok(key)
}

fn repo_options(r: &RepoArgs, out: &Path, date: u64) -> Result<dist::RepoOptions> {
    let repo = dist::RepoOptions {
        apt: AptSettings {
            origin: r.origin.clone(),
            label: r.origin.clone(),
            suite: r.suite.clone(),
            codename: r.suite.clone(),
            valid_until: match r.valid_days {
                Some(d) => Some(
                    d.checked_mul(86400)
                        .filter(|s| date.saturating_add(*s) <= u32::MAX as u64)
                        .map(Duration::from_secs)
                        .with_context(|| {
                            format!("--valid-days {d}: Valid-Until would be past 2106")
                        })?,
                ),
                None => None,
            },
            date,
            ..AptSettings::default()
        },
        dnf: xtask::dnf_repo::Settings {
            compression: match r.dnf_metadata {
                DnfMetadata::Gzip => xtask::dnf_repo::MetadataCompression::Gzip,
                DnfMetadata::Zstd => xtask::dnf_repo::MetadataCompression::Zstd,
            },
            ..xtask::dnf_repo::Settings::new(date)
        },
        client_name: "observability-stack".into(),
        base_url: r
            .base_url
            .clone()
            .unwrap_or_else(|| format!("file://{}/current", out.display())),
    };
    repo.apt.validate()?;
    Ok(repo)
}

/// Index, sign and self-verify the staged generation (packages in its build directory), then
/// publish it, record the inputs that made it (`fingerprints`; `dist` only) and report what it
/// holds.
#[allow(clippy::too_many_arguments)]
fn publish_generation(
    p: Publishing,
    staging: publish::Staging,
    mut built: Vec<Built>,
    key: &SigningKey,
    trusted: &TrustedKeys,
    out_arg: &Path,
    json: bool,
    fingerprints: Option<&xtask::inputs::Fingerprints>,
) -> Result<()> {
    dist::assemble_repositories(
        staging.path(),
        &mut built,
        &p.repo,
        key,
        &p.previous,
        fingerprints.map(|f| f.content.as_str()),
    )?;
    // Never publish what does not verify: the whole tree is checked before the switch.
    let report = verify::verify_tree(staging.path(), trusted)?;
    if !report.ok() {
        bail!(
            "the new generation does not verify (nothing was published):\n{}",
            report.failures.join("\n")
        );
    }
    let gen = publish::commit(&p.lock, staging)?;
    if let Some(f) = fingerprints {
        // Best effort: without the record the next run builds again, which is only slower.
        if let Err(e) = publish::record_inputs(&p.lock, &gen, &f.full) {
            eprintln!("warning: {e:#}");
        }
    }
    drop(p);
    if json {
        print_json(out_arg, &gen, key, &built)?;
    } else {
        print_table(&built);
        print_summary(
            out_arg,
            &gen.file_name().unwrap_or_default().to_string_lossy(),
            key,
            built.len(),
        )?;
    }
    Ok(())
}

/// The `--json` report of `dist` and `index --merge`.
fn print_json(out_arg: &Path, gen: &Path, key: &SigningKey, built: &[Built]) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "out": out_arg,
            "generation": gen,
            "signing_key": key.fingerprint(),
            "development_key": key.is_development(),
            "packages": built,
        }))?
    );
    Ok(())
}

/// The last line of the table report: where the packages are and who signed them.
fn print_summary(out_arg: &Path, gen_name: &str, key: &SigningKey, n: usize) -> Result<()> {
    let out = std::fs::canonicalize(out_arg)?;
    eprintln!(
        "{n} package(s) in {} (generation {gen_name}), signed by {}{}",
        out.join("current").display(),
        key.fingerprint(),
        if key.is_development() {
            " — DEVELOPMENT KEY, NOT FOR PRODUCTION"
        } else {
            ""
        }
    );
    Ok(())
}

/// `index --merge`: every shard verified and its packages gathered (conflicts refused) before
/// OUT is touched; then one generation indexed, signed, self-verified and published as `dist`.
fn cmd_index(a: IndexArgs) -> Result<()> {
    if a.pool.is_some() {
        return cmd_index_pool(a);
    }
    let key = resolve_key(&a.repo)?;
    let shard_trust = if a.shard_key.is_empty() {
        default_trusted_keys()
    } else {
        a.shard_key.clone()
    };
    let mut trusted = TrustedKeys::from_armored(&key.public_key_armored()?)?;
    if !shard_trust.is_empty() {
        trusted.extend(TrustedKeys::load(&shard_trust)?);
    }
    let collected = xtask::merge::collect(&a.merge, &trusted)?;
    let date = match env_source_date_epoch()? {
        Some(d) => d,
        None => collected.newest_date.with_context(|| {
            "no shard has an apt Release date; set SOURCE_DATE_EPOCH".to_string()
        })?,
    };
    let key = key.with_signature_time(Some(date));
    let p = begin_publish(&a.repo, &a.out, date)?;
    let staging = p.stage()?;
    let built = xtask::merge::place(&collected, &staging.path().join(dist::BUILD_DIR))?;
    // No inputs recorded: `commit` removed the record of the generation `dist` made, and a
    // merge's inputs are the shards' trees, not a `dist` run's.
    publish_generation(p, staging, built, &key, &trusted, &a.out, a.json, None)
}

/// SOURCE_DATE_EPOCH of the environment, if set (an error if it is not a number of seconds).
fn env_source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(d) if d <= u32::MAX as u64 => Ok(Some(d)),
            Ok(_) => bail!(
                "SOURCE_DATE_EPOCH {v:?}: past 2106 (OpenPGP signature times are 32-bit seconds)"
            ),
            Err(_) => bail!("SOURCE_DATE_EPOCH {v:?}: not a number of seconds"),
        },
        Err(_) => Ok(None),
    }
}

/// `index --pool DIR --format apt|dnf --out ROOT`: the repository at ROOT of every package
/// below DIR, updated in place (index files renamed into place, the signed `Release` /
/// `repomd.xml` last), reading only the packages its metadata cache does not already describe.
fn cmd_index_pool(a: IndexArgs) -> Result<()> {
    let pool = a
        .pool
        .as_deref()
        .expect("cmd_index_pool is called with --pool");
    let format = a
        .format
        .context("--pool needs --format apt or --format dnf")?;
    if a.repo.base_url.is_some() {
        bail!("--base-url goes with --merge (client files); --pool writes the repository only");
    }
    let meta = std::fs::metadata(pool).with_context(|| format!("--pool {}", pool.display()))?;
    if !meta.is_dir() {
        bail!("--pool {}: not a directory", pool.display());
    }
    let key = resolve_key(&a.repo)?;
    // Same packages + SOURCE_DATE_EPOCH => same bytes. Without it, now, as apt-ftparchive and
    // createrepo_c date theirs: a repository updated in place must never go back in time (apt
    // keeps the InRelease it has over an older one, without a word) and Valid-Until counts
    // from it; a date taken from the packages (mtimes) would do both.
    let sde = env_source_date_epoch()?;
    let from_env = sde.is_some();
    let date = match sde {
        Some(d) => d,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .context("the clock is before 1970")?,
    };
    let key = key.with_signature_time(Some(date));
    // The options are checked before ROOT is made; a ROOT this run made is removed again if
    // the run fails (nothing of an earlier run is in it).
    // (The base URL is refused above, so the options do not depend on where ROOT ends up.)
    let repo = repo_options(&a.repo, &std::path::absolute(&a.out)?, date)?;
    let made = !a.out.exists();
    std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    let root = std::fs::canonicalize(&a.out)?;
    let r = index_pool_into(&a, pool, format, &root, &repo, from_env, &key);
    if r.is_err() && made {
        let _ = std::fs::remove_dir_all(&root);
    }
    r
}

/// [`cmd_index_pool`] once ROOT exists (`root`, canonical).
fn index_pool_into(
    a: &IndexArgs,
    pool: &Path,
    format: PoolFormat,
    root: &Path,
    repo: &dist::RepoOptions,
    from_env: bool,
    key: &SigningKey,
) -> Result<()> {
    let kind = match format {
        PoolFormat::Apt => "apt",
        PoolFormat::Dnf => "dnf",
    };
    let root = root.to_path_buf();
    let cache = if a.no_index_cache {
        None
    } else if let Some(f) = &a.index_cache {
        Some(f.clone())
    } else {
        let top = xtask::fetch::default_cache_dir();
        xtask::index_cache::private_dir(&top, &top.join("index")).map(|d| {
            let id = xtask::digest::sha256_hex(root.as_os_str().as_encoded_bytes());
            d.join(format!("{}.{kind}", &id[..32]))
        })
    };
    if let Some(c) = &cache {
        // Never in the published tree; never over a file that is not a cache.
        let parent = c.parent().filter(|p| !p.as_os_str().is_empty());
        let abs = match parent.map(std::fs::canonicalize) {
            Some(Ok(d)) => d.join(c.file_name().unwrap_or_default()),
            _ => std::path::absolute(c)?,
        };
        if abs.starts_with(&root) {
            bail!(
                "index cache {}: inside the repository {} (it would be published); give --index-cache FILE outside it",
                c.display(),
                root.display()
            );
        }
        xtask::index_cache::check_cache_path(c)?;
    }
    let date = repo.apt.date;
    // apt keeps the InRelease it has over one dated earlier, without a word: an update dated
    // before the repository it replaces would never reach the hosts that have it. A repository
    // never goes back in time (dnf's revision, the same date, is held to it too).
    if let Some((what, then)) = repository_date(&root, format, &repo.apt.suite) {
        if date < then {
            bail!(
                "{what} is dated {} and this run {}{}: hosts that have it would silently \
                 keep it; give a later SOURCE_DATE_EPOCH (or none: now)",
                xtask::date::rfc2822(then, "UTC"),
                xtask::date::rfc2822(date, "UTC"),
                if from_env {
                    " (SOURCE_DATE_EPOCH)"
                } else {
                    " (now)"
                },
            );
        }
    }
    let (n, where_) = match format {
        PoolFormat::Apt => {
            let r = xtask::apt_repo::index_dir(pool, &root, &repo.apt, key, cache.as_deref())?;
            (r.packages.len(), r.suite_dir.join("InRelease"))
        }
        PoolFormat::Dnf => {
            let r = xtask::dnf_repo::index_dir(pool, &root, &repo.dnf, key, cache.as_deref())?;
            (r.packages.len(), root.join("repodata/repomd.xml"))
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "out": root,
                "format": kind,
                "index": where_,
                "packages": n,
                "signing_key": key.fingerprint(),
                "development_key": key.is_development(),
                "cache": cache,
            }))?
        );
    }
    eprintln!(
        "{n} package(s) indexed in {} ({}), signed by {}{}",
        root.display(),
        where_.display(),
        key.fingerprint(),
        if key.is_development() {
            " — DEVELOPMENT KEY, NOT FOR PRODUCTION"
        } else {
            ""
        }
    );
    Ok(())
}

/// The date of the repository already at `root` (apt: `Release`'s `Date:`; dnf: repomd.xml's
/// `<revision>`, the date `dnf_repo` writes there), with the file it was read from.
fn repository_date(root: &Path, format: PoolFormat, suite: &str) -> Option<(String, u64)> {
    use std::io::Read;
    let file = match format {
        PoolFormat::Apt => root.join("dists").join(suite).join("Release"),
        PoolFormat::Dnf => root.join("repodata/repomd.xml"),
    };
    // The head of a regular file only (the date is near the top of both).
    let (f, _) = xtask::index_cache::open_regular(&file).ok()?;
    let mut text = String::new();
    f.take(64 << 10).read_to_string(&mut text).ok()?;
    let date = match format {
        PoolFormat::Apt => text
            .lines()
            .find_map(|l| l.strip_prefix("Date: "))
            .and_then(xtask::date::parse_rfc2822)
            .and_then(|d| u64::try_from(d).ok())?,
        PoolFormat::Dnf => text
            .split_once("<revision>")?
            .1
            .split_once("</revision>")?
            .0
            .trim()
            .parse()
            .ok()?,
    };
    Some((file.display().to_string(), date))
}

fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn print_table(built: &[Built]) {
    let w = built
        .iter()
        .map(|b| b.package.len())
        .max()
        .unwrap_or(7)
        .max(7);
    println!(
        "{:<w$}  {:<14} {:<6} {:<4} {:>10}  sha256",
        "package", "version", "arch", "fmt", "size"
    );
    for b in built {
        println!(
            "{:<w$}  {:<14} {:<6} {:<4} {:>10}  {}",
            b.package,
            b.version,
            b.arch.to_string(),
            match b.format {
                xtask::package::Format::Deb => "deb",
                xtask::package::Format::Rpm => "rpm",
            },
            human(b.size),
            b.sha256
        );
    }
}

fn cmd_check(a: CheckArgs) -> Result<()> {
    let templates = Templates::load(a.templates.as_deref())?;
    let all = load(&a.components_dir)?;
    let mut problems = 0;
    for c in &all {
        for layout in [Layout::DEB, Layout::RPM] {
            if let Err(e) = xtask::render::render_component(&templates, c, &layout) {
                eprintln!("{}: {e:#}", c.file.display());
                problems += 1;
            }
        }
        let pinned: Vec<String> = c.pinned_arches().iter().map(|a| a.to_string()).collect();
        println!(
            "{:<20} {:<10} pinned: {}",
            c.name,
            c.version,
            if pinned.is_empty() {
                "none".to_string()
            } else {
                pinned.join(", ")
            }
        );
        for arch in Arch::ALL {
            if !c.source.sha256.contains_key(&arch) {
                println!(
                    "  {} {arch}: no sha256 pin in {}: not built",
                    c.name,
                    c.file.display()
                );
            }
        }
    }
    if problems > 0 {
        bail!("{problems} problem(s)");
    }
    eprintln!("{} component(s) valid", all.len());
    Ok(())
}

fn cmd_render(a: RenderArgs) -> Result<()> {
    let templates = Templates::load(a.templates.as_deref())?;
    let path = a.components_dir.join(format!("{}.toml", a.name));
    let c = component::load_file(&path)?;
    let layout = match a.format.as_str() {
        "deb" => Layout::DEB,
        "rpm" => Layout::RPM,
        f => bail!("--format {f:?}: deb or rpm"),
    };
    for f in xtask::render::render_component(&templates, &c, &layout)? {
        let dest = a.out.join(f.path.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::write(&dest, &f.text).with_context(|| format!("{}", dest.display()))?;
        println!("{}", dest.display());
    }
    Ok(())
}

fn cmd_pin(a: PinArgs) -> Result<()> {
    let path = a.components_dir.join(format!("{}.toml", a.name));
    if !path.is_file() {
        bail!("{}: no such component file", path.display());
    }
    let c = component::load_file(&path)?;
    component::valid_version(&a.version)
        .map_err(|e| anyhow::anyhow!("version {:?}: {e}", a.version))?;
    let mut next = c.clone();
    next.version = a.version.clone();
    let sums_tpl = c.source.checksums.clone().with_context(|| {
        format!(
            "{}: field `source.checksums` is not set: pin needs the upstream checksum file's URL",
            path.display()
        )
    })?;
    let fetcher = Fetcher::new(FetchOptions {
        mirror: a.net.mirror.clone(),
        ca_cert: a.net.ca_cert.clone(),
        cache_dir: fetch::default_cache_dir(),
        offline: false,
        timeout: Duration::from_secs(a.net.timeout.max(1)),
    })?;
    // The checksum file is fetched once per distinct URL (usually one for all arches).
    let mut pins = std::collections::BTreeMap::new();
    let mut missing = Vec::new();
    let mut texts: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for arch in Arch::ALL {
        let sums_url = next.expand(&sums_tpl, arch);
        if !texts.contains_key(&sums_url) {
            let t = fetcher.get_text(&sums_url)?;
            texts.insert(sums_url.clone(), fetch::parse_checksums(&t));
        }
        let asset_url = next.url(arch);
        let asset = asset_url.rsplit('/').next().unwrap_or_default();
        match texts[&sums_url].iter().find(|(_, n)| n == asset) {
            Some((h, _)) => {
                pins.insert(arch, h.clone());
            }
            None => missing.push(format!("{arch} ({asset} is not in {sums_url})")),
        }
    }
    if pins.is_empty() {
        bail!(
            "{} {}: no asset of any arch is listed in the checksum file: {}",
            a.name,
            a.version,
            missing.join("; ")
        );
    }
    let old = std::fs::read_to_string(&path)?;
    let mut doc: toml_edit::DocumentMut =
        old.parse().with_context(|| format!("{}", path.display()))?;
    doc["version"] = toml_edit::value(a.version.clone());
    if c.version != a.version {
        doc["revision"] = toml_edit::value(1);
    }
    let sha = doc["source"]
        .as_table_mut()
        .context("[source] is not a table")?
        .entry("sha256")
        .or_insert(toml_edit::table());
    let sha = sha
        .as_table_mut()
        .context("[source.sha256] is not a table")?;
    for arch in Arch::ALL {
        match pins.get(&arch) {
            Some(h) => {
                sha[arch.deb()] = toml_edit::value(h.clone());
            }
            None => {
                sha.remove(arch.deb());
            }
        }
    }
    let new = doc.to_string();
    // Validate before writing: a pin never leaves an invalid component behind.
    component::parse_str(&path, &new, xtask::digest::sha256_hex(new.as_bytes()))?;
    for m in &missing {
        eprintln!("note: no pin for {m}: that arch will not be built");
    }
    if new == old {
        // Not rewritten: a component file outside git dates its packages by its mtime, and
        // a touched file would rebuild them.
        eprintln!(
            "{}: already pins {} {} (unchanged)",
            path.display(),
            a.name,
            a.version
        );
        return Ok(());
    }
    print_diff(&path, &old, &new);
    dist::write_atomic(&path, new.as_bytes())?;
    Ok(())
}

fn print_diff(path: &Path, old: &str, new: &str) {
    println!("--- {}\n+++ {}", path.display(), path.display());
    let o: Vec<&str> = old.lines().collect();
    let n: Vec<&str> = new.lines().collect();
    // Line-by-line: pin only changes values in place, removes or appends lines.
    let (mut i, mut j) = (0, 0);
    while i < o.len() || j < n.len() {
        if i < o.len() && j < n.len() && o[i] == n[j] {
            i += 1;
            j += 1;
        } else if i < o.len() && !n[j.min(n.len())..].contains(&o[i]) {
            println!("-{}", o[i]);
            i += 1;
        } else if j < n.len() {
            println!("+{}", n[j]);
            j += 1;
        } else {
            i += 1;
        }
    }
}

/// Where the development key's public half is kept for `verify` (beside the secret key,
/// outside the repository).
fn dev_public_key_path() -> Option<PathBuf> {
    signing::default_dev_key_dir().map(|d| d.join("dev-signing-key.pub.asc"))
}

fn publish_dev_public_key(key: &SigningKey) {
    if let (Some(p), Ok(text)) = (dev_public_key_path(), key.public_key_armored()) {
        if std::fs::read_to_string(&p).ok().as_deref() != Some(text.as_str()) {
            if let Err(e) = dist::write_atomic(&p, text.as_bytes()) {
                eprintln!("warning: {}: {e:#}", p.display());
            }
        }
    }
}

/// What `verify` trusts by default: keys/*.asc and keys/*.gpg of the workspace, and the local
/// development key if one exists (with a note).
fn default_trusted_keys() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let keys = workspace_path("keys");
    if let Ok(rd) = std::fs::read_dir(&keys) {
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "asc" || x == "gpg"))
            .collect();
        v.sort();
        files.extend(v);
    }
    if let Some(p) = dev_public_key_path().filter(|p| p.is_file()) {
        eprintln!(
            "note: also trusting the local DEVELOPMENT key {} (not for production)",
            p.display()
        );
        files.push(p);
    }
    files
}

fn cmd_verify(a: VerifyArgs) -> Result<()> {
    let mut files = a.key.clone();
    if files.is_empty() {
        files = default_trusted_keys();
        if files.is_empty() {
            bail!("no trusted key: give --key FILE (keys/ has no public key)");
        }
    }
    let keys = TrustedKeys::load(&files)?;
    let root = verify::resolve_root(&a.dir);
    let report = verify::verify_tree(&a.dir, &keys)?;
    for f in &report.failures {
        println!("FAIL {f}");
    }
    if report.ok() {
        println!(
            "OK {}: {} files checked against {}",
            root.display(),
            report.checked,
            keys.fingerprints().join(", ")
        );
        Ok(())
    } else {
        bail!(
            "{}: {} problem(s) found ({} files checked)",
            root.display(),
            report.failures.len(),
            report.checked
        )
    }
}

fn cmd_bundle(a: BundleArgs) -> Result<()> {
    let key = xtask::minisign::SecretKey::load(&a.minisign_key)?;
    let r = xtask::mirror::bundle(&a.dist, &a.out, &key, a.zstd)?;
    println!(
        "{}: {} files ({} bytes) from {}, signed by minisign key {} ({})",
        a.out.display(),
        r.files,
        r.bytes,
        r.generation.display(),
        r.key_id,
        xtask::mirror::signature_path(&a.out).display()
    );
    Ok(())
}

fn cmd_import(a: ImportArgs) -> Result<()> {
    let files: Vec<PathBuf> = match &a.minisign_pub {
        Some(f) => vec![f.clone()],
        None => {
            let keys = workspace_path("keys");
            let mut v: Vec<PathBuf> = std::fs::read_dir(&keys)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.to_string_lossy().ends_with(".minisign.pub"))
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            if v.is_empty() {
                bail!(
                    "no trusted minisign key: give --minisign-pub FILE ({} has no *.minisign.pub)",
                    keys.display()
                );
            }
            v
        }
    };
    let keys = files
        .iter()
        .map(|f| xtask::minisign::public_key_file(f))
        .collect::<Result<Vec<_>>>()?;
    let r = xtask::mirror::import(&a.bundle, &a.into, &keys)?;
    println!(
        "imported {} files from {} into {} (now current)",
        r.files,
        a.bundle.display(),
        r.generation.display()
    );
    Ok(())
}
