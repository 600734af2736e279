//! What a package is made of and how it was made: an SPDX 2.3 JSON SBOM and an in-toto v1
//! Statement with an SLSA provenance v1 predicate, one of each per package.
//!
//! Both are functions of the build's inputs only (the component file's digest, the template
//! digests, the verified upstream asset, the toolchain captured at compile time, and
//! SOURCE_DATE_EPOCH), never of the output directory, the mirror used, the clock or the
//! machine, so the same inputs give the same bytes. `dist` writes them to
//! `sbom/<package file>.spdx.json` and `provenance/<package file>.intoto.json` with a detached
//! OpenPGP signature each (`.asc`), lists them in `manifest.json` and SHA256SUMS, and
//! `verify` checks their signatures and that the digests they state are those of the packages
//! in the tree.

use std::io::Read;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha1::Digest;

use crate::component::Component;
use crate::fetch::VerifiedArtifact;
use crate::package::{Arch, Content, Format, Package, Written};

pub const SBOM_DIR: &str = "sbom";
pub const PROVENANCE_DIR: &str = "provenance";
pub const SBOM_SUFFIX: &str = ".spdx.json";
pub const PROVENANCE_SUFFIX: &str = ".intoto.json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
pub const BUILD_TYPE: &str = "https://observability-stack.org/buildtypes/xtask-dist/v1";
pub const BUILDER_ID: &str = "https://observability-stack.org/builders/cargo-xtask-dist";

/// `rustc -V` of the compiler that built this binary (captured by build.rs).
pub const RUSTC_VERSION: &str = env!("XTASK_RUSTC_VERSION");
pub const XTASK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything one package's documents are made from.
pub struct Inputs<'a> {
    pub component: &'a Component,
    pub arch: Arch,
    pub format: Format,
    pub artifact: &'a VerifiedArtifact,
    /// Template name (below templates/, without `.hbs`) → sha256 of its text.
    pub templates: &'a std::collections::BTreeMap<String, String>,
    pub package: &'a Package,
    pub written: &'a Written,
    pub source_date_epoch: u64,
    /// Payload compression, as the command line names it.
    pub compression: String,
}

fn rfc3339(secs: u64) -> String {
    let (y, m, d) = crate::date::civil_from_days((secs / 86_400) as i64);
    let r = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        r / 3600,
        r / 60 % 60,
        r % 60
    )
}

/// sha1 and sha256 of a payload file (streamed when it is on disk).
fn file_digests(c: &Content) -> Result<(String, String)> {
    let mut s1 = sha1::Sha1::new();
    let mut s256 = sha2::Sha256::new();
    match c {
        Content::Bytes(b) => {
            s1.update(b);
            sha2::Digest::update(&mut s256, b);
        }
        Content::File(p) => {
            let mut f = std::fs::File::open(p).with_context(|| format!("{}", p.display()))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                s1.update(&buf[..n]);
                sha2::Digest::update(&mut s256, &buf[..n]);
            }
        }
    }
    Ok((
        hex::encode(s1.finalize()),
        hex::encode(sha2::Digest::finalize(s256)),
    ))
}

fn asset_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

fn purl(i: &Inputs<'_>) -> String {
    let p = i.package;
    match i.format {
        Format::Deb => format!(
            "pkg:deb/observability-stack/{}@{}-{}?arch={}",
            p.name,
            p.version,
            p.revision,
            i.arch.deb()
        ),
        Format::Rpm => format!(
            "pkg:rpm/observability-stack/{}@{}-{}?arch={}",
            p.name,
            p.version,
            p.revision,
            i.arch.rpm()
        ),
    }
}

/// The SPDX 2.3 document of one package.
pub fn sbom(i: &Inputs<'_>) -> Result<Value> {
    let c = i.component;
    let upstream_url = c.url(i.arch);
    let license = if c.license.trim().is_empty() {
        "NOASSERTION".to_string()
    } else {
        c.license.clone()
    };
    let copyright = if c.copyright.trim().is_empty() {
        "NOASSERTION".to_string()
    } else {
        c.copyright.clone()
    };
    let mut files = Vec::new();
    let mut file_ids = Vec::new();
    let mut sha1s = Vec::new();
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Package",
    })];
    for (n, f) in i.package.files.iter().enumerate() {
        let (s1, s256) = file_digests(&f.content)?;
        let id = format!("SPDXRef-File-{}", n + 1);
        sha1s.push(s1.clone());
        files.push(json!({
            "SPDXID": id,
            "fileName": format!(".{}", f.path),
            "checksums": [
                { "algorithm": "SHA1", "checksumValue": s1 },
                { "algorithm": "SHA256", "checksumValue": s256 },
            ],
            "licenseConcluded": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        rels.push(json!({
            "spdxElementId": "SPDXRef-Package",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
        file_ids.push(id);
    }
    rels.push(json!({
        "spdxElementId": "SPDXRef-Package",
        "relationshipType": "GENERATED_FROM",
        "relatedSpdxElement": "SPDXRef-Upstream",
    }));
    // SPDX 2.3 §7.9: sha1 over the sorted, concatenated sha1s of the package's files.
    sha1s.sort();
    let verification = hex::encode(sha1::Sha1::digest(sha1s.concat().as_bytes()));
    let w = i.written;
    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": w.file_name,
        "documentNamespace": format!(
            "https://observability-stack.org/spdx/{}/{}",
            w.file_name, w.sha256
        ),
        "creationInfo": {
            "created": rfc3339(i.source_date_epoch),
            "creators": [
                format!("Tool: observability-stack-xtask-{XTASK_VERSION}"),
                "Organization: observability-stack",
            ],
        },
        "documentDescribes": ["SPDXRef-Package"],
        "packages": [
            {
                "SPDXID": "SPDXRef-Package",
                "name": i.package.name,
                "versionInfo": format!("{}-{}", i.package.version, i.package.revision),
                "packageFileName": w.file_name,
                "supplier": "Organization: observability-stack",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": true,
                "packageVerificationCode": { "packageVerificationCodeValue": verification },
                "hasFiles": file_ids,
                "checksums": [{ "algorithm": "SHA256", "checksumValue": w.sha256 }],
                "homepage": c.homepage,
                "licenseConcluded": license,
                "licenseDeclared": license,
                "copyrightText": copyright,
                "summary": i.package.summary,
                "primaryPackagePurpose": "INSTALL",
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": purl(i),
                }],
            },
            {
                "SPDXID": "SPDXRef-Upstream",
                "name": c.name,
                "versionInfo": c.version,
                "packageFileName": asset_name(&upstream_url),
                "downloadLocation": upstream_url,
                "filesAnalyzed": false,
                "checksums": [{ "algorithm": "SHA256", "checksumValue": i.artifact.sha256 }],
                "homepage": c.homepage,
                "licenseConcluded": license,
                "licenseDeclared": license,
                "copyrightText": copyright,
                "primaryPackagePurpose": "ARCHIVE",
            },
        ],
        "files": files,
        "relationships": rels,
    }))
}

/// The in-toto v1 Statement (SLSA provenance v1 predicate) of one package.
pub fn provenance(i: &Inputs<'_>) -> Value {
    let c = i.component;
    let file_name = c
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let upstream_url = c.url(i.arch);
    let mut deps = vec![json!({
        "name": format!("components/{file_name}"),
        "digest": { "sha256": c.file_sha256 },
    })];
    for (name, digest) in i.templates {
        deps.push(json!({
            "name": format!("templates/{name}.hbs"),
            "digest": { "sha256": digest },
        }));
    }
    deps.push(json!({
        "uri": upstream_url,
        "name": asset_name(&upstream_url),
        "digest": { "sha256": i.artifact.sha256 },
    }));
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": i.written.file_name,
            "digest": { "sha256": i.written.sha256 },
        }],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "component": c.name,
                    "version": c.version,
                    "revision": c.revision,
                    "arch": i.arch.deb(),
                    "format": match i.format { Format::Deb => "deb", Format::Rpm => "rpm" },
                    "compression": i.compression,
                    "sourceDateEpoch": i.source_date_epoch,
                },
                "internalParameters": {
                    "toolchain": { "rustc": RUSTC_VERSION, "xtask": XTASK_VERSION },
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": { "xtask": XTASK_VERSION, "rustc": RUSTC_VERSION },
                },
                "metadata": {},
            },
        },
    })
}

/// Pretty JSON with a final newline (what is written and signed).
pub fn to_bytes(v: &Value) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v)?;
    b.push(b'\n');
    Ok(b)
}

/// Write both documents of one package below `dir` (`sbom/`, `provenance/`).
pub fn write(dir: &std::path::Path, i: &Inputs<'_>) -> Result<()> {
    let s = dir.join(SBOM_DIR);
    let p = dir.join(PROVENANCE_DIR);
    std::fs::create_dir_all(&s)?;
    std::fs::create_dir_all(&p)?;
    crate::dist::write_atomic(
        &s.join(format!("{}{SBOM_SUFFIX}", i.written.file_name)),
        &to_bytes(&sbom(i)?)?,
    )?;
    crate::dist::write_atomic(
        &p.join(format!("{}{PROVENANCE_SUFFIX}", i.written.file_name)),
        &to_bytes(&provenance(i))?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
