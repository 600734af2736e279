//! `cargo xtask verify DIR`: check a published tree, or a copy of it, offline.
//!
//! Everything is checked against keys the caller trusts, never against a key found inside the
//! tree: apt (InRelease and Release.gpg signatures, InRelease text = Release, every index file
//! listed in Release with its size and SHA256/SHA512, by-hash copies, every package named in a
//! Packages index with its size and digests, Valid-Until), dnf (repomd.xml.asc, every repodata
//! file's checksum, open-checksum and sizes, every package named in primary with its checksum and
//! size, every rpm's header signature and digests), the debsigs origin signature of every .deb
//! that carries one, and SHA256SUMS. Each failure is reported with
//! the file and what differs; the run goes on to report all of them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails;
use sha2::Digest;

/// Keys a verification trusts: parsed, plus their armored text (for the rpm crate's verifier).
pub struct TrustedKeys {
    pub keys: Vec<SignedPublicKey>,
    armored: Vec<String>,
}

impl TrustedKeys {
    /// Load every public key in the given files (armored or binary, one or many per file).
    pub fn load(files: &[PathBuf]) -> Result<TrustedKeys> {
        let mut keys = Vec::new();
        for f in files {
            let bytes = std::fs::read(f).with_context(|| format!("reading key {}", f.display()))?;
            keys.extend(parse_keys(&bytes).with_context(|| format!("{}", f.display()))?);
        }
        Self::from_keys(keys)
    }

    /// Trust the key(s) in one armored text.
    pub fn from_armored(text: &str) -> Result<TrustedKeys> {
        Self::from_keys(parse_keys(text.as_bytes())?)
    }

    fn from_keys(keys: Vec<SignedPublicKey>) -> Result<TrustedKeys> {
        if keys.is_empty() {
            bail!("no trusted key given");
        }
        let armored = keys
            .iter()
            .map(|k| {
                k.to_armored_string(Default::default())
                    .map_err(|e| anyhow!("{e}"))
            })
            .collect::<Result<_>>()?;
        Ok(TrustedKeys { keys, armored })
    }

    /// Trust `other`'s keys too.
    pub fn extend(&mut self, other: TrustedKeys) {
        self.keys.extend(other.keys);
        self.armored.extend(other.armored);
    }

    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| hex::encode_upper(k.fingerprint().as_bytes()))
            .collect()
    }

    fn verify_detached(&self, sig: &DetachedSignature, data: &[u8]) -> Result<()> {
        for k in &self.keys {
            if sig.verify(k, data).is_ok() {
                return Ok(());
            }
            for sk in &k.public_subkeys {
                if sig.verify(sk, data).is_ok() {
                    return Ok(());
                }
            }
        }
        bail!("no trusted key made this signature")
    }

    /// An upstream's detached OpenPGP signature (armored `.asc` or binary `.sig`) over what
    /// `open()` yields (reopened for each key tried).
    pub fn verify_upstream<R: Read>(&self, sig: &[u8], open: impl Fn() -> Result<R>) -> Result<()> {
        let sig = if sig.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
            let text =
                std::str::from_utf8(sig).map_err(|_| anyhow!("armored signature is not text"))?;
            DetachedSignature::from_string(text)
                .map_err(|e| anyhow!("not an OpenPGP signature: {e}"))?
                .0
        } else {
            DetachedSignature::from_bytes(sig)
                .map_err(|e| anyhow!("not an OpenPGP signature: {e}"))?
        };
        self.verify_detached_stream(&sig, open)
    }

    /// As `verify_detached`, over data streamed from `open()` (reopened for each key tried).
    fn verify_detached_stream<R: Read>(
        &self,
        sig: &DetachedSignature,
        open: impl Fn() -> Result<R>,
    ) -> Result<()> {
        for k in &self.keys {
            if sig.signature.verify(k, open()?).is_ok() {
                return Ok(());
            }
            for sk in &k.public_subkeys {
                if sig.signature.verify(sk, open()?).is_ok() {
                    return Ok(());
                }
            }
        }
        bail!("no trusted key made this signature")
    }

    fn verify_clear(&self, msg: &CleartextSignedMessage) -> Result<()> {
        for k in &self.keys {
            if msg.verify(k).is_ok() {
                return Ok(());
            }
            for sk in &k.public_subkeys {
                if msg.verify(sk).is_ok() {
                    return Ok(());
                }
            }
        }
        bail!("no trusted key made this signature")
    }
}

/// Public keys in armored or binary form, one or many.
fn parse_keys(bytes: &[u8]) -> Result<Vec<SignedPublicKey>> {
    let keys: Vec<SignedPublicKey> = if bytes.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(bytes).context("armored key is not UTF-8")?;
        SignedPublicKey::from_string_many(text)
            .map_err(|e| anyhow!("{e}"))?
            .0
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("{e}"))?
    } else {
        SignedPublicKey::from_bytes_many(bytes)
            .map_err(|e| anyhow!("{e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("{e}"))?
    };
    if keys.is_empty() {
        bail!("holds no OpenPGP public key");
    }
    Ok(keys)
}

/// What a verification found.
#[derive(Debug, Default)]
pub struct Report {
    /// Files checked (signatures, indexes, packages).
    pub checked: usize,
    pub failures: Vec<String>,
    /// Digests already computed in this run, by path: a package is named by its index, by
    /// SHA256SUMS and by its SBOM and provenance, and is read once, not three times.
    memo: std::collections::HashMap<PathBuf, Digests>,
}

impl Report {
    fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }
    /// Add what `other` found (and the digests it computed).
    fn merge(&mut self, other: Report) {
        self.checked += other.checked;
        self.failures.extend(other.failures);
        self.memo.extend(other.memo);
    }
    /// [`digests`] of a file (sha256, and what `want` adds), computed once per path and run.
    fn digests(&mut self, root: &Path, p: &Path, want: Want) -> std::io::Result<Digests> {
        let old = self.memo.remove(p);
        if let Some(d) = &old {
            if (!want.sha512 || d.sha512.is_some()) && (!want.md5 || d.md5.is_some()) {
                self.memo.insert(p.to_path_buf(), d.clone());
                return Ok(d.clone());
            }
        }
        let mut d = digests(root, p, want)?;
        if let Some(old) = old {
            d.sha512 = d.sha512.or(old.sha512);
            d.md5 = d.md5.or(old.md5);
        }
        self.memo.insert(p.to_path_buf(), d.clone());
        Ok(d)
    }
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The tree to check: `DIR/current` when DIR is an output directory, else DIR itself.
pub fn resolve_root(dir: &Path) -> PathBuf {
    match crate::publish::current(dir) {
        Some(p) => p,
        None => dir.to_path_buf(),
    }
}

/// Verify everything under `dir` (an output directory or one generation / copy of it).
pub fn verify_tree(dir: &Path, keys: &TrustedKeys) -> Result<Report> {
    verify_root(&resolve_root(dir), keys)
}

/// Verify everything under `root` itself (one generation or a copy of one; an entry named
/// `current` in it is not followed but checked as any other file).
pub fn verify_root(root: &Path, keys: &TrustedKeys) -> Result<Report> {
    let root = root.to_path_buf();
    if !root.is_dir() {
        bail!("{}: not a directory", root.display());
    }
    let mut r = Report::default();
    let apt = [root.join("apt"), root.clone()]
        .into_iter()
        .find(|p| p.join("dists").is_dir());
    let dnf = [root.join("dnf"), root.clone()]
        .into_iter()
        .find(|p| p.join("repodata").is_dir());
    if apt.is_none() && dnf.is_none() {
        bail!(
            "{}: neither an apt repository (dists/) nor a dnf repository (repodata/) is here",
            root.display()
        );
    }
    // The two repositories are independent: checked on two cores (each hashes and checks the
    // signatures of its own packages), their findings reported in the same order as one
    // after the other.
    let (ra, rd) = rayon::join(
        || -> Result<Report> {
            let mut r = Report::default();
            if let Some(apt) = &apt {
                verify_apt(apt, &root, keys, &mut r)?;
            }
            Ok(r)
        },
        || -> Result<Report> {
            let mut r = Report::default();
            if let Some(dnf) = &dnf {
                verify_dnf(dnf, &root, keys, &mut r)?;
            }
            Ok(r)
        },
    );
    r.merge(ra?);
    r.merge(rd?);
    verify_sha256sums(&root, keys, &mut r)?;
    verify_attestations(&root, keys, &mut r)?;
    Ok(r)
}

/// SBOM and provenance (attest.rs): when the tree has them, every package of the tree has one
/// of each, each carries a good signature, and the digests they state are the package's.
fn verify_attestations(root: &Path, keys: &TrustedKeys, r: &mut Report) -> Result<()> {
    use crate::attest::{PROVENANCE_DIR, PROVENANCE_SUFFIX, SBOM_DIR, SBOM_SUFFIX};
    let has = |d: &str| std::fs::symlink_metadata(root.join(d)).is_ok();
    if !has(SBOM_DIR) && !has(PROVENANCE_DIR) {
        return Ok(());
    }
    let files = match crate::dist::tree_files(root) {
        Ok(f) => f,
        Err(e) => {
            r.fail(format!("{e:#}"));
            return Ok(());
        }
    };
    let packages: Vec<&String> = files
        .iter()
        .filter(|f| {
            (f.starts_with("apt/pool/") && f.ends_with(".deb"))
                || (f.starts_with("dnf/") && f.ends_with(".rpm"))
        })
        .collect();
    let mut expected = std::collections::BTreeSet::new();
    for pkg in packages {
        let name = pkg.rsplit('/').next().unwrap_or_default();
        let actual = match r.digests(root, &root.join(pkg), SHA256) {
            Ok(d) => d.sha256,
            Err(e) => {
                r.fail(format!("{pkg}: {e}"));
                continue;
            }
        };
        for (dir, suffix) in [(SBOM_DIR, SBOM_SUFFIX), (PROVENANCE_DIR, PROVENANCE_SUFFIX)] {
            let rel_doc = format!("{dir}/{name}{suffix}");
            expected.insert(rel_doc.clone());
            expected.insert(format!("{rel_doc}.asc"));
            let doc = match read_in_tree(root, &root.join(&rel_doc)) {
                Ok(b) => b,
                Err(e) => {
                    r.fail(format!("{rel_doc}: {e} (package {pkg} has none)"));
                    continue;
                }
            };
            r.checked += 1;
            match read_text_in_tree(root, &root.join(format!("{rel_doc}.asc"))) {
                Err(e) => r.fail(format!("{rel_doc}.asc: {e}")),
                Ok(asc) => match DetachedSignature::from_string(&asc) {
                    Err(e) => r.fail(format!("{rel_doc}.asc: not a detached signature: {e}")),
                    Ok((sig, _)) => {
                        if let Err(e) = keys.verify_detached(&sig, &doc) {
                            r.fail(format!("{rel_doc}.asc: signature does not verify: {e}"));
                        }
                    }
                },
            }
            let v: serde_json::Value = match serde_json::from_slice(&doc) {
                Ok(v) => v,
                Err(e) => {
                    r.fail(format!("{rel_doc}: not JSON: {e}"));
                    continue;
                }
            };
            let stated: Option<(&str, &str)> = if dir == SBOM_DIR {
                if v["spdxVersion"] != "SPDX-2.3" {
                    r.fail(format!(
                        "{rel_doc}: spdxVersion is {} (SPDX-2.3 expected)",
                        v["spdxVersion"]
                    ));
                }
                v["packages"].as_array().and_then(|ps| {
                    ps.iter()
                        .find(|p| p["SPDXID"] == "SPDXRef-Package")
                        .and_then(|p| {
                            let h = p["checksums"]
                                .as_array()?
                                .iter()
                                .find(|c| c["algorithm"] == "SHA256")?;
                            Some((p["packageFileName"].as_str()?, h["checksumValue"].as_str()?))
                        })
                })
            } else {
                if v["_type"] != crate::attest::STATEMENT_TYPE
                    || v["predicateType"] != crate::attest::SLSA_PROVENANCE
                {
                    r.fail(format!(
                        "{rel_doc}: not an in-toto v1 Statement with an SLSA provenance v1 predicate"
                    ));
                }
                v["subject"]
                    .as_array()
                    .filter(|s| s.len() == 1)
                    .and_then(|s| {
                        Some((s[0]["name"].as_str()?, s[0]["digest"]["sha256"].as_str()?))
                    })
            };
            match stated {
                None => r.fail(format!("{rel_doc}: states no package file name and sha256")),
                Some((n, h)) if n != name || h != actual => r.fail(format!(
                    "{rel_doc}: names {n} with sha256 {h}, but {pkg} has sha256 {actual}"
                )),
                Some(_) => r.checked += 1,
            }
        }
    }
    for f in files.iter().filter(|f| {
        f.starts_with(&format!("{SBOM_DIR}/")) || f.starts_with(&format!("{PROVENANCE_DIR}/"))
    }) {
        if !expected.contains(f) {
            r.fail(format!("{f}: describes no package of the tree"));
        }
    }
    Ok(())
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Open `p`, a file inside the tree `root`, refusing what a published tree never holds: a
/// symlink anywhere below `root` (it can point outside the tree, at /dev/zero, or at a FIFO
/// whose open blocks) and anything that is not a regular file. A verified tree is
/// self-contained: every byte checked is a byte that a copy of it (rsync, a web server that
/// does not follow links) would serve.
fn open_in_tree(root: &Path, p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: String| std::io::Error::other(why);
    let rel = p
        .strip_prefix(root)
        .map_err(|_| refuse("is outside the tree".into()))?;
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        let m = std::fs::symlink_metadata(&at)?;
        if m.file_type().is_symlink() {
            return Err(refuse(format!(
                "{} is a symlink (a published tree holds none)",
                at.strip_prefix(root).unwrap_or(&at).display()
            )));
        }
    }
    if !std::fs::symlink_metadata(p)?.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    // Not by path alone: a symlink or FIFO swapped in since the check above is refused, not
    // followed or waited on (the no-op `dist` verifies an existing tree under OUT's lock).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)?;
    if !f.metadata()?.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    Ok(f)
}

/// The files the signed `SHA256SUMS` of the generation at `root` lists, with their sha256
/// (lower-case hex): only when its signature `SHA256SUMS.asc` verifies against `keys`. Read in
/// the tree (no link followed, no FIFO waited on); a malformed line or unsafe path is an error.
/// Nothing listed is hashed here: a caller takes a listed digest as the authority for the
/// bytes it reads.
pub fn signed_sums(
    root: &Path,
    keys: &TrustedKeys,
) -> Result<std::collections::BTreeMap<String, String>> {
    use crate::dist::{SUMS_FILE, SUMS_SIGNATURE};
    let text =
        read_text_in_tree(root, &root.join(SUMS_FILE)).map_err(|e| anyhow!("{SUMS_FILE}: {e}"))?;
    let asc = read_text_in_tree(root, &root.join(SUMS_SIGNATURE))
        .map_err(|e| anyhow!("{SUMS_SIGNATURE}: {e}"))?;
    let (sig, _) = DetachedSignature::from_string(&asc)
        .map_err(|e| anyhow!("{SUMS_SIGNATURE}: not a detached signature: {e}"))?;
    keys.verify_detached(&sig, text.as_bytes()).map_err(|e| {
        anyhow!("{SUMS_SIGNATURE}: signature over {SUMS_FILE} does not verify: {e}")
    })?;
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let (h, f) = line
            .split_once("  ")
            .filter(|(h, _)| {
                h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            .ok_or_else(|| anyhow!("{SUMS_FILE}: malformed line {line:?}"))?;
        if f.starts_with('/') || f.split('/').any(|c| c == ".." || c == "." || c.is_empty()) {
            bail!("{SUMS_FILE}: unsafe path {f:?}");
        }
        out.insert(f.to_string(), h.to_string());
    }
    Ok(out)
}

/// The bytes of `p` in the tree at `root` ([`open_in_tree`]: a regular file, no link), at
/// most `limit` of them.
pub(crate) fn read_in_tree_limited(root: &Path, p: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = open_in_tree(root, p).map_err(|e| anyhow!("{}: {e}", p.display()))?;
    let len = f.metadata()?.len();
    if len > limit {
        bail!("{}: {len} bytes, more than {limit}", p.display());
    }
    let mut out = Vec::with_capacity(len as usize);
    f.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        bail!("{}: more than {limit} bytes", p.display());
    }
    Ok(out)
}

fn read_in_tree(root: &Path, p: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    open_in_tree(root, p)?.read_to_end(&mut out)?;
    Ok(out)
}

fn read_text_in_tree(root: &Path, p: &Path) -> std::io::Result<String> {
    String::from_utf8(read_in_tree(root, p)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Streaming digests of a file: sha256 always, sha512 and md5 when asked for.
#[derive(Debug, Clone)]
struct Digests {
    size: u64,
    sha256: String,
    sha512: Option<String>,
    md5: Option<String>,
}

impl Digests {
    /// The sha512 (asked for with [`SHA512`]).
    fn sha512(&self) -> String {
        self.sha512.clone().unwrap_or_default()
    }
}

/// Which digests besides sha256 a check needs (each one costs a pass over the bytes).
#[derive(Debug, Clone, Copy)]
struct Want {
    sha512: bool,
    md5: bool,
}

const SHA256: Want = Want {
    sha512: false,
    md5: false,
};
const SHA512: Want = Want {
    sha512: true,
    md5: false,
};

fn digests(root: &Path, p: &Path, want: Want) -> std::io::Result<Digests> {
    let mut f = open_in_tree(root, p)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut a = want.md5.then(md5::Md5::new);
    let mut b = sha2::Sha256::new();
    let mut c = want.sha512.then(sha2::Sha512::new);
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(a) = a.as_mut() {
            a.update(&buf[..n]);
        }
        b.update(&buf[..n]);
        if let Some(c) = c.as_mut() {
            c.update(&buf[..n]);
        }
        size += n as u64;
    }
    Ok(Digests {
        size,
        sha256: hex::encode(b.finalize()),
        sha512: c.map(|c| hex::encode(c.finalize())),
        md5: a.map(|a| hex::encode(a.finalize())),
    })
}

/// A deb822 paragraph: field name → value (continuation lines joined with '\n').
pub type Paragraph = BTreeMap<String, String>;

/// Parse deb822 text (Release, Packages) into paragraphs.
pub fn parse_deb822(text: &str) -> Result<Vec<Paragraph>> {
    let mut out = Vec::new();
    let mut cur = Paragraph::new();
    let mut last: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with(' ') || line.starts_with('\t') {
            let k = last
                .as_ref()
                .ok_or_else(|| anyhow!("line {}: continuation line without a field", i + 1))?;
            let v = cur.get_mut(k).expect("field");
            v.push('\n');
            v.push_str(line.trim_start());
        } else {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("line {}: not a `Field: value` line: {line:?}", i + 1))?;
            cur.insert(k.to_string(), v.trim().to_string());
            last = Some(k.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// `hash size path` lines of a Release checksum field.
pub(crate) fn release_sums(field: &str) -> Vec<(String, u64, String)> {
    field
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let h = it.next()?.to_string();
            let s = it.next()?.parse().ok()?;
            let p = it.next()?.to_string();
            Some((h, s, p))
        })
        .collect()
}

/// Undo the cleartext framework's dash-escaping and return the signed text as written.
fn cleartext_body(msg: &CleartextSignedMessage) -> String {
    let mut s = String::new();
    for line in msg.text().split_inclusive('\n') {
        s.push_str(line.strip_prefix("- ").unwrap_or(line));
    }
    s
}

fn verify_apt(apt: &Path, root: &Path, keys: &TrustedKeys, r: &mut Report) -> Result<()> {
    let mut suites: Vec<PathBuf> = std::fs::read_dir(apt.join("dists"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    suites.sort();
    if suites.is_empty() {
        r.fail(format!("{}: no suite", rel(root, &apt.join("dists"))));
    }
    for s in suites {
        verify_suite(apt, &s, root, keys, r)?;
    }
    Ok(())
}

fn verify_suite(
    apt: &Path,
    suite: &Path,
    root: &Path,
    keys: &TrustedKeys,
    r: &mut Report,
) -> Result<()> {
    let release_path = suite.join("Release");
    let release = match read_text_in_tree(root, &release_path) {
        Ok(t) => t,
        Err(e) => {
            r.fail(format!(
                "{}: missing or unreadable: {e}",
                rel(root, &release_path)
            ));
            return Ok(());
        }
    };
    r.checked += 1;
    // InRelease: a valid clear signature over exactly the Release text.
    let inrel = suite.join("InRelease");
    match read_text_in_tree(root, &inrel) {
        Err(e) => r.fail(format!("{}: missing or unreadable: {e}", rel(root, &inrel))),
        Ok(text) => match CleartextSignedMessage::from_string(&text) {
            Err(e) => r.fail(format!(
                "{}: not a cleartext signature: {e}",
                rel(root, &inrel)
            )),
            Ok((msg, _)) => {
                r.checked += 1;
                if let Err(e) = keys.verify_clear(&msg) {
                    r.fail(format!(
                        "{}: signature does not verify: {e}",
                        rel(root, &inrel)
                    ));
                }
                if cleartext_body(&msg).trim_end() != release.trim_end() {
                    r.fail(format!(
                        "{}: signed text differs from {}",
                        rel(root, &inrel),
                        rel(root, &release_path)
                    ));
                }
            }
        },
    }
    let gpg = suite.join("Release.gpg");
    match read_text_in_tree(root, &gpg) {
        Err(e) => r.fail(format!("{}: missing or unreadable: {e}", rel(root, &gpg))),
        Ok(text) => match DetachedSignature::from_string(&text) {
            Err(e) => r.fail(format!(
                "{}: not a detached signature: {e}",
                rel(root, &gpg)
            )),
            Ok((sig, _)) => {
                r.checked += 1;
                if let Err(e) = keys.verify_detached(&sig, release.as_bytes()) {
                    r.fail(format!(
                        "{}: signature over Release does not verify: {e}",
                        rel(root, &gpg)
                    ));
                }
            }
        },
    }
    let para = match parse_deb822(&release) {
        Ok(mut p) if !p.is_empty() => p.remove(0),
        Ok(_) => {
            r.fail(format!("{}: empty", rel(root, &release_path)));
            return Ok(());
        }
        Err(e) => {
            r.fail(format!("{}: {e}", rel(root, &release_path)));
            return Ok(());
        }
    };
    if let Some(v) = para.get("Valid-Until") {
        match crate::date::parse_rfc2822(v) {
            Some(t) if t < now() => r.fail(format!(
                "{}: expired (Valid-Until: {v})",
                rel(root, &release_path)
            )),
            Some(_) => {}
            None => r.fail(format!(
                "{}: unreadable Valid-Until: {v:?}",
                rel(root, &release_path)
            )),
        }
    }
    let by_hash = para
        .get("Acquire-By-Hash")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    let mut listed = 0;
    let mut packages_files = Vec::new();
    for (field, algo) in [("SHA256", "SHA256"), ("SHA512", "SHA512")] {
        let Some(v) = para.get(field) else {
            if field == "SHA256" {
                r.fail(format!("{}: no SHA256 field", rel(root, &release_path)));
            }
            continue;
        };
        for (want, size, path) in release_sums(v) {
            let p = suite.join(&path);
            if path.split('/').any(|c| c == ".." || c.is_empty()) {
                r.fail(format!(
                    "{}: unsafe path {path:?}",
                    rel(root, &release_path)
                ));
                continue;
            }
            listed += 1;
            let d = match r.digests(root, &p, SHA512) {
                Ok(d) => d,
                Err(e) => {
                    r.fail(format!("{}: listed in Release but {e}", rel(root, &p)));
                    continue;
                }
            };
            r.checked += 1;
            let got = if algo == "SHA256" {
                d.sha256.clone()
            } else {
                d.sha512()
            };
            if d.size != size {
                r.fail(format!(
                    "{}: size {} but Release says {size}",
                    rel(root, &p),
                    d.size
                ));
            }
            if got != want {
                r.fail(format!(
                    "{}: {algo} {got} but Release says {want}",
                    rel(root, &p)
                ));
            }
            if by_hash {
                let dir = p.parent().unwrap_or(suite);
                let bh = dir.join("by-hash").join(algo).join(&want);
                // Its content is checked below with every other by-hash file (once).
                if !bh.is_file() {
                    r.fail(format!(
                        "{}: missing (Acquire-By-Hash: yes)",
                        rel(root, &bh)
                    ));
                }
            }
            if algo == "SHA256" && path.ends_with("/Packages") {
                packages_files.push(p);
            }
        }
    }
    if listed == 0 {
        r.fail(format!("{}: lists no index file", rel(root, &release_path)));
    }
    // Every by-hash file (including those carried over from older generations) is named by
    // its own digest.
    verify_by_hash_dirs(suite, root, r)?;
    for pf in packages_files {
        let text = match read_text_in_tree(root, &pf) {
            Ok(t) => t,
            Err(e) => {
                r.fail(format!("{}: {e}", rel(root, &pf)));
                continue;
            }
        };
        let paras = match parse_deb822(&text) {
            Ok(p) => p,
            Err(e) => {
                r.fail(format!("{}: {e}", rel(root, &pf)));
                continue;
            }
        };
        for p in paras {
            let name = p.get("Package").cloned().unwrap_or_default();
            let Some(file) = p.get("Filename") else {
                r.fail(format!("{}: {name}: no Filename", rel(root, &pf)));
                continue;
            };
            if file.starts_with('/') || file.split('/').any(|c| c == "..") {
                r.fail(format!(
                    "{}: {name}: unsafe Filename {file:?}",
                    rel(root, &pf)
                ));
                continue;
            }
            let deb = apt.join(file);
            let want = Want {
                sha512: p.contains_key("SHA512"),
                md5: p.contains_key("MD5sum"),
            };
            let d = match r.digests(root, &deb, want) {
                Ok(d) => d,
                Err(e) => {
                    r.fail(format!(
                        "{}: named by {} but {e}",
                        rel(root, &deb),
                        rel(root, &pf)
                    ));
                    continue;
                }
            };
            r.checked += 1;
            let checks = [
                ("Size", d.size.to_string()),
                ("SHA256", d.sha256),
                ("SHA512", d.sha512.unwrap_or_default()),
                ("MD5sum", d.md5.unwrap_or_default()),
            ];
            if !p.contains_key("SHA256") {
                r.fail(format!("{}: {name}: no SHA256", rel(root, &pf)));
            }
            for (f, got) in checks {
                if let Some(want) = p.get(f) {
                    if *want != got {
                        r.fail(format!(
                            "{}: {f} {got} but {} says {want}",
                            rel(root, &deb),
                            rel(root, &pf)
                        ));
                    }
                }
            }
            verify_origin(&deb, root, keys, r);
        }
    }
    Ok(())
}

/// The debsigs origin signature of a .deb, when it carries one (apt itself trusts the
/// repository signature; a package without `_gpgorigin` is not a failure here).
fn verify_origin(deb: &Path, root: &Path, keys: &TrustedKeys, r: &mut Report) {
    let what = || format!("{}: debsigs origin signature", rel(root, deb));
    match crate::debsig::read_origin(deb) {
        Ok(None) => {}
        Err(e) => r.fail(format!("{}: {e:#}", what())),
        Ok(Some(o)) => match DetachedSignature::from_string(&o.signature) {
            Err(e) => r.fail(format!("{}: not an armored signature: {e}", what())),
            Ok((sig, _)) => match keys.verify_detached_stream(&sig, || o.signed_data(deb)) {
                Ok(()) => r.checked += 1,
                Err(e) => r.fail(format!("{}: {e:#}", what())),
            },
        },
    }
}

fn verify_by_hash_dirs(dir: &Path, root: &Path, r: &mut Report) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let p = e.path();
        if e.file_name() == "by-hash" {
            for algo in ["SHA256", "SHA512"] {
                let Ok(rd) = std::fs::read_dir(p.join(algo)) else {
                    continue;
                };
                for f in rd {
                    let f = f?.path();
                    let name = f
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    let want = if algo == "SHA256" { SHA256 } else { SHA512 };
                    let d = match r.digests(root, &f, want) {
                        Ok(d) => d,
                        Err(e) => {
                            r.fail(format!("{}: {e}", rel(root, &f)));
                            continue;
                        }
                    };
                    let got = if algo == "SHA256" {
                        d.sha256.clone()
                    } else {
                        d.sha512()
                    };
                    if got != name {
                        r.fail(format!("{}: content has {algo} {got}", rel(root, &f)));
                    }
                }
            }
        } else {
            verify_by_hash_dirs(&p, root, r)?;
        }
    }
    Ok(())
}

fn verify_dnf(dnf: &Path, root: &Path, keys: &TrustedKeys, r: &mut Report) -> Result<()> {
    let repomd_path = dnf.join("repodata/repomd.xml");
    let repomd = match read_in_tree(root, &repomd_path) {
        Ok(b) => b,
        Err(e) => {
            r.fail(format!(
                "{}: missing or unreadable: {e}",
                rel(root, &repomd_path)
            ));
            return Ok(());
        }
    };
    r.checked += 1;
    let asc = dnf.join("repodata/repomd.xml.asc");
    match read_text_in_tree(root, &asc) {
        Err(e) => r.fail(format!("{}: missing or unreadable: {e}", rel(root, &asc))),
        Ok(text) => match DetachedSignature::from_string(&text) {
            Err(e) => r.fail(format!(
                "{}: not a detached signature: {e}",
                rel(root, &asc)
            )),
            Ok((sig, _)) => {
                r.checked += 1;
                if let Err(e) = keys.verify_detached(&sig, &repomd) {
                    r.fail(format!(
                        "{}: signature over repomd.xml does not verify: {e}",
                        rel(root, &asc)
                    ));
                }
            }
        },
    }
    let data = match parse_repomd(&repomd) {
        Ok(d) => d,
        Err(e) => {
            r.fail(format!("{}: {e}", rel(root, &repomd_path)));
            return Ok(());
        }
    };
    let mut primary = None;
    for d in &data {
        let p = dnf.join(&d.href);
        if d.href.starts_with('/') || d.href.split('/').any(|c| c == "..") {
            r.fail(format!(
                "{}: unsafe location {:?}",
                rel(root, &repomd_path),
                d.href
            ));
            continue;
        }
        let got = match r.digests(root, &p, SHA256) {
            Ok(g) => g,
            Err(e) => {
                r.fail(format!("{}: named in repomd.xml but {e}", rel(root, &p)));
                continue;
            }
        };
        r.checked += 1;
        if got.sha256 != d.checksum {
            r.fail(format!(
                "{}: sha256 {} but repomd.xml says {}",
                rel(root, &p),
                got.sha256,
                d.checksum
            ));
            continue;
        }
        if let Some(s) = d.size {
            if s != got.size {
                r.fail(format!(
                    "{}: size {} but repomd.xml says {s}",
                    rel(root, &p),
                    got.size
                ));
            }
        }
        let open = match decompress(root, &p) {
            Ok(b) => b,
            Err(e) => {
                r.fail(format!("{}: {e}", rel(root, &p)));
                continue;
            }
        };
        if let Some(oc) = &d.open_checksum {
            let h = crate::digest::sha256_hex(&open);
            if &h != oc {
                r.fail(format!(
                    "{}: uncompressed sha256 {h} but repomd.xml says {oc}",
                    rel(root, &p)
                ));
            }
        }
        if let Some(os) = d.open_size {
            if os != open.len() as u64 {
                r.fail(format!(
                    "{}: uncompressed size {} but repomd.xml says {os}",
                    rel(root, &p),
                    open.len()
                ));
            }
        }
        if d.kind == "primary" {
            primary = Some((p.clone(), open));
        }
    }
    let Some((ppath, primary)) = primary else {
        // A listed but unusable primary has been reported above.
        if !data.iter().any(|d| d.kind == "primary") {
            r.fail(format!("{}: no primary data", rel(root, &repomd_path)));
        }
        return Ok(());
    };
    let pkgs = match parse_primary(&primary) {
        Ok(p) => p,
        Err(e) => {
            r.fail(format!("{}: {e}", rel(root, &ppath)));
            return Ok(());
        }
    };
    let mut verifier = rpm::signature::pgp::Verifier::new();
    for a in &keys.armored {
        verifier
            .load_from_asc(a)
            .map_err(|e| anyhow!("loading a trusted key for rpm: {e}"))?;
    }
    for pk in pkgs {
        if pk.href.starts_with('/') || pk.href.split('/').any(|c| c == "..") {
            r.fail(format!(
                "{}: unsafe location {:?}",
                rel(root, &ppath),
                pk.href
            ));
            continue;
        }
        let p = dnf.join(&pk.href);
        let got = match r.digests(root, &p, SHA256) {
            Ok(g) => g,
            Err(e) => {
                r.fail(format!("{}: named in primary but {e}", rel(root, &p)));
                continue;
            }
        };
        r.checked += 1;
        if got.sha256 != pk.checksum {
            r.fail(format!(
                "{}: sha256 {} but {} says {}",
                rel(root, &p),
                got.sha256,
                rel(root, &ppath),
                pk.checksum
            ));
            continue;
        }
        if let Some(s) = pk.size {
            if s != got.size {
                r.fail(format!(
                    "{}: size {} but {} says {s}",
                    rel(root, &p),
                    got.size,
                    rel(root, &ppath)
                ));
            }
        }
        match rpm::Package::open(&p) {
            Err(e) => r.fail(format!("{}: not a readable rpm: {e}", rel(root, &p))),
            Ok(pkg) => {
                if let Err(e) = pkg.verify_digests() {
                    r.fail(format!("{}: digests: {e}", rel(root, &p)));
                }
                if let Err(e) = pkg.verify_signature(&verifier) {
                    r.fail(format!("{}: header signature: {e}", rel(root, &p)));
                }
            }
        }
    }
    Ok(())
}

/// SHA256SUMS: signed by a trusted key, and naming exactly the files of the tree (so client
/// files, keys and manifest are covered too, and nothing can be added unnoticed).
fn verify_sha256sums(root: &Path, keys: &TrustedKeys, r: &mut Report) -> Result<()> {
    use crate::dist::{SUMS_FILE, SUMS_SIGNATURE};
    let sums = root.join(SUMS_FILE);
    let text = match read_text_in_tree(root, &sums) {
        Ok(t) => t,
        Err(e) => {
            r.fail(format!("{SUMS_FILE}: {e}"));
            return Ok(());
        }
    };
    r.checked += 1;
    match read_text_in_tree(root, &root.join(SUMS_SIGNATURE)) {
        Err(e) => r.fail(format!("{SUMS_SIGNATURE}: {e}")),
        Ok(asc) => match DetachedSignature::from_string(&asc) {
            Err(e) => r.fail(format!("{SUMS_SIGNATURE}: not a detached signature: {e}")),
            Ok((sig, _)) => {
                r.checked += 1;
                if let Err(e) = keys.verify_detached(&sig, text.as_bytes()) {
                    r.fail(format!(
                        "{SUMS_SIGNATURE}: signature over {SUMS_FILE} does not verify: {e}"
                    ));
                }
            }
        },
    }
    let mut listed = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some((h, f)) = line.split_once("  ") else {
            r.fail(format!("{SUMS_FILE}: malformed line {line:?}"));
            continue;
        };
        if f.starts_with('/') || f.split('/').any(|c| c == ".." || c.is_empty()) {
            r.fail(format!("{SUMS_FILE}: unsafe path {f:?}"));
            continue;
        }
        listed.insert(f.to_string());
        let p = root.join(f);
        match r.digests(root, &p, SHA256) {
            Err(e) => r.fail(format!("{f}: listed in {SUMS_FILE} but {e}")),
            Ok(d) if d.sha256 != h => {
                r.fail(format!("{f}: sha256 {} but {SUMS_FILE} says {h}", d.sha256))
            }
            Ok(_) => r.checked += 1,
        }
    }
    match crate::dist::tree_files(root) {
        Err(e) => r.fail(format!("{e:#}")),
        Ok(files) => {
            for f in files {
                if f != SUMS_FILE && f != SUMS_SIGNATURE && !listed.contains(&f) {
                    r.fail(format!("{f}: not listed in {SUMS_FILE}"));
                }
            }
        }
    }
    Ok(())
}

fn decompress(root: &Path, p: &Path) -> Result<Vec<u8>> {
    let f = open_in_tree(root, p)?;
    let name = p.to_string_lossy();
    let mut out = Vec::new();
    let limit = 1u64 << 31;
    if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(f)
            .take(limit)
            .read_to_end(&mut out)?;
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(f)?
            .take(limit)
            .read_to_end(&mut out)?;
    } else if name.ends_with(".xz") {
        liblzma::read::XzDecoder::new(f)
            .take(limit)
            .read_to_end(&mut out)?;
    } else {
        std::io::BufReader::new(f)
            .take(limit)
            .read_to_end(&mut out)?;
    }
    Ok(out)
}

pub(crate) struct RepomdData {
    kind: String,
    pub(crate) href: String,
    pub(crate) checksum: String,
    open_checksum: Option<String>,
    size: Option<u64>,
    open_size: Option<u64>,
}

fn attr(e: &quick_xml::events::BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .filter_map(|a| a.ok())
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

pub(crate) fn parse_repomd(xml: &[u8]) -> Result<Vec<RepomdData>> {
    use quick_xml::events::Event;
    let mut rd = quick_xml::Reader::from_reader(xml);
    let mut out = Vec::new();
    let mut cur: Option<RepomdData> = None;
    let mut field = String::new();
    let mut buf = Vec::new();
    loop {
        match rd.read_event_into(&mut buf)? {
            Event::Start(e) | Event::Empty(e) => {
                let n = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match n.as_str() {
                    "data" => {
                        cur = Some(RepomdData {
                            kind: attr(&e, b"type").unwrap_or_default(),
                            href: String::new(),
                            checksum: String::new(),
                            open_checksum: None,
                            size: None,
                            open_size: None,
                        })
                    }
                    "location" => {
                        if let Some(c) = cur.as_mut() {
                            c.href = attr(&e, b"href").unwrap_or_default();
                        }
                    }
                    _ => {}
                }
                field = n;
            }
            Event::Text(t) => {
                let v = t.unescape()?.trim().to_string();
                if let Some(c) = cur.as_mut() {
                    match field.as_str() {
                        "checksum" => c.checksum = v,
                        "open-checksum" => c.open_checksum = Some(v),
                        "size" => c.size = v.parse().ok(),
                        "open-size" => c.open_size = v.parse().ok(),
                        _ => {}
                    }
                }
            }
            Event::End(e) => {
                if e.local_name().as_ref() == b"data" {
                    if let Some(c) = cur.take() {
                        if c.href.is_empty() || c.checksum.is_empty() {
                            bail!("data {:?} lacks a location or checksum", c.kind);
                        }
                        out.push(c);
                    }
                }
                field.clear();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

struct PrimaryPkg {
    href: String,
    checksum: String,
    size: Option<u64>,
}

fn parse_primary(xml: &[u8]) -> Result<Vec<PrimaryPkg>> {
    use quick_xml::events::Event;
    let mut rd = quick_xml::Reader::from_reader(xml);
    let mut out = Vec::new();
    let mut cur: Option<PrimaryPkg> = None;
    let mut in_checksum = false;
    let mut buf = Vec::new();
    loop {
        match rd.read_event_into(&mut buf)? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"package" => {
                    cur = Some(PrimaryPkg {
                        href: String::new(),
                        checksum: String::new(),
                        size: None,
                    })
                }
                b"location" => {
                    if let Some(c) = cur.as_mut() {
                        c.href = attr(&e, b"href").unwrap_or_default();
                    }
                }
                b"size" => {
                    if let Some(c) = cur.as_mut() {
                        c.size = attr(&e, b"package").and_then(|v| v.parse().ok());
                    }
                }
                b"checksum" => in_checksum = true,
                _ => {}
            },
            Event::Text(t) if in_checksum => {
                if let Some(c) = cur.as_mut() {
                    c.checksum = t.unescape()?.trim().to_string();
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"checksum" => in_checksum = false,
                b"package" => {
                    if let Some(c) = cur.take() {
                        if c.href.is_empty() || c.checksum.is_empty() {
                            bail!("a package lacks a location or checksum");
                        }
                        out.push(c);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree whose indexes are symlinks to /dev/zero (or out of the tree) and whose SHA256SUMS
    /// is a FIFO: verify reported OK for links to outside files with the right bytes, and read
    /// /dev/zero or blocked on the FIFO forever. Now each is a failure, promptly.
    #[test]
    fn symlinks_and_special_files_in_the_tree_are_failures_not_hangs() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("Release"), "Suite: stable\n").unwrap();
        std::fs::create_dir_all(root.join("apt/dists/stable")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("Release"),
            root.join("apt/dists/stable/Release"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("apt/dists/stable/InRelease")).unwrap();
        std::fs::create_dir_all(outside.path().join("repodata")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", outside.path().join("repodata/repomd.xml"))
            .unwrap();
        std::fs::create_dir_all(root.join("dnf")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("repodata"), root.join("dnf/repodata"))
            .unwrap();
        let fifo = root.join("SHA256SUMS");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let keys = TrustedKeys {
                keys: vec![],
                armored: vec![],
            };
            tx.send(verify_tree(&root, &keys).map_err(|e| e.to_string()))
                .unwrap();
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("verify hung on a symlink to /dev/zero or a FIFO")
            .unwrap();
        let all = r.failures.join("\n");
        for want in [
            "apt/dists/stable/Release: missing or unreadable: apt/dists/stable/Release is a symlink",
            "dnf/repodata/repomd.xml: missing or unreadable: dnf/repodata is a symlink",
            "SHA256SUMS: is not a regular file",
        ] {
            assert!(all.contains(want), "wanted {want:?} in:\n{all}");
        }
        let rel = |p: &str| t.path().join(p);
        let e = open_in_tree(t.path(), &rel("apt/dists/stable/InRelease"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is a symlink"), "{e}");
        std::fs::write(rel("apt/dists/stable/plain"), "x").unwrap();
        open_in_tree(t.path(), &rel("apt/dists/stable/plain")).unwrap();
        assert!(open_in_tree(t.path(), Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn deb822_paragraphs_and_continuations() {
        let p = parse_deb822("A: 1\nB: x\n y\n\nA: 2\n").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["B"], "x\ny");
        assert_eq!(p[1]["A"], "2");
        assert!(parse_deb822(" lone\n").is_err());
        assert!(parse_deb822("no colon\n").is_err());
    }
}
