//! OpenPGP signing: one key, loaded and checked once, used for every signature `dist` makes.
//!
//! One OpenPGP stack: the `pgp` crate at the version the `rpm` crate uses (0.20), so the key that
//! signs InRelease/Release.gpg/repomd.xml.asc is parsed by the same code that signs rpm headers.
//!
//! # API
//! ```text
//! // CLI: dist [--signing-key FILE] [--passphrase-file FILE] [--release]
//! let key = SigningKey::resolve(&KeyRequest {
//!     key_file, passphrase_file, release,
//!     dev_key_dir: None,              // None: default_dev_key_dir()
//! })?;                                // reads OBS_SIGNING_KEY / OBS_SIGNING_PASSPHRASE too
//! if key.is_development() { eprintln!("{DEV_KEY_WARNING}"); }   // every run, loudly
//! let key = key.with_signature_time(Some(source_date_epoch));   // or None: now
//!
//! key.clearsign(release_text)?          -> String   // InRelease
//! key.detach_sign_armored(reader)?      -> String   // Release.gpg, repomd.xml.asc (streams)
//! key.public_key_armored()?             -> String   // keys/…asc, dnf gpgkey=
//! key.public_key_binary()?              -> Vec<u8>  // apt Signed-By keyring (.gpg)
//! key.fingerprint()                     -> String   // primary, upper-case hex
//! key.rpm_signer()?                     -> RpmSigner // PackageBuilder::build_and_sign(signer)
//! ```
//! `SigningKey` implements [`crate::signer::Signer`] (what `apt_repo`/`dnf_repo` take).
//! Lower level: [`SigningKey::load`] with a [`KeySource`] and a [`PassphraseSource`];
//! [`SigningKey::dev_key`].
//!
//! # Where the key comes from
//! * `--signing-key FILE` ([`KeySource::File`]): an armored secret key (`gpg --armor
//!   --export-secret-keys`). Refused when its mode grants any permission to group or others.
//! * env `OBS_SIGNING_KEY` ([`ENV_KEY`]): the armored secret key text itself.
//! * passphrase: `--passphrase-file FILE` (first line; same permission rule) or env
//!   `OBS_SIGNING_PASSPHRASE` ([`ENV_PASSPHRASE`]).
//! * neither: a development key, generated once into `$XDG_DATA_HOME/observability-stack/`
//!   (or `~/.local/share/observability-stack/`, dir 0700, file 0600), reused later. `--release`
//!   refuses this ([`KeyError::ReleaseNeedsKey`]).
//!
//! # What is checked before use (each a clear [`KeyError`])
//! v4 key; self-signatures verify; none uses MD5/SHA-1/RIPEMD-160; not revoked; not expired;
//! the signing key (newest valid signing subkey, else the primary) has the sign flag, is RSA of
//! at least [`MIN_RSA_BITS`] bits (the primary too); the passphrase unlocks it; a test signature
//! verifies.
//!
//! # Signatures
//! v4, RSA, SHA-256; hashed subpackets: creation time, issuer fingerprint, issuer key ID, all
//! non-critical (accepted by gpgv, sqv, rpm 4.14–6, dnf on EL8–10). The creation time is the
//! one given to [`SigningKey::with_signature_time`] (e.g. SOURCE_DATE_EPOCH) or now, but never
//! earlier than the signing key's creation (a signature older than its key is refused by
//! Sequoia-based verifiers such as sqv and rpm-sequoia). RSA PKCS#1 v1.5 signatures are
//! deterministic, so a fixed time gives byte-identical signatures.
//!
//! # Secrets
//! Secret key text and passphrase live in [`Zeroizing`] buffers, never appear in errors (pgp
//! error texts are redacted against the key text), and `Debug` shows fingerprints only (also
//! for [`RpmSigner`], which wraps the rpm crate's signer whose derived `Debug` would print the
//! passphrase).

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, Deserializable, DetachedSignature, KeyType,
    SecretKeyParamsBuilder, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::{Signature, SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, KeyVersion, Password, PublicParams, SecretParams, Timestamp};
use zeroize::Zeroizing;

/// Environment variable holding the armored secret key text.
pub const ENV_KEY: &str = "OBS_SIGNING_KEY";
/// Environment variable holding the key's passphrase.
pub const ENV_PASSPHRASE: &str = "OBS_SIGNING_PASSPHRASE";
/// Smallest RSA modulus accepted (DESIGN: RSA-4096).
pub const MIN_RSA_BITS: usize = 3072;
/// Size of the generated development key.
pub const DEV_KEY_BITS: u32 = 4096;
/// File name of the development key inside its directory.
pub const DEV_KEY_FILE: &str = "dev-signing-key.asc";
/// User ID of the development key: says what it is wherever the public key is shown.
pub const DEV_KEY_USER_ID: &str =
    "observability-stack DEVELOPMENT key NOT FOR PRODUCTION <dev-key@observability-stack.invalid>";
/// What the caller prints (stderr, every run) when [`SigningKey::is_development`].
pub const DEV_KEY_WARNING: &str = "\
**********************************************************************
*  WARNING: DEVELOPMENT KEY — NOT FOR PRODUCTION                     *
*  No signing key was given (--signing-key FILE or OBS_SIGNING_KEY), *
*  so packages and repositories are signed with a local development  *
*  key. Hosts must not trust it. Use --release to refuse this.       *
**********************************************************************";

/// Largest key or passphrase file read (a 4096-bit armored secret key is about 7 KiB).
const MAX_SECRET_FILE: u64 = 1 << 20;

/// Why a key cannot be loaded or used. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: cannot read {what}: {source}", path.display())]
    Read {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error(
        "{}: {what} has mode {mode:04o}, which grants access to group or others; \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        path: PathBuf,
        what: &'static str,
        mode: u32,
    },
    #[error("{origin}: {problem}")]
    Invalid { origin: String, problem: String },
    #[error("{origin}: key {fingerprint}: {problem}")]
    Unusable {
        origin: String,
        fingerprint: String,
        problem: String,
    },
    #[error(
        "{origin}: key {fingerprint} is protected by a passphrase; give --passphrase-file FILE \
         or set {ENV_PASSPHRASE}"
    )]
    PassphraseRequired { origin: String, fingerprint: String },
    #[error("{origin}: key {fingerprint}: wrong passphrase (the secret key does not unlock)")]
    WrongPassphrase { origin: String, fingerprint: String },
    #[error(
        "--release needs a real signing key: give --signing-key FILE or set {ENV_KEY} \
         (a development key is never used for a release)"
    )]
    ReleaseNeedsKey,
    #[error(
        "--release: {origin} is the development key (user ID {DEV_KEY_USER_ID:?}); a release \
         needs the real signing key"
    )]
    ReleaseGotDevKey { origin: String },
    #[error(
        "no directory for the development key: neither XDG_DATA_HOME nor HOME is set \
         (give --signing-key FILE or set {ENV_KEY})"
    )]
    NoDevKeyDir,
    #[error("development key {}: {problem}", path.display())]
    DevKey { path: PathBuf, problem: String },
    #[error("signing with key {fingerprint} failed: {problem}")]
    Sign {
        fingerprint: String,
        problem: String,
    },
}

/// Where the armored secret key comes from.
pub enum KeySource {
    /// A file; refused if group or others have any permission on it.
    File(PathBuf),
    /// The armored text itself; `origin` names it in messages (e.g. `OBS_SIGNING_KEY`).
    Armored {
        origin: String,
        text: Zeroizing<String>,
    },
}

impl KeySource {
    /// `--signing-key FILE` if given, else `OBS_SIGNING_KEY` if set and not blank, else `None`.
    pub fn from_cli_or_env(key_file: Option<&Path>) -> Option<KeySource> {
        Self::from_cli_or(key_file, |name| std::env::var(name).ok())
    }

    /// As [`KeySource::from_cli_or_env`], with the environment looked up through `env`.
    pub fn from_cli_or(
        key_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<KeySource> {
        if let Some(path) = key_file {
            return Some(KeySource::File(path.to_path_buf()));
        }
        let text = Zeroizing::new(env(ENV_KEY)?);
        if text.trim().is_empty() {
            return None;
        }
        Some(KeySource::Armored {
            origin: ENV_KEY.to_string(),
            text,
        })
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) => f.debug_tuple("File").field(p).finish(),
            KeySource::Armored { origin, .. } => f
                .debug_struct("Armored")
                .field("origin", origin)
                .finish_non_exhaustive(),
        }
    }
}

/// Where the passphrase comes from.
pub enum PassphraseSource {
    /// The key is not protected.
    None,
    /// The first line of a file; refused if group or others have any permission on it.
    File(PathBuf),
    /// The passphrase itself; `origin` names it in messages (e.g. `OBS_SIGNING_PASSPHRASE`).
    Value {
        origin: String,
        value: Zeroizing<String>,
    },
}

impl PassphraseSource {
    /// `--passphrase-file FILE` if given, else `OBS_SIGNING_PASSPHRASE` if set, else `None`.
    pub fn from_cli_or_env(file: Option<&Path>) -> PassphraseSource {
        Self::from_cli_or(file, |name| std::env::var(name).ok())
    }

    /// As [`PassphraseSource::from_cli_or_env`], with the environment looked up through `env`.
    pub fn from_cli_or(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Self {
        if let Some(path) = file {
            return PassphraseSource::File(path.to_path_buf());
        }
        match env(ENV_PASSPHRASE) {
            Some(value) => PassphraseSource::Value {
                origin: ENV_PASSPHRASE.to_string(),
                value: Zeroizing::new(value),
            },
            None => PassphraseSource::None,
        }
    }

    fn read(&self) -> Result<Option<Zeroizing<String>>, KeyError> {
        match self {
            PassphraseSource::None => Ok(None),
            PassphraseSource::Value { value, .. } => Ok(Some(value.clone())),
            PassphraseSource::File(path) => {
                let text = read_secret_file(path, "passphrase file")?;
                // The first line, like gpg --passphrase-file.
                let line = text.split('\n').next().unwrap_or("");
                let line = line.strip_suffix('\r').unwrap_or(line);
                Ok(Some(Zeroizing::new(line.to_string())))
            }
        }
    }
}

impl fmt::Debug for PassphraseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassphraseSource::None => f.write_str("None"),
            PassphraseSource::File(p) => f.debug_tuple("File").field(p).finish(),
            PassphraseSource::Value { origin, .. } => f
                .debug_struct("Value")
                .field("origin", origin)
                .finish_non_exhaustive(),
        }
    }
}

/// What the command line asked for; see [`SigningKey::resolve`].
#[derive(Debug, Clone, Default)]
pub struct KeyRequest {
    /// `--signing-key FILE`
    pub key_file: Option<PathBuf>,
    /// `--passphrase-file FILE`
    pub passphrase_file: Option<PathBuf>,
    /// `--release`: refuse the development key.
    pub release: bool,
    /// Where the development key lives; `None`: [`default_dev_key_dir`].
    pub dev_key_dir: Option<PathBuf>,
}

/// Which key packet of the certificate makes signatures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Primary,
    Subkey(usize),
}

/// A checked, unlockable OpenPGP signing key. `Debug` shows fingerprints only.
#[derive(Clone)]
pub struct SigningKey {
    key: SignedSecretKey,
    /// The armored secret key as given (the rpm crate's signer parses it itself).
    armored: Zeroizing<String>,
    passphrase: Option<Zeroizing<String>>,
    which: Which,
    origin: String,
    development: bool,
    signature_time: Option<u64>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint())
            .field("signing_fingerprint", &self.signing_fingerprint())
            .field("origin", &self.origin)
            .field("development", &self.development)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key `dist` uses: `--signing-key`/`OBS_SIGNING_KEY` (with `--passphrase-file`/
    /// `OBS_SIGNING_PASSPHRASE`), else, unless `release`, the development key.
    pub fn resolve(req: &KeyRequest) -> Result<SigningKey, KeyError> {
        Self::resolve_with_env(req, |name| std::env::var(name).ok())
    }

    /// As [`SigningKey::resolve`], with the environment looked up through `env`.
    pub fn resolve_with_env(
        req: &KeyRequest,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SigningKey, KeyError> {
        match KeySource::from_cli_or(req.key_file.as_deref(), &env) {
            Some(source) => {
                let pass = PassphraseSource::from_cli_or(req.passphrase_file.as_deref(), &env);
                let key = SigningKey::load(&source, &pass)?;
                // The development key stays one when it is passed as a file.
                if req.release && key.is_development() {
                    return Err(KeyError::ReleaseGotDevKey {
                        origin: key.origin.clone(),
                    });
                }
                Ok(key)
            }
            None if req.release => Err(KeyError::ReleaseNeedsKey),
            None => match &req.dev_key_dir {
                Some(dir) => SigningKey::dev_key(dir),
                None => SigningKey::dev_key(&default_dev_key_dir().ok_or(KeyError::NoDevKeyDir)?),
            },
        }
    }

    /// Load and check a key; see the module documentation for the checks.
    pub fn load(source: &KeySource, passphrase: &PassphraseSource) -> Result<SigningKey, KeyError> {
        let (origin, armored) = match source {
            KeySource::File(path) => (
                path.display().to_string(),
                read_secret_file(path, "signing key file")?,
            ),
            KeySource::Armored { origin, text } => (origin.clone(), text.clone()),
        };
        let passphrase = passphrase.read()?;
        Self::from_armored(origin, armored, passphrase)
    }

    fn from_armored(
        origin: String,
        armored: Zeroizing<String>,
        passphrase: Option<Zeroizing<String>>,
    ) -> Result<SigningKey, KeyError> {
        let invalid = |problem: String| KeyError::Invalid {
            origin: origin.clone(),
            problem,
        };
        if !armored.contains("-----BEGIN PGP PRIVATE KEY BLOCK-----") {
            let hint = if armored.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
                "this is a public key; the secret key is exported with `gpg --armor \
                 --export-secret-keys FINGERPRINT`"
            } else if origin == ENV_KEY {
                "OBS_SIGNING_KEY holds the armored key text itself (for a key file, give \
                 --signing-key FILE)"
            } else {
                "export it with `gpg --armor --export-secret-keys FINGERPRINT`"
            };
            return Err(invalid(format!(
                "not an armored OpenPGP secret key (no `-----BEGIN PGP PRIVATE KEY BLOCK-----` \
                 line): {hint}"
            )));
        }
        let (keys, _headers) = SignedSecretKey::from_string_many(&armored).map_err(|e| {
            invalid(format!(
                "not an armored OpenPGP secret key (export it with `gpg --armor \
                 --export-secret-keys FINGERPRINT`): {}",
                redact(&e.to_string(), &armored)
            ))
        })?;
        let mut found = Vec::new();
        for key in keys {
            found.push(key.map_err(|e| {
                invalid(format!(
                    "cannot parse the secret key: {}",
                    redact(&e.to_string(), &armored)
                ))
            })?);
        }
        let key = match found.len() {
            1 => found.pop().expect("one key"),
            0 => return Err(invalid("contains no OpenPGP secret key".to_string())),
            n => {
                return Err(invalid(format!(
                    "contains {n} secret keys; export exactly one"
                )))
            }
        };
        let fingerprint = format!("{:X}", key.primary_key.fingerprint());
        let unusable = |problem: String| KeyError::Unusable {
            origin: origin.clone(),
            fingerprint: fingerprint.clone(),
            problem,
        };
        let which = check_certificate(&key, now_secs()).map_err(unusable)?;
        // The development key is recognised by its user ID, however it is passed in.
        let development = key
            .details
            .users
            .iter()
            .any(|u| u.id.id() == DEV_KEY_USER_ID.as_bytes());

        let signing = SigningKey {
            key,
            armored,
            passphrase,
            which,
            origin: origin.clone(),
            development,
            signature_time: None,
        };
        signing.check_unlock()?;
        // Final guard: a signature made now verifies with the public key.
        let probe = b"observability-stack signing key check";
        let sig = signing.sign_binary(&probe[..])?;
        signing
            .verify_with_public(&sig, &probe[..])
            .map_err(|e| unusable(format!("a test signature does not verify: {e}")))?;
        Ok(signing.into_unlocked())
    }

    /// Unlock the secret key material once: a passphrase-protected key would otherwise be
    /// unlocked again (gpg's iterated S2K, about half a second) for every signature. The
    /// packets then hold plain secret parameters (pgp zeroizes them on drop), the passphrase is
    /// dropped (zeroized), and the armored text the rpm signer parses is re-exported from the
    /// unlocked key into a zeroizing buffer. A packet that does not unlock with the passphrase
    /// (e.g. the stub primary of `gpg --export-secret-subkeys`) stays as it is; if the signing
    /// packet does not unlock or the export fails, the key is kept locked, as before.
    fn into_unlocked(self) -> SigningKey {
        let Some(pass) = &self.passphrase else {
            return self;
        };
        let pw = Password::Static(Zeroizing::new(pass.as_bytes().to_vec()));
        let mut k = self.clone();
        let _ = k.key.primary_key.remove_password(&pw);
        for sk in &mut k.key.secret_subkeys {
            let _ = sk.key.remove_password(&pw);
        }
        let plain = match k.which {
            Which::Primary => matches!(k.key.primary_key.secret_params(), SecretParams::Plain(_)),
            Which::Subkey(i) => matches!(
                k.key.secret_subkeys[i].key.secret_params(),
                SecretParams::Plain(_)
            ),
        };
        let Ok(armored) = k.key.to_armored_string(ArmorOptions::default()) else {
            return self;
        };
        k.armored = Zeroizing::new(armored);
        k.passphrase = None;
        // The unlocked key must still sign and verify, and the rpm signer must parse it.
        let probe = b"observability-stack signing key check (unlocked)";
        let works = plain
            && k.sign_binary(&probe[..])
                .is_ok_and(|sig| k.verify_with_public(&sig, &probe[..]).is_ok())
            && k.rpm_signer().is_ok();
        if works {
            k
        } else {
            self
        }
    }

    /// Whether the signing packet's secret material is held unlocked (see `into_unlocked`).
    pub fn is_unlocked(&self) -> bool {
        let p = match self.which {
            Which::Primary => self.key.primary_key.secret_params(),
            Which::Subkey(i) => self.key.secret_subkeys[i].key.secret_params(),
        };
        matches!(p, SecretParams::Plain(_))
    }

    /// The development key in `dir`: generated (RSA-4096 v4, SHA-256 self-signatures, no
    /// passphrase) on first use, loaded (with all checks) afterwards. `dir` is created 0700,
    /// the key file 0600. Two concurrent first runs agree on one key (no-clobber link).
    pub fn dev_key(dir: &Path) -> Result<SigningKey, KeyError> {
        let path = dir.join(DEV_KEY_FILE);
        let dev_err = |problem: String| KeyError::DevKey {
            path: path.clone(),
            problem,
        };
        if !path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| dev_err(format!("cannot create {}: {e}", dir.display())))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| dev_err(format!("cannot chmod 700 {}: {e}", dir.display())))?;
            let armored = generate_dev_key().map_err(|e| dev_err(format!("generation: {e}")))?;
            let tmp = dir.join(format!(".{DEV_KEY_FILE}.{}.tmp", std::process::id()));
            let written = write_new_private(&tmp, armored.as_bytes()).and_then(|()| {
                match fs::hard_link(&tmp, &path) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    other => other,
                }
            });
            let _ = fs::remove_file(&tmp);
            written.map_err(|e| dev_err(format!("cannot write: {e}")))?;
        }
        let mut key = SigningKey::load(&KeySource::File(path.clone()), &PassphraseSource::None)?;
        key.development = true;
        Ok(key)
    }

    /// Use this signature creation time (seconds since the epoch, e.g. SOURCE_DATE_EPOCH)
    /// instead of now. Clamped to no earlier than the signing key's creation.
    pub fn with_signature_time(mut self, secs: Option<u64>) -> SigningKey {
        self.signature_time = secs;
        self
    }

    /// True for the generated development key: the caller prints [`DEV_KEY_WARNING`].
    pub fn is_development(&self) -> bool {
        self.development
    }

    /// Where the key came from (file path or environment variable name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Fingerprint of the primary key, upper-case hex (40 digits for v4).
    pub fn fingerprint(&self) -> String {
        format!("{:X}", self.key.primary_key.fingerprint())
    }

    /// Fingerprint of the key packet that makes signatures (primary or signing subkey).
    pub fn signing_fingerprint(&self) -> String {
        match self.which {
            Which::Primary => self.fingerprint(),
            Which::Subkey(i) => format!("{:X}", self.key.secret_subkeys[i].key.fingerprint()),
        }
    }

    /// The public certificate, ASCII-armored (`-----BEGIN PGP PUBLIC KEY BLOCK-----`).
    pub fn public_key_armored(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key()
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| self.sign_err(e))
    }

    /// The public certificate as binary OpenPGP packets: an apt `Signed-By:` keyring (`.gpg`),
    /// also what `gpgv --keyring` and `sqv --keyring` read.
    pub fn public_key_binary(&self) -> Result<Vec<u8>, KeyError> {
        self.key
            .to_public_key()
            .to_bytes()
            .map_err(|e| self.sign_err(e))
    }

    /// Cleartext-signed `text` (RFC 9580 §7, dash-escaped), as apt's InRelease. A verifier
    /// (gpgv --output, apt) gives back `text` exactly when it ends in a newline.
    ///
    /// The text must not contain carriage returns or NUL, and no line may end in a space or
    /// tab: the cleartext framework drops trailing white space before verifying, so such text
    /// could not be verified as written. Index writers never produce either.
    pub fn clearsign(&self, text: &str) -> Result<String, KeyError> {
        for (n, line) in text.split('\n').enumerate() {
            let bad = if line.contains('\r') {
                Some("contains a carriage return")
            } else if line.contains('\0') {
                Some("contains a NUL byte")
            } else if line.ends_with(' ') || line.ends_with('\t') {
                Some("ends in white space")
            } else {
                None
            };
            if let Some(bad) = bad {
                return Err(KeyError::Sign {
                    fingerprint: self.fingerprint(),
                    problem: format!("cannot clear-sign: line {} {bad}", n + 1),
                });
            }
        }
        // The line break before `-----BEGIN PGP SIGNATURE-----` belongs to the framing, not
        // to the signed text: sign without the final newline (as gpg --clearsign does), so
        // that gpgv --output and apt give back exactly `text`.
        let text = text.strip_suffix('\n').unwrap_or(text);
        let config = self.signature_config(SignatureType::Text)?;
        let password = self.password();
        let msg = match self.which {
            Which::Primary => {
                CleartextSignedMessage::new(text, config, &self.key.primary_key, &password)
            }
            Which::Subkey(i) => CleartextSignedMessage::new(
                text,
                config,
                &self.key.secret_subkeys[i].key,
                &password,
            ),
        }
        .map_err(|e| self.sign_err(e))?;
        msg.to_armored_string(ArmorOptions::default())
            .map_err(|e| self.sign_err(e))
    }

    /// A detached binary-mode signature over everything `data` yields (read streaming),
    /// ASCII-armored: Release.gpg, repomd.xml.asc.
    pub fn detach_sign_armored(&self, data: impl Read) -> Result<String, KeyError> {
        let sig = self.sign_binary(data)?;
        DetachedSignature::new(sig)
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| self.sign_err(e))
    }

    /// A detached binary-mode signature, as raw OpenPGP packet bytes (e.g. debsigs `_gpgorigin`
    /// wants armored; rpm headers want these bytes — use [`SigningKey::rpm_signer`] for rpm).
    pub fn detach_sign_binary(&self, data: impl Read) -> Result<Vec<u8>, KeyError> {
        let sig = self.sign_binary(data)?;
        DetachedSignature::new(sig)
            .to_bytes()
            .map_err(|e| self.sign_err(e))
    }

    /// The rpm crate's signer for `PackageBuilder::build_and_sign`, built from the same
    /// armored key and passphrase and pinned to the same signing key packet.
    pub fn rpm_signer(&self) -> Result<RpmSigner, KeyError> {
        let err = |e: rpm::Error| KeyError::Sign {
            fingerprint: self.fingerprint(),
            problem: format!("rpm signer: {}", redact(&e.to_string(), &self.armored)),
        };
        let mut signer = rpm::signature::pgp::Signer::from_asc(&self.armored).map_err(err)?;
        let fpr = match self.which {
            Which::Primary => self.key.primary_key.fingerprint(),
            Which::Subkey(i) => self.key.secret_subkeys[i].key.fingerprint(),
        };
        signer = signer.with_signing_key(fpr.as_bytes()).map_err(err)?;
        if let Some(p) = &self.passphrase {
            signer = signer.with_key_passphrase(p.as_str());
        }
        Ok(RpmSigner {
            inner: signer,
            fingerprint: self.signing_fingerprint(),
            not_before: self.signing_created_at(),
        })
    }

    fn signing_created_at(&self) -> u32 {
        match self.which {
            Which::Primary => self.key.primary_key.created_at().as_secs(),
            Which::Subkey(i) => self.key.secret_subkeys[i].key.created_at().as_secs(),
        }
    }

    fn password(&self) -> Password {
        match &self.passphrase {
            Some(p) => Password::Static(Zeroizing::new(p.as_bytes().to_vec())),
            None => Password::empty(),
        }
    }

    fn sign_err(&self, e: impl fmt::Display) -> KeyError {
        KeyError::Sign {
            fingerprint: self.fingerprint(),
            problem: redact(&e.to_string(), &self.armored),
        }
    }

    fn signature_config(&self, typ: SignatureType) -> Result<SignatureConfig, KeyError> {
        let secs = self.signature_time.unwrap_or_else(now_secs);
        let secs = u32::try_from(secs)
            .map_err(|_| self.sign_err(format!("signature time {secs} is past 2106")))?
            .max(self.signing_created_at());
        let (fpr, key_id) = match self.which {
            Which::Primary => (
                self.key.primary_key.fingerprint(),
                self.key.primary_key.legacy_key_id(),
            ),
            Which::Subkey(i) => (
                self.key.secret_subkeys[i].key.fingerprint(),
                self.key.secret_subkeys[i].key.legacy_key_id(),
            ),
        };
        let mut config = SignatureConfig::v4(typ, PublicKeyAlgorithm::RSA, HashAlgorithm::Sha256);
        config.hashed_subpackets = [
            SubpacketData::SignatureCreationTime(Timestamp::from_secs(secs)),
            SubpacketData::IssuerFingerprint(fpr),
            SubpacketData::IssuerKeyId(key_id),
        ]
        .into_iter()
        .map(Subpacket::regular)
        .collect::<Result<_, _>>()
        .map_err(|e| self.sign_err(e))?;
        config.unhashed_subpackets = Vec::new();
        Ok(config)
    }

    fn sign_binary(&self, data: impl Read) -> Result<Signature, KeyError> {
        let config = self.signature_config(SignatureType::Binary)?;
        let password = self.password();
        match self.which {
            Which::Primary => config.sign(&self.key.primary_key, &password, data),
            Which::Subkey(i) => config.sign(&self.key.secret_subkeys[i].key, &password, data),
        }
        .map_err(|e| self.sign_err(e))
    }

    fn verify_with_public(&self, sig: &Signature, data: impl Read) -> pgp::errors::Result<()> {
        match self.which {
            Which::Primary => sig.verify(self.key.primary_key.public_key(), data),
            Which::Subkey(i) => sig.verify(self.key.secret_subkeys[i].key.public_key(), data),
        }
    }

    fn check_unlock(&self) -> Result<(), KeyError> {
        let (encrypted, unlocked) = match self.which {
            Which::Primary => {
                let k = &self.key.primary_key;
                (
                    matches!(k.secret_params(), SecretParams::Encrypted(_)),
                    k.unlock(&self.password(), |_, _| Ok(())),
                )
            }
            Which::Subkey(i) => {
                let k = &self.key.secret_subkeys[i].key;
                (
                    matches!(k.secret_params(), SecretParams::Encrypted(_)),
                    k.unlock(&self.password(), |_, _| Ok(())),
                )
            }
        };
        match unlocked {
            Ok(Ok(())) => Ok(()),
            _ if encrypted && self.passphrase.is_none() => Err(KeyError::PassphraseRequired {
                origin: self.origin.clone(),
                fingerprint: self.fingerprint(),
            }),
            _ => Err(KeyError::WrongPassphrase {
                origin: self.origin.clone(),
                fingerprint: self.fingerprint(),
            }),
        }
    }
}

/// The index writers' view of the key (`apt_repo`, `dnf_repo`, `dist` take `&dyn Signer`).
impl crate::signer::Signer for SigningKey {
    fn clearsign(&self, text: &str) -> anyhow::Result<String> {
        Ok(SigningKey::clearsign(self, text)?)
    }
    fn detach_sign_armored(&self, data: &[u8]) -> anyhow::Result<String> {
        Ok(SigningKey::detach_sign_armored(self, data)?)
    }
    fn detach_sign_armored_reader(&self, data: &mut dyn Read) -> anyhow::Result<String> {
        Ok(SigningKey::detach_sign_armored(self, data)?)
    }
    fn public_key_armored(&self) -> anyhow::Result<String> {
        Ok(SigningKey::public_key_armored(self)?)
    }
    fn public_key_binary(&self) -> anyhow::Result<Vec<u8>> {
        Ok(SigningKey::public_key_binary(self)?)
    }
    fn fingerprint(&self) -> String {
        SigningKey::fingerprint(self)
    }
    fn signing_fingerprint(&self) -> String {
        SigningKey::signing_fingerprint(self)
    }
}

/// The rpm crate's signer, pinned to our signing key, with a `Debug` that shows the
/// fingerprint only (the wrapped signer's derived `Debug` prints the passphrase). Signature
/// times before the signing key's creation are raised to it.
pub struct RpmSigner {
    inner: rpm::signature::pgp::Signer,
    fingerprint: String,
    not_before: u32,
}

impl fmt::Debug for RpmSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpmSigner")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl rpm::signature::Signing for RpmSigner {
    type Signature = Vec<u8>;

    fn sign(&self, data: impl Read, t: rpm::Timestamp) -> Result<Vec<u8>, rpm::Error> {
        self.inner
            .sign(data, rpm::Timestamp(t.0.max(self.not_before)))
    }
}

/// `$XDG_DATA_HOME/observability-stack`, or `~/.local/share/observability-stack`.
pub fn default_dev_key_dir() -> Option<PathBuf> {
    dev_key_dir_from(|name| std::env::var_os(name))
}

/// As [`default_dev_key_dir`], with the environment looked up through `env`.
pub fn dev_key_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let base = env("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            env("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".local/share"))
        })?;
    Some(base.join("observability-stack"))
}

/// Check the certificate (everything but the passphrase) at time `now`; returns the key
/// packet that signs. Errors are human sentences naming no secret.
fn check_certificate(key: &SignedSecretKey, now: u64) -> Result<Which, String> {
    let primary = &key.primary_key;
    if primary.version() != KeyVersion::V4 {
        return Err(format!(
            "is a {:?} key; apt, rpm 4.14 and dnf on EL8 need an OpenPGP v4 key",
            primary.version()
        ));
    }
    key.verify_bindings().map_err(|e| {
        format!(
            "its self-signatures do not verify ({e}); third-party certifications are not \
             supported: export with `gpg --export-options export-minimal --armor \
             --export-secret-keys FINGERPRINT`"
        )
    })?;

    // Every signature carried with the certificate, with what it is about.
    let mut all: Vec<(&Signature, String)> = Vec::new();
    for s in &key.details.direct_signatures {
        all.push((s, "direct key signature".into()));
    }
    for s in &key.details.revocation_signatures {
        all.push((s, "key revocation".into()));
    }
    for u in &key.details.users {
        for s in &u.signatures {
            all.push((
                s,
                format!(
                    "self-signature on user ID {:?}",
                    u.id.id().escape_ascii().to_string()
                ),
            ));
        }
    }
    for (i, sk) in key.secret_subkeys.iter().enumerate() {
        for s in &sk.signatures {
            all.push((s, format!("binding signature of subkey {}", i + 1)));
            if let Some(back) = s.embedded_signature() {
                all.push((back, format!("back-signature of subkey {}", i + 1)));
            }
        }
    }
    for (s, what) in &all {
        if let Some(h) = s.hash_alg() {
            if matches!(
                h,
                HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160
            ) {
                return Err(format!(
                    "its {what} uses the weak digest {h}; re-create the key, or renew its \
                     self-signatures with SHA-256 (`gpg --cert-digest-algo SHA256 \
                     --quick-set-expire FINGERPRINT 0`) and export with \
                     `--export-options export-minimal`"
                ));
            }
        }
    }

    if !key.details.revocation_signatures.is_empty() {
        return Err("is revoked".to_string());
    }

    let primary_created = u64::from(primary.created_at().as_secs());
    let newest_self_sig = key
        .details
        .direct_signatures
        .iter()
        .chain(key.details.users.iter().flat_map(|u| u.signatures.iter()))
        .filter(|s| s.is_certification() || s.typ() == Some(SignatureType::Key))
        .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
        .ok_or("has no self-signature")?;
    check_alive(newest_self_sig, primary_created, now, "the key")?;
    check_rsa(primary.public_params(), "the primary key")?;

    // Like gpg: the newest usable signing subkey, else the primary.
    let mut reasons = Vec::new();
    let mut best: Option<(usize, u32)> = None;
    for (i, sk) in key.secret_subkeys.iter().enumerate() {
        let Some(binding) = sk
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
            .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
        else {
            continue;
        };
        if !binding.key_flags().sign() {
            continue;
        }
        let what = format!("signing subkey {:X}", sk.key.fingerprint());
        let check = || -> Result<(), String> {
            if sk
                .signatures
                .iter()
                .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
            {
                return Err(format!("{what} is revoked"));
            }
            if sk.key.version() != KeyVersion::V4 {
                return Err(format!("{what} is not a v4 key"));
            }
            let created = u64::from(sk.key.created_at().as_secs());
            check_alive(binding, created, now, &what)?;
            check_rsa(sk.key.public_params(), &what)
        };
        match check() {
            Ok(()) => {
                let created = sk.key.created_at().as_secs();
                if best.is_none_or(|(_, c)| created >= c) {
                    best = Some((i, created));
                }
            }
            Err(reason) => reasons.push(reason),
        }
    }
    if let Some((i, _)) = best {
        return Ok(Which::Subkey(i));
    }
    // Key flags absent: RFC 9580 leaves usage open; gpg always writes them.
    let flags_present = newest_self_sig
        .config()
        .map(|c| {
            c.hashed_subpackets()
                .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
        })
        .unwrap_or(false);
    if newest_self_sig.key_flags().sign() || !flags_present {
        return Ok(Which::Primary);
    }
    let mut msg =
        "cannot sign: neither the primary key nor any subkey has the sign capability".to_string();
    if !reasons.is_empty() {
        msg.push_str(" that is usable (");
        msg.push_str(&reasons.join("; "));
        msg.push(')');
    }
    msg.push_str("; create one with `gpg --quick-gen-key UID rsa4096 sign` or `gpg --quick-add-key FINGERPRINT rsa4096 sign`");
    Err(msg)
}

/// The self-signature `sig` over a key created at `created` is valid at `now` and does not
/// let the key expire before `now`.
fn check_alive(sig: &Signature, created: u64, now: u64, what: &str) -> Result<(), String> {
    if let Some(d) = sig.key_expiration_time() {
        let d = u64::from(d.as_secs());
        if d > 0 && created + d <= now {
            return Err(format!(
                "{what} expired on {} (extend it with `gpg --quick-set-expire FINGERPRINT 2y`)",
                crate::date::utc_date(created + d)
            ));
        }
    }
    if let (Some(d), Some(made)) = (sig.signature_expiration_time(), sig.created()) {
        let d = u64::from(d.as_secs());
        let made = u64::from(made.as_secs());
        if d > 0 && made + d <= now {
            return Err(format!(
                "the self-signature of {what} expired on {}",
                crate::date::utc_date(made + d)
            ));
        }
    }
    if sig
        .created()
        .is_some_and(|t| u64::from(t.as_secs()) > now + 86_400)
    {
        return Err(format!(
            "the self-signature of {what} is dated in the future (check the clock)"
        ));
    }
    Ok(())
}

/// RSA with a modulus of at least [`MIN_RSA_BITS`].
fn check_rsa(params: &PublicParams, what: &str) -> Result<(), String> {
    let PublicParams::RSA(_) = params else {
        return Err(format!(
            "{what} is not RSA; this pipeline signs with RSA (RSA-4096 recommended), which \
             every rpm, apt and dnf release it targets verifies"
        ));
    };
    // The first public MPI of an RSA key is the modulus; an MPI starts with its bit count.
    let mut buf = Vec::new();
    params
        .to_writer(&mut buf)
        .map_err(|e| format!("{what}: cannot encode public key: {e}"))?;
    let bits = match buf.as_slice() {
        [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => 0,
    };
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "{what} is RSA-{bits}; at least RSA-{MIN_RSA_BITS} is required (RSA-4096 \
             recommended)"
        ));
    }
    Ok(())
}

fn generate_dev_key() -> Result<Zeroizing<String>, String> {
    let params = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Rsa(DEV_KEY_BITS))
        .version(KeyVersion::V4)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(DEV_KEY_USER_ID.into())
        .build()
        .map_err(|e| e.to_string())?;
    let key = params
        .generate(rand::thread_rng())
        .map_err(|e| e.to_string())?;
    key.to_armored_string(ArmorOptions::default())
        .map(Zeroizing::new)
        .map_err(|e| e.to_string())
}

/// Create `path` (must not exist) with mode 0600 and `data`, synced.
fn write_new_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Read a secret file, refusing one that group or others may access (checked on the open
/// handle, so the file checked is the file read).
fn read_secret_file(path: &Path, what: &'static str) -> Result<Zeroizing<String>, KeyError> {
    let read_err = |source: io::Error| KeyError::Read {
        path: path.to_path_buf(),
        what,
        source,
    };
    let file = fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(io::Error::other("not a regular file")));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            what,
            mode,
        });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(read_err(io::Error::other("larger than 1 MiB")));
    }
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(Zeroizing::new(s.to_string())),
        Err(_) => Err(read_err(io::Error::other(
            "not UTF-8 text (an armored key is expected: gpg --armor)",
        ))),
    }
}

/// `msg` with every word that also occurs in `secret` (8 characters or more) replaced, so a
/// library error quoting its input cannot leak key material.
fn redact(msg: &str, secret: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() >= 8 && secret.contains(word.as_str()) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in msg.chars() {
        if c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_words_of_the_secret() {
        let secret = "lQcYBGabcdefghijklmnop\n=XyZ1\n";
        assert_eq!(
            redact("bad byte near lQcYBGabcdefghijklmnop here", secret),
            "bad byte near [redacted] here"
        );
        assert_eq!(redact("short lQcY", secret), "short lQcY");
    }

    #[test]
    fn dev_key_dir_prefers_absolute_xdg() {
        let env = |xdg: Option<&'static str>, home: Option<&'static str>| {
            move |n: &str| match n {
                "XDG_DATA_HOME" => xdg.map(Into::into),
                "HOME" => home.map(Into::into),
                _ => None,
            }
        };
        assert_eq!(
            dev_key_dir_from(env(Some("/x"), Some("/h"))),
            Some(PathBuf::from("/x/observability-stack"))
        );
        assert_eq!(
            dev_key_dir_from(env(Some("rel"), Some("/h"))),
            Some(PathBuf::from("/h/.local/share/observability-stack"))
        );
        assert_eq!(dev_key_dir_from(env(None, None)), None);
    }
}
