//! What a generation is made from, and `dist`'s no-op check: when nothing changed, do nothing.
//!
//! The fingerprint of a run is the sha256 of a canonical text (versioned header) naming
//! everything that determines the bytes of the generation it would publish:
//!
//! - the tool (sha256 of the running executable: any code change, including how this text is
//!   formatted, is a new fingerprint), the signing key (primary and signing (sub)key
//!   fingerprint, and the sha256 of its armored public half, which the tree ships under
//!   `keys/` and in the debsig policy: a re-issued key with new user IDs or expiry has the
//!   same fingerprints but other bytes) and the signature time;
//! - every package's build-cache key (sorted), made from the pins without fetching
//!   ([`crate::dist::package_keys`]: component file, asset pin, templates, compression,
//!   maintainer, SOURCE_DATE_EPOCH, and the tool and signer again);
//! - the deb/rpm compression and maintainer, and the repository options
//!   ([`crate::dist::RepoOptions`]: every apt setting — suite, codename, origin, label,
//!   description, architectures, Valid-Until, Date, pool linking — dnf metadata compression
//!   and changelog limit, client name, base URL), written as their `Debug` text so a field
//!   added later is covered without anyone remembering to add it here.
//!
//! What else lands in a generation, and why it is covered or left out:
//! - SBOM and provenance: functions of the component, templates, asset pin, toolchain,
//!   compression and SOURCE_DATE_EPOCH (see `attest.rs`), all in the package keys; their
//!   signatures, of the key and signature time.
//! - debsig policy and keyring, `keys/*.asc|gpg`, `.sources`/`.repo`: the public key digest,
//!   the client name and the base URL.
//! - `manifest.json`, `SHA256SUMS(.asc)`, apt and dnf indexes: functions of the above.
//! - By-hash files and repodata carried over from previous generations: left out on purpose.
//!   They keep older indexes fetchable; a generation whose own inputs did not change carries
//!   (and has on disk beside it) the indexes of itself and its previous generations already,
//!   so a client holding any index it could have fetched before can still fetch what that
//!   index names. Publishing again would only move the window of carried indexes, not make
//!   anything newly fetchable.
//! - The output directory, the mirror, the cache location, `--json`, `--release`, where the
//!   key came from (file or environment): they do not change the bytes (the default base
//!   URL, which names OUT, is in the repository options).
//!
//! `dist` records the fingerprint of what it published in `OUT/.inputs`
//! ([`crate::publish::record_inputs`]); [`check`] trusts that file only as "which fingerprint
//! produced generation N": the generation itself must still be what `current` names and must
//! verify completely (every signature and hash, as before publishing), must hold exactly the
//! packages the selected components make, and its `manifest.json` (covered by the signed
//! `SHA256SUMS`) must carry the same content fingerprint in its `inputs` field (the same text
//! without the tool digest, [`Fingerprints::content`]: published bytes must not depend on
//! where `xtask` was compiled), for a run to do nothing: a record copied beside another signed generation of the same versions does not
//! pass. The generation is verified as itself (a symlink at it, or an entry `current` in it,
//! is a reason to build), never by following a link.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::build_cache::BuildCache;
use crate::component::Component;
use crate::dist::{BuildOptions, Built, RepoOptions};
use crate::package::{Arch, Compression, Format};
use crate::render::Templates;
use crate::signing::SigningKey;
use crate::verify::TrustedKeys;

/// Bumped when the text below changes meaning (the tool digest changes with it anyway).
const VERSION: &str = "observability-stack generation inputs v1";

/// The inputs of one `dist` run (after plan, key and lock; before fetching).
pub struct Run<'a> {
    /// Makes the package keys: the same salt (tool, signer, signature time) as the build cache
    /// the run would use (built even under `--no-build-cache`; it touches nothing on disk).
    pub keys: &'a BuildCache,
    pub templates: &'a Templates,
    pub jobs: &'a [(Component, Arch)],
    /// SOURCE_DATE_EPOCH of each job (as `build_one` computes it).
    pub source_date_epochs: &'a [u64],
    pub opts: &'a BuildOptions,
    pub repo: &'a RepoOptions,
    /// The key with its signature time set to `date`.
    pub key: &'a SigningKey,
    /// The signature time and index date.
    pub date: u64,
}

fn compression(c: Compression) -> &'static str {
    match c {
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
        Compression::None => "none",
    }
}

/// The canonical text the fingerprint is the sha256 of (see the module documentation).
/// `tool`: with the tool digest (in its own line and in every package key); without it, the
/// text of [`Fingerprints::content`].
pub fn canonical_text(r: &Run<'_>, tool: bool) -> Result<String> {
    if r.jobs.len() != r.source_date_epochs.len() {
        return Err(anyhow!("inputs: one SOURCE_DATE_EPOCH per job"));
    }
    let public = r.key.public_key_armored()?;
    let tool_line = if tool {
        format!("tool {}", crate::build_cache::tool_digest()?)
    } else {
        "content".to_string()
    };
    let mut text = format!(
        "{VERSION}\n{tool_line}\nsigning-key {}\nsigning-subkey {}\npublic-key {}\n\
         signature-time {}\ndeb-compression {}\nrpm-compression {}\nmaintainer {:?}\nrepo {:?}\n",
        r.key.fingerprint(),
        r.key.signing_fingerprint(),
        crate::digest::sha256_hex(public.as_bytes()),
        r.date,
        compression(r.opts.deb_compression),
        compression(r.opts.rpm_compression),
        r.opts.maintainer,
        r.repo,
    );
    let mut keys = Vec::with_capacity(r.jobs.len() * 2);
    for ((c, arch), sde) in r.jobs.iter().zip(r.source_date_epochs) {
        keys.extend(crate::dist::package_keys(
            r.keys,
            r.templates,
            c,
            *arch,
            r.opts,
            *sde,
            !tool,
        )?);
    }
    keys.sort();
    for k in keys {
        text.push_str(&format!("package {k}\n"));
    }
    Ok(text)
}

/// The two fingerprints of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprints {
    /// sha256 (hex) of [`canonical_text`] with the tool digest: recorded in `OUT/.inputs`, so
    /// a new `xtask` binary publishes anew.
    pub full: String,
    /// The same without the tool digest: carried in the generation's signed `manifest.json`
    /// (`inputs`), so the published bytes depend on what the packages and indexes are made
    /// from, never on where or how `xtask` itself was compiled.
    pub content: String,
}

/// Both fingerprints of `r`.
pub fn fingerprints(r: &Run<'_>) -> Result<Fingerprints> {
    let of = |tool| -> Result<String> {
        Ok(crate::digest::sha256_hex(
            canonical_text(r, tool)?.as_bytes(),
        ))
    };
    Ok(Fingerprints {
        full: of(true)?,
        content: of(false)?,
    })
}

/// What [`check`] found.
#[derive(Debug)]
pub enum Verdict {
    /// The current generation was made from these inputs and verifies: nothing to do.
    Unchanged {
        /// `OUT/generations/NNNN` (as `OUT` was given).
        generation: PathBuf,
        /// Its packages, from its `manifest.json`.
        packages: Vec<Built>,
    },
    /// A new generation is needed; why (`None`: nothing is published in OUT yet).
    Changed(Option<String>),
}

/// Whether generation `current` of `out` (locked by the caller) was made from the inputs
/// whose fingerprint is `fingerprint` and still verifies against `trusted`. Never fails: any
/// problem (a missing, malformed or stale record, a tree that does not verify, an unreadable
/// manifest) is a reason to build, named in [`Verdict::Changed`].
pub fn check(
    out: &Path,
    fingerprints: &Fingerprints,
    trusted: &TrustedKeys,
    jobs: &[(Component, Arch)],
) -> Verdict {
    use crate::publish::INPUTS_FILE;
    let changed = |why: String| Verdict::Changed(Some(why));
    let current = crate::publish::current_generation(out);
    let (gen, recorded) = match crate::publish::recorded_inputs(out) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Verdict::Changed(current.map(|g| {
                format!("no record of the inputs of generation {g} ({INPUTS_FILE} is missing)")
            }))
        }
        Err(why) => return changed(why),
    };
    let Some(current) = current else {
        return changed(format!(
            "{INPUTS_FILE} names generation {gen}, but `current` names no generation"
        ));
    };
    if gen != current {
        return changed(format!(
            "{INPUTS_FILE} names generation {gen}, `current` is generation {current}"
        ));
    }
    if recorded != fingerprints.full {
        return changed(format!("the inputs differ from generation {current}'s"));
    }
    let dir = crate::publish::generation_dir(out, &current);
    // The generation itself, not whatever a link in or at it leads to: `verify_tree` of a
    // directory holding `current` would check that link's target instead.
    if std::fs::symlink_metadata(&dir).map_or(true, |m| !m.is_dir()) {
        return changed(format!("{} is not a directory (a symlink?)", dir.display()));
    }
    if std::fs::symlink_metadata(dir.join("current")).is_ok() {
        return changed(format!(
            "generation {current} holds an entry named `current` (not written by dist)"
        ));
    }
    match crate::verify::verify_root(&dir, trusted) {
        Err(e) => return changed(format!("generation {current} does not verify: {e:#}")),
        Ok(r) if !r.ok() => {
            let shown: Vec<&str> = r.failures.iter().take(3).map(String::as_str).collect();
            return changed(format!(
                "generation {current} does not verify ({} problem(s)): {}{}",
                r.failures.len(),
                shown.join("; "),
                if r.failures.len() > shown.len() {
                    "; …"
                } else {
                    ""
                }
            ));
        }
        Ok(_) => {}
    }
    let packages = match crate::merge::manifest_packages(&dir) {
        Ok(p) => p,
        Err(e) => return changed(format!("generation {current}: {e:#}")),
    };
    // The record is not trusted for content: what the generation holds must be exactly the
    // packages the selected components make (a signed older generation put back as `current`,
    // with a record copied beside it, verifies but holds other versions).
    type Id = (String, String, String, String);
    let id = |component: &str, arch: Arch, format: Format, version: &str| -> Id {
        (
            component.to_string(),
            arch.to_string(),
            format!("{format:?}"),
            version.to_string(),
        )
    };
    let want: std::collections::BTreeSet<Id> = jobs
        .iter()
        .flat_map(|(c, a)| {
            let version = format!("{}-{}", c.version, c.revision);
            [Format::Deb, Format::Rpm].map(|f| id(&c.name, *a, f, &version))
        })
        .collect();
    let have: std::collections::BTreeSet<Id> = packages
        .iter()
        .map(|b| id(&b.component, b.arch, b.format, &b.version))
        .collect();
    if have != want || packages.len() != want.len() {
        let missing = want.difference(&have).next();
        let extra = have.difference(&want).next();
        return changed(format!(
            "generation {current} does not hold the packages the components select{}{}",
            missing.map_or(String::new(), |m| format!(
                " (missing {} {} {} {})",
                m.0, m.3, m.1, m.2
            )),
            extra.map_or(String::new(), |m| format!(
                " (also holds {} {} {} {})",
                m.0, m.3, m.1, m.2
            )),
        ));
    }
    // The fingerprint the generation was signed with (its manifest.json, covered by the
    // verified SHA256SUMS), not only the record beside it: a same-version generation made from
    // other inputs, put back as `current` with the record copied, is built anew.
    match manifest_inputs(&dir) {
        Ok(Some(f)) if f == fingerprints.content => {}
        Ok(Some(_)) => {
            return changed(format!(
                "generation {current} was made from other inputs (its manifest.json says so)"
            ))
        }
        Ok(None) => {
            return changed(format!(
                "generation {current}'s manifest.json names no inputs (not made by `dist`)"
            ))
        }
        Err(e) => return changed(format!("generation {current}: {e:#}")),
    }
    Verdict::Unchanged {
        generation: dir,
        packages,
    }
}

/// The `inputs` fingerprint a generation's `manifest.json` carries (`None`: the key is absent,
/// as in a generation `index --merge` made).
fn manifest_inputs(root: &Path) -> Result<Option<String>> {
    let path = root.join("manifest.json");
    let bytes = crate::verify::read_in_tree_limited(root, &path, 64 << 20)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("{} is not JSON: {e}", path.display()))?;
    match v.get("inputs") {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(anyhow!(
            "{}: `inputs` {other}: not a string",
            path.display()
        )),
    }
}
