//! debsigs origin signatures, judged by the real `debsig-verify` (policies and keyrings in a
//! temporary directory via --policies-dir/--keyrings-dir; /etc is never touched), plus
//! dpkg-deb, lintian, gpgv and the apt index reader on the signed packages.
//!
//! debsig-verify exit codes (debsig-verify(1)): 0 verified, 10 no origin signature, 11 no
//! policy directory for the signature's key, 12 no policy selected, 13 verification failed.

#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/gpg.rs"]
mod gpg;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gpg::GpgKey;
use xtask::package::{Arch, Compression, Layout, Package, Written};
use xtask::render::Templates;
use xtask::signer::Signer;
use xtask::signing::{KeySource, PassphraseSource, SigningKey};
use zeroize::Zeroizing;

const SDE: u64 = 1_700_000_000;
/// A signature time later than any test key's creation (2033).
const LATE: u64 = 2_000_000_000;

fn output(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn must(cmd: &mut Command) -> String {
    let (code, text) = output(cmd);
    assert_eq!(code, Some(0), "{cmd:?} failed:\n{text}");
    text
}

/// A node_exporter package with /usr/bin/true as its binary.
fn package(work: &Path) -> Package {
    fixture::package("node_exporter", work, &Layout::DEB, SDE)
}

fn write(pkg: &Package, out: &Path, signer: Option<&dyn Signer>) -> Written {
    std::fs::create_dir_all(out).unwrap();
    xtask::deb::write_deb_signed(
        pkg,
        &Templates::load(None).unwrap(),
        out,
        Compression::Xz,
        signer,
    )
    .unwrap()
}

struct Keys {
    /// Signs with its primary key (gpg --quick-gen-key … sign).
    main: GpgKey,
    /// Another key, never trusted by the policies of `main`.
    other: GpgKey,
    /// A certify-only primary with a signing subkey.
    with_subkey: GpgKey,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let with_subkey = GpgKey::generate_with_signing_subkey("debsig subkey <sub@test.invalid>");
        Keys {
            main: GpgKey::generate("debsig main <main@test.invalid>"),
            other: GpgKey::generate("debsig other <other@test.invalid>"),
            with_subkey,
        }
    })
}

/// The pipeline's own key type, loaded from a gpg-exported secret key, with a fixed
/// signature time.
fn signing_key(k: &GpgKey, time: u64) -> SigningKey {
    let text = String::from_utf8(k.export_secret_armored()).unwrap();
    SigningKey::load(
        &KeySource::Armored {
            origin: "test".into(),
            text: Zeroizing::new(text),
        },
        &PassphraseSource::None,
    )
    .unwrap()
    .with_signature_time(Some(time))
}

/// A temporary "root" with the policy and keyring of `signer` installed.
fn install_policy(dir: &Path, signer: &dyn Signer) -> xtask::debsig::DebsigFiles {
    xtask::debsig::write_debsig_policy(dir, signer).unwrap()
}

fn debsig_verify(root: &Path, deb: &Path) -> (Option<i32>, String) {
    output(
        Command::new("debsig-verify")
            .arg("--verbose")
            .arg("--policies-dir")
            .arg(root.join("policies"))
            .arg("--keyrings-dir")
            .arg(root.join("keyrings"))
            .arg(deb),
    )
}

/// (name, offset of the data, size) of each ar member.
fn ar_members(deb: &Path) -> Vec<(String, usize, usize)> {
    let bytes = std::fs::read(deb).unwrap();
    assert!(bytes.starts_with(b"!<arch>\n"));
    let mut pos = 8;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let h = &bytes[pos..pos + 60];
        let name = String::from_utf8_lossy(&h[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: usize = String::from_utf8_lossy(&h[48..58]).trim().parse().unwrap();
        out.push((name, pos + 60, size));
        pos += 60 + size + (size % 2);
    }
    out
}

fn member<'a>(bytes: &'a [u8], m: &(String, usize, usize)) -> &'a [u8] {
    &bytes[m.1..m.1 + m.2]
}

#[test]
fn debsig_verify_accepts_our_signed_deb_and_refuses_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let pkg = package(work.path());
    let k = keys();
    let key = signing_key(&k.main, SDE);
    let root = work.path().join("debsig");
    let files = install_policy(&root, &key);
    assert_eq!(files.key_id, &key.fingerprint()[24..]);
    assert_eq!(
        files.policy,
        root.join(format!("policies/{}/observability-stack.pol", files.key_id))
    );
    assert_eq!(
        files.keyring,
        root.join(format!("keyrings/{}/pubring.gpg", files.key_id))
    );

    // Signed by our key, with the pipeline's SigningKey: verified.
    let signed = write(&pkg, &work.path().join("signed"), Some(&key));
    let names: Vec<String> = ar_members(&signed.path).into_iter().map(|m| m.0).collect();
    assert_eq!(
        names,
        [
            "debian-binary",
            "control.tar.xz",
            "data.tar.xz",
            "_gpgorigin"
        ]
    );
    let (code, text) = debsig_verify(&root, &signed.path);
    assert_eq!(code, Some(0), "debsig-verify refused our package:\n{text}");
    assert!(text.contains("Verified package from"), "{text}");

    // The same key held by gpg signs through the streaming trait method: verified too.
    let by_gpg = write(&pkg, &work.path().join("by-gpg"), Some(&k.main));
    let (code, text) = debsig_verify(&root, &by_gpg.path);
    assert_eq!(
        code,
        Some(0),
        "debsig-verify refused the gpg-signed package:\n{text}"
    );

    // One byte of data.tar changed: the signature no longer verifies (13).
    let mut bytes = std::fs::read(&signed.path).unwrap();
    let data = ar_members(&signed.path)
        .into_iter()
        .find(|m| m.0 == "data.tar.xz")
        .unwrap();
    bytes[data.1 + data.2 / 2] ^= 0x01;
    let tampered = work.path().join("tampered.deb");
    std::fs::write(&tampered, &bytes).unwrap();
    let (code, text) = debsig_verify(&root, &tampered);
    assert_eq!(code, Some(13), "tampered data.tar:\n{text}");

    // One byte of control.tar changed: refused too.
    let mut bytes = std::fs::read(&signed.path).unwrap();
    let control = ar_members(&signed.path)
        .into_iter()
        .find(|m| m.0 == "control.tar.xz")
        .unwrap();
    bytes[control.1 + control.2 / 2] ^= 0x80;
    std::fs::write(&tampered, &bytes).unwrap();
    let (code, text) = debsig_verify(&root, &tampered);
    assert_eq!(code, Some(13), "tampered control.tar:\n{text}");

    // Signed by another key: no policy for that key (11).
    let foreign = write(&pkg, &work.path().join("foreign"), Some(&k.other));
    let (code, text) = debsig_verify(&root, &foreign.path);
    assert_eq!(code, Some(11), "package signed by another key:\n{text}");

    // Another key's signature moved into a package that names our key's policy: a policy
    // directory named after the other key but holding our policy and keyring (an admin's
    // mistake, or an attacker guessing the layout) still refuses it.
    let other_id = &k.other.fpr[24..];
    let confused = work.path().join("confused");
    for sub in ["policies", "keyrings"] {
        let from = root.join(sub).join(&files.key_id);
        let to = confused.join(sub).join(other_id);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    let (code, text) = debsig_verify(&confused, &foreign.path);
    assert!(
        code == Some(12),
        "other key under our policy (selection fails): {code:?}\n{text}"
    );

    // Unsigned: no origin signature (10).
    let unsigned = write(&pkg, &work.path().join("unsigned"), None);
    assert_eq!(ar_members(&unsigned.path).len(), 3);
    let (code, text) = debsig_verify(&root, &unsigned.path);
    assert_eq!(code, Some(10), "unsigned package:\n{text}");

    // The signature of one package put into another (ar replaces the member in place):
    // refused.
    let mut other_pkg = pkg.clone();
    other_pkg.revision += 1;
    let second = write(&other_pkg, &work.path().join("second"), Some(&key));
    let bytes = std::fs::read(&signed.path).unwrap();
    let sig = ar_members(&signed.path).pop().unwrap();
    assert_eq!(sig.0, "_gpgorigin");
    let dir = work.path().join("swap");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("_gpgorigin"), member(&bytes, &sig)).unwrap();
    let swapped = work.path().join("swapped.deb");
    std::fs::copy(&second.path, &swapped).unwrap();
    must(
        Command::new("ar")
            .arg("r")
            .arg(&swapped)
            .arg("_gpgorigin")
            .current_dir(&dir),
    );
    let m = ar_members(&swapped);
    assert_eq!(m.last().unwrap().0, "_gpgorigin");
    assert_eq!(m.len(), 4);
    let (code, text) = debsig_verify(&root, &swapped);
    assert_eq!(code, Some(13), "signature of another package:\n{text}");
}

#[test]
fn signed_deb_is_still_a_clean_deb_and_indexes() {
    let work = tempfile::tempdir().unwrap();
    let pkg = package(work.path());
    let key = signing_key(&keys().main, SDE);
    let signed = write(&pkg, &work.path().join("signed"), Some(&key));

    let info = must(Command::new("dpkg-deb").arg("-I").arg(&signed.path));
    assert!(info.contains("Package: node-exporter"), "{info}");
    must(Command::new("dpkg-deb").arg("-c").arg(&signed.path));
    let x = work.path().join("x");
    must(Command::new("dpkg-deb").arg("-x").arg(&signed.path).arg(&x));
    let overrides =
        std::fs::read_to_string(x.join("usr/share/lintian/overrides/node-exporter")).unwrap();
    assert!(
        overrides.contains("misplaced-extra-member-in-deb _gpgorigin"),
        "{overrides}"
    );

    let lintian = |extra: &[&str]| {
        output(
            Command::new("lintian")
                .args([
                    "--fail-on",
                    "error,warning",
                    "--tag-display-limit",
                    "0",
                    "--info",
                ])
                .args(extra)
                .arg(&signed.path),
        )
    };
    let (code, text) = lintian(&[]);
    println!("lintian:\n{text}");
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        code == Some(0) && bad.is_empty(),
        "lintian exit {code:?}:\n{text}"
    );
    assert!(!text.contains("unused-override"), "{text}");
    // The override is what silences the member (lintian does see it), and nothing else is
    // overridden for it. (--show-overrides makes overridden errors count for --fail-on.)
    let (_, text) = lintian(&["--show-overrides"]);
    let member_tags: Vec<&str> = text.lines().filter(|l| l.contains("_gpgorigin")).collect();
    assert_eq!(
        member_tags,
        ["O: node-exporter: misplaced-extra-member-in-deb _gpgorigin (unexpected _member at position 3)"],
        "{text}"
    );

    // The unsigned package carries no such override (lintian would call it unused).
    let unsigned = write(&pkg, &work.path().join("unsigned"), None);
    let ux = work.path().join("ux");
    must(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&unsigned.path)
            .arg(&ux),
    );
    let u_overrides =
        std::fs::read_to_string(ux.join("usr/share/lintian/overrides/node-exporter")).unwrap();
    assert!(
        !u_overrides.contains("misplaced-extra-member"),
        "{u_overrides}"
    );

    // The apt index reader takes it, and its digest is of the whole signed file.
    let d = xtask::apt_repo::read_deb(&signed.path).unwrap();
    assert_eq!(d.package, "node-exporter");
    assert_eq!(d.sha256, signed.sha256);
    assert_eq!(d.size, signed.size);

    // gpgv checks the origin signature over debian-binary + control.tar + data.tar, which
    // is what debsigs signs.
    let bytes = std::fs::read(&signed.path).unwrap();
    let m = ar_members(&signed.path);
    let mut concat = Vec::new();
    for x in &m[..3] {
        concat.extend_from_slice(member(&bytes, x));
    }
    let sig = work.path().join("origin.asc");
    std::fs::write(&sig, member(&bytes, &m[3])).unwrap();
    assert!(member(&bytes, &m[3]).starts_with(b"-----BEGIN PGP SIGNATURE-----"));
    let data = work.path().join("members");
    std::fs::write(&data, &concat).unwrap();
    let ring = keys().main.write_keyring(&work.path().join("ring.gpg"));
    must(
        Command::new("gpgv")
            .arg("--keyring")
            .arg(&ring)
            .arg(&sig)
            .arg(&data),
    );
}

#[test]
fn signed_output_is_deterministic_apart_from_the_signature_time() {
    let work = tempfile::tempdir().unwrap();
    let pkg = package(work.path());
    let k = &keys().main;
    let a = write(
        &pkg,
        &work.path().join("a"),
        Some(&signing_key(k, LATE - 60)),
    );
    let b = write(
        &pkg,
        &work.path().join("b/deeper"),
        Some(&signing_key(k, LATE - 60)),
    );
    assert_eq!(
        a.sha256, b.sha256,
        "same key, same time: identical packages"
    );
    assert_eq!(
        std::fs::read(&a.path).unwrap(),
        std::fs::read(&b.path).unwrap()
    );
    // (Signature times before the key's creation are raised to it: use later ones.)
    let later = write(&pkg, &work.path().join("c"), Some(&signing_key(k, LATE)));
    assert_ne!(
        a.sha256, later.sha256,
        "the signature time is in the signature"
    );
    let (ab, lb) = (
        std::fs::read(&a.path).unwrap(),
        std::fs::read(&later.path).unwrap(),
    );
    let (am, lm) = (ar_members(&a.path), ar_members(&later.path));
    for i in 0..3 {
        assert_eq!(am[i].0, lm[i].0);
        assert_eq!(
            member(&ab, &am[i]),
            member(&lb, &lm[i]),
            "{}: only the signature may differ",
            am[i].0
        );
    }
    assert_ne!(member(&ab, &am[3]), member(&lb, &lm[3]));
    // Nothing but the package is left in the output directory.
    let names: Vec<_> = std::fs::read_dir(work.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, std::slice::from_ref(&a.file_name));
}

#[test]
fn policy_and_keyring_are_what_debsig_verify_reads() {
    let work = tempfile::tempdir().unwrap();
    let key = signing_key(&keys().main, SDE);
    let files = install_policy(&work.path().join("d"), &key);
    let xml = std::fs::read_to_string(&files.policy).unwrap();
    let id = &key.fingerprint()[24..];
    assert!(
        xml.contains(&format!(r#"<Origin Name="observability-stack" id="{id}""#)),
        "{xml}"
    );
    assert_eq!(
        xml.matches(&format!(
            r#"<Required Type="origin" File="pubring.gpg" id="{id}"/>"#
        ))
        .count(),
        2,
        "{xml}"
    );
    // The keyring is the binary public key gpg reads.
    let listed = must(
        Command::new("gpg")
            .args(["--batch", "--with-colons", "--show-keys"])
            .arg(&files.keyring),
    );
    assert!(listed.contains(&key.fingerprint()), "{listed}");
    assert!(!listed.lines().any(|l| l.starts_with("sec")), "{listed}");
    // Written twice, the same bytes (no time, no host in either file).
    let again = install_policy(&work.path().join("e"), &key);
    assert_eq!(
        std::fs::read(&files.policy).unwrap(),
        std::fs::read(&again.policy).unwrap()
    );
    assert_eq!(
        std::fs::read(&files.keyring).unwrap(),
        std::fs::read(&again.keyring).unwrap()
    );
}

/// debsig-verify 0.28 only accepts origin signatures made by a primary key (see the
/// `debsig` module documentation). A key that signs with a subkey still makes a correct
/// signature (gpgv accepts it) and the policy is filed under the subkey's ID, where
/// debsig-verify looks; if a later debsig-verify accepts it, this test says so and the
/// limitation note must go.
#[test]
fn signing_subkey_limitation_is_as_documented() {
    let work = tempfile::tempdir().unwrap();
    let pkg = package(work.path());
    let k = &keys().with_subkey;
    let key = signing_key(k, SDE);
    assert_ne!(key.signing_fingerprint(), key.fingerprint());
    let root = work.path().join("debsig");
    let files = install_policy(&root, &key);
    assert_eq!(files.key_id, &key.signing_fingerprint()[24..]);
    let signed = write(&pkg, &work.path().join("signed"), Some(&key));
    let (code, text) = debsig_verify(&root, &signed.path);
    // Found the policy directory (not 11), but no policy is selected.
    assert_eq!(code, Some(12), "subkey signature:\n{text}");
    assert!(
        text.contains(&format!("policies/{}", files.key_id)),
        "{text}"
    );
}

/// A generation assembled by `dist` carries `keys/debsig/` (policy and keyring of its key),
/// which, installed as an admin would, makes debsig-verify accept the generation's .deb; the
/// tree still verifies.
/// Assemble a generation in `gen` from one .deb of `pkg` signed (origin) by `deb_signer`,
/// the repositories signed by `key`; returns the .deb's path in the generation.
fn generation(gen: &Path, pkg: &Package, deb_signer: &dyn Signer, key: &SigningKey) -> PathBuf {
    let w = write(
        pkg,
        &gen.join(xtask::dist::BUILD_DIR).join("deb"),
        Some(deb_signer),
    );
    let mut built = vec![xtask::dist::Built {
        component: "node_exporter".into(),
        package: pkg.name.clone(),
        format: xtask::package::Format::Deb,
        version: format!("{}-{}", pkg.version, pkg.revision),
        arch: Arch::Amd64,
        file: format!("deb/{}", w.file_name),
        size: w.size,
        sha256: w.sha256.clone(),
    }];
    let opts = xtask::dist::RepoOptions {
        apt: xtask::apt_repo::AptSettings {
            date: SDE,
            ..Default::default()
        },
        dnf: xtask::dnf_repo::Settings::new(SDE),
        client_name: "observability-stack".into(),
        base_url: format!("file://{}", gen.display()),
    };
    xtask::dist::assemble_repositories(gen, &mut built, &opts, key, &[], None).unwrap();
    assert!(built[0].file.starts_with("apt/pool/"), "{}", built[0].file);
    gen.join(&built[0].file)
}

/// A generation assembled by `dist` carries `keys/debsig/` (policy and keyring of its key),
/// which, installed as an admin would, makes debsig-verify accept the generation's .deb; the
/// tree verifies, and `verify` checks the origin signatures too.
#[test]
fn a_generation_ships_the_policy_that_accepts_its_debs() {
    let work = tempfile::tempdir().unwrap();
    let pkg = package(work.path());
    let key = signing_key(&keys().main, SDE);
    let gen = work.path().join("gen");
    let deb = generation(&gen, &pkg, &key, &key);
    let id = &key.fingerprint()[24..];
    let debsig = gen.join(xtask::dist::DEBSIG_DIR);
    assert_eq!(debsig, gen.join("keys/debsig"));
    assert!(debsig
        .join(format!("policies/{id}/observability-stack.pol"))
        .is_file());
    assert!(debsig.join(format!("keyrings/{id}/pubring.gpg")).is_file());
    let (code, text) = debsig_verify(&debsig, &deb);
    assert_eq!(code, Some(0), "{text}");

    let trusted =
        xtask::verify::TrustedKeys::from_armored(&key.public_key_armored().unwrap()).unwrap();
    let report = xtask::verify::verify_tree(&gen, &trusted).unwrap();
    assert!(report.ok(), "{:?}", report.failures);

    // A .deb whose origin signature is by a key the verifier does not trust, in an otherwise
    // correctly signed and indexed tree: exactly that is reported.
    let gen2 = work.path().join("gen2");
    let deb2 = generation(&gen2, &pkg, &keys().other, &key);
    let report = xtask::verify::verify_tree(&gen2, &trusted).unwrap();
    let rel = deb2.strip_prefix(&gen2).unwrap().display().to_string();
    assert_eq!(
        report.failures,
        [format!(
            "{rel}: debsigs origin signature: no trusted key made this signature"
        )],
    );
    // The generation's own policy refuses it as well (no policy for the other key).
    let (code, text) = debsig_verify(&gen2.join(xtask::dist::DEBSIG_DIR), &deb2);
    assert_eq!(code, Some(11), "{text}");
}
