//! The apt repository writer, judged by the real clients: apt-get (update, download,
//! install --download-only) over file: and loopback HTTP with a deb822 Signed-By source, gpgv
//! and sqv on the signatures, apt-ftparchive as an independent index of the same pool, and
//! apt's refusals of tampered indexes, tampered packages, unknown keys and expired Release
//! files. Every apt run uses its own configuration in a temporary directory (APT_CONFIG), never
//! the machine's.

#[path = "support/clients.rs"]
mod clients;
#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/gpg.rs"]
mod gpg;

use clients::{Apt, Http};

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cmd::{must, run};
use sha2::{Digest, Sha256, Sha512};
use xtask::apt_repo::{self, AptSettings, ClientSettings, PoolLink};

const EPOCH: u64 = 1_700_000_000;

// ---------------------------------------------------------------------------------------------
// Input packages, built by dpkg-deb

struct DebSpec<'a> {
    name: &'a str,
    version: &'a str,
    arch: &'a str,
    /// dpkg-deb -Z: xz, gzip, zstd, none (also the control.tar compression).
    compress: &'a str,
    extra: &'a str,
    payload: &'a str,
}

fn build_deb(out_dir: &Path, s: &DebSpec) -> PathBuf {
    let root = tempfile::tempdir().unwrap();
    let debian = root.path().join("DEBIAN");
    std::fs::create_dir_all(&debian).unwrap();
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Test <test@example.org>\n{}Description: test package {}\n This is a package for the index tests.\n .\n Second paragraph.\n",
            s.name, s.version, s.arch, s.extra, s.name
        ),
    )
    .unwrap();
    let share = root.path().join("usr/share").join(s.name);
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("payload"), s.payload).unwrap();
    let file = out_dir.join(format!(
        "{}_{}_{}.deb",
        s.name,
        s.version.replace(':', "%3a"),
        s.arch
    ));
    must(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(format!("-Z{}", s.compress))
            .arg(root.path())
            .arg(&file)
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string()),
    );
    file
}

/// A small set: two arches, two versions of one package, an `all` library with a Source,
/// an epoch, every control.tar compression dpkg-deb can write.
fn fixture_debs(dir: &Path) -> Vec<PathBuf> {
    [
        DebSpec {
            name: "hello-exporter",
            version: "1.0-1",
            arch: "amd64",
            compress: "xz",
            extra: "",
            payload: "hello 1.0 amd64\n",
        },
        DebSpec {
            name: "hello-exporter",
            version: "1.10-1",
            arch: "amd64",
            compress: "gzip",
            extra: "Depends: libdemo-data (>= 2.0)\n",
            payload: "hello 1.10 amd64\n",
        },
        DebSpec {
            name: "hello-exporter",
            version: "1.10-1",
            arch: "arm64",
            compress: "zstd",
            extra: "Depends: libdemo-data (>= 2.0)\n",
            payload: "hello 1.10 arm64\n",
        },
        DebSpec {
            name: "libdemo-data",
            version: "2.0-1",
            arch: "all",
            compress: "none",
            extra: "Source: libdemo (2.0-1)\nSection: libs\n",
            payload: "shared data\n",
        },
        DebSpec {
            name: "zeta-tool",
            version: "1:0.5-2",
            arch: "arm64",
            compress: "xz",
            extra: "Priority: optional\n",
            payload: "zeta\n",
        },
    ]
    .iter()
    .map(|s| build_deb(dir, s))
    .collect()
}

fn settings() -> AptSettings {
    AptSettings {
        date: EPOCH,
        ..AptSettings::default()
    }
}

struct Repo {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    key: gpg::GpgKey,
    keyring: PathBuf,
    repo: apt_repo::AptRepo,
}

fn make_repo(settings: &AptSettings) -> Repo {
    let tmp = tempfile::tempdir().unwrap();
    let debs_dir = tmp.path().join("in");
    std::fs::create_dir(&debs_dir).unwrap();
    let debs = fixture_debs(&debs_dir);
    let root = tmp.path().join("repo");
    let key = gpg::GpgKey::generate("apt test <apt@example.org>");
    let repo = apt_repo::write_apt_repo(&root, &debs, settings, &key).unwrap();
    let keyring = key.write_keyring(&tmp.path().join("keyring.gpg"));
    Repo {
        _tmp: tmp,
        root,
        key,
        keyring,
        repo,
    }
}

// ---------------------------------------------------------------------------------------------
// An isolated apt

fn sources_for(repo: &Repo, url: &str) -> String {
    let files = apt_repo::client_files(
        &settings(),
        &ClientSettings {
            name: "obs".into(),
            base_url: url.into(),
            signed_by: Some(repo.keyring.display().to_string()),
        },
        &repo.key,
    )
    .unwrap();
    files.sources
}

fn file_url(p: &Path) -> String {
    format!("file:{}", p.display())
}

// ---------------------------------------------------------------------------------------------
// Parsing indexes in the tests (deliberately independent of the writer's code)

type Stanza = BTreeMap<String, String>;

fn parse_stanzas(text: &str) -> Vec<Stanza> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut st = Stanza::new();
        let mut last: Option<String> = None;
        for line in para.lines() {
            if line.starts_with(' ') {
                let k = last.clone().unwrap();
                let v = st.get_mut(&k).unwrap();
                v.push('\n');
                v.push_str(line);
            } else if let Some((k, v)) = line.split_once(':') {
                st.insert(k.to_string(), v.trim().to_string());
                last = Some(k.to_string());
            }
        }
        if !st.is_empty() {
            out.push(st);
        }
    }
    out
}

/// `(hash, size, path)` lines of one checksum section of a Release file.
fn release_section(release: &str, name: &str) -> Vec<(String, u64, String)> {
    release
        .lines()
        .skip_while(|l| *l != format!("{name}:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 3, "{l:?}");
            (w[0].to_string(), w[1].parse().unwrap(), w[2].to_string())
        })
        .collect()
}

fn release_field<'a>(release: &'a str, name: &str) -> Option<&'a str> {
    release
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

// ---------------------------------------------------------------------------------------------

#[test]
fn apt_updates_downloads_and_installs_over_file_and_http() {
    let r = make_repo(&settings());
    assert_eq!(r.repo.architectures, ["amd64", "arm64"]);
    let http = Http::serve(&r.root);
    for url in [file_url(&r.root), http.url.clone()] {
        let apt = Apt::new(&sources_for(&r, &url));
        apt.update_ok();

        // Both versions known, the newer one (dpkg order: 1.10 > 1.0) is the candidate.
        let policy = must(apt.cmd("apt-cache").args(["policy", "hello-exporter"]));
        assert!(policy.contains("Candidate: 1.10-1"), "{policy}");
        assert!(policy.contains("1.0-1"), "{policy}");
        let show = must(apt.cmd("apt-cache").args(["show", "zeta-tool:arm64"]));
        assert!(show.contains("Version: 1:0.5-2"), "{show}");
        assert!(show.contains(" Second paragraph."), "{show}");

        // apt-get download of an explicit version and of the other arch: byte-identical.
        must(apt.cmd("apt-get").args([
            "-q",
            "download",
            "hello-exporter=1.0-1",
            "hello-exporter:arm64",
        ]));
        let pool = |p: &str| std::fs::read(r.root.join(p)).unwrap();
        assert_eq!(
            apt.downloaded("hello-exporter_1.0-1_amd64.deb"),
            pool("pool/main/h/hello-exporter/hello-exporter_1.0-1_amd64.deb")
        );
        assert_eq!(
            apt.downloaded("hello-exporter_1.10-1_arm64.deb"),
            pool("pool/main/h/hello-exporter/hello-exporter_1.10-1_arm64.deb")
        );

        // install --download-only resolves the dependency on the arch-all package in the
        // amd64 index (file: repositories are used in place, so only check over http).
        let (ok, text) = apt.get(&["install", "--download-only", "hello-exporter"]);
        assert!(ok, "{text}");
        assert!(text.contains("libdemo-data"), "{text}");
        if url.starts_with("http") {
            assert_eq!(
                apt.archives(),
                BTreeSet::from([
                    "hello-exporter_1.10-1_amd64.deb".to_string(),
                    "libdemo-data_2.0-1_all.deb".to_string()
                ])
            );
        }
    }
}

#[test]
fn gpgv_and_sqv_verify_the_signatures() {
    let r = make_repo(&settings());
    let dists = r.root.join("dists/stable");
    let k = &r.keyring;
    must(
        Command::new("gpgv")
            .arg("--keyring")
            .arg(k)
            .arg(dists.join("InRelease")),
    );
    must(
        Command::new("gpgv")
            .arg("--keyring")
            .arg(k)
            .arg(dists.join("Release.gpg"))
            .arg(dists.join("Release")),
    );
    must(
        Command::new("sqv")
            .arg("--keyring")
            .arg(k)
            .arg(dists.join("Release.gpg"))
            .arg(dists.join("Release")),
    );
    // InRelease signs exactly the Release text.
    let inrelease = std::fs::read_to_string(dists.join("InRelease")).unwrap();
    let release = std::fs::read_to_string(dists.join("Release")).unwrap();
    let out = must(
        Command::new("gpgv")
            .arg("--keyring")
            .arg(k)
            .arg("--output")
            .arg("-")
            .arg(dists.join("InRelease")),
    );
    assert!(
        out.starts_with(&release),
        "InRelease content differs from Release"
    );
    assert!(inrelease.contains("-----BEGIN PGP SIGNED MESSAGE-----"));

    // And they refuse: another key, a changed Release.
    let tmp = tempfile::tempdir().unwrap();
    let other = gpg::GpgKey::generate("other <other@example.org>");
    let other_k = other.write_keyring(&tmp.path().join("other.gpg"));
    let (ok, _) = run(Command::new("gpgv")
        .arg("--keyring")
        .arg(&other_k)
        .arg(dists.join("InRelease")));
    assert!(!ok, "gpgv accepted InRelease with the wrong key");
    let (ok, _) = run(Command::new("sqv")
        .arg("--keyring")
        .arg(&other_k)
        .arg(dists.join("Release.gpg"))
        .arg(dists.join("Release")));
    assert!(!ok, "sqv accepted Release.gpg with the wrong key");
    let changed = tmp.path().join("Release");
    std::fs::write(&changed, release.replace("Suite: stable", "Suite: stabl3")).unwrap();
    let (ok, _) = run(Command::new("sqv")
        .arg("--keyring")
        .arg(k)
        .arg(dists.join("Release.gpg"))
        .arg(&changed));
    assert!(!ok, "sqv accepted a changed Release");
}

/// Replace a file without touching other links to the same inode (the pool may be hard-linked
/// to the inputs).
fn replace(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tampered");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn apt_refuses_a_tampered_packages_index() {
    let r = make_repo(&settings());
    let dir = r.root.join("dists/stable/main/binary-amd64");
    let packages = std::fs::read_to_string(dir.join("Packages")).unwrap();
    // Point hello-exporter 1.0-1 at other bytes: same length, one hex digit changed.
    let st = parse_stanzas(&packages)
        .into_iter()
        .find(|s| s["Version"] == "1.0-1")
        .unwrap();
    let old = &st["SHA256"];
    let new = format!(
        "{}{}",
        if old.starts_with('0') { "1" } else { "0" },
        &old[1..]
    );
    let tampered = packages.replace(old.as_str(), &new);
    assert_ne!(tampered, packages);
    // Every variant and every by-hash copy, so apt has nothing genuine to fall back to.
    for (name, data) in [
        ("Packages", tampered.as_bytes().to_vec()),
        ("Packages.gz", gz(tampered.as_bytes())),
        ("Packages.xz", xz(tampered.as_bytes())),
    ] {
        let orig = std::fs::read(dir.join(name)).unwrap();
        replace(&dir.join(name), &data);
        let h256 = hex::encode(Sha256::digest(&orig));
        let h512 = hex::encode(Sha512::digest(&orig));
        for p in [
            dir.join("by-hash/SHA256").join(h256),
            dir.join("by-hash/SHA512").join(h512),
        ] {
            assert!(p.exists(), "{}", p.display());
            replace(&p, &data);
        }
    }
    let http = Http::serve(&r.root);
    for url in [file_url(&r.root), http.url.clone()] {
        let apt = Apt::new(&sources_for(&r, &url));
        let (ok, text) = apt.get(&["update"]);
        assert!(
            !ok,
            "apt-get update accepted a tampered Packages over {url}:\n{text}"
        );
        assert!(
            text.contains("Hash Sum mismatch") || text.contains("unexpected size"),
            "{text}"
        );
    }
}

#[test]
fn apt_refuses_a_tampered_package() {
    let r = make_repo(&settings());
    let deb = r
        .root
        .join("pool/main/h/hello-exporter/hello-exporter_1.0-1_amd64.deb");
    let mut bytes = std::fs::read(&deb).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55; // same size, different bytes
    replace(&deb, &bytes);
    let http = Http::serve(&r.root);
    for url in [file_url(&r.root), http.url.clone()] {
        let apt = Apt::new(&sources_for(&r, &url));
        apt.update_ok();
        let (ok, text) = apt.get(&["download", "hello-exporter=1.0-1"]);
        assert!(
            !ok,
            "apt-get download accepted a tampered .deb over {url}:\n{text}"
        );
        assert!(text.contains("Hash Sum mismatch"), "{text}");
        let (ok, text) = apt.get(&["install", "--download-only", "hello-exporter=1.0-1"]);
        assert!(
            !ok,
            "apt-get install accepted a tampered .deb over {url}:\n{text}"
        );
    }
}

#[test]
fn apt_refuses_a_repository_signed_by_an_unknown_key() {
    let r = make_repo(&settings());
    let tmp = tempfile::tempdir().unwrap();
    let other = gpg::GpgKey::generate("other <other@example.org>");
    let other_k = other.write_keyring(&tmp.path().join("other.gpg"));
    let sources = sources_for(&r, &file_url(&r.root)).replace(
        &format!("Signed-By: {}", r.keyring.display()),
        &format!("Signed-By: {}", other_k.display()),
    );
    assert!(sources.contains(&other_k.display().to_string()));
    let apt = Apt::new(&sources);
    let (ok, text) = apt.get(&["update"]);
    assert!(!ok, "apt-get update accepted an unknown key:\n{text}");
    assert!(
        text.contains("NO_PUBKEY") && text.contains("not signed"),
        "{text}"
    );
    let (ok, _) = apt.get(&["download", "hello-exporter"]);
    assert!(!ok);
}

#[test]
fn apt_enforces_valid_until() {
    // Date long ago + one day: expired now.
    let expired = make_repo(&AptSettings {
        valid_until: Some(Duration::from_secs(86_400)),
        ..settings()
    });
    let release = std::fs::read_to_string(expired.root.join("dists/stable/Release")).unwrap();
    assert_eq!(
        release_field(&release, "Valid-Until"),
        Some("Wed, 15 Nov 2023 22:13:20 UTC")
    );
    let apt = Apt::new(&sources_for(&expired, &file_url(&expired.root)));
    let (ok, text) = apt.get(&["update"]);
    assert!(!ok && text.contains("expired"), "{text}");

    // Valid for a long time: accepted.
    let fine = make_repo(&AptSettings {
        valid_until: Some(Duration::from_secs(100 * 365 * 86_400)),
        ..settings()
    });
    Apt::new(&sources_for(&fine, &file_url(&fine.root))).update_ok();
}

/// Our Packages against `apt-ftparchive packages` over the same pool, per architecture.
///
/// Allowed differences, each checked to be only that:
/// - apt-ftparchive adds `MD5sum` and `SHA1`; we publish SHA256 and SHA512 only (apt needs no
///   weaker hash; see the module docs of apt_repo).
/// - Field order: apt-ftparchive rewrites stanzas into its canonical field order; we keep the
///   package's control order (then Filename, Size, SHA256, SHA512). Compared as maps.
/// - Stanza order: apt-ftparchive lists in pool-walk order; we sort by (package, version,
///   arch). Compared as sets keyed by (Package, Version, Architecture).
///
/// Everything else — the package set, every control field, Filename, Size, SHA256, SHA512 — is
/// identical.
#[test]
fn packages_match_apt_ftparchive() {
    let r = make_repo(&settings());
    for arch in ["amd64", "arm64"] {
        let ours = std::fs::read_to_string(
            r.root
                .join(format!("dists/stable/main/binary-{arch}/Packages")),
        )
        .unwrap();
        let theirs = must(
            Command::new("apt-ftparchive")
                .args(["--arch", arch, "packages", "pool"])
                .current_dir(&r.root),
        );
        let key = |s: &Stanza| {
            (
                s["Package"].clone(),
                s["Version"].clone(),
                s["Architecture"].clone(),
            )
        };
        let ours: BTreeMap<_, _> = parse_stanzas(&ours)
            .into_iter()
            .map(|s| (key(&s), s))
            .collect();
        let theirs: BTreeMap<_, _> = parse_stanzas(&theirs)
            .into_iter()
            .map(|mut s| {
                assert!(
                    s.remove("MD5sum").is_some(),
                    "apt-ftparchive without MD5sum?"
                );
                assert!(s.remove("SHA1").is_some(), "apt-ftparchive without SHA1?");
                (key(&s), s)
            })
            .collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{arch}: package sets differ"
        );
        assert_eq!(ours.len(), 3, "{arch}");
        for (k, o) in &ours {
            assert_eq!(o, &theirs[k], "{arch} {k:?}");
        }
    }
}

#[test]
fn release_lists_every_index_file_with_by_hash_copies() {
    let r = make_repo(&AptSettings {
        architectures: vec!["riscv64".into()],
        ..settings()
    });
    let suite = r.root.join("dists/stable");
    let release = std::fs::read_to_string(suite.join("Release")).unwrap();
    assert_eq!(release, r.repo.release);
    for (f, v) in [
        ("Origin", "observability-stack"),
        ("Label", "observability-stack"),
        ("Suite", "stable"),
        ("Codename", "stable"),
        ("Date", "Tue, 14 Nov 2023 22:13:20 UTC"),
        ("Architectures", "amd64 arm64 riscv64"),
        ("Components", "main"),
        ("Acquire-By-Hash", "yes"),
    ] {
        assert_eq!(release_field(&release, f), Some(v), "{f}");
    }
    assert_eq!(release_field(&release, "Valid-Until"), None);
    assert!(!release.contains("MD5Sum:") && !release.contains("SHA1:"));

    let sha256 = release_section(&release, "SHA256");
    let sha512 = release_section(&release, "SHA512");
    // Every file under dists/stable (other than the Release files and by-hash) is listed ...
    let mut on_disk = BTreeSet::new();
    let mut stack = vec![suite.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() != "by-hash" {
                    stack.push(p);
                }
            } else {
                let rel = p
                    .strip_prefix(&suite)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if !["Release", "Release.gpg", "InRelease"].contains(&rel.as_str()) {
                    on_disk.insert(rel);
                }
            }
        }
    }
    let listed: BTreeSet<String> = sha256.iter().map(|(_, _, p)| p.clone()).collect();
    assert_eq!(listed, on_disk);
    let listed512: BTreeSet<String> = sha512.iter().map(|(_, _, p)| p.clone()).collect();
    assert_eq!(listed512, on_disk);
    // ... all index variants of every architecture (riscv64, given in the settings, only has
    // the arch-all package) ...
    for arch in ["amd64", "arm64", "riscv64"] {
        for f in ["Packages", "Packages.gz", "Packages.xz", "Release"] {
            assert!(
                listed.contains(&format!("main/binary-{arch}/{f}")),
                "{arch} {f}"
            );
        }
    }
    let riscv = std::fs::read_to_string(suite.join("main/binary-riscv64/Packages")).unwrap();
    let riscv: Vec<String> = parse_stanzas(&riscv)
        .into_iter()
        .map(|s| s["Package"].clone())
        .collect();
    assert_eq!(
        riscv,
        ["libdemo-data"],
        "riscv64 holds only the arch-all package"
    );
    // ... with the right size and hashes, and a by-hash copy under each hash.
    for ((h256, size, path), (h512, size512, path512)) in sha256.iter().zip(&sha512) {
        assert_eq!(path, path512);
        assert_eq!(size, size512);
        let data = std::fs::read(suite.join(path)).unwrap();
        assert_eq!(data.len() as u64, *size, "{path}");
        assert_eq!(&hex::encode(Sha256::digest(&data)), h256, "{path}");
        assert_eq!(&hex::encode(Sha512::digest(&data)), h512, "{path}");
        let dir = suite.join(path).parent().unwrap().join("by-hash");
        assert_eq!(std::fs::read(dir.join("SHA256").join(h256)).unwrap(), data);
        assert_eq!(std::fs::read(dir.join("SHA512").join(h512)).unwrap(), data);
    }
    // The compressed variants decompress to the same Packages (real tools).
    for arch in ["amd64", "arm64"] {
        let d = suite.join(format!("main/binary-{arch}"));
        let plain = std::fs::read_to_string(d.join("Packages")).unwrap();
        assert_eq!(must(Command::new("zcat").arg(d.join("Packages.gz"))), plain);
        assert_eq!(
            must(Command::new("xzcat").arg(d.join("Packages.xz"))),
            plain
        );
    }
    // The per-architecture Release.
    let comp = std::fs::read_to_string(suite.join("main/binary-arm64/Release")).unwrap();
    assert!(comp.contains("Component: main\n") && comp.contains("Architecture: arm64\n"));

    // Pool layout: first letter, libX for lib*, source name directory, epoch dropped.
    let files: BTreeSet<&str> = r
        .repo
        .packages
        .iter()
        .map(|p| p.filename.as_str())
        .collect();
    assert_eq!(
        files,
        BTreeSet::from([
            "pool/main/h/hello-exporter/hello-exporter_1.0-1_amd64.deb",
            "pool/main/h/hello-exporter/hello-exporter_1.10-1_amd64.deb",
            "pool/main/h/hello-exporter/hello-exporter_1.10-1_arm64.deb",
            "pool/main/libd/libdemo/libdemo-data_2.0-1_all.deb",
            "pool/main/z/zeta-tool/zeta-tool_0.5-2_arm64.deb",
        ])
    );
    // Sorted by (package, dpkg version, arch).
    let order: Vec<(&str, &str, &str)> = r
        .repo
        .packages
        .iter()
        .map(|p| {
            (
                p.package.as_str(),
                p.version.as_str(),
                p.architecture.as_str(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("hello-exporter", "1.0-1", "amd64"),
            ("hello-exporter", "1.10-1", "amd64"),
            ("hello-exporter", "1.10-1", "arm64"),
            ("libdemo-data", "2.0-1", "all"),
            ("zeta-tool", "1:0.5-2", "arm64"),
        ]
    );
    // Modes: world-readable whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    for p in [
        suite.join("InRelease"),
        suite.join("main/binary-amd64/Packages.xz"),
        r.root.join(&r.repo.packages[0].filename),
    ] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o444, 0o444, "{}", p.display());
    }
}

fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn rebuilds_are_deterministic_and_shards_combine() {
    let tmp = tempfile::tempdir().unwrap();
    let debs = fixture_debs(tmp.path());
    let key = gpg::GpgKey::generate("apt test <apt@example.org>");
    let s = AptSettings {
        pool_link: PoolLink::Copy,
        ..settings()
    };
    // Once from all packages, once from two shards given in another order (with a package
    // given twice), once again into the same root.
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    apt_repo::write_apt_repo(&a, &debs, &s, &key).unwrap();
    let mut shards: Vec<PathBuf> = debs.iter().rev().cloned().collect();
    shards.push(debs[0].clone());
    apt_repo::write_apt_repo(&b, &shards, &s, &key).unwrap();
    let signed = |k: &str| k.ends_with("InRelease") || k.ends_with("Release.gpg");
    let strip = |t: BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        t.into_iter().filter(|(k, _)| !signed(k)).collect()
    };
    let ta = strip(tree(&a));
    assert_eq!(ta, strip(tree(&b)));
    apt_repo::write_apt_repo(&a, &debs, &s, &key).unwrap();
    assert_eq!(ta, strip(tree(&a)));
    assert!(
        !tree(&a).keys().any(|k| k.contains(".tmp-")),
        "temporary files left behind"
    );
}

#[test]
fn conflicting_packages_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d1 = tmp.path().join("1");
    let d2 = tmp.path().join("2");
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let spec = |payload| DebSpec {
        name: "hello-exporter",
        version: "1.0-1",
        arch: "amd64",
        compress: "xz",
        extra: "",
        payload,
    };
    let one = build_deb(&d1, &spec("one\n"));
    let two = build_deb(&d2, &spec("two\n"));
    let key = gpg::GpgKey::generate("apt test <apt@example.org>");
    let root = tmp.path().join("repo");
    let err = apt_repo::write_apt_repo(&root, &[one.clone(), two.clone()], &settings(), &key)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("differ") && err.contains("hello-exporter 1.0-1 amd64"),
        "{err}"
    );
    assert!(
        !root.join("dists").exists(),
        "an index was written despite the conflict"
    );

    // A later build into a root whose pool holds other bytes under the same name.
    apt_repo::write_apt_repo(&root, std::slice::from_ref(&one), &settings(), &key).unwrap();
    let err = format!(
        "{:#}",
        apt_repo::write_apt_repo(&root, &[two], &settings(), &key).unwrap_err()
    );
    assert!(
        err.contains("already exists with different contents"),
        "{err}"
    );

    // Epochs do not reach the pool file name: 1:1.0-1 and 1.0-1 would collide.
    let d3 = tmp.path().join("3");
    std::fs::create_dir_all(&d3).unwrap();
    let epoch = build_deb(
        &d3,
        &DebSpec {
            version: "1:1.0-1",
            ..spec("three\n")
        },
    );
    let err = apt_repo::write_apt_repo(&tmp.path().join("r3"), &[one, epoch], &settings(), &key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("would both be"), "{err}");

    // Not a .deb at all.
    let junk = tmp.path().join("junk.deb");
    std::fs::write(&junk, b"!<arch>\nnot really").unwrap();
    assert!(apt_repo::read_deb(&junk).is_err());
}

#[test]
fn client_files_are_what_apt_reads() {
    let key = gpg::GpgKey::generate("apt test <apt@example.org>");
    let client = ClientSettings {
        name: "observability-stack".into(),
        base_url: "https://packages.example.org/apt".into(),
        signed_by: None,
    };
    let files = apt_repo::client_files(&settings(), &client, &key).unwrap();
    assert_eq!(
        files.sources,
        "Types: deb\nURIs: https://packages.example.org/apt\nSuites: stable\nComponents: main\nSigned-By: /usr/share/keyrings/observability-stack.gpg\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let written = files.write(tmp.path()).unwrap();
    assert_eq!(
        written,
        [
            tmp.path().join("keys/observability-stack.asc"),
            tmp.path().join("keys/observability-stack.gpg"),
            tmp.path().join("observability-stack.sources"),
        ]
    );
    // The binary keyring and the armored key are the same key, as gpg sees it.
    for p in &written[..2] {
        let out = must(
            Command::new("gpg")
                .args(["--show-keys", "--with-colons"])
                .arg(p),
        );
        assert!(out.contains(&key.fpr), "{out}");
    }
    assert!(std::fs::read_to_string(&written[0])
        .unwrap()
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));

    for (name, url, signed_by) in [
        ("Bad/name", "https://x", None),
        ("ok", "https://x y", None),
        ("ok", "ftp://x", None),
        ("ok", "https://x\nTypes: deb-src", None),
        ("ok", "https://x", Some("relative/key.gpg")),
        ("ok", "https://x", Some("/a key.gpg")),
    ] {
        let c = ClientSettings {
            name: name.into(),
            base_url: url.into(),
            signed_by: signed_by.map(str::to_string),
        };
        assert!(
            apt_repo::client_files(&settings(), &c, &key).is_err(),
            "{name} {url} {signed_by:?}"
        );
    }
}

/// `added-exporter_3.0-1_amd64.deb` built into `pool`: the package the cache tests add.
fn add_exporter(pool: &Path) -> PathBuf {
    build_deb(
        pool,
        &DebSpec {
            name: "added-exporter",
            version: "3.0-1",
            arch: "amd64",
            compress: "xz",
            extra: "",
            payload: "added\n",
        },
    )
}

/// What the `index_dir` tests start from: (the temporary directory, the fixture packages'
/// directory `TMP/pool-in`, the packages, a key, the cache file's place
/// `TMP/state/apt-index-cache`, the repository's `TMP/repo`).
fn cached_fixture() -> (
    tempfile::TempDir,
    PathBuf,
    Vec<PathBuf>,
    gpg::GpgKey,
    PathBuf,
    PathBuf,
) {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool-in");
    std::fs::create_dir(&pool).unwrap();
    let debs = fixture_debs(&pool);
    let key = gpg::GpgKey::generate("apt test <apt@example.org>");
    let cache = tmp.path().join("state/apt-index-cache");
    let root = tmp.path().join("repo");
    (tmp, pool, debs, key, cache, root)
}

/// `index_dir` over a directory of packages with a metadata cache: the index equals
/// `write_apt_repo`'s over the same files; an added package is read and listed; unchanged
/// packages are taken from the cache (a cache entry edited by hand shows through, which is how
/// the test knows the file was not read again), and a package whose mtime changes is read
/// again (the edit disappears).
#[test]
fn index_dir_reads_only_what_the_cache_does_not_describe() {
    let (tmp, pool, debs, key, cache, root) = cached_fixture();
    let s = settings();
    // The reference first: its hard links into `plain/pool` move the inputs' ctimes (a new
    // link count), which the cache would rightly take for a change.
    let plain = tmp.path().join("plain");
    apt_repo::write_apt_repo(&plain, &debs, &s, &key).unwrap();
    apt_repo::index_dir(&pool, &root, &s, &key, Some(&cache)).unwrap();
    let packages = |r: &Path, arch: &str| {
        std::fs::read_to_string(r.join(format!("dists/stable/main/binary-{arch}/Packages")))
            .unwrap()
    };
    for arch in ["amd64", "arm64"] {
        assert_eq!(packages(&root, arch), packages(&plain, arch), "{arch}");
    }
    // The cache file: a header line, one line per entry (the value as JSON last), `end <count>`.
    let entries = |c: &Path| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(c).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "obs-index-cache 4");
        assert_eq!(lines[lines.len() - 1], format!("end {}", lines.len() - 2));
        lines[1..lines.len() - 1]
            .iter()
            .map(|l| serde_json::from_str(l.rsplit('\t').next().unwrap()).unwrap())
            .collect()
    };
    assert_eq!(entries(&cache).len(), debs.len());

    // Add one package; forge the cached SHA512 of an unchanged one.
    let added = add_exporter(&pool);
    let victim = &debs[0];
    let real512 = hex::encode(Sha512::digest(std::fs::read(victim).unwrap()));
    let forged = "f".repeat(128);
    let text = std::fs::read_to_string(&cache).unwrap();
    assert_eq!(text.matches(&real512).count(), 1);
    std::fs::write(&cache, text.replace(&real512, &forged)).unwrap();
    apt_repo::index_dir(&pool, &root, &s, &key, Some(&cache)).unwrap();
    let amd64 = packages(&root, "amd64");
    assert!(amd64.contains("Package: added-exporter\n"), "{amd64}");
    assert!(
        amd64.contains(&forged),
        "the unchanged package was read again"
    );
    assert_eq!(entries(&cache).len(), debs.len() + 1);
    let _ = added;

    // A new mtime is a new key: the file is read again.
    let f = std::fs::File::options().write(true).open(victim).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    apt_repo::index_dir(&pool, &root, &s, &key, Some(&cache)).unwrap();
    let amd64 = packages(&root, "amd64");
    assert!(
        !amd64.contains(&forged) && amd64.contains(&real512),
        "{amd64}"
    );
    assert_eq!(
        entries(&cache).len(),
        debs.len() + 1,
        "stale entries are dropped"
    );
}

/// A cache entry is used only if it passes the checks a read makes: a forged entry (a stanza
/// or field injected into a control value, a source name leading out of the pool or empty, a
/// size that is not the file's) is read again, with a warning, and the published index is
/// the one made without a cache (compared byte for byte, then read by apt-get).
#[test]
fn forged_cache_entries_are_read_again() {
    let (tmp, pool, debs, key, cache, root) = cached_fixture();
    let s = settings();
    apt_repo::index_dir(&pool, &root, &s, &key, Some(&cache)).unwrap();
    let packages = |arch: &str| {
        std::fs::read(root.join(format!("dists/stable/main/binary-{arch}/Packages"))).unwrap()
    };
    let want = (packages("amd64"), packages("arm64"));
    let good = std::fs::read_to_string(&cache).unwrap();
    let size = std::fs::metadata(&debs[3]).unwrap().len();
    let (size_from, size_to) = (
        format!("\"source\":\"libdemo\",\"size\":{size},"),
        format!("\"source\":\"libdemo\",\"size\":{},", size + 1),
    );
    let forgeries = [
        (
            "test package libdemo-data",
            "test package libdemo-data\\n\\nPackage: evil\\nVersion: 6.6.6\\nArchitecture: amd64",
        ),
        (
            "test package zeta-tool",
            "test package zeta-tool\\nFilename: pool/main/e/evil_1_arm64.deb",
        ),
        ("\"source\":\"libdemo\"", "\"source\":\"../../../escaped\""),
        ("\"source\":\"libdemo\"", "\"source\":\"\""),
        ("\"source\":\"libdemo\"", "\"source\":\"\u{e9}\""),
        (size_from.as_str(), size_to.as_str()),
    ];
    for (from, to) in forgeries {
        assert_eq!(good.matches(from).count(), 1, "{from}");
        std::fs::write(&cache, good.replace(from, to)).unwrap();
        apt_repo::index_dir(&pool, &root, &s, &key, Some(&cache))
            .unwrap_or_else(|e| panic!("{to}: {e:#}"));
        assert!(
            (packages("amd64"), packages("arm64")) == want,
            "{to}: the forged entry shows in Packages"
        );
        assert!(!tmp.path().join("escaped").exists());
        assert!(!std::fs::read_to_string(&cache).unwrap().contains(to));
    }
    let keyring = key.write_keyring(&tmp.path().join("keyring.gpg"));
    let sources = clients::sources_at(
        &apt_repo::client_files(
            &s,
            &ClientSettings {
                name: "obs".into(),
                base_url: file_url(&root),
                signed_by: None,
            },
            &key,
        )
        .unwrap()
        .sources,
        &file_url(&root),
        &keyring,
    );
    let apt = Apt::new(&sources);
    apt.update_ok();
    let show = must(apt.cmd("apt-cache").args(["show", "libdemo-data"]));
    assert!(
        show.contains("Filename: pool/main/libd/libdemo/libdemo-data_2.0-1_all.deb"),
        "{show}"
    );
    let (ok, text) = apt.get(&["install", "--download-only", "evil"]);
    assert!(!ok, "{text}");
}

/// Packages are opened without following a symlink or waiting on a FIFO: one swapped in for a
/// listed package is an error naming it, not a read of its target (nor a hang).
#[test]
fn symlinked_and_fifo_packages_are_refused() {
    let (tmp, _, debs, key, _, root) = cached_fixture();
    let s = settings();
    let outside = tmp.path().join("outside.deb");
    std::fs::rename(&debs[0], &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &debs[0]).unwrap();
    let e = apt_repo::write_apt_repo(&root, &debs, &s, &key).unwrap_err();
    assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
    std::fs::remove_file(&debs[0]).unwrap();
    must(Command::new("mkfifo").arg(&debs[0]));
    let e = apt_repo::write_apt_repo(&root, &debs, &s, &key).unwrap_err();
    assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
    assert!(!root.join("dists/stable/Release").exists());
}

/// Swap the contents of two cached chunk files whose names end alike (each then a
/// well-formed chunk of another text, its own digest right).
fn swap_chunks(dir: &Path, kind: &str) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(kind))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{kind}: {files:?}");
    let (a, b) = (
        std::fs::read(&files[0]).unwrap(),
        std::fs::read(&files[1]).unwrap(),
    );
    assert_ne!(a, b);
    std::fs::write(&files[0], &b).unwrap();
    std::fs::write(&files[1], &a).unwrap();
}

/// Cached compressed chunks are used only when they decode to the text they stand for: with
/// the amd64 and arm64 chunks swapped in the cache, `Packages.xz` / `Packages.gz` still
/// decompress (xz, gzip) to each architecture's own `Packages`, and apt-get reads the result.
/// The chunk directory is 0700, its files 0600.
#[test]
fn swapped_cached_chunks_are_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, pool, _, key, cache, root) = cached_fixture();
    let s = settings();
    apt_repo::index_dir(&pool, &root, &s, &key, Some(&cache)).unwrap();
    let chunks = tmp
        .path()
        .join("state/apt-index-cache.packages-chunks/stable");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&chunks), 0o700);
    assert_eq!(mode(chunks.parent().unwrap()), 0o700);
    for e in std::fs::read_dir(&chunks).unwrap() {
        assert_eq!(mode(&e.unwrap().path()), 0o600);
    }
    swap_chunks(&chunks, "-xz6-");
    swap_chunks(&chunks, "-gz9-last-");
    apt_repo::index_dir(&pool, &root, &s, &key, Some(&cache)).unwrap();
    for arch in ["amd64", "arm64"] {
        let dir = root.join(format!("dists/stable/main/binary-{arch}"));
        let plain = std::fs::read_to_string(dir.join("Packages")).unwrap();
        assert!(
            plain.contains(&format!("Architecture: {arch}\n")),
            "{plain}"
        );
        for (tool, file) in [("xz", "Packages.xz"), ("gzip", "Packages.gz")] {
            must(Command::new(tool).arg("-t").arg(dir.join(file)));
            let out = must(Command::new(tool).arg("-dc").arg(dir.join(file)));
            assert!(out == plain, "{arch} {file}: a swapped chunk was used");
        }
    }
    let keyring = key.write_keyring(&tmp.path().join("keyring.gpg"));
    let files = apt_repo::client_files(
        &s,
        &ClientSettings {
            name: "obs".into(),
            base_url: file_url(&root),
            signed_by: Some(keyring.display().to_string()),
        },
        &key,
    )
    .unwrap();
    let apt = Apt::new(&files.sources);
    apt.update_ok();
    let show = must(apt.cmd("apt-cache").args(["show", "zeta-tool:arm64"]));
    assert!(show.contains("Version: 1:0.5-2"), "{show}");
}

/// `xtask index --pool DIR --format apt` (the command a release engineer runs over a directory
/// of packages, and what B4 measures): a signed repository apt installs from; a package added
/// to the directory is listed by the next run, whose metadata cache lives in CACHE/index (0600,
/// never in the tree); the same bytes with a warm cache as with none; dated now when
/// SOURCE_DATE_EPOCH is not set (whatever the packages' mtimes: a repository updated in place
/// must not go back in time); bad input refused by name, nothing written.
#[test]
fn index_pool_command_makes_a_repository_apt_installs_from() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, pool, debs, key, _, root) = cached_fixture();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let secret = key.write_secret_key(&tmp.path().join("key.asc"), 0o600);
    let old = std::time::UNIX_EPOCH + Duration::from_secs(EPOCH);
    for d in &debs {
        let f = std::fs::File::options().write(true).open(d).unwrap();
        f.set_modified(old).unwrap();
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let before = now();
    let out = must(&mut cmd::index_pool("apt", &pool, &root, &secret, &home));
    let after = now();
    assert!(
        out.contains(&format!("{} package(s) indexed in", debs.len())),
        "{out}"
    );
    let release = std::fs::read_to_string(root.join("dists/stable/Release")).unwrap();
    assert!(
        (before..=after)
            .any(|t| release.contains(&format!("Date: {}\n", xtask::date::rfc2822(t, "UTC")))),
        "not dated between {before} and {after}: {release}"
    );
    let caches: Vec<PathBuf> = std::fs::read_dir(home.join(".cache/observability-stack/index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "apt"))
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    let mode = std::fs::metadata(&caches[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let in_tree = must(Command::new("find").arg(&root).args(["-name", "*cache*"]));
    assert!(in_tree.trim().is_empty(), "{in_tree}");

    // Real apt, trusting only this key.
    let keyring = key.write_keyring(&tmp.path().join("keyring.gpg"));
    let sources = format!(
        "Types: deb\nURIs: {}\nSuites: stable\nComponents: main\nSigned-By: {}\n",
        file_url(&root),
        keyring.display()
    );
    let apt = Apt::new(&sources);
    apt.update_ok();
    // The newest version is the candidate, its dependency resolves, the download is the pool's.
    let (ok, text) = apt.get(&["install", "--simulate", "hello-exporter"]);
    assert!(
        ok && text.contains("Inst hello-exporter (1.10-1 ")
            && text.contains("Inst libdemo-data (2.0-1 "),
        "{text}"
    );
    must(
        apt.cmd("apt-get")
            .args(["-q", "download", "hello-exporter"]),
    );
    assert_eq!(
        apt.downloaded("hello-exporter_1.10-1_amd64.deb"),
        std::fs::read(root.join("pool/main/h/hello-exporter/hello-exporter_1.10-1_amd64.deb"))
            .unwrap()
    );

    // One more package in the directory: listed by the next run.
    add_exporter(&pool);
    let out = must(&mut cmd::index_pool("apt", &pool, &root, &secret, &home));
    assert!(
        out.contains(&format!("{} package(s) indexed in", debs.len() + 1)),
        "{out}"
    );
    apt.update_ok();
    let show = must(apt.cmd("apt-cache").args(["show", "added-exporter"]));
    assert!(
        show.contains("Filename: pool/main/a/added-exporter/added-exporter_3.0-1_amd64.deb"),
        "{show}"
    );

    // A warm cache gives the bytes no cache gives (InRelease signs every index's digests).
    let (warm, plain) = (tmp.path().join("warm"), tmp.path().join("plain"));
    let sde = EPOCH.to_string();
    must(
        cmd::index_pool("apt", &pool, &plain, &secret, &home)
            .arg("--no-index-cache")
            .env("SOURCE_DATE_EPOCH", &sde),
    );
    for _ in 0..2 {
        must(cmd::index_pool("apt", &pool, &warm, &secret, &home).env("SOURCE_DATE_EPOCH", &sde));
    }
    let inrelease = |r: &Path| std::fs::read(r.join("dists/stable/InRelease")).unwrap();
    assert_eq!(inrelease(&warm), inrelease(&plain));

    // Never back in time: apt would keep the newer InRelease it has without a word.
    let before = inrelease(&root);
    let (ok, text) =
        run(cmd::index_pool("apt", &pool, &root, &secret, &home).env("SOURCE_DATE_EPOCH", &sde));
    assert!(
        !ok && text.contains("would silently keep it") && text.contains("dists/stable/Release"),
        "{text}"
    );
    assert_eq!(inrelease(&root), before);

    // Refused, each by name, with nothing written.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let loose = key.write_secret_key(&tmp.path().join("loose.asc"), 0o644);
    let nowhere = tmp.path().join("nowhere");
    let mut cases: Vec<(Command, &str)> = vec![
        (
            cmd::index_pool("apt", &empty, &nowhere, &secret, &home),
            "no .deb file below it",
        ),
        (
            cmd::index_pool("apt", &pool, &nowhere, &loose, &home),
            "loose.asc",
        ),
        (
            {
                let mut c = cmd::index_pool("apt", &pool, &nowhere, &secret, &home);
                c.env("SOURCE_DATE_EPOCH", "yesterday");
                c
            },
            "SOURCE_DATE_EPOCH \"yesterday\": not a number of seconds",
        ),
        (
            {
                let mut c = cmd::index_pool("apt", &pool, &nowhere, &secret, &home);
                c.args(["--base-url", "https://example.org/apt"]);
                c
            },
            "--base-url goes with --merge",
        ),
        (
            {
                let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
                c.args(["index", "--pool"])
                    .arg(&pool)
                    .arg("--out")
                    .arg(&nowhere);
                c
            },
            "--format",
        ),
    ];
    let keep = tmp.path().join("keep.asc");
    std::fs::copy(&secret, &keep).unwrap();
    let mut more: Vec<(Command, &str)> = vec![
        (
            {
                let mut c = cmd::index_pool("apt", &pool, &nowhere, &secret, &home);
                c.arg("--index-cache").arg(&keep);
                c
            },
            "is not an index cache (left alone)",
        ),
        (
            {
                let mut c = cmd::index_pool("apt", &pool, &nowhere, &secret, &home);
                c.arg("--index-cache").arg(nowhere.join("cache"));
                c
            },
            "inside the repository",
        ),
    ];
    cases.append(&mut more);
    for (mut c, expect) in cases {
        let (ok, text) = run(&mut c);
        assert!(
            !ok && text.contains(expect),
            "{c:?}: expected {expect:?}, got {text}"
        );
    }
    assert!(!nowhere.exists(), "a refused run leaves no ROOT it made");
    assert_eq!(
        std::fs::read(&keep).unwrap(),
        std::fs::read(&secret).unwrap()
    );
}

/// A control.tar that names the control file twice (`./control`, then `control`): dpkg
/// installs what the last one says, so an index of the first would sign a lie. Refused, by
/// name, before anything is written.
#[test]
fn a_second_control_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tar_of = |entries: &[(&str, &[u8])]| -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    };
    let good = b"Package: plain-exporter\nVersion: 1.0\nArchitecture: amd64\nMaintainer: T <t@example.org>\nDescription: plain\n";
    let evil = b"Package: bash\nVersion: 99\nArchitecture: amd64\nMaintainer: T <t@example.org>\nEssential: yes\nDescription: not what the index says\n";
    let deb = tmp.path().join("plain-exporter_1.0_amd64.deb");
    {
        let mut ar = ar::Builder::new(std::fs::File::create(&deb).unwrap());
        for (name, data) in [
            ("debian-binary", b"2.0\n".to_vec()),
            (
                "control.tar",
                tar_of(&[("./control", good), ("control", evil)]),
            ),
            ("data.tar", tar_of(&[])),
        ] {
            let h = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
            ar.append(&h, data.as_slice()).unwrap();
        }
    }
    // What dpkg makes of it: the second control file.
    let field = must(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Package"),
    );
    assert_eq!(field.trim(), "bash");
    let key = gpg::GpgKey::generate("apt test <apt@example.org>");
    let root = tmp.path().join("repo");
    let e =
        apt_repo::write_apt_repo(&root, std::slice::from_ref(&deb), &settings(), &key).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("plain-exporter_1.0_amd64.deb") && e.contains("names the control file twice"),
        "{e}"
    );
    assert!(!root.join("dists").exists());
}
