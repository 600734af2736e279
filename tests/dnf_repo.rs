//! The dnf repository writer judged by the real clients: dnf (makecache, repoquery, install
//! --downloadonly) with gpgcheck and repo_gpgcheck on, rpmkeys --checksig, and createrepo_c
//! over the same packages as a cross-check of every index field.
//!
//! Everything runs in temporary directories: dnf gets its own --installroot, --config and
//! reposdir, rpmkeys its own --dbpath; the machine's rpm/dnf configuration is never read or
//! written.

#[path = "support/gpg.rs"]
mod gpg;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rpm::{Dependency, FileOptions, PackageBuilder};
use xtask::dnf_repo::{self, MetadataCompression, RepoFile, Settings};
use xtask::signer::Signer;

const DATE: u32 = 1_700_000_000;

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    out
}

fn ok(c: &mut Command) -> String {
    let out = run(c);
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One small test package. `base` is the noarch package that satisfies the others' requires
/// in an empty installroot.
fn build_rpm(dir: &Path, name: &str, arch: &str, base: bool) -> PathBuf {
    let cfg = rpm::BuildConfig::default()
        .source_date(DATE)
        .compression(rpm::CompressionType::Gzip);
    let mut b = PackageBuilder::new(
        name,
        "1.2.3",
        "Apache-2.0",
        arch,
        "Test <exporter> & \"friends\"",
    );
    b.using_config(cfg)
        .release("4.obs")
        .url("https://example.org/?a=1&b=2")
        .vendor("observability-stack")
        .packager("Release Engineering <re@example.org>")
        .group("System/Monitoring")
        .build_host("builder.invalid")
        .description("Line one with <tags> & 'quotes'.\nLine two.");
    if base {
        b.provides(Dependency::any("/bin/sh"))
            .provides(Dependency::eq("systemd", "252-1"))
            .provides(Dependency::eq("glibc", "2.36-9"))
            .with_dir_entry(FileOptions::dir("/usr/share/obs-base"))
            .unwrap()
            .with_file_contents("base\n", FileOptions::new("/usr/share/obs-base/README"))
            .unwrap();
    } else {
        b.with_file_contents(
            format!("#!/bin/sh\necho {name} {arch}\n"),
            FileOptions::new(format!("/usr/bin/{name}")).permissions(0o755),
        )
        .unwrap()
        .with_dir_entry(FileOptions::dir(format!("/etc/{name}")))
        .unwrap()
        .with_file_contents(
            "# config\n",
            FileOptions::new(format!("/etc/{name}/{name}.conf"))
                .config()
                .noreplace(),
        )
        .unwrap()
        .with_file_contents("doc\n", FileOptions::new(format!("/usr/share/doc/{name}/README")))
        .unwrap()
        .with_ghost(FileOptions::ghost(format!("/var/lib/{name}/state")))
        .unwrap()
        .pre_install_script("getent group obs >/dev/null || :")
        .post_install_script("systemctl daemon-reload >/dev/null 2>&1 || :")
        .requires(Dependency::script_pre("/bin/sh"))
        .requires(Dependency::script_post("systemd"))
        .requires(Dependency::script_preun("systemd"))
        .requires(Dependency::greater_eq("glibc", "2.34"))
        .requires(Dependency::any("obs-base"))
        .requires(Dependency::any("obs-base"))
        // A require on one of its own primary files: createrepo_c drops it.
        .requires(Dependency::any(format!("/usr/bin/{name}")))
        .provides(Dependency::eq(format!("{name}-compat"), "1:2.0-3"))
        .conflicts(Dependency::less("prometheus-old", "1.0"))
        .obsoletes(Dependency::less_eq("old-exporter", "0.9-1"))
        .recommends(Dependency::any("obs-extras"))
        .add_changelog_entry(
            "Release Engineering <re@example.org> - 1.2.3-4.obs",
            "- Newest: <b> & done",
            DATE - 10,
        )
        .add_changelog_entry(
            "Release Engineering <re@example.org> - 1.2.3-3.obs",
            "- Older entry",
            DATE - 86400,
        );
    }
    let pkg = b.build().unwrap();
    let path = dir.join(format!("{name}-1.2.3-4.obs.{arch}.rpm"));
    pkg.write_file(&path).unwrap();
    path
}

/// rpmsign with the test key (real rpm + gpg); afterwards the signature header is larger, so
/// the header range must be read from each file, not assumed.
fn rpmsign(key: &gpg::GpgKey, rpm: &Path) {
    ok(Command::new("rpmsign")
        .env("HOME", key.home.path())
        .arg("--define")
        .arg(format!("_gpg_path {}", key.home.path().display()))
        .arg("--define")
        .arg(format!("_gpg_name {}", key.fpr))
        .arg("--define")
        .arg("__gpg /usr/bin/gpg")
        .arg("--define")
        .arg("_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback")
        .arg("--addsign")
        .arg(rpm));
}

struct Fixture {
    key: gpg::GpgKey,
    _tmp: tempfile::TempDir,
    inputs: Vec<PathBuf>,
}

fn fixture(sign: bool) -> Fixture {
    let key = gpg::GpgKey::generate("Obs Test Repo <repo@example.org>");
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![
        build_rpm(tmp.path(), "demo_exporter", "x86_64", false),
        build_rpm(tmp.path(), "demo_exporter", "aarch64", false),
        build_rpm(tmp.path(), "other-exporter", "x86_64", false),
        build_rpm(tmp.path(), "obs-base", "noarch", true),
    ];
    if sign {
        for i in &inputs {
            rpmsign(&key, i);
        }
    }
    Fixture {
        key,
        _tmp: tmp,
        inputs,
    }
}

/// A dnf that touches nothing outside `t`.
struct Dnf {
    t: tempfile::TempDir,
}

impl Dnf {
    fn new() -> Dnf {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("root")).unwrap();
        fs::create_dir_all(t.path().join("repos.d")).unwrap();
        fs::write(
            t.path().join("dnf.conf"),
            "[main]\ngpgcheck=1\nrepo_gpgcheck=1\nskip_if_unavailable=False\nkeepcache=1\nreposdir=\n",
        )
        .unwrap();
        Dnf { t }
    }
    fn cmd(&self) -> Command {
        let t = self.t.path();
        let mut c = Command::new("dnf");
        c.arg(format!("--installroot={}", t.join("root").display()))
            .arg(format!("--config={}", t.join("dnf.conf").display()))
            .arg(format!("--setopt=reposdir={}", t.join("repos.d").display()))
            .args([
                "--releasever=12",
                "--forcearch=x86_64",
                "--noplugins",
                "--assumeyes",
                "--setopt=install_weak_deps=False",
            ])
            .env("LC_ALL", "C.UTF-8");
        c
    }
    /// The repository given on the command line, signature checks forced on.
    fn with_repo(&self, root: &Path, key: &Path) -> Command {
        let mut c = self.cmd();
        c.arg(format!("--repofrompath=obs,file://{}", root.display()))
            .args([
                "--repo=obs",
                "--setopt=obs.gpgcheck=1",
                "--setopt=obs.repo_gpgcheck=1",
            ])
            .arg(format!("--setopt=obs.gpgkey=file://{}", key.display()));
        c
    }
}

fn write(root: &Path, f: &Fixture, compression: MetadataCompression) -> dnf_repo::DnfRepo {
    let mut s = Settings::new(DATE as u64);
    s.compression = compression;
    let repo = dnf_repo::write_repo(root, &f.inputs, &s, &f.key).unwrap();
    dnf_repo::write_public_key(root, "obs", &f.key).unwrap();
    repo
}

#[test]
fn dnf_accepts_signed_repository_and_packages() {
    let f = fixture(true);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    let repo = write(&root, &f, MetadataCompression::Gzip);
    let key = root.join("keys/obs.asc");
    assert_eq!(repo.packages.len(), 4);

    let dnf = Dnf::new();
    let out = run(dnf.with_repo(&root, &key).arg("makecache"));
    assert!(
        out.status.success(),
        "makecache: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
}
