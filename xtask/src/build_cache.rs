//! Content-addressed build cache: a package whose inputs have not changed is not rebuilt.
//!
//! The key of a package is the sha256 of a canonical text naming everything that determines
//! its bytes: the tool itself (sha256 of the running executable, so any code change is a new
//! key), the signing key packet and signature time, the format and arch, the component
//! file's sha256, the upstream asset's sha256 (the pin), every template's sha256, the payload
//! compression, the maintainer and SOURCE_DATE_EPOCH. An entry is `DIR/<key>/entry.json` plus
//! the package file beside it, written into a temporary directory and renamed into place.
//!
//! An entry is never trusted: on a hit the package is hard-linked (or copied, while hashing)
//! into the staging directory, and the staged file is hashed and compared with the size and
//! sha256 the entry recorded when it was built. A mismatch removes the entry (with a warning)
//! and the package is rebuilt.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};

use crate::package::{Arch, Compression, Format};

/// Bumped when the entry layout or the key text changes.
const VERSION: &str = "observability-stack build cache v1";
const ENTRY: &str = "entry.json";

/// What an entry records about its package (the package file sits beside it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub file_name: String,
    pub package: String,
    pub version: String,
    pub size: u64,
    pub sha256: String,
}

/// The inputs of one package's key (see the module documentation).
#[derive(Clone, Copy)]
pub struct KeyInputs<'a> {
    pub format: Format,
    pub arch: Arch,
    pub component_file_sha256: &'a str,
    pub asset_sha256: &'a str,
    pub templates: &'a std::collections::BTreeMap<String, String>,
    pub compression: Compression,
    pub maintainer: &'a str,
    pub source_date_epoch: u64,
}

/// A cache directory plus the parts of every key that are the same for a whole run.
#[derive(Debug, Clone)]
pub struct BuildCache {
    dir: PathBuf,
    run_salt: String,
    /// `run_salt` without the tool digest: for [`BuildCache::content_key`].
    content_salt: String,
}

/// sha256 of the running executable (computed once per process).
pub fn tool_digest() -> Result<String> {
    static DIGEST: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    DIGEST
        .get_or_init(|| {
            let exe =
                std::env::current_exe().map_err(|e| format!("the running executable: {e}"))?;
            crate::digest::sha256_file(&exe)
                .map(|(h, _)| h)
                .map_err(|e| format!("{}: {e}", exe.display()))
        })
        .clone()
        .map_err(|e| anyhow!("build cache key: {e}"))
}

/// sha256 (hex) of `salt` followed by the canonical description of one package's inputs.
fn key_with(salt: &str, k: &KeyInputs<'_>) -> String {
    let mut text = salt.to_string();
    let format = match k.format {
        Format::Deb => "deb",
        Format::Rpm => "rpm",
    };
    let compression = match k.compression {
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
        Compression::None => "none",
    };
    text.push_str(&format!(
        "format {format}\narch {}\ncomponent-file {}\nasset {}\ncompression {compression}\n\
         maintainer {:?}\nsource-date-epoch {}\n",
        k.arch, k.component_file_sha256, k.asset_sha256, k.maintainer, k.source_date_epoch
    ));
    for (name, sha) in k.templates {
        text.push_str(&format!("template {name:?} {sha}\n"));
    }
    crate::digest::sha256_hex(text.as_bytes())
}

impl BuildCache {
    /// A cache in `dir` (created when first written). `signer_id` names what signs the
    /// packages and when (key packet fingerprint and signature time): signed bytes depend on it.
    pub fn new(dir: &Path, signer_id: &str) -> Result<BuildCache> {
        if signer_id.contains('\n') {
            return Err(anyhow!("build cache signer id {signer_id:?} has a newline"));
        }
        Ok(BuildCache {
            dir: dir.to_path_buf(),
            run_salt: format!("{VERSION}\ntool {}\nsigner {signer_id}\n", tool_digest()?),
            content_salt: format!("{VERSION}\nsigner {signer_id}\n"),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of a package: sha256 (hex) of the canonical description of its inputs.
    pub fn key(&self, k: &KeyInputs<'_>) -> String {
        key_with(&self.run_salt, k)
    }

    /// The key of a package without the tool digest: names what the package is made from, not
    /// which build of `xtask` made it (the fingerprint a published `manifest.json` carries,
    /// which must not depend on where or how `xtask` itself was compiled).
    pub fn content_key(&self, k: &KeyInputs<'_>) -> String {
        key_with(&self.content_salt, k)
    }

    /// On a hit, place the cached package in `dest_dir` (hard link, else copy) and return its
    /// entry, after checking the placed file's size and sha256 against the entry. `None` on a
    /// miss, and on an entry that does not check out (it is removed, with a warning).
    pub fn fetch(&self, key: &str, dest_dir: &Path) -> Result<Option<Entry>> {
        let dir = self.dir.join(key);
        let text = match fs::read_to_string(dir.join(ENTRY)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("{}", dir.join(ENTRY).display())),
        };
        let entry: Entry = match serde_json::from_str(&text) {
            Ok(e) => e,
            Err(e) => {
                self.discard(&dir, &format!("unreadable {ENTRY}: {e}"));
                return Ok(None);
            }
        };
        if entry.file_name.is_empty()
            || entry.file_name.contains('/')
            || entry.file_name.starts_with('.')
        {
            self.discard(&dir, &format!("bad file name {:?}", entry.file_name));
            return Ok(None);
        }
        let src = dir.join(&entry.file_name);
        let dest = dest_dir.join(&entry.file_name);
        fs::create_dir_all(dest_dir)?;
        let _ = fs::remove_file(&dest);
        let placed = match fs::hard_link(&src, &dest) {
            Ok(()) => crate::digest::sha256_file(&dest),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.discard(&dir, &format!("{} is missing", entry.file_name));
                return Ok(None);
            }
            // Another file system (or no links allowed): copy, hashing what is written.
            Err(_) => copy_hashing(&src, &dest),
        };
        match placed {
            Ok((sha, size)) if sha == entry.sha256 && size == entry.size => {
                set_mode_0644(&dest)?;
                Ok(Some(entry))
            }
            Ok((sha, size)) => {
                let _ = fs::remove_file(&dest);
                self.discard(
                    &dir,
                    &format!(
                        "{} is {size} bytes with sha256 {sha}, the entry recorded {} bytes with sha256 {}",
                        entry.file_name, entry.size, entry.sha256
                    ),
                );
                Ok(None)
            }
            Err(e) => {
                let _ = fs::remove_file(&dest);
                self.discard(&dir, &format!("{}: {e}", entry.file_name));
                Ok(None)
            }
        }
    }

    /// Record a freshly built package (`path`) under `key`. Best effort for the caller: a
    /// failure to store is reported by the `Result` and does not touch the built package.
    pub fn store(&self, key: &str, path: &Path, entry: &Entry) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating the build cache {}", self.dir.display()))?;
        let final_dir = self.dir.join(key);
        if final_dir.join(ENTRY).is_file() {
            return Ok(());
        }
        let tmp = tempfile::Builder::new()
            .prefix(".store-")
            .tempdir_in(&self.dir)?;
        let dest = tmp.path().join(&entry.file_name);
        if fs::hard_link(path, &dest).is_err() {
            let (sha, size) = copy_hashing(path, &dest)?;
            if sha != entry.sha256 || size != entry.size {
                return Err(anyhow!(
                    "{}: changed while it was copied into the build cache",
                    path.display()
                ));
            }
        }
        let mut f = fs::File::create(tmp.path().join(ENTRY))?;
        f.write_all(serde_json::to_string_pretty(entry)?.as_bytes())?;
        f.sync_all()?;
        drop(f);
        let tmp = tmp.keep();
        if let Err(e) = fs::rename(&tmp, &final_dir) {
            let _ = fs::remove_dir_all(&tmp);
            // Another run stored the same key first: that entry is as good as ours.
            if !final_dir.join(ENTRY).is_file() {
                return Err(e).with_context(|| format!("{}", final_dir.display()));
            }
        }
        Ok(())
    }

    fn discard(&self, dir: &Path, why: &str) {
        eprintln!(
            "warning: build cache entry {} does not check out ({why}): removed, rebuilding",
            dir.display()
        );
        let _ = fs::remove_dir_all(dir);
    }
}

fn set_mode_0644(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = fs::metadata(p)?;
    if m.permissions().mode() & 0o7777 != 0o644 {
        fs::set_permissions(p, fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// Copy `src` to `dest`, returning the sha256 and size of what was written.
fn copy_hashing(src: &Path, dest: &Path) -> io::Result<(String, u64)> {
    let mut r = fs::File::open(src)?;
    let mut w = crate::digest::HashingWriter::new(fs::File::create(dest)?);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])?;
    }
    let (f, sha, size) = w.finish();
    f.sync_all()?;
    Ok((sha, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &Path) -> Entry {
        let (sha256, size) = crate::digest::sha256_file(path).unwrap();
        Entry {
            file_name: "p_1-1_amd64.deb".into(),
            package: "p".into(),
            version: "1-1".into(),
            size,
            sha256,
        }
    }

    #[test]
    fn hit_miss_and_corrupt_entry() {
        let t = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(&t.path().join("builds"), "KEY t=1").unwrap();
        let built = t.path().join("p_1-1_amd64.deb");
        fs::write(&built, b"package bytes").unwrap();
        let e = entry(&built);
        let out = t.path().join("out");
        assert_eq!(cache.fetch("k1", &out).unwrap(), None);
        cache.store("k1", &built, &e).unwrap();
        assert_eq!(cache.fetch("k1", &out).unwrap(), Some(e.clone()));
        assert_eq!(
            fs::read(out.join(&e.file_name)).unwrap(),
            b"package bytes".to_vec()
        );
        // A changed cache file is never used: the entry goes, the caller rebuilds.
        let cached = t.path().join("builds/k1").join(&e.file_name);
        fs::remove_file(&cached).unwrap();
        fs::write(&cached, b"package bytez").unwrap();
        let out2 = t.path().join("out2");
        assert_eq!(cache.fetch("k1", &out2).unwrap(), None);
        assert!(!out2.join(&e.file_name).exists());
        assert!(!t.path().join("builds/k1").exists());
    }

    #[test]
    fn key_covers_every_input() {
        let t = tempfile::tempdir().unwrap();
        let a = BuildCache::new(t.path(), "A t=1").unwrap();
        let b = BuildCache::new(t.path(), "A t=2").unwrap();
        let mut templates = std::collections::BTreeMap::new();
        templates.insert("unit".to_string(), "aa".to_string());
        let base = KeyInputs {
            format: Format::Deb,
            arch: Arch::Amd64,
            component_file_sha256: "c",
            asset_sha256: "s",
            templates: &templates,
            compression: Compression::Xz,
            maintainer: "M <m@x>",
            source_date_epoch: 1,
        };
        let k = a.key(&base);
        assert_ne!(k, b.key(&base), "signature time");
        let mut t2 = templates.clone();
        t2.insert("unit".into(), "ab".into());
        let variants = [
            KeyInputs {
                format: Format::Rpm,
                ..base
            },
            KeyInputs {
                arch: Arch::Arm64,
                ..base
            },
            KeyInputs {
                component_file_sha256: "d",
                ..base
            },
            KeyInputs {
                asset_sha256: "t",
                ..base
            },
            KeyInputs {
                templates: &t2,
                ..base
            },
            KeyInputs {
                compression: Compression::Gzip,
                ..base
            },
            KeyInputs {
                maintainer: "N <m@x>",
                ..base
            },
            KeyInputs {
                source_date_epoch: 2,
                ..base
            },
        ];
        for v in &variants {
            assert_ne!(a.key(v), k);
        }
        assert_eq!(a.key(&base), k);
    }
}
