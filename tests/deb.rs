//! The Debian writer, judged by the real tools: dpkg-deb (info, contents, extraction),
//! md5sum -c, lintian, sh -n; plus determinism and control-field injection attempts.
//!
//! The packages are built from the real components with a small real ELF (/usr/bin/true) as
//! the exporter binary. Nothing is installed on this machine.

#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/fixture.rs"]
mod fixture;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cmd::{must, run};
use xtask::dist::DEFAULT_MAINTAINER;
use xtask::package::{Compression, Content, FileKind, Layout, Package};
use xtask::render::Templates;

const SDE: u64 = 1_700_000_000;
const ALL: [Compression; 4] = [
    Compression::Xz,
    Compression::Zstd,
    Compression::Gzip,
    Compression::None,
];

/// A package of component `name` with /usr/bin/true as its binary.
fn package(name: &str, work: &Path) -> Package {
    fixture::package(name, work, &Layout::DEB, SDE)
}

fn write(pkg: &Package, out: &Path, c: Compression) -> anyhow::Result<xtask::package::Written> {
    std::fs::create_dir_all(out).unwrap();
    xtask::deb::write_deb(pkg, &Templates::load(None).unwrap(), out, c)
}

/// Control fields of a .deb, as dpkg-deb reads them.
fn fields(deb: &Path) -> BTreeMap<String, String> {
    let text = must(Command::new("dpkg-deb").arg("--field").arg(deb));
    let mut out = BTreeMap::new();
    let mut last = String::new();
    for l in text.lines() {
        if l.starts_with(' ') {
            let v: &mut String = out.get_mut(&last).unwrap();
            v.push('\n');
            v.push_str(l);
        } else {
            let (k, v) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            last = k.to_string();
            assert!(
                out.insert(k.to_string(), v.to_string()).is_none(),
                "field {k} twice"
            );
        }
    }
    out
}

/// dpkg-gencontrol's Installed-Size over an extracted tree: KiB (rounded up) per file,
/// 1 per directory including the root.
fn gencontrol_size(dir: &Path) -> u64 {
    let md = std::fs::symlink_metadata(dir).unwrap();
    if md.is_dir() {
        1 + std::fs::read_dir(dir)
            .unwrap()
            .map(|e| gencontrol_size(&e.unwrap().path()))
            .sum::<u64>()
    } else {
        md.len().div_ceil(1024)
    }
}

fn ar_members(deb: &Path) -> Vec<String> {
    must(Command::new("ar").arg("t").arg(deb))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_compression_makes_a_package_dpkg_deb_reads_correctly() {
    for name in ["node_exporter", "mysqld_exporter"] {
        let work = tempfile::tempdir().unwrap();
        let pkg = package(name, work.path());
        for c in ALL {
            let out = work.path().join(format!("{c:?}"));
            let w = write(&pkg, &out, c).unwrap();
            let deb = &w.path;
            assert_eq!(
                w.file_name,
                format!("{}_{}-1_amd64.deb", pkg.name, pkg.version)
            );
            assert_eq!(std::fs::metadata(deb).unwrap().len(), w.size);
            assert_eq!(xtask::digest::sha256_file(deb).unwrap().0, w.sha256);
            let ext = match c {
                Compression::Xz => ".xz",
                Compression::Zstd => ".zst",
                Compression::Gzip => ".gz",
                Compression::None => "",
            };
            assert_eq!(
                ar_members(deb),
                [
                    "debian-binary".to_string(),
                    format!("control.tar{ext}"),
                    format!("data.tar{ext}")
                ]
            );
            let (ok, magic) = run(Command::new("ar").arg("p").arg(deb).arg("debian-binary"));
            assert!(ok && magic == "2.0\n", "{magic:?}");

            // Control fields.
            let f = fields(deb);
            assert_eq!(f["Package"], pkg.name);
            assert_eq!(f["Version"], format!("{}-1", pkg.version));
            assert_eq!(f["Architecture"], "amd64");
            assert_eq!(f["Maintainer"], DEFAULT_MAINTAINER);
            assert_eq!(f["Section"], "net");
            assert_eq!(f["Priority"], "optional");
            assert_eq!(f["Homepage"], pkg.homepage);
            assert!(
                f["Depends"].starts_with("libc6 (>= 2."),
                "/usr/bin/true is dynamic: {f:?}"
            );
            assert_eq!(f["Conflicts"], pkg.conflicts.join(", "));
            let desc = &f["Description"];
            assert!(desc.starts_with(&format!("{}\n ", pkg.summary)), "{desc}");
            assert!(desc.contains("\n .\n"), "paragraphs: {desc}");
            for l in desc.lines().skip(1) {
                assert!(l.starts_with(' ') && l.len() <= 81, "{l:?}");
            }

            // Contents: paths, modes, owners, every parent directory, sorted.
            let listing = must(Command::new("dpkg-deb").arg("--contents").arg(deb));
            let mut paths = Vec::new();
            let mut modes = BTreeMap::new();
            for l in listing.lines() {
                let cols: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(cols[1], "root/root", "{l}");
                assert_eq!(
                    format!("{} {}", cols[3], cols[4]),
                    "2023-11-14 22:13",
                    "mtime = SOURCE_DATE_EPOCH: {l}"
                );
                let p = cols[5].to_string();
                modes.insert(p.clone(), cols[0].to_string());
                paths.push(p);
            }
            let mut sorted = paths.clone();
            sorted.sort();
            assert_eq!(paths, sorted, "entries sorted");
            assert_eq!(paths[0], "./");
            for p in &paths {
                let trimmed = p.trim_end_matches('/');
                if let Some((parent, _)) = trimmed.rsplit_once('/') {
                    let parent = format!("{parent}/");
                    assert!(modes.contains_key(&parent), "{p}: parent {parent} missing");
                    assert_eq!(modes[&parent], "drwxr-xr-x", "{parent}");
                }
            }
            let m = |k: &str| -> &str {
                modes
                    .get(k)
                    .unwrap_or_else(|| panic!("{k} not in the package:\n{listing}"))
            };
            let bin = format!("./usr/bin/{name}");
            assert_eq!(m(&bin), "-rwxr-xr-x");
            assert_eq!(
                m(&format!("./usr/lib/systemd/system/{name}.service")),
                "-rw-r--r--"
            );
            assert_eq!(
                m(&format!("./usr/share/doc/{}/copyright", pkg.name)),
                "-rw-r--r--"
            );
            assert!(
                modes.contains_key(&format!("./usr/share/doc/{}/changelog.Debian.gz", pkg.name))
            );
            assert!(modes.contains_key(&format!("./usr/share/lintian/overrides/{}", pkg.name)));
            assert!(
                !paths.iter().any(|p| p.ends_with("/LICENSE")),
                "upstream LICENSE is not shipped (lintian: extra-license-file)"
            );
            if name == "mysqld_exporter" {
                // Shipped root:root with its mode; postinst registers the group.
                assert_eq!(m("./etc/mysqld_exporter/my.cnf"), "-rw-r-----");
                assert_eq!(m("./etc/mysqld_exporter/"), "drwxr-xr-x");
            }

            // Extract: md5sums and conffiles agree with the tree, Installed-Size as dpkg.
            let tree = work.path().join(format!("tree-{c:?}"));
            let ctrl = work.path().join(format!("ctrl-{c:?}"));
            must(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree));
            must(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctrl));
            let md5 = must(
                Command::new("md5sum")
                    .arg("--strict")
                    .arg("-c")
                    .arg(ctrl.join("md5sums"))
                    .current_dir(&tree),
            );
            let regular: Vec<&str> = paths
                .iter()
                .filter(|p| !p.ends_with('/'))
                .map(|p| p.trim_start_matches("./"))
                .collect();
            assert_eq!(md5.lines().count(), regular.len(), "{md5}");
            for r in &regular {
                assert!(
                    md5.contains(&format!("{r}: OK")),
                    "{r} not in md5sums:\n{md5}"
                );
            }
            let bin_bytes = std::fs::read(tree.join(format!("usr/bin/{name}"))).unwrap();
            assert_eq!(bin_bytes, std::fs::read("/usr/bin/true").unwrap());
            let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap();
            let want: Vec<String> = pkg
                .files
                .iter()
                .filter(|f| f.kind == FileKind::Config)
                .map(|f| f.path.clone())
                .collect();
            assert!(!want.is_empty());
            assert_eq!(conffiles.lines().collect::<Vec<_>>(), want);
            for cf in &want {
                assert!(cf.starts_with("/etc/"), "{cf}");
            }
            assert_eq!(
                f["Installed-Size"].parse::<u64>().unwrap(),
                gencontrol_size(&tree)
            );

            // Documents.
            let copyright =
                std::fs::read_to_string(tree.join(format!("usr/share/doc/{}/copyright", pkg.name)))
                    .unwrap();
            assert!(copyright.starts_with(
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
            ));
            assert!(
                copyright.contains(&format!("\nUpstream-Name: {name}\n")),
                "{copyright}"
            );
            assert!(copyright.contains(&format!("\nSource: {}\n", pkg.homepage)));
            assert!(copyright
                .contains("\nFiles: *\nCopyright: The Prometheus Authors\nLicense: Apache-2.0\n"));
            assert!(copyright.contains("\"/usr/share/common-licenses/Apache-2.0\"."));
            let gz = tree.join(format!("usr/share/doc/{}/changelog.Debian.gz", pkg.name));
            let changelog = must(Command::new("gzip").arg("-dc").arg(&gz));
            assert!(
                changelog.starts_with(&format!(
                    "{} ({}-1) unstable; urgency=medium\n\n  * ",
                    pkg.name, pkg.version
                )),
                "{changelog}"
            );
            assert!(
                changelog.ends_with(&format!(
                    "\n -- {DEFAULT_MAINTAINER}  Tue, 14 Nov 2023 22:13:20 +0000\n"
                )),
                "{changelog}"
            );
            let cl = work.path().join("changelog");
            std::fs::write(&cl, &changelog).unwrap();
            let parsed = must(
                Command::new("dpkg-parsechangelog")
                    .arg("-l")
                    .arg(&cl)
                    .args(["-S", "Version"]),
            );
            assert_eq!(parsed.trim(), format!("{}-1", pkg.version));
            // gzip -9n: no name, no mtime, maximum compression flag.
            let raw = std::fs::read(&gz).unwrap();
            assert_eq!(
                &raw[3..10],
                &[0, 0, 0, 0, 0, 2, 3],
                "gzip header: {:?}",
                &raw[..10]
            );
            let overrides = std::fs::read_to_string(
                tree.join(format!("usr/share/lintian/overrides/{}", pkg.name)),
            )
            .unwrap();
            let lines: Vec<&str> = overrides.lines().collect();
            // describe()'s overrides plus the writer's own (no ITP bug; no years upstream;
            // modes of statoverride'd files), each after its reason.
            assert_eq!(lines.len() % 2, 0, "{overrides}");
            for (tag, reason) in &pkg.lintian_overrides {
                assert!(
                    overrides.contains(&format!("# {reason}\n{}: {tag}\n", pkg.name)),
                    "{overrides}"
                );
            }
            assert!(
                overrides.contains(": initial-upload-closes-no-bugs ["),
                "{overrides}"
            );
            if name == "mysqld_exporter" {
                assert!(
                    overrides.contains(
                        ": non-standard-file-perm 0640 != 0644 [etc/mysqld_exporter/my.cnf]\n"
                    ),
                    "{overrides}"
                );
            }
            for pair in lines.chunks(2) {
                assert!(
                    pair[0].starts_with("# ") && pair[0].len() > 4,
                    "{overrides}"
                );
                assert!(
                    pair[1].starts_with(&format!("{}: ", pkg.name)),
                    "{overrides}"
                );
            }
        }
    }
}

#[test]
fn lintian_is_clean() {
    for name in ["node_exporter", "mysqld_exporter"] {
        let work = tempfile::tempdir().unwrap();
        let pkg = package(name, work.path());
        for c in [Compression::Xz, Compression::Gzip] {
            let w = write(&pkg, &work.path().join(format!("{c:?}")), c).unwrap();
            let (ok, text) = run(Command::new("lintian")
                .args([
                    "--fail-on",
                    "error,warning",
                    "--no-tag-display-limit",
                    "--info",
                ])
                .arg(&w.path));
            println!("lintian {} ({c:?}):\n{text}", w.file_name);
            if let Some(keep) = std::env::var_os("DEB_TEST_KEEP") {
                std::fs::create_dir_all(&keep).unwrap();
                std::fs::copy(&w.path, Path::new(&keep).join(&w.file_name)).unwrap();
            }
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
                .collect();
            assert!(ok && bad.is_empty(), "lintian {}:\n{text}", w.file_name);
        }
    }
}

#[test]
fn output_is_deterministic() {
    let work = tempfile::tempdir().unwrap();
    let pkg = package("mysqld_exporter", work.path());
    for c in ALL {
        let a = write(&pkg, &work.path().join(format!("a-{c:?}")), c).unwrap();
        let b = write(&pkg, &work.path().join(format!("b-{c:?}/deeper")), c).unwrap();
        assert_eq!(a.sha256, b.sha256, "{c:?}: two writes differ");
        assert_eq!(
            std::fs::read(&a.path).unwrap(),
            std::fs::read(&b.path).unwrap()
        );
        // The epoch is what fixes the timestamps: another epoch, other bytes.
        let mut later = pkg.clone();
        later.source_date_epoch += 1;
        let l = write(&later, &work.path().join(format!("l-{c:?}")), c).unwrap();
        assert_ne!(a.sha256, l.sha256, "{c:?}: epoch not used");
        // Nothing but the package is left in the output directory.
        let names: Vec<_> = std::fs::read_dir(work.path().join(format!("a-{c:?}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, std::slice::from_ref(&a.file_name));
    }
}

/// The maintainer scripts of a written package, by name.
fn scripts(pkg: &Package, work: &Path) -> BTreeMap<String, String> {
    let w = write(pkg, &work.join("scripts"), Compression::Gzip).unwrap();
    let ctrl = work.join("scripts-ctrl");
    must(Command::new("dpkg-deb").arg("-e").arg(&w.path).arg(&ctrl));
    let mut out = BTreeMap::new();
    for name in ["preinst", "postinst", "prerm", "postrm"] {
        let p = ctrl.join(name);
        if p.exists() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755, "{name}");
            out.insert(name.to_string(), std::fs::read_to_string(&p).unwrap());
        }
    }
    out
}

#[test]
fn maintainer_scripts_parse_and_do_what_dh_would() {
    for name in ["node_exporter", "mysqld_exporter"] {
        let work = tempfile::tempdir().unwrap();
        let pkg = package(name, work.path());
        let s = scripts(&pkg, work.path());
        assert_eq!(
            s.keys().map(String::as_str).collect::<Vec<_>>(),
            ["postinst", "postrm", "prerm"]
        );
        for (n, text) in &s {
            assert!(text.starts_with("#!/bin/sh\n"), "{n}");
            assert!(text.contains("\nset -e\n"), "{n}");
            assert!(text.contains("case \"$1\" in"), "{n}");
            assert!(!text.contains("{{"), "{n}: unrendered template");
            for shell in ["sh", "dash", "bash"] {
                let (ok, err) = run(Command::new(shell)
                    .arg("-n")
                    .arg(work.path().join("scripts-ctrl").join(n)));
                assert!(ok, "{shell} -n {n}:\n{err}\n{text}");
            }
            // An unknown action is an error, as dpkg expects.
            let (ok, err) = run(Command::new("sh")
                .arg(work.path().join("scripts-ctrl").join(n))
                .arg("bogus-action"));
            assert!(!ok && err.contains("unknown argument"), "{n}: {err}");
        }
        let unit = format!("'{name}.service'");
        let post = &s["postinst"];
        for needle in [
            format!("systemd-sysusers ${{DPKG_ROOT:+--root=\"$DPKG_ROOT\"}} '{name}.conf'\n"),
            format!("useradd --system --gid '{name}' --no-create-home"),
            "--shell /usr/sbin/nologin".to_string(),
            format!("deb-systemd-helper enable {unit}"),
            format!("deb-systemd-helper --quiet was-enabled {unit}"),
            format!("deb-systemd-helper unmask {unit}"),
            "systemctl --system daemon-reload".to_string(),
            format!("deb-systemd-invoke restart {unit}"),
            format!("deb-systemd-invoke start {unit}"),
            "if [ -z \"${DPKG_ROOT:-}\" ] && [ -d /run/systemd/system ]; then".to_string(),
            "if [ -n \"$2\" ]; then".to_string(),
        ] {
            assert!(post.contains(&needle), "postinst lacks {needle}:\n{post}");
        }
        // User creation comes before anything that needs the user.
        assert!(post.find("systemd-sysusers").unwrap() < post.find("deb-systemd-helper").unwrap());
        let prerm = &s["prerm"];
        assert!(
            prerm.contains(&format!("deb-systemd-invoke stop {unit}")),
            "{prerm}"
        );
        assert!(prerm.contains("if [ \"$1\" = remove ]; then"), "{prerm}");
        let postrm = &s["postrm"];
        for needle in [
            format!("deb-systemd-helper mask {unit}"),
            format!("deb-systemd-helper purge {unit}"),
            format!("deb-systemd-helper unmask {unit}"),
        ] {
            assert!(postrm.contains(&needle), "postrm lacks {needle}:\n{postrm}");
        }
        for text in s.values() {
            assert!(
                !text.contains("userdel") && !text.contains("deluser"),
                "users are kept"
            );
        }
        if name == "mysqld_exporter" {
            let cnf = "'/etc/mysqld_exporter/my.cnf'";
            assert!(post.contains(&format!(
                "if ! dpkg-statoverride --list {cnf} >/dev/null 2>&1; then\n            dpkg-statoverride --update --add 'root' 'mysqld_exporter' '0640' {cnf}\n"
            )), "{post}");
            assert!(
                post.find("systemd-sysusers").unwrap() < post.find("dpkg-statoverride").unwrap(),
                "the group exists before the override names it"
            );
            assert!(
                postrm.contains(&format!("dpkg-statoverride --remove {cnf}")),
                "{postrm}"
            );
            assert!(
                postrm.contains("rm -rf \"${DPKG_ROOT:-}\"'/etc/mysqld_exporter'\n"),
                "{postrm}"
            );
        } else {
            // node_exporter's only file owned by its group is the (disabled) web config.
            let wc = "'/etc/node_exporter/web-config.yml'";
            assert!(
                post.contains(&format!(
                    "dpkg-statoverride --update --add 'root' 'node_exporter' '0640' {wc}\n"
                )),
                "{post}"
            );
            assert_eq!(
                post.matches("dpkg-statoverride --update --add").count(),
                1,
                "{post}"
            );
            assert!(
                postrm.contains("rm -rf \"${DPKG_ROOT:-}\"'/etc/node_exporter'\n"),
                "{postrm}"
            );
        }
    }
}

#[test]
fn no_restart_and_no_enable_variants() {
    let work = tempfile::tempdir().unwrap();
    let mut pkg = package("node_exporter", work.path());
    let svc = pkg.service.as_mut().unwrap();
    svc.restart_on_upgrade = false;
    svc.enable_on_install = false;
    let s = scripts(&pkg, work.path());
    assert!(
        !s["postinst"].contains("deb-systemd-helper enable"),
        "{}",
        s["postinst"]
    );
    assert!(
        !s["postinst"].contains("deb-systemd-invoke restart"),
        "{}",
        s["postinst"]
    );
    assert!(
        s["postinst"].contains("deb-systemd-helper update-state"),
        "{}",
        s["postinst"]
    );
    assert!(
        s["prerm"].contains("|| [ \"$1\" = upgrade ]"),
        "{}",
        s["prerm"]
    );
    for n in s.keys() {
        must(
            Command::new("sh")
                .arg("-n")
                .arg(work.path().join("scripts-ctrl").join(n)),
        );
    }
}

#[test]
fn hostile_values_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let base = package("mysqld_exporter", work.path());
    let out = work.path().join("out");
    type Edit = fn(&mut Package);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "newline in summary",
            |p| p.summary.push_str("\nDepends: evil"),
            "control character",
        ),
        (
            "carriage return in description",
            |p| p.description.push_str("\rX"),
            "control character",
        ),
        (
            "newline in maintainer",
            |p| p.maintainer = "A <a@b>\nEssential: yes".into(),
            "control character",
        ),
        (
            "field in a dependency",
            |p| p.depends.push("libc6\nPre-Depends: evil".into()),
            "relation",
        ),
        (
            "list in one dependency",
            |p| p.depends.push("a, b".into()),
            "relation",
        ),
        (
            "bad conflict name",
            |p| p.conflicts.push("Evil Name".into()),
            "conflicting package",
        ),
        (
            "version with a revision separator",
            |p| p.version = "1.0-2".into(),
            "version",
        ),
        (
            "file path with a newline",
            |p| p.files[0].path = "/usr/bin/x\n/etc/passwd".into(),
            "file",
        ),
        (
            "relative file path",
            |p| p.files[0].path = "usr/bin/x".into(),
            "absolute",
        ),
        ("setuid file", |p| p.files[0].mode = 0o4755, "setuid"),
        (
            "world-writable file",
            |p| p.files[0].mode = 0o666,
            "world-writable",
        ),
        (
            "purge of /",
            |p| p.service.as_mut().unwrap().purge_paths.push("/".into()),
            "purge path",
        ),
        (
            "purge of /etc",
            |p| p.service.as_mut().unwrap().purge_paths.push("/etc".into()),
            "purge path",
        ),
        (
            "purge of a shared directory",
            |p| {
                p.service
                    .as_mut()
                    .unwrap()
                    .purge_paths
                    .push("/etc/default".into())
            },
            "shared directory",
        ),
        (
            "purge path with a quote",
            |p| {
                p.service
                    .as_mut()
                    .unwrap()
                    .purge_paths
                    .push("/etc/x'; rm -rf /; '".into())
            },
            "purge path",
        ),
        (
            "purge path climbing out",
            |p| {
                p.service
                    .as_mut()
                    .unwrap()
                    .purge_paths
                    .push("/var/lib/../../usr".into())
            },
            "purge path",
        ),
        (
            "shell in the service user",
            |p| p.service.as_mut().unwrap().user = "x$(reboot)".into(),
            "user or group name",
        ),
        (
            "odd unit name",
            |p| p.service.as_mut().unwrap().unit = "x'.service".into(),
            "unit",
        ),
        (
            "multi-line lintian override reason",
            |p| p.lintian_overrides.push(("tag".into(), "a\nb".into())),
            "control character",
        ),
        (
            "override without a reason",
            |p| p.lintian_overrides.push(("some-tag".into(), " ".into())),
            "needs a reason",
        ),
        (
            "file owned by a user with a newline",
            |p| p.files[1].group = "g\nx".into(),
            "user or group name",
        ),
        (
            "duplicate file",
            |p| {
                let f = p.files[0].clone();
                p.files.push(f)
            },
            "twice",
        ),
        (
            "content that does not match its size",
            |p| {
                let i = p
                    .files
                    .iter()
                    .position(|f| matches!(f.content, Content::Bytes(_)))
                    .unwrap();
                p.files[i].size += 1;
            },
            "size",
        ),
        (
            "binary that does not match its digest",
            |p| p.files[0].sha256 = "0".repeat(64),
            "differs from the description",
        ),
    ];
    for (what, edit, want) in cases {
        let mut p = base.clone();
        edit(&mut p);
        let err = match write(&p, &out, Compression::Gzip) {
            Ok(w) => panic!("{what}: accepted ({})", w.path.display()),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(want), "{what}: error {err:?} lacks {want:?}");
        // A refused package leaves nothing behind.
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert!(left.is_empty(), "{what}: left {left:?}");
    }
}

#[test]
fn a_description_cannot_inject_fields() {
    let work = tempfile::tempdir().unwrap();
    let mut pkg = package("node_exporter", work.path());
    pkg.description = "Harmless first line.\nDepends: evil\nEssential: yes\n\n\n.\n  keep  this spacing\n\nPackage: other"
        .into();
    let w = write(&pkg, &work.path().join("out"), Compression::Xz).unwrap();
    let f = fields(&w.path);
    assert!(!f.contains_key("Essential"), "{f:?}");
    assert!(f["Depends"].starts_with("libc6"), "{f:?}");
    assert_eq!(f["Package"], "node-exporter");
    let d = &f["Description"];
    assert!(
        d.contains("\n Harmless first line. Depends: evil Essential: yes\n .\n"),
        "{d}"
    );
    assert!(
        d.contains("\n   keep  this spacing\n"),
        "verbatim line kept: {d}"
    );
    // dpkg itself reads the same fields back.
    let (ok, text) = run(Command::new("dpkg-deb").arg("--info").arg(&w.path));
    assert!(ok, "{text}");
}

/// Run a maintainer script the way dpkg runs it for an installation into another root
/// (DPKG_ROOT, DPKG_ADMINDIR): every tool the scripts call (systemd-sysusers --root,
/// deb-systemd-helper, dpkg-statoverride, rm) then works inside `root`, and nothing on this
/// machine changes. No running systemd is touched: the scripts skip it under DPKG_ROOT.
fn run_script(ctrl: &Path, root: &Path, script: &str, args: &[&str]) -> String {
    let (ok, text) = run(Command::new("sh")
        .arg("-e")
        .arg(ctrl.join(script))
        .args(args)
        .env("DPKG_ROOT", root)
        .env("DPKG_ADMINDIR", root.join("var/lib/dpkg"))
        .env("DPKG_MAINTSCRIPT_PACKAGE", "test")
        .env_remove("SYSTEMD_OFFLINE"));
    assert!(ok, "{script} {args:?} failed:\n{text}");
    text
}

/// A throw-away root with the package unpacked as dpkg would leave it before configure.
fn unpacked_root(deb: &Path, work: &Path) -> (PathBuf, PathBuf) {
    let root = work.join("root");
    let ctrl = work.join("ctrl");
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/statoverride"), "").unwrap();
    must(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    must(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctrl));
    (root, ctrl)
}

/// The paths postinst registers with `dpkg-statoverride --update --add` (the last, quoted
/// word of each such line).
fn override_paths(ctrl: &Path) -> Vec<String> {
    let script = std::fs::read_to_string(ctrl.join("postinst")).unwrap();
    script
        .lines()
        .filter(|l| {
            l.trim_start()
                .starts_with("dpkg-statoverride --update --add ")
        })
        .map(|l| {
            let last = l.split_whitespace().last().unwrap();
            last.trim_matches('\'').to_string()
        })
        .collect()
}

/// dpkg-statoverride resolves owner and group names on this machine, never in DPKG_ROOT (so
/// bookworm's dpkg), and the package's user exists only in the throw-away root: an override
/// cannot be added here (tests/host.rs installs for real and checks the owners). An override
/// that already exists is the admin's choice, which postinst keeps: every path postinst would
/// register gets one first (`root root 0600`), and the database is returned.
fn seed_overrides(ctrl: &Path, root: &Path) -> PathBuf {
    let db = root.join("var/lib/dpkg/statoverride");
    let paths = override_paths(ctrl);
    assert!(!paths.is_empty(), "postinst registers no stat override");
    let lines: String = paths
        .iter()
        .map(|p| format!("root root 0600 {p}\n"))
        .collect();
    std::fs::write(&db, lines).unwrap();
    db
}

/// The database's entries as (owner, group, mode, path), the mode as a number (dpkg rewrites
/// the file in its own layout).
fn overrides(db: &Path) -> Vec<(String, String, u32, String)> {
    std::fs::read_to_string(db)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].into(),
                f[1].into(),
                u32::from_str_radix(f[2], 8).unwrap(),
                f[3].into(),
            )
        })
        .collect()
}

#[test]
fn scripts_run_install_upgrade_remove_purge_in_a_throwaway_root() {
    let work = tempfile::tempdir().unwrap();
    let pkg = package("node_exporter", work.path());
    let w = write(&pkg, &work.path().join("out"), Compression::Xz).unwrap();
    let (root, ctrl) = unpacked_root(&w.path, work.path());
    let passwd = || std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let wants = root.join("etc/systemd/system/multi-user.target.wants/node_exporter.service");
    let db = seed_overrides(&ctrl, &root);
    let seeded = overrides(&db);

    // First installation, then the same configure again (dpkg may rerun it).
    for _ in 0..2 {
        run_script(&ctrl, &root, "postinst", &["configure", ""]);
        assert_eq!(
            overrides(&db),
            seeded,
            "postinst replaced an existing override"
        );
        let pw = passwd();
        assert_eq!(
            pw.lines()
                .filter(|l| l.starts_with("node_exporter:"))
                .count(),
            1,
            "{pw}"
        );
        let user = pw
            .lines()
            .find(|l| l.starts_with("node_exporter:"))
            .unwrap();
        assert!(
            user.ends_with(":/usr/sbin/nologin") && !user.contains("/home"),
            "{user}"
        );
        assert!(
            std::fs::read_to_string(root.join("etc/group"))
                .unwrap()
                .contains("node_exporter:x:"),
            "group"
        );
        assert!(wants.is_symlink(), "enabled: {}", wants.display());
    }
    // The admin disables it; an upgrade keeps that choice.
    std::fs::remove_file(&wants).unwrap();
    run_script(&ctrl, &root, "prerm", &["upgrade", "1.10.2-2"]);
    run_script(&ctrl, &root, "postrm", &["upgrade", "1.10.2-2"]);
    run_script(&ctrl, &root, "postinst", &["configure", "1.10.2-0"]);
    assert!(
        !wants.exists(),
        "upgrade re-enabled a unit the admin disabled"
    );
    run_script(&ctrl, &root, "postinst", &["abort-upgrade", "1.10.2-2"]);
    // Remove: masked (as dh does), the user stays.
    run_script(&ctrl, &root, "prerm", &["remove"]);
    for f in &pkg.files {
        std::fs::remove_file(root.join(f.path.trim_start_matches('/'))).unwrap();
    }
    for _ in 0..2 {
        run_script(&ctrl, &root, "postrm", &["remove"]);
    }
    let mask = root.join("etc/systemd/system/node_exporter.service");
    assert_eq!(
        std::fs::read_link(&mask).ok().as_deref(),
        Some(Path::new("/dev/null")),
        "masked after removal"
    );
    // Purge twice: mask and deb-systemd-helper state gone, user kept.
    for _ in 0..2 {
        run_script(&ctrl, &root, "postrm", &["purge"]);
    }
    assert!(!mask.exists() && !mask.is_symlink(), "unmasked on purge");
    assert!(!wants.is_symlink());
    assert!(
        passwd().contains("node_exporter:"),
        "purge keeps the system user"
    );
}

#[test]
fn purge_removes_credentials_and_the_stat_override() {
    let work = tempfile::tempdir().unwrap();
    let pkg = package("mysqld_exporter", work.path());
    let w = write(&pkg, &work.path().join("out"), Compression::Xz).unwrap();
    let (root, ctrl) = unpacked_root(&w.path, work.path());
    let db = seed_overrides(&ctrl, &root);
    let seeded = overrides(&db);
    assert!(
        seeded.iter().any(|o| o.3 == "/etc/mysqld_exporter/my.cnf"),
        "{seeded:?}"
    );
    for _ in 0..2 {
        run_script(&ctrl, &root, "postinst", &["configure", ""]);
        assert_eq!(
            overrides(&db),
            seeded,
            "postinst replaced an existing override"
        );
    }
    assert!(std::fs::read_to_string(root.join("etc/group"))
        .unwrap()
        .contains("mysqld_exporter:x:"));
    run_script(&ctrl, &root, "prerm", &["remove"]);
    run_script(&ctrl, &root, "postrm", &["remove"]);
    // dpkg removes the package's files; the admin's edits of the credential file stay until
    // purge (it is a conffile), and so does anything else they put into the directory.
    std::fs::write(root.join("etc/mysqld_exporter/extra.cnf"), "x").unwrap();
    for _ in 0..2 {
        run_script(&ctrl, &root, "postrm", &["purge"]);
    }
    assert!(
        !root.join("etc/mysqld_exporter").exists(),
        "purge keeps /etc/mysqld_exporter"
    );
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        "",
        "override left after purge"
    );
    assert!(
        root.join("usr/bin/mysqld_exporter").exists(),
        "purge stays inside its paths"
    );
}

#[test]
fn long_paths_use_gnu_long_names() {
    let work = tempfile::tempdir().unwrap();
    let mut pkg = package("node_exporter", work.path());
    let long = format!("/usr/share/{}/{}.txt", "d".repeat(90), "f".repeat(60));
    let bytes = b"long\n".to_vec();
    pkg.files.push(xtask::package::FileEntry {
        path: long.clone(),
        mode: 0o644,
        owner: "root".into(),
        group: "root".into(),
        kind: FileKind::Regular,
        sha256: xtask::digest::sha256_hex(&bytes),
        size: bytes.len() as u64,
        content: Content::Bytes(bytes),
    });
    let w = write(&pkg, &work.path().join("out"), Compression::Xz).unwrap();
    let listing = must(Command::new("dpkg-deb").arg("--contents").arg(&w.path));
    assert!(listing.contains(&format!(" .{long}\n")), "{listing}");
    let tree = work.path().join("tree");
    must(Command::new("dpkg-deb").arg("-x").arg(&w.path).arg(&tree));
    assert_eq!(
        std::fs::read(tree.join(long.trim_start_matches('/'))).unwrap(),
        b"long\n"
    );
}
