//! The signing module, judged by the real tools: keys made by real gpg (and by our dev-key
//! generator) sign InRelease / Release.gpg that gpgv and sqv accept and tampered copies they
//! refuse; rpm headers that rpmkeys reports `V4 RSA/SHA256 … OK`; unusable keys are refused
//! with clear messages that contain no secret.
//!
//! Keys are generated once per test process (RSA-4096 is slow), under CARGO_TARGET_TMPDIR.

#[path = "support/cmd.rs"]
mod cmd;
use cmd::run;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use xtask::signing::{
    KeyError, KeyRequest, KeySource, PassphraseSource, SigningKey, DEV_KEY_FILE, ENV_KEY,
    ENV_PASSPHRASE,
};

const PASS: &str = "correct horse battery staple";

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// A key made by gpg: its armored secret export (with the passphrase it was made with).
struct GpgKey {
    fingerprint: String,
    armored_secret: String,
    passphrase: Option<&'static str>,
}

struct Fixtures {
    main: GpgKey,
    rsa2048: GpgKey,
    sha1: GpgKey,
    expired: GpgKey,
    cert_only: GpgKey,
    revoked: GpgKey,
    with_subkey: GpgKey,
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home)
        .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"]);
    c
}

fn gen_key(
    home: &Path,
    uid: &str,
    algo: &str,
    usage: &str,
    expire: &str,
    pass: Option<&'static str>,
    extra: &[&str],
) -> GpgKey {
    let (ok, text) = run(gpg(home)
        .args(["--passphrase", pass.unwrap_or("")])
        .args(extra)
        .args(["--quick-gen-key", uid, algo, usage, expire]));
    assert!(ok, "gpg --quick-gen-key {uid}: {text}");
    let (ok, text) = run(gpg(home).args(["--with-colons", "--list-secret-keys", uid]));
    assert!(ok, "{text}");
    let fingerprint = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_string())
        })
        .unwrap();
    let armored_secret = export_secret(home, &fingerprint, pass);
    GpgKey {
        fingerprint,
        armored_secret,
        passphrase: pass,
    }
}

fn export_secret(home: &Path, fpr: &str, pass: Option<&str>) -> String {
    let (ok, text) = run(gpg(home).args(["--passphrase", pass.unwrap_or("")]).args([
        "--armor",
        "--export-secret-keys",
        fpr,
    ]));
    assert!(ok && text.contains("BEGIN PGP PRIVATE KEY BLOCK"), "{text}");
    let out = gpg(home)
        .args(["--passphrase", pass.unwrap_or("")])
        .args(["--armor", "--export-secret-keys", fpr])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let home = scratch("signing-gnupg");
        let main = gen_key(
            &home,
            "Test <t@example.org>",
            "rsa4096",
            "sign",
            "never",
            Some(PASS),
            &[],
        );
        let rsa2048 = gen_key(
            &home,
            "Small <s@example.org>",
            "rsa2048",
            "sign",
            "never",
            None,
            &[],
        );
        let sha1 = gen_key(
            &home,
            "Sha1 <sha1@example.org>",
            "rsa3072",
            "sign",
            "never",
            None,
            &["--cert-digest-algo", "SHA1"],
        );
        let expired = gen_key(
            &home,
            "Expired <e@example.org>",
            "rsa3072",
            "sign",
            "1y",
            None,
            &["--faked-system-time", "20200101T000000"],
        );
        let cert_only = gen_key(
            &home,
            "Cert <c@example.org>",
            "rsa3072",
            "cert",
            "never",
            None,
            &[],
        );
        // Revoked: import the revocation certificate gpg made at generation.
        let mut revoked = gen_key(
            &home,
            "Revoked <r@example.org>",
            "rsa3072",
            "sign",
            "never",
            None,
            &[],
        );
        let rev = home
            .join("openpgp-revocs.d")
            .join(format!("{}.rev", revoked.fingerprint));
        let rev_text = fs::read_to_string(&rev)
            .unwrap()
            .replace(":-----BEGIN", "-----BEGIN");
        let rev_file = home.join("revoke.asc");
        fs::write(&rev_file, rev_text).unwrap();
        let (ok, text) = run(gpg(&home).arg("--import").arg(&rev_file));
        assert!(ok, "import revocation: {text}");
        revoked.armored_secret = export_secret(&home, &revoked.fingerprint, None);
        // Certify-only primary with a signing subkey: the subkey must be the one that signs.
        let mut with_subkey = gen_key(
            &home,
            "Sub <sub@example.org>",
            "rsa3072",
            "cert",
            "never",
            None,
            &[],
        );
        let (ok, text) = run(gpg(&home).args(["--passphrase", ""]).args([
            "--quick-add-key",
            &with_subkey.fingerprint,
            "rsa3072",
            "sign",
            "never",
        ]));
        assert!(ok, "quick-add-key: {text}");
        with_subkey.armored_secret = export_secret(&home, &with_subkey.fingerprint, None);
        // The agent is not needed past this point.
        let _ = run(Command::new("gpgconf")
            .env("GNUPGHOME", &home)
            .args(["--kill", "gpg-agent"]));
        Fixtures {
            main,
            rsa2048,
            sha1,
            expired,
            cert_only,
            revoked,
            with_subkey,
        }
    })
}

fn armored(k: &GpgKey) -> KeySource {
    KeySource::Armored {
        origin: "test".into(),
        text: k.armored_secret.clone().into(),
    }
}

fn pass_of(k: &GpgKey) -> PassphraseSource {
    match k.passphrase {
        Some(p) => PassphraseSource::Value {
            origin: "test".into(),
            value: p.to_string().into(),
        },
        None => PassphraseSource::None,
    }
}

fn load(k: &GpgKey) -> Result<SigningKey, KeyError> {
    SigningKey::load(&armored(k), &pass_of(k))
}

fn main_key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| load(&fixtures().main).expect("the gpg RSA-4096 key loads"))
}

fn dev_dir() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| scratch("signing-devkey").join("data/observability-stack"))
}

fn dev_key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::dev_key(dev_dir()).expect("dev key generates"))
}

/// Assert that no line of the secret's armored body and no passphrase occurs in `text`.
fn assert_no_secret(text: &str, k: &GpgKey) {
    for line in k.armored_secret.lines() {
        let line = line.trim();
        if line.len() >= 16 && !line.starts_with("-----") {
            assert!(
                !text.contains(line),
                "secret key material in message: {text}"
            );
            // Also any 16-character piece of it.
            for piece in line.as_bytes().chunks(16).filter(|c| c.len() == 16) {
                let piece = std::str::from_utf8(piece).unwrap();
                assert!(!text.contains(piece), "secret key material in: {text}");
            }
        }
    }
    assert!(!text.contains(PASS), "passphrase in message: {text}");
}

/// A keyring file (binary public key) for gpgv/sqv.
fn keyring(key: &SigningKey, dir: &Path) -> PathBuf {
    let path = dir.join("keyring.gpg");
    fs::write(&path, key.public_key_binary().unwrap()).unwrap();
    path
}

const RELEASE: &str = "Origin: observability-stack\n\
Label: observability-stack\n\
Suite: stable\n\
Codename: stable\n\
Date: Thu, 01 Jan 2026 00:00:00 UTC\n\
Architectures: amd64 arm64\n\
Components: main\n\
Description: test\n\
-----BEGIN PGP SIGNATURE----- (a line that must be dash-escaped)\n\
- dash then space\n\
--double dash\n\
From the top: a mbox-style line\n\
From: x\n\
\n\
SHA256:\n \
0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 1234 main/binary-amd64/Packages\n";

fn gpgv(keyring: &Path, args: &[&Path]) -> (bool, String) {
    run(Command::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .args(args))
}

fn sqv(keyring: &Path, sig: &Path, data: &Path) -> (bool, String) {
    run(Command::new("sqv")
        .arg("--keyring")
        .arg(keyring)
        .arg(sig)
        .arg(data))
}

fn check_clearsign_and_detached(key: &SigningKey, name: &str) {
    let dir = scratch(name);
    let kr = keyring(key, &dir);

    // InRelease: gpgv accepts, including dash-escaped and "From " lines.
    let inrelease = key.clearsign(RELEASE).unwrap();
    assert!(inrelease.starts_with("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"));
    assert!(inrelease.contains("\n- -----BEGIN PGP SIGNATURE----- (a line"));
    assert!(inrelease.contains("\n- - dash then space\n- --double dash\n"));
    let ir = dir.join("InRelease");
    fs::write(&ir, &inrelease).unwrap();
    let (ok, text) = gpgv(&kr, &[&ir]);
    assert!(ok, "gpgv refused InRelease: {text}\n{inrelease}");
    assert!(text.contains("Good signature"), "{text}");
    // gpgv --output gives back exactly the signed text (what apt reads).
    let out = dir.join("InRelease.out");
    let (ok, text) = run(Command::new("gpgv")
        .arg("--keyring")
        .arg(&kr)
        .arg("--output")
        .arg(&out)
        .arg(&ir));
    assert!(ok, "{text}");
    assert_eq!(fs::read_to_string(&out).unwrap(), RELEASE);

    // Tampering one byte of the signed text: refused.
    let tampered = inrelease.replacen("Suite: stable", "Suite: stabke", 1);
    assert_ne!(tampered, inrelease);
    fs::write(&ir, &tampered).unwrap();
    let (ok, text) = gpgv(&kr, &[&ir]);
    assert!(!ok, "gpgv accepted a tampered InRelease: {text}");
    assert!(text.contains("BAD signature"), "{text}");

    // Release.gpg: gpgv and sqv accept the detached signature.
    let release = dir.join("Release");
    fs::write(&release, RELEASE).unwrap();
    let sig = key
        .detach_sign_armored(fs::File::open(&release).unwrap())
        .unwrap();
    assert!(sig.starts_with("-----BEGIN PGP SIGNATURE-----\n"), "{sig}");
    let rg = dir.join("Release.gpg");
    fs::write(&rg, &sig).unwrap();
    let (ok, text) = gpgv(&kr, &[&rg, &release]);
    assert!(ok, "gpgv refused Release.gpg: {text}");
    let (ok, text) = sqv(&kr, &rg, &release);
    assert!(ok, "sqv refused Release.gpg: {text}");
    assert!(
        text.contains(&key.fingerprint()),
        "sqv names the certificate: {text}"
    );

    // One byte changed in Release: both refuse.
    let mut bytes = RELEASE.as_bytes().to_vec();
    bytes[10] ^= 0x01;
    fs::write(&release, &bytes).unwrap();
    let (ok, text) = gpgv(&kr, &[&rg, &release]);
    assert!(!ok, "gpgv accepted tampered Release: {text}");
    let (ok, text) = sqv(&kr, &rg, &release);
    assert!(!ok, "sqv accepted tampered Release: {text}");

    // A different key's keyring: refused.
    let other = dir.join("other.gpg");
    let other_key = if key.is_development() {
        main_key()
    } else {
        dev_key()
    };
    fs::write(&other, other_key.public_key_binary().unwrap()).unwrap();
    fs::write(&release, RELEASE).unwrap();
    let (ok, text) = gpgv(&other, &[&rg, &release]);
    assert!(!ok, "gpgv accepted a signature by an unknown key: {text}");
    let (ok, text) = sqv(&other, &rg, &release);
    assert!(!ok, "sqv accepted a signature by an unknown key: {text}");
}

#[test]
fn gpg_key_signs_inrelease_and_release_gpg_that_gpgv_and_sqv_accept() {
    // The passphrase-protected key is unlocked once, when loaded (not for every signature);
    // the signatures below are made with the unlocked material.
    assert!(fixtures().main.passphrase.is_some());
    assert!(main_key().is_unlocked());
    check_clearsign_and_detached(main_key(), "signing-gpg-key");
}

#[test]
fn signing_key_serves_the_index_writers_signer_trait() {
    let signer: &dyn xtask::signer::Signer = main_key();
    let dir = scratch("signing-trait");
    let kr = dir.join("k.gpg");
    fs::write(&kr, signer.public_key_binary().unwrap()).unwrap();
    let ir = dir.join("InRelease");
    fs::write(&ir, signer.clearsign(RELEASE).unwrap()).unwrap();
    let (ok, text) = gpgv(&kr, &[&ir]);
    assert!(ok, "{text}");
    let (rel, sig) = (dir.join("Release"), dir.join("Release.gpg"));
    fs::write(&rel, RELEASE).unwrap();
    fs::write(
        &sig,
        signer.detach_sign_armored(RELEASE.as_bytes()).unwrap(),
    )
    .unwrap();
    let (ok, text) = sqv(&kr, &sig, &rel);
    assert!(ok, "{text}");
    assert_eq!(signer.fingerprint(), fixtures().main.fingerprint);
    assert!(signer
        .public_key_armored()
        .unwrap()
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
}

#[test]
fn dev_key_signs_inrelease_and_release_gpg_that_gpgv_and_sqv_accept() {
    check_clearsign_and_detached(dev_key(), "signing-dev-key");
}

#[test]
fn signing_subkey_is_used_when_the_primary_cannot_sign() {
    let f = fixtures();
    let key = load(&f.with_subkey).unwrap();
    assert_eq!(key.fingerprint(), f.with_subkey.fingerprint);
    assert_ne!(key.signing_fingerprint(), key.fingerprint());
    check_clearsign_and_detached(&key, "signing-subkey");
}

/// `gpg --list-packets` of a signature.
fn list_packets(path: &Path) -> String {
    let home = scratch(&format!(
        "signing-lp-{}",
        path.file_name().unwrap().to_string_lossy()
    ));
    let (ok, text) = run(Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--list-packets"])
        .arg(path));
    assert!(ok, "{text}");
    text
}

#[test]
fn signatures_are_v4_sha256_with_non_critical_issuer_subpackets() {
    let key = main_key().clone().with_signature_time(Some(1_900_000_000));
    let dir = scratch("signing-packets");
    let sig = dir.join("Release.gpg");
    fs::write(&sig, key.detach_sign_armored(&b"data"[..]).unwrap()).unwrap();
    let lp = list_packets(&sig);
    assert!(lp.contains("version 4, created 1900000000"), "{lp}");
    assert!(lp.contains("sigclass 0x00"), "{lp}");
    assert!(lp.contains("digest algo 8,"), "SHA-256: {lp}");
    assert!(lp.contains(":signature packet: algo 1,"), "RSA: {lp}");
    assert!(
        lp.contains(&format!(
            "subpkt 33 len 21 (issuer fpr v4 {}",
            key.signing_fingerprint()
        )),
        "{lp}"
    );
    assert!(lp.contains("subpkt 16 len 8 (issuer key ID"), "{lp}");
    assert!(lp.contains("subpkt 2 len 4 (sig created"), "{lp}");
    assert!(!lp.contains("critical"), "no critical subpackets: {lp}");

    // The signature block of InRelease.
    let inrelease = key.clearsign("a\n").unwrap();
    let block = &inrelease[inrelease.find("-----BEGIN PGP SIGNATURE-----").unwrap()..];
    let ir = dir.join("InRelease.sig");
    fs::write(&ir, block).unwrap();
    let lp = list_packets(&ir);
    assert!(lp.contains("sigclass 0x01"), "text signature: {lp}");
    assert!(lp.contains("digest algo 8,"), "{lp}");
    assert!(!lp.contains("critical"), "{lp}");

    // A fixed time gives identical bytes (RSA PKCS#1 v1.5 is deterministic).
    assert_eq!(
        key.detach_sign_armored(&b"data"[..]).unwrap(),
        key.detach_sign_armored(&b"data"[..]).unwrap()
    );
    assert_eq!(key.clearsign("x\n").unwrap(), key.clearsign("x\n").unwrap());

    // A time before the key existed is raised to the key's creation (verifiers refuse
    // signatures older than their key).
    let early = main_key().clone().with_signature_time(Some(1));
    fs::write(&sig, early.detach_sign_armored(&b"data"[..]).unwrap()).unwrap();
    let lp = list_packets(&sig);
    assert!(!lp.contains("created 1,"), "{lp}");
    let kr = keyring(&early, &dir);
    let data = dir.join("data");
    fs::write(&data, "data").unwrap();
    let (ok, text) = sqv(&kr, &sig, &data);
    assert!(ok, "{text}");
}

#[test]
fn clearsign_refuses_text_it_could_not_sign_faithfully() {
    let key = main_key();
    for bad in ["a \n", "a\t\nb\n", "a\r\nb\n", "x\0\n"] {
        let e = key.clearsign(bad).unwrap_err().to_string();
        assert!(e.contains("cannot clear-sign: line"), "{e}");
    }
}

#[test]
fn public_keys_are_the_certificate_gpg_reads() {
    let key = main_key();
    let dir = scratch("signing-pub");
    let asc = dir.join("pub.asc");
    fs::write(&asc, key.public_key_armored().unwrap()).unwrap();
    let bin = dir.join("pub.gpg");
    fs::write(&bin, key.public_key_binary().unwrap()).unwrap();
    for p in [&asc, &bin] {
        let (ok, text) = run(Command::new("gpg")
            .env("GNUPGHOME", &dir)
            .args(["--batch", "--with-colons", "--show-keys"])
            .arg(p));
        assert!(ok, "{text}");
        assert!(
            text.contains(&format!("fpr:::::::::{}:", fixtures().main.fingerprint)),
            "{text}"
        );
        assert!(!text.contains("sec:"), "public only: {text}");
    }
    let armored = key.public_key_armored().unwrap();
    assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert!(!armored.contains("PRIVATE"));
    assert_eq!(key.fingerprint(), fixtures().main.fingerprint);
}

#[test]
fn the_dev_key_passed_as_a_file_is_still_the_dev_key_and_release_refuses_it() {
    let file = dev_dir().join(DEV_KEY_FILE);
    dev_key();
    let req = |release: bool| xtask::signing::KeyRequest {
        key_file: Some(file.clone()),
        passphrase_file: None,
        release,
        dev_key_dir: None,
    };
    let k = SigningKey::resolve_with_env(&req(false), |_| None).unwrap();
    assert!(k.is_development(), "the dev key loaded from its file");
    let e = SigningKey::resolve_with_env(&req(true), |_| None)
        .expect_err("--release takes the dev key")
        .to_string();
    assert!(
        e.contains("--release") && e.contains("is the development key"),
        "{e}"
    );
    // A real key is not mistaken for it.
    assert!(!main_key().is_development());
}

#[test]
fn dev_key_is_rsa4096_v4_sha256_private_and_reused() {
    let key = dev_key();
    assert!(key.is_development());
    let dir = dev_dir();
    let file = dir.join(DEV_KEY_FILE);
    assert_eq!(
        fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = fs::read(&file).unwrap();
    let again = SigningKey::dev_key(dir).unwrap();
    assert_eq!(
        again.fingerprint(),
        key.fingerprint(),
        "reused, not regenerated"
    );
    assert_eq!(fs::read(&file).unwrap(), before);
    // No stray temporary files.
    let names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [DEV_KEY_FILE]);

    let pubf = scratch("signing-devpub").join("dev.gpg");
    fs::write(&pubf, key.public_key_binary().unwrap()).unwrap();
    let lp = list_packets(&pubf);
    assert!(
        lp.contains(":public key packet:\n\tversion 4, algo 1,"),
        "{lp}"
    );
    assert!(lp.contains("pkey[0]: [4096 bits]"), "{lp}");
    assert!(lp.contains("sigclass 0x13"), "{lp}");
    assert!(lp.contains("digest algo 8,"), "{lp}");
    assert!(!lp.contains("digest algo 2,"), "{lp}");
    assert!(lp.contains("NOT FOR PRODUCTION"), "{lp}");

    // Debug shows no secret.
    let dbg = format!("{key:?}");
    assert!(
        dbg.contains(&key.fingerprint()) && !dbg.contains("BEGIN"),
        "{dbg}"
    );
}

#[test]
fn dev_key_file_others_can_read_is_refused() {
    dev_key();
    let dir = scratch("signing-devkey-perm").join("obs");
    // Generating takes a while: copy the shared dev key instead.
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join(DEV_KEY_FILE);
    fs::copy(dev_dir().join(DEV_KEY_FILE), &file).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    let e = SigningKey::dev_key(&dir).unwrap_err().to_string();
    assert!(e.contains("0640") && e.contains("chmod 600"), "{e}");
}

#[test]
fn key_file_with_group_or_other_permissions_is_refused() {
    let f = fixtures();
    let dir = scratch("signing-perm");
    let path = dir.join("key.asc");
    fs::write(&path, &f.main.armored_secret).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let e = SigningKey::load(&KeySource::File(path.clone()), &pass_of(&f.main))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&path.display().to_string()),
            "names the file: {e}"
        );
        assert!(e.contains(&format!("{mode:04o}")), "names the mode: {e}");
        assert!(e.contains("chmod 600"), "{e}");
        assert_no_secret(&e, &f.main);
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    // Passphrase from a file: same rule; first line only.
    let pf = dir.join("pass");
    fs::write(&pf, format!("{PASS}\nignored second line\n")).unwrap();
    fs::set_permissions(&pf, fs::Permissions::from_mode(0o644)).unwrap();
    let e = SigningKey::load(
        &KeySource::File(path.clone()),
        &PassphraseSource::File(pf.clone()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&pf.display().to_string()) && e.contains("0644") && e.contains("chmod 600"),
        "{e}"
    );
    fs::set_permissions(&pf, fs::Permissions::from_mode(0o400)).unwrap();
    let key = SigningKey::load(&KeySource::File(path.clone()), &PassphraseSource::File(pf))
        .expect("0600 key file and 0400 passphrase file load");
    assert_eq!(key.fingerprint(), f.main.fingerprint);
    assert_eq!(key.origin(), path.display().to_string());
}

#[test]
fn passphrase_is_checked() {
    let f = fixtures();
    let wrong = PassphraseSource::Value {
        origin: "test".into(),
        value: "not the passphrase".to_string().into(),
    };
    let e = SigningKey::load(&armored(&f.main), &wrong).unwrap_err();
    assert!(matches!(e, KeyError::WrongPassphrase { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("wrong passphrase") && e.contains(&f.main.fingerprint),
        "{e}"
    );
    assert!(!e.contains("not the passphrase"), "{e}");
    assert_no_secret(&e, &f.main);

    let e = SigningKey::load(&armored(&f.main), &PassphraseSource::None).unwrap_err();
    assert!(matches!(e, KeyError::PassphraseRequired { .. }), "{e}");
    assert!(e.to_string().contains("--passphrase-file"), "{e}");
}

fn refused(k: &GpgKey, expect: &str) {
    let e = load(k).expect_err("must be refused").to_string();
    assert!(e.contains(expect), "expected {expect:?} in: {e}");
    assert!(e.contains(&k.fingerprint), "names the key: {e}");
    assert_no_secret(&e, k);
}

#[test]
fn rsa2048_key_is_refused() {
    refused(
        &fixtures().rsa2048,
        "is RSA-2048; at least RSA-3072 is required",
    );
}

#[test]
fn sha1_self_signature_is_refused() {
    refused(&fixtures().sha1, "uses the weak digest SHA1");
}

#[test]
fn expired_key_is_refused() {
    refused(&fixtures().expired, "the key expired on 2020-12-31");
}

#[test]
fn revoked_key_is_refused() {
    refused(&fixtures().revoked, "is revoked");
}

#[test]
fn key_that_cannot_sign_is_refused() {
    refused(&fixtures().cert_only, "cannot sign");
}

#[test]
fn garbage_and_public_keys_are_refused_without_echoing_them() {
    let f = fixtures();
    // A secret key with one base64 character changed in its body.
    let mut lines: Vec<String> = f.main.armored_secret.lines().map(String::from).collect();
    let i = lines.len() / 2;
    let mut l = lines[i].clone().into_bytes();
    l[5] = if l[5] == b'A' { b'B' } else { b'A' };
    lines[i] = String::from_utf8(l).unwrap();
    let broken = GpgKey {
        fingerprint: String::new(),
        armored_secret: lines.join("\n"),
        passphrase: Some(PASS),
    };
    let e = load(&broken).expect_err("corrupt key refused").to_string();
    assert!(e.starts_with("test: "), "{e}");
    assert_no_secret(&e, &f.main);
    assert_no_secret(&e, &broken);

    let public = GpgKey {
        fingerprint: String::new(),
        armored_secret: main_key().public_key_armored().unwrap(),
        passphrase: None,
    };
    let e = load(&public).expect_err("public key refused").to_string();
    assert!(e.contains("this is a public key"), "{e}");

    // OBS_SIGNING_KEY set to a path by mistake: told what the variable holds, value not echoed.
    let env = |n: &str| (n == ENV_KEY).then(|| "/secret/path/key.asc".to_string());
    let e = SigningKey::resolve_with_env(&KeyRequest::default(), env)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("OBS_SIGNING_KEY: ") && e.contains("--signing-key FILE"),
        "{e}"
    );
    assert!(!e.contains("/secret/path"), "{e}");
}

#[test]
fn resolve_reads_the_environment_and_release_refuses_the_dev_key() {
    let f = fixtures();
    let env = |name: &str| match name {
        n if n == ENV_KEY => Some(f.main.armored_secret.clone()),
        n if n == ENV_PASSPHRASE => Some(PASS.to_string()),
        _ => None,
    };
    let key = SigningKey::resolve_with_env(
        &KeyRequest {
            release: true,
            ..Default::default()
        },
        env,
    )
    .unwrap();
    assert_eq!(key.fingerprint(), f.main.fingerprint);
    assert_eq!(key.origin(), ENV_KEY);
    assert!(!key.is_development());

    let none = |_: &str| None;
    let e = SigningKey::resolve_with_env(
        &KeyRequest {
            release: true,
            ..Default::default()
        },
        none,
    )
    .unwrap_err();
    assert!(matches!(e, KeyError::ReleaseNeedsKey), "{e}");
    assert!(e.to_string().contains("--signing-key"), "{e}");

    let key = SigningKey::resolve_with_env(
        &KeyRequest {
            dev_key_dir: Some(dev_dir().to_path_buf()),
            ..Default::default()
        },
        none,
    )
    .unwrap();
    assert!(key.is_development());
    assert_eq!(key.fingerprint(), dev_key().fingerprint());

    // Debug of sources and keys: no secret.
    let src = KeySource::from_cli_or(None, env).unwrap();
    let pass = PassphraseSource::from_cli_or(None, env);
    let dbg = format!(
        "{src:?} {pass:?} {:?} {:?}",
        main_key(),
        main_key().rpm_signer().unwrap()
    );
    assert_no_secret(&dbg, &f.main);
    assert!(dbg.contains(&f.main.fingerprint), "{dbg}");
}

fn build_signed_rpm(key: &SigningKey, dir: &Path) -> PathBuf {
    let signer = key.rpm_signer().unwrap();
    let pkg = rpm::PackageBuilder::new("sigtest", "1.0", "Apache-2.0", "noarch", "signing test")
        .description("a tiny package to check the header signature")
        .with_file_contents(
            "hello\n",
            rpm::FileOptions::new("/usr/share/sigtest/hello").permissions(0o644),
        )
        .unwrap()
        .build_and_sign(signer)
        .unwrap();
    let path = dir.join("sigtest-1.0-1.noarch.rpm");
    let mut f = fs::File::create(&path).unwrap();
    pkg.write(&mut f).unwrap();
    f.flush().unwrap();
    path
}

fn check_rpm(key: &SigningKey, name: &str) {
    let dir = scratch(name);
    let db = dir.join("rpmdb");
    fs::create_dir_all(&db).unwrap();
    let asc = dir.join("pub.asc");
    fs::write(&asc, key.public_key_armored().unwrap()).unwrap();
    let rpmfile = build_signed_rpm(key, &dir);

    // Before the key is imported: the signature is there but the key is unknown.
    let (ok, text) = run(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(&db)
        .args(["--checksig", "-v"])
        .arg(&rpmfile));
    assert!(!ok, "unknown key must not pass: {text}");
    assert!(text.contains("NOKEY"), "{text}");

    let (ok, text) = run(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(&db)
        .arg("--import")
        .arg(&asc));
    assert!(ok, "rpmkeys --import: {text}");
    let (ok, text) = run(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(&db)
        .args(["--checksig", "-v"])
        .arg(&rpmfile));
    assert!(ok, "rpmkeys --checksig: {text}");
    let fpr = key.signing_fingerprint().to_lowercase();
    let key_id = &fpr[fpr.len() - 8..];
    assert!(
        text.lines()
            .any(|l| l.contains("Header V4 RSA/SHA256 Signature, key ID")
                && l.contains(key_id)
                && l.trim_end().ends_with("OK")),
        "{text}"
    );

    // One byte of the payload changed: refused.
    let mut bytes = fs::read(&rpmfile).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0xff;
    let bad = dir.join("tampered.rpm");
    fs::write(&bad, bytes).unwrap();
    let (ok, text) = run(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(&db)
        .args(["--checksig", "-v"])
        .arg(&bad));
    assert!(!ok, "tampered rpm passed: {text}");
}

#[test]
fn rpm_header_signature_verifies_with_rpmkeys_gpg_key_with_passphrase() {
    check_rpm(main_key(), "signing-rpm-gpg");
}

#[test]
fn rpm_header_signature_verifies_with_rpmkeys_dev_key() {
    check_rpm(dev_key(), "signing-rpm-dev");
}

#[test]
fn rpm_header_signature_uses_the_signing_subkey() {
    let key = load(&fixtures().with_subkey).unwrap();
    check_rpm(&key, "signing-rpm-subkey");
}
