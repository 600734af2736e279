//! `cargo xtask dist` as a whole, driving the real binary against a `file:` mirror of generated
//! release archives (around /usr/bin/true, amd64 only: no arm64 ELF is available here, so the
//! arm64 pins are removed from a temporary copy of components/): signing keys on the command
//! line and in the environment, publishing of generations, kill -9 at arbitrary points,
//! concurrent runs, `xtask verify` on good and tampered trees, `index --merge`, and no-op
//! runs (nothing changed: nothing published; anything changed or tampered: a new generation).
//!
//! Outputs are judged by the real tools (gpgv, rpmkeys) and by `xtask verify`, whose every
//! failure line is compared exactly with what the tampering must produce.

#[path = "support/clients.rs"]
mod clients;
#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/distfx.rs"]
mod distfx;
#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/gpg.rs"]
mod gpg;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use distfx::{listing, COMPONENTS};
use sha2::{Digest, Sha256};

const SDE: &str = "1700000000";
const PASS: &str = "dist test passphrase";

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn sha256_file(p: &Path) -> String {
    sha256(&std::fs::read(p).unwrap())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ------------------------------------------------------------------------------------------
// keys

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home).args([
        "--batch",
        "--no-tty",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        PASS,
    ]);
    c
}

fn must(c: &mut Command) -> Vec<u8> {
    let o = c.stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "{c:?}: {}", text(&o.stderr));
    o.stdout
}

/// A gpg-made signing key: the armored secret export (passphrase-protected), the public key
/// armored and as a binary keyring, and its fingerprint.
struct Key {
    fpr: String,
    secret: String,
    public_asc: PathBuf,
    public_gpg: PathBuf,
}

fn make_key(dir: &Path, uid: &str) -> Key {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let home = dir.join("gnupg");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    must(gpg(&home).args(["--quick-gen-key", uid, "rsa3072", "sign", "never"]));
    let colons = text(&must(
        gpg(&home).args(["--with-colons", "--list-secret-keys"]),
    ));
    let fpr = colons
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .unwrap()
        .to_string();
    let secret = text(&must(gpg(&home).args([
        "--armor",
        "--export-secret-keys",
        &fpr,
    ])));
    assert!(secret.contains("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
    let public_asc = dir.join("public.asc");
    std::fs::write(
        &public_asc,
        must(gpg(&home).args(["--armor", "--export", &fpr])),
    )
    .unwrap();
    let public_gpg = dir.join("public.gpg");
    std::fs::write(&public_gpg, must(gpg(&home).args(["--export", &fpr]))).unwrap();
    // The agent is not needed past this point (the tests use the exported files), and these
    // keys live in a static: it would outlive the test binary.
    must(
        Command::new("gpgconf")
            .env("GNUPGHOME", &home)
            .args(["--kill", "gpg-agent"]),
    );
    Key {
        fpr,
        secret,
        public_asc,
        public_gpg,
    }
}

/// Keys shared by the tests of this process (RSA key generation is slow).
struct Keys {
    main: Key,
    other: Key,
    /// A development key directory made by the pipeline's own generator, copied into each
    /// fixture's XDG_DATA_HOME so that only one test pays for RSA-4096 generation.
    dev_dir: PathBuf,
    _dir: tempfile::TempDir,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("xtask-dist-keys-")
            .tempdir()
            .unwrap();
        let main = make_key(
            &dir.path().join("main"),
            "dist test key <main@example.invalid>",
        );
        let other = make_key(
            &dir.path().join("other"),
            "another key <other@example.invalid>",
        );
        let dev_dir = dir.path().join("dev/observability-stack");
        xtask::signing::SigningKey::dev_key(&dev_dir).unwrap();
        Keys {
            main,
            other,
            dev_dir,
            _dir: dir,
        }
    })
}

/// Lines of an armored secret key that must never be printed (its base64 body).
fn secret_lines(armored: &str) -> Vec<String> {
    armored
        .lines()
        .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
        .map(str::to_string)
        .collect()
}

fn assert_no_secret(o: &Output, armored: &str) {
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    for l in secret_lines(armored) {
        assert!(!all.contains(&l), "secret key material printed: {l}");
    }
    assert!(!all.contains(PASS), "the passphrase was printed");
}

// ------------------------------------------------------------------------------------------
// fixture

struct Fx {
    dir: tempfile::TempDir,
    components: PathBuf,
    mirror: PathBuf,
    cache: PathBuf,
    out: PathBuf,
    xdg_data: PathBuf,
}

impl Fx {
    /// A components/ copy pinned (amd64 only) to archives in a `file:` mirror, an empty
    /// cache, an absent OUT, and XDG_DATA_HOME holding the shared development key (unless
    /// `fresh_dev_key`: then empty, and the binary generates one).
    fn new(fresh_dev_key: bool) -> Fx {
        let dir = tempfile::Builder::new()
            .prefix("xtask-dist-")
            .tempdir()
            .unwrap();
        let (components, mirror) = distfx::pinned_components(dir.path());
        let xdg_data = dir.path().join("xdg-data");
        if !fresh_dev_key {
            let to = xdg_data.join("observability-stack");
            std::fs::create_dir_all(&to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o700)).unwrap();
            let from = keys().dev_dir.join(xtask::signing::DEV_KEY_FILE);
            std::fs::copy(&from, to.join(xtask::signing::DEV_KEY_FILE)).unwrap();
        }
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        Fx {
            out: dir.path().join("out"),
            dir,
            components,
            mirror,
            cache,
            xdg_data,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn dev_key_file(&self) -> PathBuf {
        self.xdg_data
            .join("observability-stack")
            .join(xtask::signing::DEV_KEY_FILE)
    }

    fn dev_public(&self) -> PathBuf {
        self.xdg_data
            .join("observability-stack/dev-signing-key.pub.asc")
    }

    /// Set every component's package revision (so successive runs make different indexes).
    fn set_revision(&self, n: u32) {
        for (comp, _) in COMPONENTS {
            let f = self.components.join(format!("{comp}.toml"));
            let t: String = std::fs::read_to_string(&f)
                .unwrap()
                .lines()
                .map(|l| {
                    if l.starts_with("revision = ") {
                        format!("revision = {n}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            std::fs::write(&f, t).unwrap();
        }
    }

    /// The binary with a controlled environment (no key or passphrase from the caller's).
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args)
            .env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", &self.xdg_data)
            .env("XDG_CACHE_HOME", self.path("xdg-cache"))
            .env("SOURCE_DATE_EPOCH", SDE)
            .env("XTASK_LOG", "warn")
            .env_remove(xtask::signing::ENV_KEY)
            .env_remove(xtask::signing::ENV_PASSPHRASE)
            .stdin(Stdio::null());
        c
    }

    fn dist_args(&self, out: &Path) -> Vec<String> {
        vec![
            "dist".into(),
            "--components".into(),
            self.components.display().to_string(),
            "--cache".into(),
            self.cache.display().to_string(),
            "--mirror".into(),
            format!("file://{}", self.mirror.display()),
            "--out".into(),
            out.display().to_string(),
            // The same URL for every output directory, so that runs into different
            // directories can be compared byte for byte (client files included).
            "--base-url".into(),
            "https://repo.example.org/obs".into(),
        ]
    }

    fn dist(&self, extra: &[&str]) -> Command {
        let mut a = self.dist_args(&self.out);
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.cmd(&a)
    }

    /// A dist run that must succeed (development key); returns its output.
    fn dist_ok(&self) -> Output {
        let o = self.dist(&[]).output().unwrap();
        assert!(o.status.success(), "dist failed:\n{}", text(&o.stderr));
        o
    }

    /// `xtask verify DIR --key KEY`.
    fn verify(&self, dir: &Path, key: &Path) -> Output {
        self.cmd(&[
            "verify",
            &dir.display().to_string(),
            "--key",
            &key.display().to_string(),
        ])
        .output()
        .unwrap()
    }

    fn verify_ok(&self, dir: &Path, key: &Path) -> String {
        let o = self.verify(dir, key);
        let out = text(&o.stdout);
        assert!(
            o.status.success(),
            "verify {} failed:\n{out}{}",
            dir.display(),
            text(&o.stderr)
        );
        assert!(out.starts_with("OK "), "{out}");
        out
    }

    fn current(&self) -> String {
        std::fs::read_link(self.out.join("current"))
            .unwrap()
            .display()
            .to_string()
    }

    fn generations(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.out.join("generations"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<u32>().is_ok())
            .collect();
        v.sort();
        v
    }

    fn gen(&self, n: u32) -> PathBuf {
        self.out.join(format!("generations/{n:04}"))
    }
}

/// Files (relative paths) of every `by-hash/SHA*` directory below `root`.
fn by_hash_files(root: &Path) -> BTreeSet<String> {
    listing(&root.join("apt/dists"))
        .into_keys()
        .filter(|k| k.contains("/by-hash/") && !k.ends_with('/'))
        .collect()
}

/// Files of dnf's repodata, repomd.xml and its signature excluded.
fn repodata_files(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("dnf/repodata"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("repomd.xml"))
        .collect()
}

/// The by-hash names and repodata files a generation's own indexes reference.
fn own_index_files(root: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut bh = BTreeSet::new();
    let suite = root.join("apt/dists/stable");
    let release = std::fs::read_to_string(suite.join("Release")).unwrap();
    let mut algo = "";
    for l in release.lines() {
        if l == "SHA256:" || l == "SHA512:" {
            algo = l.trim_end_matches(':');
        } else if let Some(rest) = l.strip_prefix(' ') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let dir = Path::new(f[2]).parent().unwrap();
            bh.insert(format!("stable/{}/by-hash/{algo}/{}", dir.display(), f[0]));
        } else {
            algo = "";
        }
    }
    let repomd = std::fs::read_to_string(root.join("dnf/repodata/repomd.xml")).unwrap();
    let rd = repomd
        .split("<location href=\"repodata/")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect();
    (bh, rd)
}

fn files_with_ext(root: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = listing(root)
        .into_keys()
        .filter(|k| k.ends_with(ext))
        .map(|k| root.join(k))
        .collect();
    v.sort();
    v
}

// ------------------------------------------------------------------------------------------
// 1. keys on the command line

#[test]
fn signing_keys_on_the_command_line_and_in_the_environment() {
    let k = keys();
    let fx = Fx::new(true);

    // The arm64 pins are gone from the copy: `check` lists it, `dist` notes it.
    let o = fx
        .cmd(&[
            "check",
            "--components",
            &fx.components.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    for (comp, _) in COMPONENTS {
        let want = format!(
            "  {comp} arm64: no sha256 pin in {}: not built",
            fx.components.join(format!("{comp}.toml")).display()
        );
        assert!(text(&o.stdout).contains(&want), "{}", text(&o.stdout));
    }

    // --release without a key: refused before anything is fetched or written.
    let o = fx.dist(&["--release"]).output().unwrap();
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("error: --release needs a real signing key"),
        "{err}"
    );
    assert!(!fx.out.exists(), "OUT was created by a refused run");
    assert!(listing(&fx.cache).is_empty(), "the cache changed: {err}");
    assert!(!fx.xdg_data.exists(), "a development key was made: {err}");

    // A key file readable by others: refused, naming the file and its mode.
    let loose = fx.path("loose.asc");
    std::fs::write(&loose, &k.main.secret).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = fx
        .dist(&["--signing-key", &loose.display().to_string()])
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!(
            "error: {}: signing key file has mode 0644, which grants access to group or others; \
             run `chmod 600 {}`",
            loose.display(),
            loose.display()
        )),
        "{err}"
    );
    assert!(!fx.out.exists());
    assert!(listing(&fx.cache).is_empty());
    assert_no_secret(&o, &k.main.secret);

    // A good key file with a passphrase file: output signed by that key.
    let keyfile = fx.path("key.asc");
    let passfile = fx.path("pass");
    for (p, t) in [(&keyfile, k.main.secret.as_str()), (&passfile, PASS)] {
        std::fs::write(p, t).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let o = fx
        .dist(&[
            "--signing-key",
            &keyfile.display().to_string(),
            "--passphrase-file",
            &passfile.display().to_string(),
            "--release",
        ])
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("DEVELOPMENT KEY"), "{err}");
    assert!(err.contains(&format!("signed by {}", k.main.fpr)), "{err}");
    for (comp, _) in COMPONENTS {
        assert!(
            err.contains(&format!(
                "note: {comp} arm64: no sha256 pin in {}: not built",
                fx.components.join(format!("{comp}.toml")).display()
            )),
            "{err}"
        );
    }
    assert_no_secret(&o, &k.main.secret);
    assert!(!fx.xdg_data.exists(), "a development key was made: {err}");
    assert_signed_by(&fx, &fx.gen(1), &k.main);

    // The key text in OBS_SIGNING_KEY, the passphrase in OBS_SIGNING_PASSPHRASE. (The same
    // key and inputs as generation 1: without --no-build-cache this run would have nothing
    // to do; with it, every package is signed again with the key from the environment.)
    let o = fx
        .dist(&["--json", "--no-build-cache"])
        .env(xtask::signing::ENV_KEY, &k.main.secret)
        .env(xtask::signing::ENV_PASSPHRASE, PASS)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("DEVELOPMENT KEY"), "{err}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["signing_key"], k.main.fpr.as_str());
    assert_eq!(j["development_key"], false);
    assert_eq!(j["packages"].as_array().unwrap().len(), 4);
    assert_no_secret(&o, &k.main.secret);
    assert_signed_by(&fx, &fx.gen(2), &k.main);

    // A wrong passphrase: refused, nothing published.
    let o = fx
        .dist(&[])
        .env(xtask::signing::ENV_KEY, &k.main.secret)
        .env(xtask::signing::ENV_PASSPHRASE, "not it")
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!(
            "error: {}: key {}: wrong passphrase",
            xtask::signing::ENV_KEY,
            k.main.fpr
        )),
        "{err}"
    );
    assert_no_secret(&o, &k.main.secret);
    assert_eq!(fx.generations(), ["0001", "0002"]);

    // No key: a development key is generated, every run says so loudly, also the second
    // one, which has nothing to do (the same key and inputs) and publishes nothing.
    for run in 0..2 {
        let o = fx.dist_ok();
        let err = text(&o.stderr);
        assert!(err.contains(xtask::signing::DEV_KEY_WARNING), "{err}");
        assert!(err.contains("DEVELOPMENT KEY, NOT FOR PRODUCTION"), "{err}");
        assert_eq!(
            err.contains("nothing changed: generation 0003"),
            run == 1,
            "{err}"
        );
        let dev = std::fs::read_to_string(fx.dev_key_file()).unwrap();
        assert_no_secret(&o, &dev);
    }
    assert_eq!(fx.generations(), ["0001", "0002", "0003"]);
    let mode = std::fs::metadata(fx.dev_key_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(fx.dev_public().is_file());
    // The development key signed generation 3; the gpg key does not verify it.
    fx.verify_ok(&fx.gen(3), &fx.dev_public());
    assert!(!fx.verify(&fx.gen(3), &k.main.public_asc).status.success());
    // Verify with no --key trusts the local development key, and says so.
    let o = fx
        .cmd(&["verify", &fx.out.display().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("also trusting the local DEVELOPMENT key"),
        "{}",
        text(&o.stderr)
    );
}

/// gpgv (InRelease, Release.gpg), rpmkeys (every rpm) and `xtask verify` accept `gen` as
/// signed by `key`.
fn assert_signed_by(fx: &Fx, gen: &Path, key: &Key) {
    let suite = gen.join("apt/dists/stable");
    let o = Command::new("gpgv")
        .args(["--status-fd", "1", "--keyring"])
        .arg(&key.public_gpg)
        .arg(suite.join("InRelease"))
        .output()
        .unwrap();
    let status = text(&o.stdout);
    assert!(o.status.success(), "gpgv InRelease: {}", text(&o.stderr));
    let validsig = status
        .lines()
        .find(|l| l.starts_with("[GNUPG:] VALIDSIG "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(validsig.ends_with(&format!(" {}", key.fpr)), "{validsig}");
    let o = Command::new("gpgv")
        .arg("--keyring")
        .arg(&key.public_gpg)
        .arg(suite.join("Release.gpg"))
        .arg(suite.join("Release"))
        .output()
        .unwrap();
    assert!(o.status.success(), "gpgv Release.gpg: {}", text(&o.stderr));

    let db = tempfile::tempdir().unwrap();
    let o = Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(db.path())
        .arg("--import")
        .arg(&key.public_asc)
        .output()
        .unwrap();
    assert!(o.status.success(), "rpmkeys --import: {}", text(&o.stderr));
    let rpms = files_with_ext(&gen.join("dnf"), ".rpm");
    assert_eq!(rpms.len(), 2, "{rpms:?}");
    let keyid = key.fpr[key.fpr.len() - 8..].to_lowercase();
    for r in rpms {
        let o = Command::new("rpmkeys")
            .arg("--dbpath")
            .arg(db.path())
            .arg("--checksig")
            .arg("-v")
            .arg(&r)
            .output()
            .unwrap();
        let t = text(&o.stdout);
        assert!(
            o.status.success(),
            "rpmkeys --checksig {}: {t}",
            r.display()
        );
        assert!(
            t.contains(&format!(
                "Header V4 RSA/SHA256 Signature, key ID {keyid}: OK"
            )),
            "{t}"
        );
        assert!(!t.contains("NOKEY") && !t.contains("BAD"), "{t}");
    }
    let out = fx.verify_ok(gen, &key.public_asc);
    assert!(out.contains(&format!("against {}", key.fpr)), "{out}");
}

// ------------------------------------------------------------------------------------------
// 2. publishing

#[test]
fn successive_runs_publish_generations_and_keep_three_previous_indexes() {
    let fx = Fx::new(false);
    let dev = fx.dev_public();
    let mut own: BTreeMap<u32, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for n in 1..=5u32 {
        // A revision bump: every index of the new generation differs from the last one's.
        fx.set_revision(n);
        let o = fx.dist_ok();
        let err = text(&o.stderr);
        assert!(
            err.contains(&format!(
                "4 package(s) in {}/current (generation {n:04}), signed by ",
                fx.out.canonicalize().unwrap().display()
            )),
            "{err}"
        );
        assert_eq!(fx.current(), format!("generations/{n:04}"));
        let expect: Vec<String> = (n.saturating_sub(3).max(1)..=n)
            .map(|g| format!("{g:04}"))
            .collect();
        assert_eq!(fx.generations(), expect, "after run {n}");
        own.insert(n, own_index_files(&fx.gen(n)));
        // By-hash files and repodata of this and the previous three generations, no others.
        let (mut bh, mut rd) = (BTreeSet::new(), BTreeSet::new());
        for g in n.saturating_sub(3).max(1)..=n {
            bh.extend(own[&g].0.iter().cloned());
            rd.extend(own[&g].1.iter().cloned());
        }
        assert_eq!(by_hash_files(&fx.gen(n)), bh, "by-hash of generation {n}");
        assert_eq!(repodata_files(&fx.gen(n)), rd, "repodata of generation {n}");
        fx.verify_ok(&fx.out, &dev);
        if n == 2 {
            let p = "apt/dists/stable/main/binary-amd64/Packages";
            assert_ne!(
                sha256_file(&fx.gen(1).join(p)),
                sha256_file(&fx.gen(2).join(p)),
                "the revision bump must change Packages"
            );
            // Generation 1's by-hash files and repodata are in generation 2, byte for byte.
            let (l1, l2) = (listing(&fx.gen(1)), listing(&fx.gen(2)));
            let carried: Vec<&String> = l1
                .keys()
                .filter(|k| k.contains("/by-hash/") || k.starts_with("dnf/repodata/"))
                .filter(|k| !k.ends_with('/') && !k.contains("repomd.xml"))
                .collect();
            assert!(carried.len() >= 8 + 3, "{carried:?}");
            for k in carried {
                assert_eq!(l2.get(k), Some(&l1[k]), "{k} of generation 1 not in 2");
            }
            assert_ne!(own[&1].1, own[&2].1, "repodata must differ between runs");
        }
    }
}

/// A previous generation is not trusted for what is carried over: a by-hash file or repodata
/// file whose bytes no longer have the digest its index names stays behind, with a warning,
/// and the new generation still verifies.
#[test]
fn tampered_index_files_of_a_previous_generation_are_not_carried_over() {
    let fx = Fx::new(false);
    let dev = fx.dev_public();
    fx.set_revision(1);
    fx.dist_ok();
    let (bh, rd) = own_index_files(&fx.gen(1));
    // The by-hash copies of `Packages`, which the revision bump changes (a by-hash file whose
    // content generation 2 has as well, like the per-architecture `Release`, is generation
    // 2's own and never carried), and one repodata file (all of them change).
    use sha2::Digest;
    let dir = "stable/main/binary-amd64";
    let packages = std::fs::read(fx.gen(1).join("apt/dists").join(dir).join("Packages")).unwrap();
    let by_hash = |algo: &str, hex: String| -> String {
        let n = format!("{dir}/by-hash/{algo}/{hex}");
        assert!(bh.contains(&n), "{n} not named by generation 1's Release");
        format!("apt/dists/{n}")
    };
    let tampered = [
        by_hash("SHA256", hex::encode(sha2::Sha256::digest(&packages))),
        by_hash("SHA512", hex::encode(sha2::Sha512::digest(&packages))),
        format!("dnf/repodata/{}", rd.iter().next().unwrap()),
    ];
    for t in &tampered {
        replace_file(&fx.gen(1).join(t), b"not what the index names");
    }
    fx.set_revision(2);
    let o = fx.dist_ok();
    let err = text(&o.stderr);
    for t in &tampered {
        assert!(
            [fx.gen(1).canonicalize().unwrap(), fx.gen(1)]
                .iter()
                .any(|g| err.contains(&format!(
                    "warning: not carrying over {}: its sha256 is ",
                    g.join(t).display()
                ))),
            "{t}: {err}"
        );
        assert!(
            fx.gen(2).join(t).symlink_metadata().is_err(),
            "{t} was carried over"
        );
    }
    // The rest of generation 1's own index files came along.
    let carried = by_hash_files(&fx.gen(2));
    let kept = bh
        .iter()
        .filter(|n| !tampered.iter().any(|t| t.ends_with(*n)));
    for n in kept {
        assert!(carried.contains(n), "{n} not carried over");
    }
    fx.verify_ok(&fx.out, &dev);

    // An index edited together with a file it is made to name (both unsigned): the index is
    // not the one the generation's signed SHA256SUMS lists, so it names nothing.
    let repodata = fx.gen(2).join("dnf/repodata");
    let planted = "planted-primary.xml.gz";
    std::fs::write(repodata.join(planted), b"planted").unwrap();
    let repomd = std::fs::read_to_string(repodata.join("repomd.xml")).unwrap();
    let entry = format!(
        "  <data type=\"extra\">\n    <checksum type=\"sha256\">{}</checksum>\n    \
         <location href=\"repodata/{planted}\"/>\n  </data>\n</repomd>",
        sha256_file(&repodata.join(planted))
    );
    replace_file(
        &repodata.join("repomd.xml"),
        repomd.replace("</repomd>", &entry).as_bytes(),
    );
    let (_, gen2_rd) = own_index_files(&fx.gen(2));
    fx.set_revision(3);
    let err = text(&fx.dist_ok().stderr);
    assert!(
        err.contains("dnf/repodata/repomd.xml names: it is not the file its SHA256SUMS lists"),
        "{err}"
    );
    let rd3 = repodata_files(&fx.gen(3));
    assert!(!rd3.contains(planted), "{rd3:?}");
    for f in gen2_rd.iter().filter(|f| *f != planted) {
        assert!(
            !rd3.contains(f),
            "{f} carried from an index that is not signed"
        );
    }
    fx.verify_ok(&fx.out, &dev);
}

// ------------------------------------------------------------------------------------------
// 3. atomicity

fn staging_dirs(out: &Path) -> Vec<String> {
    std::fs::read_dir(out.join("generations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn a_run_killed_at_any_point_leaves_the_previous_generation_published() {
    let fx = Fx::new(false);
    let dev = fx.dev_public();
    fx.dist_ok();
    // How long a run takes here (kill points are spread over it).
    fx.set_revision(2);
    let t0 = Instant::now();
    fx.dist_ok();
    let full = t0.elapsed();
    let mut published = 2u32;
    let mut killed_with_staging = 0;
    let mut killed = 0;
    const POINTS: u32 = 12;
    for i in 0..POINTS {
        fx.set_revision(3 + i);
        let before = fx.current();
        let mut child = fx
            .dist(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full * i / (POINTS - 2));
        if let Some(st) = child.try_wait().unwrap() {
            // Finished before the kill point: it published the next generation.
            assert!(st.success(), "run {i} failed on its own");
            published = fx.generations().last().unwrap().parse().unwrap();
            assert_eq!(fx.current(), format!("generations/{published:04}"));
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
            killed += 1;
            let now = fx.current();
            if now != before {
                // Killed after the switch (pruning): the new generation is complete.
                published = fx.generations().last().unwrap().parse().unwrap();
                assert_eq!(now, format!("generations/{published:04}"));
            } else {
                assert_eq!(now, format!("generations/{published:04}"), "kill {i}");
            }
            if !staging_dirs(&fx.out).is_empty() {
                killed_with_staging += 1;
            }
        }
        // The published tree, and every numbered generation a later run builds on, verify.
        fx.verify_ok(&fx.out, &dev);
        for g in fx.generations() {
            fx.verify_ok(&fx.out.join("generations").join(g), &dev);
        }
    }
    assert!(
        killed >= 3,
        "only {killed} run(s) were killed before finishing"
    );
    assert!(
        killed_with_staging >= 1,
        "no kill left a staging directory behind: the kill points missed the build"
    );
    // The next normal run cleans what the killed ones left and publishes.
    fx.set_revision(100);
    fx.dist_ok();
    assert_eq!(staging_dirs(&fx.out), Vec::<String>::new());
    let last = fx.generations().last().unwrap().clone();
    assert_eq!(fx.current(), format!("generations/{last}"));
    assert!(!fx.out.join(".current.new").exists());
    fx.verify_ok(&fx.out, &dev);
}

// ------------------------------------------------------------------------------------------
// 4. concurrency

#[test]
fn concurrent_runs_wait_for_each_other_and_both_publish() {
    let k = keys();
    let fx = Fx::new(false);
    let keyfile = fx.path("key.asc");
    std::fs::write(&keyfile, &k.main.secret).unwrap();
    std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The passphrase-protected key makes each run hold the lock for a while (every signature
    // unlocks it), so the second run reliably finds it taken. Both runs have the same inputs:
    // --no-build-cache makes the second build and publish too (without it, it would find
    // nothing changed once it has the lock; the no-op tests below check that).
    let spawn = || {
        fx.dist(&[
            "--signing-key",
            &keyfile.display().to_string(),
            "--no-build-cache",
        ])
        .env(xtask::signing::ENV_PASSPHRASE, PASS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let waiting = format!(
        "waiting: another run is writing {} (lock {})",
        fx.out.display(),
        fx.out.join(".lock").display()
    );
    let mut waited = 0;
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", text(&o.stderr));
        if text(&o.stderr).contains(&waiting) {
            waited += 1;
        }
    }
    assert_eq!(
        waited,
        1,
        "exactly one run waits:\n{}\n----\n{}",
        text(&a.stderr),
        text(&b.stderr)
    );
    assert_eq!(fx.generations(), ["0001", "0002"]);
    assert_eq!(fx.current(), "generations/0002");
    for g in [1, 2] {
        fx.verify_ok(&fx.gen(g), &k.main.public_asc);
    }
    // The second built on the first (it read the generations after taking the lock).
    assert!(by_hash_files(&fx.gen(1)).is_subset(&by_hash_files(&fx.gen(2))));
}

// ------------------------------------------------------------------------------------------
// 5. verify

/// Put `bytes` in place of the file `p` as a new file (renamed over it): one file of the tree
/// is tampered with, also where the index writer made other names hard links of it (the
/// by-hash copies of `Packages`), which keep the published bytes.
fn replace_file(p: &Path, bytes: &[u8]) {
    let t = p.with_file_name(".tampered");
    std::fs::write(&t, bytes).unwrap();
    std::fs::rename(&t, p).unwrap();
}

/// Flip the lowest bit of the byte in the middle of a file.
fn flip_middle(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let i = b.len() / 2;
    b[i] ^= 1;
    replace_file(p, &b);
}

/// Replace the first `from` in a text file by `to`.
fn edit(p: &Path, from: &str, to: &str) {
    let t = std::fs::read_to_string(p).unwrap();
    assert!(t.contains(from), "{}: no {from:?}", p.display());
    replace_file(p, t.replacen(from, to, 1).as_bytes());
}

fn sha512_file(p: &Path) -> String {
    hex::encode(sha2::Sha512::digest(std::fs::read(p).unwrap()))
}

/// `cp -a` (the copy a mirror would receive).
fn cp_a(from: &Path, to: &Path) {
    let o = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn verify_detects_each_tampering_precisely() {
    let k = keys();
    let fx = Fx::new(false);
    let dev = fx.dev_public();
    fx.dist_ok();
    let gen = fx.gen(1);
    let fpr = text(&must(
        Command::new("gpg")
            .args(["--with-colons", "--show-keys"])
            .arg(&dev),
    ))
    .lines()
    .find(|l| l.starts_with("fpr:"))
    .and_then(|l| l.split(':').nth(9))
    .unwrap()
    .to_string();

    // A good tree: the output directory (its current generation) and a copy of it elsewhere.
    let out = fx.verify_ok(&fx.out, &dev);
    let root = fx.out.join("generations/0001");
    assert!(
        out.starts_with(&format!("OK {}: ", root.display())),
        "{out}"
    );
    assert!(
        out.ends_with(&format!(" files checked against {fpr}\n")),
        "{out}"
    );
    let elsewhere = fx.path("mirror-copy");
    cp_a(&gen, &elsewhere);
    let out = fx.verify_ok(&elsewhere, &dev);
    assert!(
        out.starts_with(&format!("OK {}: ", elsewhere.display())),
        "{out}"
    );

    // Same inputs and SOURCE_DATE_EPOCH: the same bytes, signatures and client files included.
    let other_out = fx.path("out-again");
    // (In another second of the wall clock, so that a signature dated "now" would differ.)
    std::thread::sleep(Duration::from_millis(1100));
    let a = fx.dist_args(&other_out);
    let o = fx
        .cmd(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(listing(&gen), listing(&other_out.join("generations/0001")));

    let l = listing(&gen);
    let find = |pred: &dyn Fn(&str) -> bool| -> String {
        let v: Vec<&String> = l.keys().filter(|k| pred(k)).collect();
        assert!(!v.is_empty(), "no such file in the generation");
        v[0].clone()
    };
    let deb = find(&|k| k.starts_with("apt/pool/") && k.ends_with(".deb"));
    let rpm = find(&|k| k.starts_with("dnf/") && k.ends_with(".rpm"));
    let packages = "apt/dists/stable/main/binary-amd64/Packages".to_string();
    let primary = find(&|k| k.ends_with("-primary.xml.gz"));
    let by_hash_packages = format!(
        "apt/dists/stable/main/binary-amd64/by-hash/SHA256/{}",
        l[&packages]
    );
    assert!(l.contains_key(&by_hash_packages));
    let sums_line = std::fs::read_to_string(gen.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let (sums_hash, sums_file) = sums_line.split_once("  ").unwrap();
    let sums_hash = sums_hash.to_string();
    let sums_file = sums_file.to_string();
    let bad_sum = format!(
        "{}{}",
        if sums_hash.starts_with('0') { '1' } else { '0' },
        &sums_hash[1..]
    );
    let nokey = "no trusted key made this signature";

    type Tamper = Box<dyn Fn(&Path)>;
    type Expect = Box<dyn Fn(&Path) -> Vec<String>>;
    let cases: Vec<(&str, Tamper, Expect)> = vec![
        (
            "deb",
            Box::new({
                let deb = deb.clone();
                move |r: &Path| flip_middle(&r.join(&deb))
            }),
            Box::new({
                let (deb, packages) = (deb.clone(), packages.clone());
                let l = l.clone();
                let gen = gen.clone();
                move |r: &Path| {
                    vec![
                        format!(
                            "{deb}: SHA256 {} but {packages} says {}",
                            sha256_file(&r.join(&deb)),
                            l[&deb]
                        ),
                        format!(
                            "{deb}: SHA512 {} but {packages} says {}",
                            sha512_file(&r.join(&deb)),
                            sha512_file(&gen.join(&deb))
                        ),
                        format!(
                            "{deb}: sha256 {} but SHA256SUMS says {}",
                            sha256_file(&r.join(&deb)),
                            l[&deb]
                        ),
                        // The origin signature covers the changed member too.
                        format!("{deb}: debsigs origin signature: {nokey}"),
                    ]
                }
            }),
        ),
        (
            "Packages",
            Box::new({
                let packages = packages.clone();
                move |r: &Path| edit(&r.join(&packages), "Prometheus", "Prometheuz")
            }),
            Box::new({
                let packages = packages.clone();
                let gen = gen.clone();
                move |r: &Path| {
                    vec![
                        format!(
                            "{packages}: SHA256 {} but Release says {}",
                            sha256_file(&r.join(&packages)),
                            sha256_file(&gen.join(&packages))
                        ),
                        format!(
                            "{packages}: SHA512 {} but Release says {}",
                            sha512_file(&r.join(&packages)),
                            sha512_file(&gen.join(&packages))
                        ),
                    ]
                }
            }),
        ),
        (
            "Release",
            Box::new(|r: &Path| {
                edit(
                    &r.join("apt/dists/stable/Release"),
                    "Label: observability-stack",
                    "Label: observability-stacK",
                )
            }),
            Box::new(move |_: &Path| {
                vec![
                    "apt/dists/stable/InRelease: signed text differs from apt/dists/stable/Release"
                        .to_string(),
                    format!(
                        "apt/dists/stable/Release.gpg: signature over Release does not verify: \
                         {nokey}"
                    ),
                ]
            }),
        ),
        (
            "InRelease",
            Box::new(|r: &Path| {
                edit(
                    &r.join("apt/dists/stable/InRelease"),
                    "Label: observability-stack",
                    "Label: observability-stacK",
                )
            }),
            Box::new(move |_: &Path| {
                vec![
                    format!("apt/dists/stable/InRelease: signature does not verify: {nokey}"),
                    "apt/dists/stable/InRelease: signed text differs from apt/dists/stable/Release"
                        .to_string(),
                ]
            }),
        ),
        (
            "by-hash",
            Box::new({
                let bh = by_hash_packages.clone();
                move |r: &Path| edit(&r.join(&bh), "Prometheus", "Prometheuz")
            }),
            Box::new({
                let bh = by_hash_packages.clone();
                move |r: &Path| {
                    vec![format!(
                        "{bh}: content has SHA256 {}",
                        sha256_file(&r.join(&bh))
                    )]
                }
            }),
        ),
        (
            "repomd.xml",
            Box::new(|r: &Path| {
                edit(
                    &r.join("dnf/repodata/repomd.xml"),
                    "<revision>1700000000</revision>",
                    "<revision>1700000001</revision>",
                )
            }),
            Box::new(move |_: &Path| {
                vec![format!(
                    "dnf/repodata/repomd.xml.asc: signature over repomd.xml does not verify: \
                     {nokey}"
                )]
            }),
        ),
        (
            "primary.xml.gz",
            Box::new({
                let primary = primary.clone();
                move |r: &Path| flip_middle(&r.join(&primary))
            }),
            Box::new({
                let primary = primary.clone();
                let l = l.clone();
                move |r: &Path| {
                    vec![format!(
                        "{primary}: sha256 {} but repomd.xml says {}",
                        sha256_file(&r.join(&primary)),
                        l[&primary]
                    )]
                }
            }),
        ),
        (
            "rpm",
            Box::new({
                let rpm = rpm.clone();
                move |r: &Path| flip_middle(&r.join(&rpm))
            }),
            Box::new({
                let rpm = rpm.clone();
                let l = l.clone();
                let primary = primary.clone();
                move |r: &Path| {
                    let got = sha256_file(&r.join(&rpm));
                    vec![
                        format!("{rpm}: sha256 {got} but {primary} says {}", l[&rpm]),
                        format!("{rpm}: sha256 {got} but SHA256SUMS says {}", l[&rpm]),
                    ]
                }
            }),
        ),
        (
            "SHA256SUMS",
            Box::new({
                let (h, b) = (sums_hash.clone(), bad_sum.clone());
                move |r: &Path| edit(&r.join("SHA256SUMS"), &h, &b)
            }),
            Box::new({
                let (h, b, f) = (sums_hash.clone(), bad_sum.clone(), sums_file.clone());
                move |_: &Path| vec![format!("{f}: sha256 {h} but SHA256SUMS says {b}")]
            }),
        ),
        (
            ".repo",
            Box::new(|r: &Path| {
                edit(
                    &r.join("observability-stack.repo"),
                    "repo_gpgcheck=1",
                    "repo_gpgcheck=0",
                )
            }),
            Box::new(|_: &Path| Vec::new()),
        ),
        (
            "extra",
            Box::new(|r: &Path| std::fs::write(r.join("keys/another.asc"), "planted").unwrap()),
            Box::new(|_: &Path| vec!["keys/another.asc: not listed in SHA256SUMS".to_string()]),
        ),
    ];
    for (name, tamper, expect) in cases {
        let copy = fx.path(&format!("tampered-{name}"));
        cp_a(&gen, &copy);
        tamper(&copy);
        let o = fx.verify(&copy, &dev);
        let stdout = text(&o.stdout);
        assert!(!o.status.success(), "{name}: verify passed:\n{stdout}");
        let mut got: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("FAIL ").map(str::to_string))
            .collect();
        let mut want = expect(&copy);
        // A package's SBOM and provenance state its digest: both report the changed package.
        if name == "deb" || name == "rpm" {
            let f = if name == "deb" { &deb } else { &rpm };
            let base = f.rsplit('/').next().unwrap();
            for doc in [
                format!("sbom/{base}.spdx.json"),
                format!("provenance/{base}.intoto.json"),
            ] {
                want.push(format!(
                    "{doc}: names {base} with sha256 {}, but {f} has sha256 {}",
                    l[f],
                    sha256_file(&copy.join(f))
                ));
            }
        }
        // SHA256SUMS names every file: the tampered one is reported against it too.
        if name == "SHA256SUMS" {
            want.push(format!(
                "SHA256SUMS.asc: signature over SHA256SUMS does not verify: {nokey}"
            ));
        } else if name != "extra" {
            let f = match name {
                "deb" => deb.clone(),
                "rpm" => rpm.clone(),
                "Packages" => packages.clone(),
                "Release" => "apt/dists/stable/Release".into(),
                "InRelease" => "apt/dists/stable/InRelease".into(),
                "by-hash" => by_hash_packages.clone(),
                "repomd.xml" => "dnf/repodata/repomd.xml".into(),
                "primary.xml.gz" => primary.clone(),
                ".repo" => "observability-stack.repo".into(),
                other => panic!("no file for case {other}"),
            };
            let line = format!(
                "{f}: sha256 {} but SHA256SUMS says {}",
                sha256_file(&copy.join(&f)),
                l[&f]
            );
            if !want.contains(&line) {
                want.push(line);
            }
        }
        got.sort();
        want.sort();
        assert_eq!(got, want, "{name}: failures\n{stdout}");
        assert!(
            text(&o.stderr).contains(&format!(
                "error: {}: {} problem(s) found (",
                copy.display(),
                want.len()
            )),
            "{name}: {}",
            text(&o.stderr)
        );
    }

    // Another key: every signature fails, nothing else.
    let o = fx.verify(&gen, &k.other.public_asc);
    let stdout = text(&o.stdout);
    assert!(!o.status.success(), "{stdout}");
    let got: BTreeSet<&str> = stdout.lines().collect();
    let mut want: BTreeSet<String> = [
        format!("FAIL apt/dists/stable/InRelease: signature does not verify: {nokey}"),
        format!(
            "FAIL apt/dists/stable/Release.gpg: signature over Release does not verify: {nokey}"
        ),
        format!(
            "FAIL dnf/repodata/repomd.xml.asc: signature over repomd.xml does not verify: {nokey}"
        ),
        format!("FAIL SHA256SUMS.asc: signature over SHA256SUMS does not verify: {nokey}"),
    ]
    .into_iter()
    .collect();
    let debs: Vec<&String> = l.keys().filter(|k| k.ends_with(".deb")).collect();
    assert_eq!(debs.len(), 2);
    for line in &got {
        if debs
            .iter()
            .any(|d| line.starts_with(&format!("FAIL {d}: debsigs origin signature")))
        {
            want.insert(line.to_string());
        }
    }
    let rpms: Vec<&String> = l.keys().filter(|k| k.ends_with(".rpm")).collect();
    assert_eq!(rpms.len(), 2);
    for line in &got {
        if let Some(rest) = rpms
            .iter()
            .find_map(|r| line.strip_prefix(&format!("FAIL {r}: header signature: ")))
        {
            assert!(!rest.is_empty());
            want.insert(line.to_string());
        }
    }
    assert_eq!(
        want.len(),
        8,
        "both rpm header and both deb origin signatures fail:\n{stdout}"
    );
    // … and every package's SBOM and provenance signature.
    for p in debs.iter().chain(rpms.iter()) {
        let base = p.rsplit('/').next().unwrap();
        for doc in [
            format!("sbom/{base}.spdx.json"),
            format!("provenance/{base}.intoto.json"),
        ] {
            want.insert(format!(
                "FAIL {doc}.asc: signature does not verify: {nokey}"
            ));
        }
    }
    assert_eq!(got, want.iter().map(String::as_str).collect(), "{stdout}");
}

// ------------------------------------------------------------------------------------------
// index --merge

/// The (package, format) → file of a generation's manifest.json.
fn manifest_files(gen: &Path) -> BTreeMap<(String, String), String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gen.join("manifest.json")).unwrap()).unwrap();
    v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                (
                    p["package"].as_str().unwrap().to_string(),
                    p["format"].as_str().unwrap().to_string(),
                ),
                p["file"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Shards built one component each (and one of them twice, identical) merge into one signed
/// generation that `verify`, apt and dnf accept, holding every shard's packages byte for byte;
/// a shard whose package has the same name, version and arch but other bytes is refused with
/// both shards named, and the merged output is left as it was.
#[test]
fn index_merge_builds_one_repository_from_shards() {
    let fx = Fx::new(false);
    let shard = |comp: &str, dir: &str, extra: &[&str]| -> PathBuf {
        let out = fx.path(dir);
        let mut a = fx.dist_args(&out);
        a.extend(["--component".to_string(), comp.to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = fx.cmd(&a).output().unwrap();
        assert!(o.status.success(), "dist {comp}:\n{}", text(&o.stderr));
        out
    };
    let a = shard("node_exporter", "shard-node", &[]);
    let b = shard("mysqld_exporter", "shard-mysqld", &[]);
    let b2 = shard("mysqld_exporter", "shard-mysqld-again", &[]);
    let merged = fx.path("merged");
    let merge = |shards: &[&Path]| -> Output {
        let mut args: Vec<String> = vec!["index".into(), "--merge".into()];
        args.extend(shards.iter().map(|p| p.display().to_string()));
        args.extend([
            "--out".into(),
            merged.display().to_string(),
            "--base-url".into(),
            format!("file://{}/current", merged.display()),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fx.cmd(&args).output().unwrap()
    };
    let o = merge(&[&a, &b, &b2]);
    assert!(o.status.success(), "index --merge:\n{}", text(&o.stderr));
    fx.verify_ok(&merged, &fx.dev_public());
    let cur = merged.join("current");
    let files = manifest_files(&cur);
    let names: BTreeSet<&str> = files.keys().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "mysqld-exporter",
            "mysqld_exporter",
            "node-exporter",
            "node_exporter"
        ])
    );
    // Every package keeps its shard's SBOM and provenance, byte for byte, signed again by the
    // merge's key (verify_ok above checked those signatures and digests).
    for (shard_dir, rel) in [
        (&a, "sbom"),
        (&a, "provenance"),
        (&b, "sbom"),
        (&b, "provenance"),
    ] {
        let theirs = shard_dir.join("current").join(rel);
        let mut n = 0;
        for e in std::fs::read_dir(&theirs).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if name.ends_with(".asc") {
                continue;
            }
            let ours = cur.join(rel).join(&name);
            assert_eq!(
                std::fs::read(e.path()).unwrap(),
                std::fs::read(&ours).unwrap_or_else(|e| panic!("{}: {e}", ours.display())),
                "{rel}/{name} changed in the merge"
            );
            assert!(cur.join(rel).join(format!("{name}.asc")).is_file());
            n += 1;
        }
        assert!(
            n >= 2,
            "{}: expected the shard's {rel} documents",
            theirs.display()
        );
    }
    // Every package is the shard's own bytes.
    for (shard_dir, pkgs) in [
        (&a, ["node-exporter", "node_exporter"]),
        (&b, ["mysqld-exporter", "mysqld_exporter"]),
    ] {
        let sc = shard_dir.join("current");
        let theirs = manifest_files(&sc);
        for p in pkgs {
            for fmt in ["deb", "rpm"] {
                let Some(f) = theirs.get(&(p.to_string(), fmt.to_string())) else {
                    continue;
                };
                let ours = &files[&(p.to_string(), fmt.to_string())];
                assert_eq!(
                    sha256_file(&sc.join(f)),
                    sha256_file(&cur.join(ours)),
                    "{p} {fmt}"
                );
            }
        }
    }

    // apt with the shipped .sources (Signed-By our keyring), over file:.
    let sources = std::fs::read_to_string(cur.join("observability-stack.sources")).unwrap();
    assert!(
        sources.contains(&format!("URIs: file://{}/apt", cur.display())),
        "{sources}"
    );
    let sources: String = sources
        .lines()
        .map(|l| {
            if l.starts_with("Signed-By:") {
                format!(
                    "Signed-By: {}\n",
                    cur.join("keys/observability-stack.gpg").display()
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let apt = clients::Apt::new(&sources);
    apt.update_ok();
    for p in ["node-exporter", "mysqld-exporter"] {
        let (ok, out) = apt.get(&["download", p]);
        assert!(ok, "apt-get download {p}:\n{out}");
        let f = &files[&(p.to_string(), "deb".to_string())];
        let name = f.rsplit('/').next().unwrap();
        assert_eq!(
            apt.downloaded(name),
            std::fs::read(cur.join(f)).unwrap(),
            "{p}"
        );
    }
    // dnf with the shipped .repo file (gpgcheck and repo_gpgcheck on): both packages resolve
    // and download, signatures checked.
    let dnf = clients::Dnf::new();
    std::fs::copy(
        cur.join("observability-stack.repo"),
        dnf.t.path().join("repos.d/observability-stack.repo"),
    )
    .unwrap();
    let (ok, out) = cmd::run(dnf.cmd().arg("makecache"));
    assert!(ok, "dnf makecache:\n{out}");
    let dl = fx.path("dnf-download");
    let (ok, out) = cmd::run(
        dnf.cmd_plugins(true)
            .args(["download", "--destdir"])
            .arg(&dl)
            .args(["node_exporter.x86_64", "mysqld_exporter.x86_64"]),
    );
    assert!(ok, "dnf download:\n{out}");
    for p in ["node_exporter", "mysqld_exporter"] {
        let f = &files[&(p.to_string(), "rpm".to_string())];
        let name = f.rsplit('/').next().unwrap();
        assert_eq!(
            std::fs::read(dl.join(name)).unwrap(),
            std::fs::read(cur.join(f)).unwrap()
        );
    }

    // Same name, version and arch, other bytes (another maintainer): refused, naming both.
    let c = shard(
        "mysqld_exporter",
        "shard-mysqld-other",
        &["--maintainer", "Someone Else <else@example.org>"],
    );
    let before = listing(&merged);
    let o = merge(&[&a, &b, &c]);
    assert!(!o.status.success(), "a conflicting shard was merged");
    let err = text(&o.stderr);
    assert!(
        err.contains(&b.display().to_string()) && err.contains(&c.display().to_string()),
        "{err}"
    );
    assert!(err.contains("differs between shard"), "{err}");
    assert_eq!(listing(&merged), before, "the merged output changed");
}

// ------------------------------------------------------------------------------------------
// no-op rebuilds

const NOTHING_CHANGED: &str = "nothing changed: generation";

/// A `dist` run with `extra` arguments that must succeed: (stdout, stderr).
fn dist_run(fx: &Fx, extra: &[&str]) -> (String, String) {
    let o = fx.dist(extra).output().unwrap();
    assert!(
        o.status.success(),
        "dist {extra:?} failed:\n{}",
        text(&o.stderr)
    );
    (text(&o.stdout), text(&o.stderr))
}

/// `OUT/.inputs`: (generation, fingerprint), checking the file's exact form and mode.
fn recorded_inputs(out: &Path) -> (String, String) {
    let p = out.join(".inputs");
    let t = std::fs::read_to_string(&p).unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o644, "{}", p.display());
    let (g, f) = t
        .strip_prefix("generation ")
        .and_then(|r| r.strip_suffix('\n'))
        .and_then(|r| r.split_once("\nfingerprint "))
        .unwrap_or_else(|| panic!("{}: {t:?}", p.display()));
    assert!(
        f.len() == 64 && f.bytes().all(|b| b.is_ascii_hexdigit()),
        "{t:?}"
    );
    (g.to_string(), f.to_string())
}

/// The same inputs again: nothing fetched, built or published (with the download and build
/// caches moved away, where either would fail), and the same report, table and JSON.
/// Anything else publishes a new generation that verifies: one file of `current` replaced, a
/// changed repository option, `--no-build-cache`, a record of the inputs that is garbage or
/// names another generation, and an `index --merge` into the directory.
#[test]
fn an_unchanged_dist_publishes_nothing_and_anything_else_publishes_again() {
    let fx = Fx::new(false);
    let dev = fx.dev_public();
    let gens_dir = fx.out.join("generations");
    let (first, err) = dist_run(&fx, &["--json"]);
    assert!(!err.contains(NOTHING_CHANGED), "{err}");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let packages = first["packages"].as_array().unwrap().clone();
    assert_eq!(packages.len(), 4, "{first}");
    let (g, fingerprint) = recorded_inputs(&fx.out);
    assert_eq!(g, "0001");
    let before = listing(&gens_dir);

    let away = fx.path("cache-away");
    std::fs::rename(&fx.cache, &away).unwrap();
    let (again, err) = dist_run(&fx, &["--json"]);
    assert!(
        err.contains(
            "nothing changed: generation 0001 has the same inputs and verifies; 4 package(s), \
             0 built, nothing published"
        ),
        "{err}"
    );
    assert!(!err.contains("build cache"), "{err}");
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again, first, "the no-op run reports what the first one did");
    let (table, err) = dist_run(&fx, &[]);
    assert!(err.contains(NOTHING_CHANGED), "{err}");
    assert!(
        err.contains(&format!(
            "4 package(s) in {}/current (generation 0001), signed by ",
            fx.out.canonicalize().unwrap().display()
        )),
        "{err}"
    );
    assert!(err.contains("DEVELOPMENT KEY, NOT FOR PRODUCTION"), "{err}");
    for p in &packages {
        let (name, sha) = (
            p["package"].as_str().unwrap(),
            p["sha256"].as_str().unwrap(),
        );
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.ends_with(sha)),
            "{name} {sha} not in the table:\n{table}"
        );
    }
    assert!(!fx.cache.exists(), "the no-op runs touched the cache");
    assert_eq!(fx.generations(), ["0001"]);
    assert_eq!(fx.current(), "generations/0001");
    assert_eq!(
        listing(&gens_dir),
        before,
        "the no-op runs changed a generation"
    );
    assert_eq!(recorded_inputs(&fx.out), (g, fingerprint.clone()));
    std::fs::rename(&away, &fx.cache).unwrap();

    // One file of the current generation replaced: the next run names it and publishes.
    let deb = packages
        .iter()
        .find(|p| p["format"] == "deb")
        .and_then(|p| p["file"].as_str())
        .unwrap();
    flip_middle(&fx.gen(1).join(deb));
    let (_, err) = dist_run(&fx, &[]);
    assert!(
        err.contains("note: building a new generation: generation 0001 does not verify")
            && err.contains(deb),
        "{err}"
    );
    assert!(!err.contains(NOTHING_CHANGED), "{err}");
    assert!(err.contains("4 package(s) reused, 0 built"), "{err}");
    assert_eq!(fx.generations(), ["0001", "0002"]);
    assert_eq!(fx.current(), "generations/0002");
    fx.verify_ok(&fx.out, &dev);
    // The same inputs made it: the same fingerprint, now for generation 2.
    assert_eq!(
        recorded_inputs(&fx.out),
        ("0002".to_string(), fingerprint.clone())
    );

    // A repository option changes the inputs; `--no-build-cache` publishes whatever they are.
    // Each run after one that published has nothing to do.
    let last = |fx: &Fx| fx.generations().last().unwrap().clone();
    let origin = ["--origin", "another-origin"];
    let origin_fresh = ["--origin", "another-origin", "--no-build-cache"];
    for (extra, publishes) in [
        (&origin[..], true),
        (&origin[..], false),
        (&origin_fresh[..], true),
        (&origin[..], false),
        (&[][..], true),
    ] {
        let was = last(&fx);
        let (_, err) = dist_run(&fx, extra);
        assert_eq!(
            err.contains(NOTHING_CHANGED),
            !publishes,
            "{extra:?}: {err}"
        );
        let now = last(&fx);
        assert_eq!(now != was, publishes, "{extra:?}: {was} → {now}\n{err}");
        assert_eq!(fx.current(), format!("generations/{now}"));
        fx.verify_ok(&fx.out, &dev);
        let (g, f) = recorded_inputs(&fx.out);
        assert_eq!(g, now);
        assert_eq!(f == fingerprint, extra.is_empty(), "{extra:?}");
    }
    let release =
        |g: u32| std::fs::read_to_string(fx.gen(g).join("apt/dists/stable/Release")).unwrap();
    assert!(
        release(4).contains("Origin: another-origin\n"),
        "{}",
        release(4)
    );
    assert!(
        release(5).contains("Origin: observability-stack\n"),
        "{}",
        release(5)
    );

    // A record of the inputs that is garbage, or names another generation than `current`
    // (with the right fingerprint): not trusted, a new generation, no panic.
    let inputs = fx.out.join(".inputs");
    std::fs::write(&inputs, "garbage\n").unwrap();
    let (_, err) = dist_run(&fx, &[]);
    assert!(err.contains(".inputs: malformed"), "{err}");
    assert!(!err.contains(NOTHING_CHANGED), "{err}");
    assert_eq!(last(&fx), "0006");
    let (g, f) = recorded_inputs(&fx.out);
    assert_eq!((g.as_str(), f.as_str()), ("0006", fingerprint.as_str()));
    std::fs::write(&inputs, format!("generation 0005\nfingerprint {f}\n")).unwrap();
    let (_, err) = dist_run(&fx, &[]);
    assert!(
        err.contains(".inputs names generation 0005, `current` is generation 0006"),
        "{err}"
    );
    assert_eq!(last(&fx), "0007");
    fx.verify_ok(&fx.out, &dev);

    // `index --merge` into this directory (of a shard with the same packages): its publish
    // removes the record, so the next `dist` cannot take the merged generation for its own.
    let shard = fx.path("shard");
    let a = fx.dist_args(&shard);
    let o = fx
        .cmd(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = fx
        .cmd(&[
            "index",
            "--merge",
            &shard.display().to_string(),
            "--out",
            &fx.out.display().to_string(),
            "--base-url",
            "https://repo.example.org/obs",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "index --merge: {}", text(&o.stderr));
    assert_eq!(last(&fx), "0008");
    assert!(
        !inputs.exists(),
        "the merge left a record of a dist's inputs"
    );
    let (_, err) = dist_run(&fx, &[]);
    assert!(!err.contains(NOTHING_CHANGED), "{err}");
    assert_eq!(last(&fx), "0009");
    assert_eq!(
        recorded_inputs(&fx.out),
        ("0009".to_string(), fingerprint.clone())
    );
    fx.verify_ok(&fx.out, &dev);

    // A record naming `current` with this run's fingerprint, beside a generation that holds
    // other packages (a narrower or older signed generation put back, the record forged to
    // match): the generation verifies, but it is not what the components make — built anew.
    let one = packages[0]["component"].as_str().unwrap().to_string();
    let (_, err) = dist_run(&fx, &["--component", &one]);
    assert!(!err.contains(NOTHING_CHANGED), "{err}");
    assert_eq!(last(&fx), "0010");
    assert_ne!(recorded_inputs(&fx.out).1, fingerprint);
    std::fs::write(
        &inputs,
        format!("generation 0010\nfingerprint {fingerprint}\n"),
    )
    .unwrap();
    let (_, err) = dist_run(&fx, &[]);
    assert!(
        err.contains(
            "note: building a new generation: generation 0010 does not hold the packages the \
             components select (missing "
        ),
        "{err}"
    );
    assert!(!err.contains(NOTHING_CHANGED), "{err}");
    assert_eq!(last(&fx), "0011");
    assert_eq!(
        recorded_inputs(&fx.out),
        ("0011".to_string(), fingerprint.clone())
    );
    fx.verify_ok(&fx.out, &dev);

    // Same versions, other inputs (another Origin): generation 0012. Back to these inputs:
    // 0013. Then 0012 put back as `current` with a record naming it and this run's
    // fingerprint: it verifies and holds the same packages, but its signed manifest.json
    // says it was made from other inputs — built anew.
    let (_, err) = dist_run(&fx, &["--origin", "another-origin"]);
    assert!(!err.contains(NOTHING_CHANGED), "{err}");
    assert_eq!(last(&fx), "0012");
    let other = recorded_inputs(&fx.out).1;
    assert_ne!(other, fingerprint);
    let manifest_inputs = |g: &str| -> String {
        let m = std::fs::read_to_string(gens_dir.join(g).join("manifest.json")).unwrap();
        let m: serde_json::Value = serde_json::from_str(&m).unwrap();
        m["inputs"].as_str().unwrap().to_string()
    };
    let (_, err) = dist_run(&fx, &[]);
    assert!(!err.contains(NOTHING_CHANGED), "{err}");
    assert_eq!(last(&fx), "0013");
    // The manifest's is the fingerprint without the tool digest (the published bytes do not
    // depend on the xtask binary): not the record's, but the same for the same inputs.
    let content = manifest_inputs("0013");
    assert_eq!(content.len(), 64, "{content}");
    assert_ne!(content, fingerprint);
    assert_eq!(manifest_inputs("0011"), content);
    assert_ne!(manifest_inputs("0012"), content);
    let point_current = |g: &str| {
        let t = fx.out.join(".current-test");
        std::os::unix::fs::symlink(format!("generations/{g}"), &t).unwrap();
        std::fs::rename(&t, fx.out.join("current")).unwrap();
    };
    point_current("0012");
    std::fs::write(
        &inputs,
        format!("generation 0012\nfingerprint {fingerprint}\n"),
    )
    .unwrap();
    let (_, err) = dist_run(&fx, &[]);
    assert!(
        err.contains(
            "note: building a new generation: generation 0012 was made from other inputs (its \
             manifest.json says so)"
        ),
        "{err}"
    );
    assert_eq!(last(&fx), "0014");
    assert_eq!(manifest_inputs("0014"), content);
    fx.verify_ok(&fx.out, &dev);

    // A damaged `current` that holds an entry `current` leading to a good generation: the
    // no-op check verifies generation 0014 itself, not the link's target — built anew.
    let g14 = gens_dir.join("0014");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(g14.join("manifest.json")).unwrap()).unwrap();
    let pkg = g14.join(manifest["packages"][0]["file"].as_str().unwrap());
    replace_file(&pkg, b"not the package that was signed");
    std::os::unix::fs::symlink("../0013", g14.join("current")).unwrap();
    let (_, err) = dist_run(&fx, &[]);
    assert!(
        err.contains("generation 0014 holds an entry named `current` (not written by dist)"),
        "{err}"
    );
    assert!(!err.contains(NOTHING_CHANGED), "{err}");
    assert_eq!(last(&fx), "0015");
    assert_eq!(recorded_inputs(&fx.out), ("0015".to_string(), fingerprint));
    fx.verify_ok(&fx.out, &dev);
}

/// A generation with another suite than the previous ones (`--suite` changed) publishes and
/// verifies: the old suite's by-hash files are not carried into it (no Release there names
/// them); going back carries the suite's indexes of the generations that still have it.
#[test]
fn a_changed_suite_publishes_without_the_old_suites_indexes() {
    let fx = Fx::new(false);
    let dev = fx.dev_public();
    dist_run(&fx, &[]);
    let (_, err) = dist_run(&fx, &["--suite", "testing"]);
    assert!(!err.contains(NOTHING_CHANGED), "{err}");
    assert_eq!(fx.generations(), ["0001", "0002"]);
    fx.verify_ok(&fx.out, &dev);
    assert!(fx.gen(2).join("apt/dists/testing/InRelease").is_file());
    assert!(!fx.gen(2).join("apt/dists/stable").exists());
    dist_run(&fx, &[]);
    assert_eq!(fx.generations(), ["0001", "0002", "0003"]);
    fx.verify_ok(&fx.out, &dev);
    let by_hash = |g: u32, suite: &str| {
        listing(
            &fx.gen(g)
                .join("apt/dists")
                .join(suite)
                .join("main/binary-amd64/by-hash/SHA256"),
        )
    };
    assert_eq!(by_hash(3, "stable"), by_hash(1, "stable"));
    assert!(!fx.gen(3).join("apt/dists/testing").exists());
}
