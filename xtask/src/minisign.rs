//! Minisign: verification (the `minisign-verify` crate) and signing with a secret key file in
//! the format the `minisign` CLI writes (`minisign -G -W`: unencrypted), so that a signature
//! made here verifies with `minisign -V` and one made by the CLI verifies here.
//!
//! Secret key file: `untrusted comment: …` line, then base64 of
//! `"Ed" ‖ kdf ("\0\0" = none, "Sc" = scrypt) ‖ "B2" ‖ salt[32] ‖ opslimit[8] ‖ memlimit[8] ‖
//! keynum[8] ‖ secret key[64] ‖ checksum[32]`, the checksum being BLAKE2b-256 over
//! `"Ed" ‖ keynum ‖ secret key` (all zero in a `-W` key written by minisign 0.11). Signatures are the pre-hashed kind (`ED`: Ed25519 over the
//! BLAKE2b-512 of the file, streamed) with a global signature over signature ‖ trusted comment.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use blake2::Digest;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A minisign secret key.
pub struct SecretKey {
    keynum: [u8; 8],
    key: ed25519_dalek::SigningKey,
}

impl SecretKey {
    /// Read a secret key file. Refuses a file readable by group or others, and an encrypted key
    /// (create it with `minisign -G -W`, and keep the file itself protected).
    pub fn load(path: &Path) -> Result<SecretKey> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("minisign secret key {}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "minisign secret key {}: mode {:04o} lets group or others read it; chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o7777
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("minisign secret key {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow!("minisign secret key {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<SecretKey> {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        if !first.starts_with("untrusted comment:") {
            bail!("first line is not `untrusted comment: …`");
        }
        let b64 = lines.next().unwrap_or_default().trim();
        let raw = B64
            .decode(b64)
            .map_err(|e| anyhow!("second line is not base64: {e}"))?;
        if raw.len() != 158 {
            bail!(
                "{} bytes of key data, a minisign secret key has 158",
                raw.len()
            );
        }
        if &raw[0..2] != b"Ed" || &raw[4..6] != b"B2" {
            bail!("not an Ed25519/BLAKE2b minisign secret key");
        }
        match &raw[2..4] {
            [0, 0] => {}
            b"Sc" => bail!(
                "the key is encrypted with a password; this tool reads unencrypted keys \
                 (`minisign -G -W`) whose file is mode 0600"
            ),
            k => bail!("unknown key derivation {k:?}"),
        }
        let keynum: [u8; 8] = raw[54..62].try_into().unwrap();
        let sk: [u8; 64] = raw[62..126].try_into().unwrap();
        let chk = &raw[126..158];
        let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
        h.update(b"Ed");
        h.update(keynum);
        h.update(sk);
        // minisign 0.11 leaves the checksum of an unencrypted (`-W`) key zero; the key pair's
        // own consistency (public half derived from the seed) is checked below either way.
        if chk.iter().any(|b| *b != 0) && h.finalize().as_slice() != chk {
            bail!("checksum mismatch: the key file is damaged");
        }
        let key = ed25519_dalek::SigningKey::from_keypair_bytes(&sk)
            .map_err(|e| anyhow!("inconsistent key pair: {e}"))?;
        Ok(SecretKey { keynum, key })
    }

    /// Key ID as minisign prints it (upper-case hex of the little-endian key number).
    pub fn key_id(&self) -> String {
        let mut k = self.keynum;
        k.reverse();
        hex::encode_upper(k)
    }

    /// The public key file text (as `minisign -G` writes it).
    pub fn public_key_text(&self) -> String {
        let mut raw = b"Ed".to_vec();
        raw.extend_from_slice(&self.keynum);
        raw.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id(),
            B64.encode(raw)
        )
    }

    /// A pre-hashed signature over everything `data` yields, with `trusted_comment`.
    pub fn sign_reader(&self, data: &mut dyn Read, trusted_comment: &str) -> Result<String> {
        use ed25519_dalek::Signer;
        if trusted_comment.contains(['\n', '\r']) {
            bail!("trusted comment {trusted_comment:?} contains a line break");
        }
        let mut h = blake2::Blake2b512::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = data.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let sig = self.key.sign(&h.finalize()).to_bytes();
        let mut global = sig.to_vec();
        global.extend_from_slice(trusted_comment.as_bytes());
        let gsig = self.key.sign(&global).to_bytes();
        let mut raw = b"ED".to_vec();
        raw.extend_from_slice(&self.keynum);
        raw.extend_from_slice(&sig);
        Ok(format!(
            "untrusted comment: signature from minisign secret key {}\n{}\ntrusted comment: {}\n{}\n",
            self.key_id(),
            B64.encode(raw),
            trusted_comment,
            B64.encode(gsig)
        ))
    }
}

/// A minisign public key from a file's text (`untrusted comment` line + base64, or the bare
/// base64 line).
pub fn public_key(text: &str) -> Result<minisign_verify::PublicKey> {
    let t = text.trim();
    let r = if t.lines().count() >= 2 {
        minisign_verify::PublicKey::decode(t)
    } else {
        minisign_verify::PublicKey::from_base64(t)
    };
    r.map_err(|e| anyhow!("not a minisign public key: {e}"))
}

pub fn public_key_file(path: &Path) -> Result<minisign_verify::PublicKey> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("minisign public key {}", path.display()))?;
    public_key(&t).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Check `signature` (a .minisig file's text) over everything `data` yields. Legacy
/// (non-pre-hashed) signatures are accepted over data of at most 64 MiB.
pub fn verify_reader(
    pk: &minisign_verify::PublicKey,
    signature: &str,
    data: &mut dyn Read,
) -> Result<()> {
    let sig = minisign_verify::Signature::decode(signature)
        .map_err(|e| anyhow!("not a minisign signature: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    match pk.verify_stream(&sig) {
        Ok(mut v) => {
            loop {
                let n = data.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                v.update(&buf[..n]);
            }
            v.finalize().map_err(|e| anyhow!("{e}"))
        }
        Err(_) => {
            // A legacy signature is over the whole message, which must be in memory.
            let mut all = Vec::new();
            data.take(64 << 20).read_to_end(&mut all)?;
            pk.verify(&all, &sig, true).map_err(|e| anyhow!("{e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        let seed = [7u8; 32];
        SecretKey {
            keynum: [1, 2, 3, 4, 5, 6, 7, 8],
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    #[test]
    fn signatures_verify_with_minisign_verify_and_fail_when_tampered() {
        let k = key();
        let pk = public_key(&k.public_key_text()).unwrap();
        let sig = k
            .sign_reader(&mut &b"hello"[..], "timestamp:0\tfile:x")
            .unwrap();
        verify_reader(&pk, &sig, &mut &b"hello"[..]).unwrap();
        assert!(verify_reader(&pk, &sig, &mut &b"hellO"[..]).is_err());
        let bad = sig.replace("file:x", "file:y");
        assert!(verify_reader(&pk, &bad, &mut &b"hello"[..]).is_err());
    }
}
