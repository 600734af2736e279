//! Fetch and verify upstream assets. The pin is the authority; this module fails closed.
//!
//! URL → (mirror rewrite) → cache by sha256 (re-verified on every read) or download over
//! HTTPS (or copy from `file:`/a local path) into a temporary file in the cache, hashing while
//! streaming → compare with the pin → atomically rename into the cache. A failed download
//! leaves nothing behind. There is no way to skip verification.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::digest::HashingWriter;
use crate::package::Arch;

/// Largest asset we accept (an exporter release is tens of MiB).
pub const MAX_ASSET_BYTES: u64 = 2 << 30;
/// Largest checksum file `pin` reads.
pub const MAX_CHECKSUM_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Replaces scheme and host of every upstream URL (`https://mirror.example/base`, or a
    /// `file:` URL / local directory in the upstream layout).
    pub mirror: Option<String>,
    /// Extra trusted CA certificate(s), PEM.
    pub ca_cert: Option<PathBuf>,
    pub cache_dir: PathBuf,
    /// Use only the cache: no network, no local copies.
    pub offline: bool,
    /// Limit for one whole download.
    pub timeout: Duration,
}

/// The default cache: `$XDG_CACHE_HOME/observability-stack` or `~/.cache/observability-stack`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("observability-stack");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(h).join(".cache/observability-stack");
    }
    PathBuf::from(".cache/observability-stack")
}

/// A verified upstream asset in the cache.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifiedArtifact {
    pub component: String,
    pub arch: Arch,
    /// The URL it was (or would have been) fetched from.
    pub url: String,
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// True when it came from the cache.
    pub cached: bool,
}

/// An upstream signature to check for one asset (from a component's `[source.signature]`,
/// expanded for one arch).
#[derive(Debug, Clone)]
pub struct SignatureCheck {
    pub kind: crate::component::SignatureKind,
    pub over: crate::component::SignatureOver,
    /// Upstream URL of the signature (the mirror rewrite applies).
    pub url: String,
    /// Upstream URL of the checksum file (when the signature is over it).
    pub checksums_url: Option<String>,
    /// The asset's file name, as the checksum file lists it.
    pub asset_name: String,
    pub key_path: PathBuf,
}

impl SignatureCheck {
    pub fn of(c: &crate::component::Component, arch: Arch) -> Option<SignatureCheck> {
        let s = c.source.signature.as_ref()?;
        let url = c.url(arch);
        Some(SignatureCheck {
            kind: s.kind,
            over: s.over,
            url: c.expand(&s.url, arch),
            checksums_url: c.source.checksums.as_ref().map(|t| c.expand(t, arch)),
            asset_name: url.rsplit('/').next().unwrap_or_default().to_string(),
            key_path: s.key_path.clone(),
        })
    }
}

/// Rewrite `url` onto `mirror`: scheme and host are replaced, the path is kept.
pub fn mirror_url(url: &str, mirror: &str) -> Result<String> {
    let rest = url
        .split_once("://")
        .map(|x| x.1)
        .ok_or_else(|| anyhow!("{url}: not an absolute URL"))?;
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
    let mirror = if mirror.contains("://") {
        mirror.to_string()
    } else {
        // A local directory.
        let p =
            std::fs::canonicalize(mirror).with_context(|| format!("mirror directory {mirror}"))?;
        format!("file://{}", p.display())
    };
    Ok(format!("{}{}", mirror.trim_end_matches('/'), path))
}

/// Where a URL points, once classified.
enum Location {
    Https(String),
    Local(PathBuf),
}

fn classify(url: &str) -> Result<Location> {
    if url.starts_with("https://") {
        Ok(Location::Https(url.to_string()))
    } else if let Some(p) = url.strip_prefix("file://") {
        if !p.starts_with('/') {
            bail!("{url}: a file: URL needs an absolute path (file:///...)");
        }
        Ok(Location::Local(PathBuf::from(p)))
    } else if url.starts_with("http://") {
        bail!("{url}: plain http is refused (use https, or file: for a local cache)")
    } else if url.contains("://") {
        bail!("{url}: unsupported URL scheme (https and file only)")
    } else if url.starts_with('/') {
        Ok(Location::Local(PathBuf::from(url)))
    } else {
        bail!("{url}: not an https URL, file: URL or absolute path")
    }
}

pub struct Fetcher {
    opts: FetchOptions,
    agent: ureq::Agent,
    /// Cache directories this fetcher created (removed again by `discard_created_dirs`).
    created: std::sync::Mutex<Vec<PathBuf>>,
}

/// A verified asset that is not in the cache yet: the download sits in a temporary file in
/// the cache (same file system) until `Fetcher::commit` renames it into place. Dropping it
/// deletes the temporary file.
pub struct Pending {
    art: VerifiedArtifact,
    tmp: Option<tempfile::NamedTempFile>,
}

impl Pending {
    pub fn artifact(&self) -> &VerifiedArtifact {
        &self.art
    }
}

/// What the cache holds for a digest.
enum CacheLookup {
    Hit(PathBuf, u64),
    Miss,
    /// There was an entry but its bytes do not hash to its name; it was removed.
    Corrupt(String),
}

impl Fetcher {
    /// The mirror every upstream URL is rewritten to, if one was given.
    pub fn mirror(&self) -> Option<&str> {
        self.opts.mirror.as_deref()
    }

    pub fn new(opts: FetchOptions) -> Result<Fetcher> {
        use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
        let mut tls = TlsConfig::builder().provider(TlsProvider::Rustls);
        if let Some(ca) = &opts.ca_cert {
            let mut certs = load_certs(ca)?;
            // "Adds" a CA: keep the system's roots as well, where the machine has a bundle.
            for sys in [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
            ] {
                if let Ok(more) = load_certs(Path::new(sys)) {
                    certs.extend(more);
                    break;
                }
            }
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .https_only(true)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(opts.timeout))
            .timeout_connect(Some(Duration::from_secs(30).min(opts.timeout)))
            .timeout_per_read(Some(Duration::from_secs(60).min(opts.timeout)))
            .user_agent(concat!("observability-stack/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Fetcher {
            opts,
            agent: config.into(),
            created: Default::default(),
        })
    }

    pub fn options(&self) -> &FetchOptions {
        &self.opts
    }

    /// The URL an upstream URL is fetched from, after the mirror rewrite.
    pub fn effective_url(&self, upstream: &str) -> Result<String> {
        match &self.opts.mirror {
            Some(m) => mirror_url(upstream, m),
            None => Ok(upstream.to_string()),
        }
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.opts.cache_dir.join("sha256").join(sha256)
    }

    /// Look the pin up in the cache; re-verify the cached bytes.
    fn lookup_cache(&self, sha256: &str) -> Result<CacheLookup> {
        let p = self.cache_path(sha256);
        match std::fs::symlink_metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CacheLookup::Miss),
            Err(e) => return Err(e).with_context(|| format!("cache entry {}", p.display())),
            Ok(m) if !m.file_type().is_file() => {
                bail!(
                    "cache entry {} is not a regular file: refusing it",
                    p.display()
                )
            }
            Ok(_) => {}
        }
        let (got, size) = crate::digest::sha256_file(&p)
            .with_context(|| format!("cache entry {}", p.display()))?;
        if got != sha256 {
            // A corrupted entry is never used; remove it so a fresh download can replace it.
            std::fs::remove_file(&p).ok();
            let note = format!(
                "cache entry {} was corrupted (its bytes hash to {got}); removed it",
                p.display()
            );
            tracing::warn!("{note}");
            return Ok(CacheLookup::Corrupt(note));
        }
        Ok(CacheLookup::Hit(p, size))
    }

    /// Create `dir` and its missing parents, remembering which ones this fetcher created.
    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.as_os_str().is_empty() || d.is_dir() {
                break;
            }
            missing.push(d.to_path_buf());
            cur = d.parent();
        }
        for d in missing.into_iter().rev() {
            match std::fs::create_dir(&d) {
                Ok(()) => self
                    .created
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(d),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// After a failed run: remove the cache directories this fetcher created, where they are
    /// still empty, so a failure leaves the cache exactly as it was. Call it only when no
    /// fetch is in flight.
    pub fn discard_created_dirs(&self) {
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(d) = created.pop() {
            // Fails (and is left alone) when something else put a file there.
            std::fs::remove_dir(&d).ok();
        }
    }

    /// Fetch `upstream_url` for a component/arch, verify it against `expected` (the pin) and
    /// put it into the cache.
    pub fn fetch(
        &self,
        component: &str,
        arch: Arch,
        upstream_url: &str,
        expected: &str,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<VerifiedArtifact> {
        let p = self.fetch_pending(component, arch, upstream_url, expected, progress)?;
        self.commit(p)
    }

    /// Fetch and verify, but do not add a download to the cache yet (see `commit`): a run
    /// that fetches several assets adds none of them when one fails.
    pub fn fetch_pending(
        &self,
        component: &str,
        arch: Arch,
        upstream_url: &str,
        expected: &str,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<Pending> {
        self.fetch_pending_signed(component, arch, upstream_url, expected, None, progress)
    }

    /// As `fetch_pending`, and when `signature` is given a download must also carry a good
    /// upstream signature (checked before it may enter the cache; a cache entry holds the
    /// pinned bytes, so a hit is not checked again).
    pub fn fetch_pending_signed(
        &self,
        component: &str,
        arch: Arch,
        upstream_url: &str,
        expected: &str,
        signature: Option<&SignatureCheck>,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<Pending> {
        let url = self.effective_url(upstream_url).map_err(|e| {
            anyhow!(
                "fetch failed: component {component}, arch {arch}, url {upstream_url}: {e:#}; \
                 expected sha256 {expected}, actual none; nothing was added to the cache"
            )
        })?;
        let fail = |reason: String, actual: Option<&str>| {
            anyhow!(
                "fetch failed: component {component}, arch {arch}, url {url}: {reason}; \
                 expected sha256 {expected}, actual {}; nothing was added to the cache",
                actual.unwrap_or("none (no complete body)")
            )
        };
        crate::component::valid_sha256(expected)
            .map_err(|e| fail(format!("bad pin: {e}"), None))?;
        let corrupt = match self
            .lookup_cache(expected)
            .map_err(|e| fail(format!("{e:#}"), None))?
        {
            CacheLookup::Hit(path, size) => {
                return Ok(Pending {
                    art: VerifiedArtifact {
                        component: component.into(),
                        arch,
                        url,
                        path,
                        sha256: expected.into(),
                        size,
                        cached: true,
                    },
                    tmp: None,
                })
            }
            CacheLookup::Miss => None,
            CacheLookup::Corrupt(note) => Some(note),
        };
        if self.opts.offline {
            let why = match &corrupt {
                Some(note) => format!("--offline and {note}"),
                None => format!(
                    "--offline and not in the cache {}",
                    self.opts.cache_dir.display()
                ),
            };
            return Err(fail(
                format!(
                    "{why} (run `cargo xtask fetch` where the network is reachable, or point --cache at an exported cache)"
                ),
                None,
            ));
        }
        // Classify before touching the cache: a refused URL creates nothing.
        classify(&url).map_err(|e| fail(format!("{e:#}"), None))?;
        let tmp_dir = self.opts.cache_dir.join("tmp");
        self.ensure_dir(&tmp_dir)
            .and_then(|_| self.ensure_dir(&self.opts.cache_dir.join("sha256")))
            .map_err(|e| {
                fail(
                    format!("cannot create cache {}: {e}", self.opts.cache_dir.display()),
                    None,
                )
            })?;
        let tmp = tempfile::Builder::new()
            .prefix("download-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| fail(format!("cannot create a temporary file: {e}"), None))?;
        let (digest, size) = self
            .download_to(&url, tmp.as_file(), MAX_ASSET_BYTES, progress)
            .map_err(|e| {
                let mut m = format!("{e:#}");
                if m.contains("timeout") || m.contains("timed out") {
                    m.push_str(&format!(
                        " (the download did not finish within --timeout {}s)",
                        self.opts.timeout.as_secs()
                    ));
                }
                fail(m, None)
            })?;
        if digest != expected {
            return Err(fail(
                format!("sha256 mismatch ({size} bytes received)"),
                Some(&digest),
            ));
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| fail(format!("cannot sync: {e}"), Some(&digest)))?;
        if let Some(s) = signature {
            self.check_signature(s, tmp.path(), expected)
                .map_err(|e| fail(format!("upstream signature: {e:#}"), Some(&digest)))?;
        }
        Ok(Pending {
            art: VerifiedArtifact {
                component: component.into(),
                arch,
                url,
                path: self.cache_path(expected),
                sha256: digest,
                size,
                cached: false,
            },
            tmp: Some(tmp),
        })
    }

    /// Move a verified download into the cache (an atomic rename).
    pub fn commit(&self, p: Pending) -> Result<VerifiedArtifact> {
        let Pending { art, tmp } = p;
        if let Some(tmp) = tmp {
            tmp.persist(&art.path).map_err(|e| {
                anyhow!(
                    "component {}, arch {}, url {}: cannot move the verified download into the cache {}: {}",
                    art.component,
                    art.arch,
                    art.url,
                    art.path.display(),
                    e.error
                )
            })?;
        }
        Ok(art)
    }

    /// Stream `url` into `out`, hashing; returns (sha256, bytes). Follows up to 5 redirects,
    /// each of which must stay on https.
    fn download_to(
        &self,
        url: &str,
        out: &std::fs::File,
        max: u64,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<(String, u64)> {
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, out));
        match classify(url)? {
            Location::Local(p) => {
                let f = std::fs::File::open(&p).with_context(|| format!("{}", p.display()))?;
                let len = f.metadata()?.len();
                if let Some(pb) = progress {
                    pb.set_length(len);
                }
                copy_limited(f, &mut w, max, None, progress)?;
            }
            Location::Https(mut current) => {
                let mut hops = 0;
                let resp = loop {
                    let resp = self
                        .agent
                        .get(&current)
                        .call()
                        .map_err(|e| anyhow!("{e}"))?;
                    let status = resp.status().as_u16();
                    if (300..400).contains(&status) {
                        hops += 1;
                        if hops > 5 {
                            bail!("too many redirects");
                        }
                        let loc = resp
                            .headers()
                            .get("location")
                            .and_then(|v| v.to_str().ok())
                            .ok_or_else(|| anyhow!("HTTP {status} without a Location"))?;
                        let next = resolve_location(&current, loc)?;
                        if !next.starts_with("https://") {
                            bail!(
                                "HTTP {status} redirect to {next}: a redirect off https is refused"
                            );
                        }
                        current = next;
                        continue;
                    }
                    if status != 200 {
                        bail!("HTTP {status} from {current}");
                    }
                    break resp;
                };
                let declared = resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if let Some(n) = declared {
                    if n > max {
                        bail!("Content-Length {n} exceeds the limit of {max} bytes");
                    }
                    if let Some(pb) = progress {
                        pb.set_length(n);
                    }
                }
                let reader = resp.into_body().into_reader();
                let got = copy_limited(reader, &mut w, max, declared, progress)?;
                if let Some(n) = declared {
                    if got != n {
                        bail!("truncated body: {got} of {n} bytes");
                    }
                }
            }
        }
        w.flush()?;
        let (_, digest, n) = w.finish();
        Ok((digest, n))
    }

    /// Fetch a small text file (a checksum file for `pin`). Never used to verify a build.
    pub fn get_text(&self, upstream_url: &str) -> Result<String> {
        let url = self.effective_url(upstream_url)?;
        String::from_utf8(self.get_small(upstream_url)?)
            .map_err(|_| anyhow!("{url}: not UTF-8 text"))
    }

    /// Fetch a small file (at most [`MAX_CHECKSUM_FILE_BYTES`]) into memory.
    pub fn get_small(&self, upstream_url: &str) -> Result<Vec<u8>> {
        let url = self.effective_url(upstream_url)?;
        let tmp = tempfile::tempfile()?;
        self.download_to(&url, &tmp, MAX_CHECKSUM_FILE_BYTES, None)
            .with_context(|| format!("fetching {url}"))?;
        let mut s = Vec::new();
        let mut f = tmp;
        use std::io::Seek;
        f.seek(io::SeekFrom::Start(0))?;
        f.read_to_end(&mut s)?;
        Ok(s)
    }

    /// Check an upstream signature over a downloaded asset (`path`, pinned `expected`).
    fn check_signature(&self, s: &SignatureCheck, path: &Path, expected: &str) -> Result<()> {
        use crate::component::{SignatureKind, SignatureOver};
        let sig = self
            .get_small(&s.url)
            .with_context(|| format!("cannot fetch the signature {}", s.url))?;
        let checksums = match &s.over {
            SignatureOver::Asset => None,
            SignatureOver::Checksums => {
                let u = s
                    .checksums_url
                    .as_deref()
                    .ok_or_else(|| anyhow!("no checksum file URL to check the signature over"))?;
                Some((
                    u,
                    self.get_small(u)
                        .with_context(|| format!("cannot fetch the checksum file {u}"))?,
                ))
            }
        };
        let what = match &checksums {
            Some((u, _)) => format!("the checksum file {u}"),
            None => "the asset".to_string(),
        };
        let open = || -> Result<Box<dyn Read>> {
            Ok(match &checksums {
                Some((_, b)) => Box::new(io::Cursor::new(b.clone())),
                None => Box::new(io::BufReader::new(std::fs::File::open(path)?)),
            })
        };
        let r = match s.kind {
            SignatureKind::Minisign => {
                let pk = crate::minisign::public_key_file(&s.key_path)?;
                let text = std::str::from_utf8(&sig)
                    .map_err(|_| anyhow!("{}: not a minisign signature (not text)", s.url))?;
                crate::minisign::verify_reader(&pk, text, &mut open()?)
            }
            SignatureKind::Openpgp => {
                let keys = crate::verify::TrustedKeys::load(std::slice::from_ref(&s.key_path))?;
                keys.verify_upstream(&sig, open)
            }
        };
        r.map_err(|e| {
            anyhow!(
                "{} signature {} over {what} does not verify with {}: {e:#}",
                match s.kind {
                    SignatureKind::Minisign => "minisign",
                    SignatureKind::Openpgp => "OpenPGP",
                },
                s.url,
                s.key_path.display()
            )
        })?;
        if let Some((u, bytes)) = &checksums {
            let text = String::from_utf8_lossy(bytes);
            let listed: Vec<String> = parse_checksums(&text)
                .into_iter()
                .filter(|(_, n)| n == &s.asset_name)
                .map(|(h, _)| h)
                .collect();
            match listed.as_slice() {
                [h] if h == expected => {}
                [] => bail!(
                    "the signed checksum file {u} does not list {} (the pin is {expected})",
                    s.asset_name
                ),
                [h] => bail!(
                    "the signed checksum file {u} lists {} with sha256 {h}, but the pin is {expected}",
                    s.asset_name
                ),
                _ => bail!(
                    "the signed checksum file {u} lists {} more than once",
                    s.asset_name
                ),
            }
        }
        Ok(())
    }
}

fn copy_limited(
    mut r: impl Read,
    w: &mut impl Write,
    max: u64,
    declared: Option<u64>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if let Some(d) = declared {
                    bail!("body ended after {n} of {d} bytes: {e}");
                }
                bail!("body ended after {n} bytes: {e}");
            }
        };
        n += k as u64;
        if n > max {
            bail!("body exceeds the limit of {max} bytes");
        }
        w.write_all(&buf[..k])?;
        if let Some(pb) = progress {
            pb.set_position(n);
        }
    }
    Ok(n)
}

fn resolve_location(base: &str, loc: &str) -> Result<String> {
    if loc.contains("://") {
        return Ok(loc.to_string());
    }
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| anyhow!("bad base URL {base}"))?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..host_end]);
    if let Some(stripped) = loc.strip_prefix("//") {
        return Ok(format!("{scheme}://{stripped}"));
    }
    if loc.starts_with('/') {
        return Ok(format!("{origin}{loc}"));
    }
    let path = &rest[host_end..];
    let dir = path.rfind('/').map(|i| &path[..=i]).unwrap_or("/");
    Ok(format!("{origin}{dir}{loc}"))
}

fn load_certs(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("CA certificate file {}", path.display()))?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.map_err(|e| anyhow!("{}: {e}", path.display()))?
        {
            out.push(c);
        }
    }
    if out.is_empty() {
        bail!("{}: no PEM certificate in it", path.display());
    }
    Ok(out)
}

/// Copy verified assets into `dir` in the cache layout (`sha256/<hex>`), so that
/// `dist --offline --cache DIR` finds them; each copy is hashed again as it is written.
/// Returns how many files were exported.
pub fn export(arts: &[VerifiedArtifact], dir: &Path) -> Result<usize> {
    let d = dir.join("sha256");
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let mut seen = std::collections::BTreeSet::new();
    for a in arts {
        if !seen.insert(a.sha256.clone()) {
            continue;
        }
        let dest = d.join(&a.sha256);
        let src = std::fs::File::open(&a.path).with_context(|| format!("{}", a.path.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&d)?;
        let mut w = HashingWriter::new(io::BufWriter::new(tmp.as_file_mut()));
        copy_limited(src, &mut w, MAX_ASSET_BYTES, None, None)?;
        w.flush()?;
        let (_, h, _) = w.finish();
        if h != a.sha256 {
            bail!(
                "{}: sha256 {h} while copying, expected {} (changed since it was verified?)",
                a.path.display(),
                a.sha256
            );
        }
        tmp.as_file().sync_all()?;
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.persist(&dest)
            .map_err(|e| anyhow!("{}: {}", dest.display(), e.error))?;
    }
    Ok(seen.len())
}

/// Parse an upstream checksum file (`sha256sum` format: `HEX  NAME` or `HEX *NAME`).
pub fn parse_checksums(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let h = it.next()?.to_ascii_lowercase();
            let n = it.next()?.trim_start_matches('*').to_string();
            (crate::component::valid_sha256(&h).is_ok()).then_some((h, n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_rewrites_scheme_and_host() {
        assert_eq!(
            mirror_url(
                "https://github.com/prometheus/node_exporter/releases/download/v1/a.tar.gz",
                "https://127.0.0.1:8443/"
            )
            .unwrap(),
            "https://127.0.0.1:8443/prometheus/node_exporter/releases/download/v1/a.tar.gz"
        );
        assert_eq!(
            mirror_url("https://h/x/y", "https://m.example/base").unwrap(),
            "https://m.example/base/x/y"
        );
    }

    #[test]
    fn plain_http_is_refused() {
        let e = classify("http://example.com/a").err().unwrap().to_string();
        assert!(e.contains("plain http is refused"), "{e}");
        assert!(classify("ftp://x/y").is_err());
        assert!(classify("file://relative").is_err());
    }

    #[test]
    fn locations_resolve() {
        assert_eq!(
            resolve_location("https://a/b/c", "/d").unwrap(),
            "https://a/d"
        );
        assert_eq!(
            resolve_location("https://a/b/c", "d").unwrap(),
            "https://a/b/d"
        );
        assert_eq!(
            resolve_location("https://a/b/c", "http://x/y").unwrap(),
            "http://x/y"
        );
    }

    #[test]
    fn checksum_files_parse() {
        let h = "a".repeat(64);
        let t = format!("{h}  x.tar.gz\n{h} *y.zip\nnot a line\n");
        assert_eq!(
            parse_checksums(&t),
            vec![(h.clone(), "x.tar.gz".into()), (h, "y.zip".into())]
        );
    }
}
