//! debsigs origin signatures on .deb files, and the debsig-verify policy that accepts them.
//!
//! # The signature (what `debsigs --sign=origin` makes)
//! An extra ar member [`ORIGIN_MEMBER`] (`_gpgorigin`), appended after `data.tar.*`, holding an
//! ASCII-armored detached OpenPGP signature over the concatenation of the members
//! `debian-binary`, `control.tar.*` and `data.tar.*`, in that order (their contents, not their
//! ar headers). debsig-verify hands exactly that concatenation and the member to gpg. The
//! signature is streamed over the member files ([`origin_signature`]); the rest of the package
//! is byte-for-byte what the unsigned writer makes, apart from one lintian override (see
//! `deb::write_deb_signed`), and with a fixed signature time the whole file is reproducible.
//!
//! # The policy (what an admin installs)
//! debsig-verify reads the issuer of the origin signature, then looks for
//! `<policies>/<ID>/*.pol` (ID: the issuer's fingerprint, else its 16-hex-digit long key ID)
//! and the keyrings those policies name in `<keyrings>/<ID>/`. [`write_debsig_policy`] writes
//! ```text
//! DIR/policies/<KEYID>/observability-stack.pol   → /etc/debsig/policies/<KEYID>/
//! DIR/keyrings/<KEYID>/pubring.gpg               → /usr/share/debsig/keyrings/<KEYID>/
//! ```
//! with KEYID the long key ID of the key packet that signs; the policy requires an origin
//! signature by that key both to be selected and to verify (like debsig-verify's own
//! `keyid.pol` example).
//!
//! # Limitation (debsig-verify 0.28, bookworm)
//! debsig-verify maps the policy's `id` to a *primary* key of the keyring and compares it with
//! the signature's issuer, so a signature made by a signing subkey is never accepted (exit 12,
//! "No applicable policy found"), whatever the policy says. A key whose primary signs (gpg's
//! default, and the development key) works; for a key that signs with a subkey the .deb files
//! still carry a correct origin signature (gpg verifies it) but debsig-verify refuses them.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::render::xml_escape;
use crate::signer::Signer;

/// The ar member holding the origin signature.
pub const ORIGIN_MEMBER: &str = "_gpgorigin";
/// Stem of the policy file (`<POLICY_NAME>.pol`) and the policy's Origin Name.
pub const POLICY_NAME: &str = "observability-stack";
/// The keyring file the policy names (inside `keyrings/<KEYID>/`).
pub const KEYRING_FILE: &str = "pubring.gpg";

/// The armored origin signature over `debian_binary`, then the files `control` and `data`.
pub fn origin_signature(
    signer: &dyn Signer,
    debian_binary: &[u8],
    control: &Path,
    data: &Path,
) -> Result<Vec<u8>> {
    let open = |p: &Path| {
        File::open(p)
            .map(|f| BufReader::with_capacity(1 << 20, f))
            .with_context(|| format!("opening {}", p.display()))
    };
    let mut members = debian_binary.chain(open(control)?).chain(open(data)?);
    let sig = signer
        .detach_sign_armored_reader(&mut members)
        .context("signing the debsigs origin signature")?;
    if !sig.starts_with("-----BEGIN PGP SIGNATURE-----") {
        bail!("the signer returned no armored signature for {ORIGIN_MEMBER}");
    }
    Ok(sig.into_bytes())
}

/// Where the signed members and the origin signature of a .deb are (see [`read_origin`]).
#[derive(Debug, Clone)]
pub struct OriginSigned {
    /// The `_gpgorigin` member's text.
    pub signature: String,
    /// (offset, size) of `debian-binary`, `control.tar.*` and `data.tar.*` in the file.
    pub members: [(u64, u64); 3],
}

impl OriginSigned {
    /// The signed data, streamed from `path`: the three members' contents, concatenated.
    pub fn signed_data(&self, path: &Path) -> Result<impl Read> {
        let part = |(offset, size): (u64, u64)| -> Result<io::Take<BufReader<File>>> {
            let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            f.seek(SeekFrom::Start(offset))?;
            Ok(BufReader::with_capacity(1 << 20, f).take(size))
        };
        let [a, b, c] = self.members;
        Ok(part(a)?.chain(part(b)?).chain(part(c)?))
    }
}

/// The layout of a .deb's ar archive as far as debsigs cares: `Ok(None)` when it carries no
/// `_gpgorigin` member; an error when it is not a well-formed .deb (short ar names only, as
/// dpkg writes them).
pub fn read_origin(path: &Path) -> Result<Option<OriginSigned>> {
    let mut f =
        BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    let len = f.get_ref().metadata()?.len();
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)
        .with_context(|| format!("{}: not an ar archive", path.display()))?;
    if &magic != b"!<arch>\n" {
        bail!("{}: not an ar archive", path.display());
    }
    let mut pos = 8u64;
    let mut members: Vec<(String, u64, u64)> = Vec::new();
    while pos < len {
        let mut h = [0u8; 60];
        f.read_exact(&mut h)
            .with_context(|| format!("{}: truncated ar header at {pos}", path.display()))?;
        if &h[58..60] != b"`\n" {
            bail!("{}: bad ar header at {pos}", path.display());
        }
        let name = std::str::from_utf8(&h[..16])
            .ok()
            .map(|n| n.trim_end_matches(' ').trim_end_matches('/').to_string())
            .filter(|n| !n.is_empty() && !n.starts_with('#') && !n.contains('/'))
            .ok_or_else(|| anyhow!("{}: unsupported ar member name at {pos}", path.display()))?;
        let size: u64 = std::str::from_utf8(&h[48..58])
            .ok()
            .and_then(|s| s.trim_end_matches(' ').parse().ok())
            .ok_or_else(|| anyhow!("{}: bad ar member size at {pos}", path.display()))?;
        let start = pos + 60;
        let end = start
            .checked_add(size)
            .filter(|e| *e <= len)
            .ok_or_else(|| anyhow!("{}: member {name} runs past the end", path.display()))?;
        pos = end + (size % 2);
        members.push((name, start, size));
        f.seek(SeekFrom::Start(pos))?;
    }
    let Some(i) = members.iter().position(|m| m.0 == ORIGIN_MEMBER) else {
        return Ok(None);
    };
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    let ok = members.len() >= 4
        && i == 3
        && names[0] == "debian-binary"
        && names[1].starts_with("control.tar")
        && names[2].starts_with("data.tar");
    if !ok {
        bail!(
            "{}: {ORIGIN_MEMBER} must follow debian-binary, control.tar.*, data.tar.* (members: {})",
            path.display(),
            names.join(", ")
        );
    }
    let (_, off, size) = members[3];
    if size > 64 << 10 {
        bail!(
            "{}: {ORIGIN_MEMBER} is {size} bytes, too large for a signature",
            path.display()
        );
    }
    f.seek(SeekFrom::Start(off))?;
    let mut sig = vec![0u8; size as usize];
    f.read_exact(&mut sig)?;
    let signature = String::from_utf8(sig)
        .map_err(|_| anyhow!("{}: {ORIGIN_MEMBER} is not armored text", path.display()))?;
    let m = |k: usize| (members[k].1, members[k].2);
    Ok(Some(OriginSigned {
        signature,
        members: [m(0), m(1), m(2)],
    }))
}

/// The long (16 hex digits, upper case) key ID of a v4 fingerprint (its last 64 bits).
pub fn long_key_id(fingerprint: &str) -> Result<String> {
    let fpr: String = fingerprint
        .chars()
        .filter(|c| *c != ' ')
        .collect::<String>()
        .to_ascii_uppercase();
    if fpr.len() != 40 || !fpr.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("{fingerprint:?} is not a v4 OpenPGP fingerprint (40 hex digits)");
    }
    Ok(fpr[24..].to_string())
}

/// The policy XML for origin signatures by `key_id` (16 hex digits); `description` is free
/// text (escaped).
pub fn policy_xml(key_id: &str, description: &str) -> Result<String> {
    if key_id.len() != 16 || !key_id.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("debsig policy: {key_id:?} is not a long key ID (16 hex digits)");
    }
    if let Some(c) = description.chars().find(|c| c.is_control()) {
        bail!(
            "debsig policy description contains the control character U+{:04X}",
            c as u32
        );
    }
    let id = xml_escape(key_id);
    let rule = format!(r#"<Required Type="origin" File="{KEYRING_FILE}" id="{id}"/>"#);
    Ok(format!(
        r#"<?xml version="1.0"?>
<!DOCTYPE Policy SYSTEM "https://www.debian.org/debsig/1.0/policy.dtd">
<Policy xmlns="https://www.debian.org/debsig/1.0/">
  <Origin Name="{name}" id="{id}" Description="{description}"/>
  <Selection>
    {rule}
  </Selection>
  <Verification MinOptional="0">
    {rule}
  </Verification>
</Policy>
"#,
        name = xml_escape(POLICY_NAME),
        description = xml_escape(description),
    ))
}

/// What [`write_debsig_policy`] wrote.
#[derive(Debug, Clone)]
pub struct DebsigFiles {
    /// Long key ID of the signing key packet: the directory name under both trees.
    pub key_id: String,
    /// `DIR/policies/<KEYID>/observability-stack.pol`
    pub policy: PathBuf,
    /// `DIR/keyrings/<KEYID>/pubring.gpg`
    pub keyring: PathBuf,
}

/// Write the debsig-verify policy and keyring for `signer`'s origin signatures under `dir`
/// (see the module documentation for the layout).
pub fn write_debsig_policy(dir: &Path, signer: &dyn Signer) -> Result<DebsigFiles> {
    let key_id = long_key_id(&signer.signing_fingerprint())?;
    let primary = signer.fingerprint();
    long_key_id(&primary)?;
    let policy_dir = dir.join("policies").join(&key_id);
    let keyring_dir = dir.join("keyrings").join(&key_id);
    for d in [&policy_dir, &keyring_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let xml = policy_xml(
        &key_id,
        &format!("{POLICY_NAME} packages, origin signatures by key {primary}"),
    )?;
    let policy = policy_dir.join(format!("{POLICY_NAME}.pol"));
    write_atomic(&policy, xml.as_bytes())?;
    let keyring = keyring_dir.join(KEYRING_FILE);
    let public = signer.public_key_binary()?;
    if public.is_empty() {
        bail!(
            "the signer has no public key to put into {}",
            keyring.display()
        );
    }
    write_atomic(&keyring, &public)?;
    Ok(DebsigFiles {
        key_id,
        policy,
        keyring,
    })
}

fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dest.parent().context("destination has no parent")?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(dest)
        .map_err(|e| anyhow!("{}: {}", dest.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        assert_eq!(
            long_key_id("8440FBA8F01C2989D0704C6E59034C4D3ACEDA43").unwrap(),
            "59034C4D3ACEDA43"
        );
        assert_eq!(
            long_key_id("8440 fba8 F01C 2989 D070  4C6E 5903 4C4D 3ACE DA43").unwrap(),
            "59034C4D3ACEDA43"
        );
        for bad in [
            "",
            "59034C4D3ACEDA43",
            "8440FBA8F01C2989D0704C6E59034C4D3ACEDA4G",
        ] {
            assert!(long_key_id(bad).is_err(), "{bad:?}");
        }
    }

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            out.extend(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn origin_layout_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.deb");
        let read = |bytes: &[u8]| {
            std::fs::write(&p, bytes).unwrap();
            read_origin(&p)
        };
        let sig: &[u8] = b"-----BEGIN PGP SIGNATURE-----\n";
        let good = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b"ctl"),
            ("data.tar.xz", b"data!"),
            ("_gpgorigin", sig),
        ]);
        let o = read(&good).unwrap().unwrap();
        assert_eq!(o.signature.as_bytes(), sig);
        let mut data = Vec::new();
        o.signed_data(&p).unwrap().read_to_end(&mut data).unwrap();
        assert_eq!(data, b"2.0\nctldata!");
        // Unsigned.
        assert!(read(&good[..good.len() - 60 - sig.len()])
            .unwrap()
            .is_none());
        // Truncated, not ar, misplaced signature.
        assert!(read(&good[..good.len() - 3]).is_err());
        assert!(read(b"!<arch>\nshort").is_err());
        assert!(read(b"PK\x03\x04").is_err());
        let misplaced = ar(&[
            ("debian-binary", b"2.0\n"),
            ("_gpgorigin", sig),
            ("control.tar.xz", b"ctl"),
            ("data.tar.xz", b"data!"),
        ]);
        assert!(read(&misplaced).is_err());
    }

    #[test]
    fn policy_values_are_checked_and_escaped() {
        assert!(policy_xml("59034C4D3ACEDA4\"", "x").is_err());
        assert!(policy_xml("59034C4D3ACEDA43/", "x").is_err());
        assert!(policy_xml("59034C4D3ACEDA43", "a\nb").is_err());
        let x = policy_xml("59034C4D3ACEDA43", r#"a"<b>&'"#).unwrap();
        assert!(
            x.contains(r#"Description="a&quot;&lt;b&gt;&amp;&apos;""#),
            "{x}"
        );
        assert_eq!(x.matches(r#"id="59034C4D3ACEDA43""#).count(), 3);
    }
}
