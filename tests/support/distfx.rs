//! A `dist` fixture driving the real binary: components/ pinned (amd64 only) to generated
//! release archives in a `file:` mirror, and a gpg-made release key.
//! (Include with `#[path = "support/distfx.rs"] mod distfx;` beside `cmd`, `fixture`, `gpg`.)
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const COMPONENTS: [(&str, &str); 2] =
    [("node_exporter", "1.10.2"), ("mysqld_exporter", "0.18.0")];

pub fn sha256(b: &[u8]) -> String {
    xtask::digest::sha256_hex(b)
}

/// `DIR/components`: a copy of the repository's COMPONENTS pinned (amd64 only: the arm64 pin
/// lines are dropped) to generated release archives (tests/support/fixture.rs) kept in
/// `DIR/mirror` at their upstream URL paths. Returns (components, mirror).
pub fn pinned_components(dir: &Path) -> (PathBuf, PathBuf) {
    let components = dir.join("components");
    let mirror = dir.join("mirror");
    std::fs::create_dir(&components).unwrap();
    for (comp, version) in COMPONENTS {
        let file = crate::cmd::workspace().join(format!("components/{comp}.toml"));
        let orig = xtask::component::load_file(&file).unwrap();
        assert_eq!(orig.version, version, "{comp}: update COMPONENTS");
        let bytes = crate::fixture::release_tar_gz(comp, version, "amd64", "");
        let rel = asset_path(comp, version, "amd64");
        let p = mirror.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &bytes).unwrap();
        let a = xtask::package::Arch::Amd64;
        assert_eq!(orig.url(a), format!("https://github.com/{rel}"));
        let old = &orig.source.sha256[&a];
        let t = std::fs::read_to_string(&file).unwrap();
        assert!(
            t.contains(old.as_str()),
            "{comp}: pin not found in {}",
            file.display()
        );
        let t: String = t
            .replace(old.as_str(), &sha256(&bytes))
            .lines()
            .filter(|l| !l.starts_with("arm64 = "))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(components.join(format!("{comp}.toml")), t).unwrap();
    }
    (components, mirror)
}

/// The URL path of a component's upstream asset (the mirror keeps it).
pub fn asset_path(comp: &str, version: &str, arch: &str) -> String {
    format!("prometheus/{comp}/releases/download/v{version}/{comp}-{version}.linux-{arch}.tar.gz")
}

pub struct Fx {
    pub dir: tempfile::TempDir,
    pub components: PathBuf,
    pub mirror: PathBuf,
    pub key_file: PathBuf,
    pub pub_asc: PathBuf,
    pub key: crate::gpg::GpgKey,
}

impl Fx {
    /// components/ pinned (amd64 only) to generated archives in a `file:` mirror, and a gpg
    /// release key in a 0600 file.
    pub fn new() -> Fx {
        let dir = tempfile::Builder::new()
            .prefix("xtask-airgap-")
            .tempdir()
            .unwrap();
        let (components, mirror) = pinned_components(dir.path());
        let key = crate::gpg::GpgKey::generate("airgap test <airgap@example.invalid>");
        let key_file = dir.path().join("release.asc");
        std::fs::write(&key_file, key.export_secret_armored()).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pub_asc = dir.path().join("release.pub.asc");
        std::fs::write(
            &pub_asc,
            xtask::signer::Signer::public_key_armored(&key).unwrap(),
        )
        .unwrap();
        Fx {
            dir,
            components,
            mirror,
            key_file,
            pub_asc,
            key,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.path("xdg-data"))
            .env("XDG_CACHE_HOME", self.path("xdg-cache"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove(xtask::signing::ENV_KEY)
            .env_remove(xtask::signing::ENV_PASSPHRASE)
            .stdin(Stdio::null());
        c
    }

    /// `dist` into `out` with the release key; `extra` decides cache and mirror.
    pub fn dist(&self, out: &Path, extra: &[&str]) -> (bool, String) {
        crate::cmd::run(
            self.cmd()
                .arg("dist")
                .arg("--components")
                .arg(&self.components)
                .arg("--out")
                .arg(out)
                .arg("--signing-key")
                .arg(&self.key_file)
                .args(["--base-url", "https://repo.example.org/obs"])
                .args(extra),
        )
    }

    pub fn verify_ok(&self, dir: &Path) -> String {
        crate::cmd::must(
            self.cmd()
                .arg("verify")
                .arg(dir)
                .arg("--key")
                .arg(&self.pub_asc),
        )
    }
}

/// Relative path → sha256 (or link target, or `dir`) of everything below `root`.
pub fn listing(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, m: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                m.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if t.is_dir() {
                m.insert(format!("{rel}/"), "dir".into());
                walk(root, &p, m);
            } else {
                m.insert(rel, sha256(&std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(root, root, &mut m);
    m
}
