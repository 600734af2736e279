//! What the repository index writers need from a signing key.
//!
//! The index writers (`apt_repo`, `dnf_repo`) take `&dyn Signer` so that they know nothing
//! about how a key is stored or which OpenPGP implementation holds it; `signing::SigningKey`
//! implements it with the one OpenPGP stack of the project.

use std::io::Read;

use anyhow::Result;

pub trait Signer: Sync {
    /// An OpenPGP cleartext signature over `text` (apt's InRelease).
    fn clearsign(&self, text: &str) -> Result<String>;
    /// A detached, ASCII-armored signature over `data` (Release.gpg, repomd.xml.asc).
    fn detach_sign_armored(&self, data: &[u8]) -> Result<String>;
    /// As [`Signer::detach_sign_armored`], over everything `data` yields, streamed (the
    /// debsigs origin signature covers a package's members, which can be large).
    fn detach_sign_armored_reader(&self, data: &mut dyn Read) -> Result<String>;
    /// The public key, ASCII-armored (dnf `gpgkey=`, `rpmkeys --import`).
    fn public_key_armored(&self) -> Result<String>;
    /// The public key as a binary OpenPGP keyring (apt `Signed-By:` file).
    fn public_key_binary(&self) -> Result<Vec<u8>>;
    /// Fingerprint, upper-case hex.
    fn fingerprint(&self) -> String;
    /// Fingerprint of the key packet that makes the signatures, upper-case hex: the primary
    /// key's unless the key signs with a subkey. debsig-verify names its policy and keyring
    /// directories after this packet's key ID (the signature's issuer).
    fn signing_fingerprint(&self) -> String {
        self.fingerprint()
    }
}
