//! What the repository index writers need from a signing key.
//!
//! The index writers (`apt_repo`, `dnf_repo`) take `&dyn Signer` so that they know nothing
//! about how a key is stored or which OpenPGP implementation holds it; `signing::SigningKey`
//! implements it with the one OpenPGP stack of the project.

use anyhow::Result;

pub trait Signer: Sync {
    /// An OpenPGP cleartext signature over `text` (apt's InRelease).
    fn clearsign(&self, text: &str) -> Result<String>;
    /// A detached, ASCII-armored signature over `data` (Release.gpg, repomd.xml.asc).
    fn detach_sign_armored(&self, data: &[u8]) -> Result<String>;
    /// The public key, ASCII-armored (dnf `gpgkey=`, `rpmkeys --import`).
    fn public_key_armored(&self) -> Result<String>;
    /// The public key as a binary OpenPGP keyring (apt `Signed-By:` file).
    fn public_key_binary(&self) -> Result<Vec<u8>>;
    /// Fingerprint, upper-case hex.
    fn fingerprint(&self) -> String;
}
