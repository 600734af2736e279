//! Adding an exporter is data only: every file in components/ — whatever its name, the moment
//! it is added — goes through `cargo xtask check`, rendering for both layouts and both writers,
//! and the packages are judged by lintian and rpmlint as tests/deb.rs and tests/rpm.rs judge
//! them. The binary is a small real ELF (/usr/bin/true) and each archive member a component
//! installs as configuration is a stand-in file (tests/support/fixture.rs).

#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/fixture.rs"]
mod fixture;

use std::path::PathBuf;
use std::process::Command;

use cmd::{must, run, workspace};
use xtask::component::{self, Component};
use xtask::package::{Compression, FileKind, Layout, Package};
use xtask::render::Templates;

const SDE: u64 = 1_700_000_000;

/// Every `*.toml` in the workspace's components/ (the directory itself, not a list).
fn component_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(workspace().join("components"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    assert!(v.len() >= 14, "the catalogue has 14 components: {v:?}");
    v
}

fn stem(p: &std::path::Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

/// What every package of a component must carry, whatever the format.
fn assert_contents(c: &Component, pkg: &Package, layout: &Layout) {
    let has = |p: &str| pkg.files.iter().any(|f| f.path == p);
    for p in [
        format!("/usr/bin/{}", c.name),
        format!("{}/{}", layout.unit_dir, c.unit_name()),
        format!("{}/{}.conf", layout.sysusers_dir, c.name),
    ] {
        assert!(has(&p), "{}: {p} not in the package", c.name);
    }
    for f in &c.config {
        let e = pkg.files.iter().find(|e| e.path == f.path);
        let e = e.unwrap_or_else(|| panic!("{}: config {} not packaged", c.name, f.path));
        assert_eq!(e.kind, FileKind::Config, "{}: {}", c.name, f.path);
        assert_eq!(e.mode, f.mode, "{}: {}", c.name, f.path);
    }
    if let Some(w) = c.web_config_path() {
        let e = pkg.files.iter().find(|e| e.path == w).unwrap();
        assert_eq!((e.kind, e.mode), (FileKind::Config, 0o640), "{w}");
        assert_eq!(e.group, c.service.group, "{w}");
    }
}

#[test]
fn every_component_file_checks_renders_and_packages_cleanly() {
    let files = component_files();
    let out = must(
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["check", "--components"])
            .arg(workspace().join("components")),
    );
    let t = Templates::load(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut debs = Vec::new();
    let mut rpms = Vec::new();
    let mut pkgs = Vec::new();
    let mut comps = Vec::new();
    for f in &files {
        let name = stem(f);
        let c = component::load_file(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains("pinned:")),
            "check did not list {name}:\n{out}"
        );
        for layout in [Layout::DEB, Layout::RPM] {
            let dir = work.path().join(format!("{name}-{:?}", layout.format));
            let pkg = fixture::package(&name, &dir, &layout, SDE);
            assert_contents(&c, &pkg, &layout);
            let w = match layout.format {
                xtask::package::Format::Deb => {
                    let w = xtask::deb::write_deb(&pkg, &t, &dir, Compression::Xz).unwrap();
                    debs.push(w.path.clone());
                    w
                }
                xtask::package::Format::Rpm => {
                    let w = xtask::rpm_writer::write_rpm(&pkg, &t, &dir, Compression::Xz).unwrap();
                    rpms.push(w.path.clone());
                    w
                }
            };
            println!("{name} {:?}: {}", layout.format, w.file_name);
            pkgs.push(pkg);
        }
        comps.push(c);
    }

    // lintian, once over all .debs (it names the package on each line). Overridden tags are
    // shown (to prove each package was read), so the verdict is the E:/W: lines, not the exit
    // status (which --show-overrides would turn non-zero for the reasoned overrides).
    let (ok, text) = run(Command::new("lintian")
        .args(["--fail-on", "none", "--no-tag-display-limit"])
        .arg("--show-overrides")
        .args(&debs));
    println!("lintian:\n{text}");
    // Every package was read: each has its (reasoned) no-manual-page override.
    for c in &comps {
        assert!(
            text.contains(&format!("O: {}: no-manual-page", c.deb_name)),
            "lintian did not read {}:\n{text}",
            c.deb_name
        );
    }
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(ok && bad.is_empty(), "lintian:\n{}", bad.join("\n"));

    // rpmlint, once over all .rpms; only the errors that are not the package's to fix.
    let (_, lint) = run(Command::new("rpmlint").args(&rpms));
    println!("rpmlint:\n{lint}");
    assert!(
        lint.contains(&format!("{} packages and 0 specfiles checked", rpms.len())),
        "rpmlint did not run over every package:\n{lint}"
    );
    let errors: Vec<&str> = lint
        .lines()
        .filter(|l| l.contains(" E: ") && !rpmlint_error_accepted(&pkgs, l))
        .collect();
    assert!(errors.is_empty(), "rpmlint errors:\n{}", errors.join("\n"));
}

/// As in tests/rpm.rs: `no-signature` (the unsigned writer) and `non-readable` for a 0640
/// root:<service group> configuration file (credentials, the web config), which rpmlint flags
/// outside /var/log with no way to say otherwise.
fn rpmlint_error_accepted(pkgs: &[Package], line: &str) -> bool {
    let Some((head, tag)) = line.split_once(" E: ") else {
        return false;
    };
    if tag == "no-signature" {
        return true;
    }
    let pkg_name = head
        .rsplit('/')
        .next()
        .unwrap_or(head)
        .split(".x86_64")
        .next();
    pkgs.iter()
        .filter(|p| Some(p.name.as_str()) == pkg_name || pkg_name.is_none())
        .flat_map(|p| p.files.iter())
        .any(|f| {
            f.kind == FileKind::Config
                && f.group != "root"
                && f.mode & 0o004 == 0
                && tag == format!("non-readable {} {:o}", f.path, f.mode)
        })
}

/// A new file dropped into components/ is walked too: the walk reads the directory. (The
/// same walk over a copy of the catalogue plus one more file finds it, and `check` lists it.)
#[test]
fn a_new_component_file_is_covered_when_added() {
    let tmp = tempfile::tempdir().unwrap();
    for f in component_files() {
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let text = std::fs::read_to_string(workspace().join("components/node_exporter.toml"))
        .unwrap()
        .replace("name = \"node_exporter\"", "name = \"zz_exporter\"")
        .replace("user = \"node_exporter\"", "user = \"zz_exporter\"");
    std::fs::write(tmp.path().join("zz_exporter.toml"), text).unwrap();
    let out = must(
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["check", "--components"])
            .arg(tmp.path()),
    );
    assert!(out.contains("zz_exporter "), "{out}");
    assert!(out.contains("15 component(s) valid"), "{out}");
    // and a broken one stops check with its file named
    std::fs::write(
        tmp.path().join("broken.toml"),
        "name = \"broken\"\nversion = \"1\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["check", "--components"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("broken.toml:"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
