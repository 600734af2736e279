//! The components the real-binary mirror does not carry (phpfpm_exporter, promtail, alloy,
//! systemd_exporter) exercised through `pin` and `dist` with generated release archives of
//! their exact upstream layout: the same asset names (promtail and alloy: .zip), the same
//! member paths and checksum-file names, served from a `file:` mirror. The binary inside is a
//! real ELF of the right arch, taken from the mirror of real exporter binaries, so the ELF
//! checks of `stage` run as they do for a real release.

#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/gpg.rs"]
mod gpg;
#[path = "support/mirror.rs"]
mod mirror;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use cmd::{must, run, workspace};
use mirror::mirror_dir;

/// A real exporter ELF of `arch` from the mirror (nginx_exporter's, the smallest), extracted
/// with the pipeline's own safe unpacker.
fn real_elf(mirror: &Path, arch: &str, work: &Path) -> PathBuf {
    let manifest = std::fs::read_to_string(mirror.join("manifest.tsv")).unwrap();
    let row: Vec<&str> = manifest
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f[0] == "nginx_exporter" && f[2] == arch)
        .expect("nginx_exporter in the mirror manifest");
    let dest = work.join(format!("elf-{arch}"));
    std::fs::create_dir_all(&dest).unwrap();
    let got = xtask::unpack::extract_members(
        &mirror.join(row[3]),
        xtask::unpack::ArchiveKind::TarGz,
        &[row[5].to_string()],
        &dest,
        &xtask::unpack::Limits::default(),
    )
    .unwrap();
    got[0].path.clone()
}

/// How an upstream lays out its release: (component, version, org/repo, tag, asset, members
/// as (path in archive, what), checksum file). `{a}` is the upstream arch.
struct Layout {
    component: &'static str,
    version: &'static str,
    repo: &'static str,
    asset: &'static str,
    members: &'static [(&'static str, Member)],
    sums: &'static str,
}

#[derive(Clone, Copy)]
enum Member {
    Binary,
    Text(&'static str),
}

const LAYOUTS: &[Layout] = &[
    // goreleaser, flat
    Layout {
        component: "phpfpm_exporter",
        version: "2.2.0",
        repo: "hipages/php-fpm_exporter",
        asset: "php-fpm_exporter_{v}_linux_{a}.tar.gz",
        members: &[
            ("LICENSE", Member::Text("Apache License\nVersion 2.0\n")),
            ("README.md", Member::Text("# php-fpm_exporter\n")),
            ("php-fpm_exporter", Member::Binary),
        ],
        sums: "php-fpm_exporter_{v}_checksums.txt",
    },
    // Loki's zips hold one file named like the asset
    Layout {
        component: "promtail",
        version: "2.8.2",
        repo: "grafana/loki",
        asset: "promtail-linux-{a}.zip",
        members: &[("promtail-linux-{a}", Member::Binary)],
        sums: "SHA256SUMS",
    },
    Layout {
        component: "alloy",
        version: "1.16.1",
        repo: "grafana/alloy",
        asset: "alloy-linux-{a}.zip",
        members: &[("alloy-linux-{a}", Member::Binary)],
        sums: "SHA256SUMS",
    },
    // promu, one top directory
    Layout {
        component: "systemd_exporter",
        version: "0.7.0",
        repo: "prometheus-community/systemd_exporter",
        asset: "systemd_exporter-{v}.linux-{a}.tar.gz",
        members: &[
            (
                "systemd_exporter-{v}.linux-{a}/LICENSE",
                Member::Text("Apache License\n"),
            ),
            (
                "systemd_exporter-{v}.linux-{a}/NOTICE",
                Member::Text("systemd_exporter\n"),
            ),
            (
                "systemd_exporter-{v}.linux-{a}/systemd_exporter",
                Member::Binary,
            ),
        ],
        sums: "sha256sums.txt",
    },
];

fn sub(s: &str, v: &str, a: &str) -> String {
    s.replace("{v}", v).replace("{a}", a)
}

/// Write one archive of `l` for `arch`; returns its path.
fn write_archive(l: &Layout, arch: &str, elf: &Path, dir: &Path) -> PathBuf {
    let path = dir.join(sub(l.asset, l.version, arch));
    let data = |m: Member| match m {
        Member::Binary => std::fs::read(elf).unwrap(),
        Member::Text(t) => t.as_bytes().to_vec(),
    };
    if path.to_string_lossy().ends_with(".zip") {
        let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for (name, m) in l.members {
            let mode = if matches!(m, Member::Binary) {
                0o755
            } else {
                0o644
            };
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(mode);
            w.start_file(sub(name, l.version, arch), opts).unwrap();
            w.write_all(&data(*m)).unwrap();
        }
        w.finish().unwrap();
    } else {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        let mut b = tar::Builder::new(gz);
        let mut dirs_done = std::collections::BTreeSet::new();
        for (name, m) in l.members {
            let name = sub(name, l.version, arch);
            if let Some((d, _)) = name.rsplit_once('/') {
                if dirs_done.insert(d.to_string()) {
                    let mut h = tar::Header::new_gnu();
                    h.set_path(format!("{d}/")).unwrap();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    h.set_cksum();
                    b.append(&h, &[][..]).unwrap();
                }
            }
            let bytes = data(*m);
            let mut h = tar::Header::new_gnu();
            h.set_path(&name).unwrap();
            h.set_mode(if matches!(m, Member::Binary) {
                0o755
            } else {
                0o644
            });
            h.set_size(bytes.len() as u64);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append(&h, &bytes[..]).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }
    path
}

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

#[test]
fn components_without_real_binaries_build_from_their_upstream_layouts() {
    let mirror = mirror_dir();
    let tmp = tempfile::tempdir().unwrap();
    let elves: Vec<(&str, PathBuf)> = ["amd64", "arm64"]
        .into_iter()
        .map(|a| (a, real_elf(&mirror, a, tmp.path())))
        .collect();

    // The generated mirror, and a copy of the components to pin into.
    let gen = tmp.path().join("mirror");
    let comps = tmp.path().join("components");
    std::fs::create_dir_all(&comps).unwrap();
    for l in LAYOUTS {
        let dir = gen.join(format!("{}/releases/download/v{}", l.repo, l.version));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sums = String::new();
        for (arch, elf) in &elves {
            let a = write_archive(l, arch, elf, &dir);
            let (digest, _) = xtask::digest::sha256_file(&a).unwrap();
            sums.push_str(&format!(
                "{digest}  {}\n",
                a.file_name().unwrap().to_string_lossy()
            ));
        }
        std::fs::write(dir.join(sub(l.sums, l.version, "")), sums).unwrap();
        std::fs::copy(
            workspace().join(format!("components/{}.toml", l.component)),
            comps.join(format!("{}.toml", l.component)),
        )
        .unwrap();
    }
    let mirror_url = format!("file://{}", gen.display());

    // Pin the generated assets as a release engineer pins a release (same version, new pins):
    // the real pins must be replaced, or dist would refuse the generated archives.
    for l in LAYOUTS {
        let out = must(
            xtask()
                .args(["pin", l.component, l.version, "--components"])
                .arg(&comps)
                .args(["--mirror", &mirror_url]),
        );
        assert!(
            out.contains("+amd64 = ") && out.contains("+arm64 = "),
            "{out}"
        );
    }
    must(xtask().args(["check", "--components"]).arg(&comps));

    let key = gpg::GpgKey::generate("layouts test <layouts@example.org>");
    let key_file = tmp.path().join("key.asc");
    std::fs::write(&key_file, key.export_secret_armored()).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out_dir = tmp.path().join("dist");
    let (ok, json) = run(xtask()
        .args(["dist", "--json", "--components"])
        .arg(&comps)
        .arg("--out")
        .arg(&out_dir)
        .arg("--cache")
        .arg(tmp.path().join("cache"))
        .args(["--mirror", &mirror_url])
        .arg("--signing-key")
        .arg(&key_file)
        // (gzip: the payload format is not what this test is about, and it is the fastest)
        .args(["--deb-compression", "gzip", "--rpm-compression", "gzip"])
        .env("XDG_DATA_HOME", tmp.path().join("xdg"))
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(ok, "dist failed:\n{json}");
    // (stdout's JSON document comes first; stderr's status lines follow it)
    let v: serde_json::Value = serde_json::Deserializer::from_str(&json[json.find('{').unwrap()..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let pkgs = v["packages"].as_array().unwrap();
    assert_eq!(
        pkgs.len(),
        16,
        "4 components × 2 arches × 2 formats: {json}"
    );

    let cur = out_dir.join("current");
    let elf_sha: Vec<(String, String)> = elves
        .iter()
        .map(|(a, p)| (a.to_string(), xtask::digest::sha256_file(p).unwrap().0))
        .collect();
    let mut debs = Vec::new();
    for p in pkgs {
        let file = cur.join(p["file"].as_str().unwrap());
        let arch = p["arch"].as_str().unwrap();
        let want = &elf_sha.iter().find(|(a, _)| a == arch).unwrap().1;
        let x = tempfile::tempdir().unwrap();
        match p["format"].as_str().unwrap() {
            "deb" => {
                must(Command::new("dpkg-deb").arg("-x").arg(&file).arg(x.path()));
                debs.push(file.clone());
            }
            _ => {
                must(
                    Command::new("sh")
                        .arg("-c")
                        .arg("rpm2cpio \"$1\" | (cd \"$2\" && cpio -idm --quiet --no-absolute-filenames)")
                        .arg("sh")
                        .arg(&file)
                        .arg(x.path()),
                );
                let k = must(Command::new("rpm").args(["-K", "--nosignature"]).arg(&file));
                assert!(k.trim_end().ends_with("digests OK"), "{k}");
            }
        }
        // The package's /usr/bin/<component> is exactly the binary inside the archive.
        let name = p["package"].as_str().unwrap().replace('-', "_");
        let bin = x.path().join(format!("usr/bin/{name}"));
        let (got, _) = xtask::digest::sha256_file(&bin)
            .unwrap_or_else(|e| panic!("{}: no usr/bin/{name}: {e}", file.display()));
        assert_eq!(
            &got,
            want,
            "{}: binary differs from the archive's",
            file.display()
        );
    }
    let (ok, text) = run(Command::new("lintian")
        .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
        .args(&debs));
    assert!(ok, "lintian:\n{text}");
    must(xtask().arg("verify").arg(&out_dir).arg("--key").arg({
        let p = tmp.path().join("key.pub.asc");
        std::fs::write(&p, xtask::signer::Signer::public_key_armored(&key).unwrap()).unwrap();
        p
    }));
}
