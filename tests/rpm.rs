//! The RPM writer, judged by the real tools: rpm -qp (info, scripts, relations, file
//! attributes), rpm2cpio + cpio (payload contents), rpm -K (digests), rpmlint, sh -n, an
//! install into a throw-away root, and rpmkeys for a signed package.
//!
//! The packages are built from the real components (components/*.toml) with a small real
//! dynamic ELF (/usr/bin/true) as the exporter binary.

#[path = "support/cmd.rs"]
mod cmd;
use std::path::Path;
use std::process::Command;

use cmd::{must, run, workspace};
use xtask::component::{self, Component};
use xtask::dist::{self, BuildOptions, Staged};
use xtask::package::{Arch, Compression, Content, FileKind, Layout, Package};
use xtask::render::{render_component, Templates};
use xtask::rpm_writer;
use xtask::unpack::Extracted;

const SDE: u64 = 1_700_000_000;
const LICENSE_TEXT: &str = "Apache License\nVersion 2.0, January 2004\n(test copy)\n";

fn qp(rpm: &Path, args: &[&str]) -> String {
    must(Command::new("rpm").arg("-qp").args(args).arg(rpm))
}

fn load(name: &str) -> Component {
    component::load_file(&workspace().join(format!("components/{name}.toml")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Stage /usr/bin/true as the component's binary and a license text, as `dist::stage` would.
fn staged(dir: &Path) -> Staged {
    std::fs::create_dir_all(dir).unwrap();
    let bin = dir.join("binary");
    std::fs::copy("/usr/bin/true", &bin).unwrap();
    let lic = dir.join("LICENSE");
    std::fs::write(&lic, LICENSE_TEXT).unwrap();
    let ex = |p: &Path| {
        let (sha256, size) = xtask::digest::sha256_file(p).unwrap();
        Extracted {
            member: p.file_name().unwrap().to_string_lossy().into_owned(),
            path: p.to_path_buf(),
            mode: 0o755,
            size,
            sha256,
        }
    };
    Staged {
        binary: ex(&bin),
        license: Some(ex(&lic)),
        elf: xtask::elf::inspect(&bin, Arch::Amd64).unwrap(),
        configs: vec![],
    }
}

fn describe(c: &Component, t: &Templates, st: &Staged, out: &Path) -> Package {
    let rendered = render_component(t, c, &Layout::RPM).unwrap();
    let opts = BuildOptions {
        out_dir: out.to_path_buf(),
        deb_compression: Compression::Xz,
        rpm_compression: Compression::Xz,
        maintainer: dist::DEFAULT_MAINTAINER.into(),
        source_date_epoch: Some(SDE),
    };
    dist::describe(c, Arch::Amd64, &Layout::RPM, st, rendered, &opts, SDE).unwrap()
}

fn bytes_of(c: &Content) -> Vec<u8> {
    match c {
        Content::Bytes(b) => b.clone(),
        Content::File(p) => std::fs::read(p).unwrap(),
    }
}

fn sha256(b: &[u8]) -> String {
    xtask::digest::sha256_hex(b)
}

/// Everything the tools can tell about one written package, checked against `pkg`.
fn check_package(pkg: &Package, rpm: &Path, c: Compression) {
    let info = qp(rpm, &["--info"]);
    println!("{info}");
    for (k, v) in [
        ("Name", pkg.name.as_str()),
        ("Version", pkg.version.as_str()),
        ("Release", &pkg.revision.to_string()),
        ("Architecture", "x86_64"),
        ("License", pkg.license.as_str()),
        ("URL", pkg.homepage.as_str()),
        ("Packager", pkg.maintainer.as_str()),
        ("Vendor", pkg.maintainer.as_str()),
        ("Build Host", rpm_writer::BUILD_HOST),
        ("Summary", pkg.summary.as_str()),
    ] {
        let line = info
            .lines()
            .find(|l| l.starts_with(k) && l[k.len()..].trim_start().starts_with(':'))
            .unwrap_or_else(|| panic!("no {k} in:\n{info}"));
        assert_eq!(line.split_once(':').unwrap().1.trim(), v, "{k}");
    }
    assert!(
        info.contains(pkg.description.lines().next().unwrap()),
        "{info}"
    );
    let tags = qp(
        rpm,
        &["--qf", "%{BUILDTIME} %{PAYLOADCOMPRESSOR} %{SOURCERPM}\n"],
    );
    let want_comp = match c {
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
        Compression::None => "(none)",
    };
    assert_eq!(tags.trim(), format!("{SDE} {want_comp} (none)"));
    let changelog = qp(rpm, &["--changelog"]);
    assert!(changelog.contains(&pkg.changelog[0]), "{changelog}");

    // Relations.
    let requires = qp(rpm, &["--qf", "[%{REQUIRENAME} %{REQUIREFLAGS:deptype}\n]"]);
    println!("requires:\n{requires}");
    assert!(!pkg.depends.is_empty(), "/usr/bin/true is dynamic");
    for d in &pkg.depends {
        assert!(
            requires.lines().any(|l| l.split(' ').next() == Some(d)),
            "{d} missing:\n{requires}"
        );
    }
    for (name, phase) in [
        ("/usr/sbin/useradd", "pre"),
        ("/usr/sbin/groupadd", "pre"),
        ("/usr/bin/getent", "pre"),
        ("systemd", "post"),
        ("systemd", "preun"),
        ("systemd", "postun"),
        ("/bin/sh", "pre"),
        ("/bin/sh", "post"),
        ("/bin/sh", "preun"),
        ("/bin/sh", "postun"),
    ] {
        assert!(
            requires
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains(phase)),
            "Requires({phase}): {name} missing:\n{requires}"
        );
    }
    let conflicts = qp(rpm, &["--conflicts"]);
    assert_eq!(
        conflicts.lines().collect::<Vec<_>>(),
        pkg.conflicts.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let provides = qp(rpm, &["--provides"]);
    let evr = format!("{}-{}", pkg.version, pkg.revision);
    for p in [
        format!("{} = {evr}", pkg.name),
        format!("{}(x86-64) = {evr}", pkg.name),
        format!("config({}) = {evr}", pkg.name),
        format!("user({})", pkg.service.as_ref().unwrap().user),
    ] {
        assert!(
            provides.lines().any(|l| l.starts_with(&p)),
            "{p}:\n{provides}"
        );
    }

    // File attributes.
    let listing = qp(
        rpm,
        &[
            "--qf",
            "[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILEMTIMES}\n]",
        ],
    );
    println!("{listing}");
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .collect();
    let row = |path: &str| {
        rows.iter()
            .find(|r| r[0] == path)
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"))
    };
    let perms = |mode: u32, dir: bool| {
        let mut s = String::from(if dir { "d" } else { "-" });
        for shift in [6, 3, 0] {
            let m = (mode >> shift) & 7;
            s.push(if m & 4 != 0 { 'r' } else { '-' });
            s.push(if m & 2 != 0 { 'w' } else { '-' });
            s.push(if m & 1 != 0 { 'x' } else { '-' });
        }
        s
    };
    let license_path = format!("/usr/share/licenses/{}/LICENSE", pkg.name);
    let mut expected: Vec<String> = Vec::new();
    for f in &pkg.files {
        let r = row(&f.path);
        let flags = match f.kind {
            FileKind::Regular => "",
            FileKind::Config => "cn",
            FileKind::Doc => "d",
            FileKind::License => "l",
        };
        assert_eq!(
            r[1..5],
            [perms(f.mode, false).as_str(), &f.owner, &f.group, flags],
            "{}",
            f.path
        );
        expected.push(f.path.clone());
    }
    assert_eq!(
        row(&license_path)[1..5],
        ["-rw-r--r--", "root", "root", "l"]
    );
    expected.push(license_path.clone());
    let license_dir = format!("/usr/share/licenses/{}", pkg.name);
    assert_eq!(row(&license_dir)[1..4], ["drwxr-xr-x", "root", "root"]);
    expected.push(license_dir);
    for d in &pkg.dirs {
        assert_eq!(
            row(&d.path)[1..4],
            [perms(d.mode, true).as_str(), &d.owner, &d.group],
            "{}",
            d.path
        );
        expected.push(d.path.clone());
    }
    for r in &rows {
        assert_eq!(r[5], SDE.to_string(), "mtime of {}", r[0]);
    }
    expected.sort();
    let mut got: Vec<String> = rows.iter().map(|r| r[0].to_string()).collect();
    got.sort();
    assert_eq!(got, expected, "exactly the described files and dirs");
    assert_eq!(row(&format!("/usr/bin/{}", pkg.name))[1], "-rwxr-xr-x");
    for f in &pkg.files {
        if f.path.starts_with("/etc/") {
            assert_eq!(f.kind, FileKind::Config, "{} under /etc", f.path);
        }
    }

    // Payload: the bytes that were described, in the cpio archive.
    let x = tempfile::tempdir().unwrap();
    must(
        Command::new("sh")
            .arg("-c")
            .arg("rpm2cpio \"$1\" | (cd \"$2\" && cpio -idm --quiet --no-absolute-filenames)")
            .arg("sh")
            .arg(rpm)
            .arg(x.path()),
    );
    for f in &pkg.files {
        let got = std::fs::read(x.path().join(f.path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{} not in the payload: {e}", f.path));
        assert_eq!(sha256(&got), f.sha256, "{}", f.path);
        assert_eq!(sha256(&bytes_of(&f.content)), f.sha256, "{}", f.path);
    }
    let lic = std::fs::read(x.path().join(license_path.trim_start_matches('/'))).unwrap();
    assert_eq!(lic, LICENSE_TEXT.as_bytes());
    let digests = qp(rpm, &["--qf", "[%{FILENAMES} %{FILEDIGESTS}\n]"]);
    for f in &pkg.files {
        assert!(
            digests.contains(&format!("{} {}", f.path, f.sha256)),
            "{}: header digest\n{digests}",
            f.path
        );
    }

    // Digests, rpmlint.
    let k = must(Command::new("rpm").args(["-K", "--nosignature"]).arg(rpm));
    assert!(k.trim_end().ends_with("digests OK"), "{k}");
    let (_, lint) = run(Command::new("rpmlint").arg(rpm));
    println!("rpmlint {}:\n{lint}", rpm.display());
    let errors: Vec<&str> = lint
        .lines()
        .filter(|l| l.contains(" E: ") && !rpmlint_error_accepted(pkg, l))
        .collect();
    assert!(errors.is_empty(), "rpmlint errors:\n{lint}");
    assert!(
        lint.contains("1 packages and 0 specfiles checked"),
        "rpmlint did not run:\n{lint}"
    );
}

/// The rpmlint errors that are not the package's to fix, each for its reason:
/// - `no-signature`: this is the unsigned writer; signing is `write_rpm_signed` (see
///   `signed_package_verifies_with_rpmkeys`, where rpmlint reports no signature error);
/// - `non-readable FILE 640` for a credential file: issue 2 requires credential files 0640
///   root:<group> (the placeholder becomes real passwords in place), and rpmlint flags every
///   file that is not world-readable outside /var/log, with no configuration to say otherwise.
fn rpmlint_error_accepted(pkg: &Package, line: &str) -> bool {
    let Some((_, tag)) = line.split_once(" E: ") else {
        return false;
    };
    if tag == "no-signature" {
        return true;
    }
    pkg.files.iter().any(|f| {
        f.kind == FileKind::Config
            && f.group != "root"
            && f.mode & 0o004 == 0
            && tag == format!("non-readable {} {:o}", f.path, f.mode)
    })
}

fn scriptlets(rpm: &Path) -> Vec<(&'static str, String)> {
    ["PREIN", "POSTIN", "PREUN", "POSTUN"]
        .into_iter()
        .map(|tag| (tag, qp(rpm, &["--qf", &format!("%{{{tag}}}")])))
        .collect()
}

/// Run one scriptlet with `$1 = arg` and every tool it calls replaced by a logging stub;
/// returns the calls in order.
fn run_scriptlet(script: &str, arg: &str, getent_finds: bool) -> Vec<String> {
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = d.path().join("log");
    for tool in [
        "systemctl",
        "getent",
        "groupadd",
        "useradd",
        "rm",
        "systemd-sysusers",
    ] {
        let status = if tool == "getent" && !getent_finds {
            2
        } else {
            0
        };
        let p = bin.join(tool);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho \"{tool} $*\" >> \"$LOG\"\nexit {status}\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("/bin/sh")
        .arg("-e")
        .arg("-c")
        .arg(script)
        .arg("scriptlet")
        .arg(arg)
        .env_clear()
        .env("PATH", &bin)
        .env("LOG", &log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scriptlet ($1={arg}) failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn check_scriptlets(pkg: &Package, rpm: &Path) {
    let s = pkg.service.as_ref().unwrap();
    let scripts = scriptlets(rpm);
    let text = qp(rpm, &["--scripts"]);
    println!("{text}");
    for needle in ["useradd", "systemctl", "try-restart", "disable"] {
        assert!(text.contains(needle), "scriptlets lack {needle}");
    }
    for (tag, body) in &scripts {
        assert!(!body.contains("{{"), "{tag}: unrendered template");
        assert!(
            !body.contains("%{") && !body.contains("%("),
            "{tag}: rpm macro syntax left in (nothing expands it):\n{body}"
        );
        let (ok, out) = run(Command::new("sh").arg("-n").arg("-c").arg(body));
        assert!(ok, "{tag}: sh -n: {out}\n{body}");
        let (ok, out) = run(Command::new("dash").arg("-n").arg("-c").arg(body));
        assert!(ok, "{tag}: dash -n: {out}\n{body}");
    }
    let body = |tag: &str| &scripts.iter().find(|(t, _)| *t == tag).unwrap().1;
    let systemd_up = Path::new("/run/systemd/system").is_dir();
    let unit = s.unit.as_str();

    // %pre: group then user, only when missing.
    let calls = run_scriptlet(body("PREIN"), "1", false);
    let user = calls
        .iter()
        .find(|c| c.starts_with("useradd "))
        .unwrap_or_else(|| panic!("no useradd: {calls:?}"));
    assert_eq!(
        *user,
        format!(
            "useradd -r -g {} -d / -s /usr/sbin/nologin -c {} service user {}",
            s.group, pkg.name, s.user
        )
    );
    let gi = calls
        .iter()
        .position(|c| *c == format!("groupadd -r {}", s.group))
        .unwrap_or_else(|| panic!("no groupadd: {calls:?}"));
    assert!(gi < calls.iter().position(|c| c == user).unwrap());
    let calls = run_scriptlet(body("PREIN"), "2", true);
    assert!(
        calls.iter().all(|c| c.starts_with("getent ")),
        "existing user and group are left alone: {calls:?}"
    );

    // %post: enable on first install (works offline), start only with a running systemd.
    let calls = run_scriptlet(body("POSTIN"), "1", true);
    assert!(
        calls.contains(&format!("systemctl --no-reload enable {unit}")),
        "{calls:?}"
    );
    assert_eq!(
        calls.contains(&format!("systemctl start {unit}")),
        systemd_up,
        "{calls:?}"
    );
    let calls = run_scriptlet(body("POSTIN"), "2", true);
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("enable") || c.contains("start")),
        "upgrade does not re-enable: {calls:?}"
    );

    // %preun: disable (and stop) on erase only.
    let calls = run_scriptlet(body("PREUN"), "0", true);
    let want = if systemd_up {
        format!("systemctl --no-reload disable --now {unit}")
    } else {
        format!("systemctl --no-reload disable {unit}")
    };
    assert_eq!(calls, [want]);
    assert!(run_scriptlet(body("PREUN"), "1", true).is_empty());

    // %postun: try-restart on upgrade (only with a running systemd), state removed on erase.
    let calls = run_scriptlet(body("POSTUN"), "1", true);
    assert_eq!(
        calls.contains(&format!("systemctl try-restart {unit}")),
        systemd_up,
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.starts_with("rm ")), "{calls:?}");
    let calls = run_scriptlet(body("POSTUN"), "0", true);
    let removed: Vec<&String> = calls.iter().filter(|c| c.starts_with("rm ")).collect();
    let state: Vec<String> = s
        .purge_paths
        .iter()
        .filter(|p| !p.starts_with("/etc/"))
        .map(|p| format!("rm -rf -- {p}"))
        .collect();
    assert_eq!(removed, state.iter().collect::<Vec<_>>());
    assert!(
        !calls.iter().any(|c| c.contains("try-restart")),
        "{calls:?}"
    );
    assert!(
        !body("POSTUN").contains("/etc/"),
        "configuration is left to rpm's %config rules"
    );
}

#[test]
fn packages_of_the_catalogue_with_every_compression() {
    let t = Templates::load(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let st = staged(&work.path().join("stage"));
    for name in ["node_exporter", "mysqld_exporter"] {
        let c = load(name);
        let pkg = describe(&c, &t, &st, work.path());
        for comp in [
            Compression::Xz,
            Compression::Zstd,
            Compression::Gzip,
            Compression::None,
        ] {
            let out = work.path().join(format!("{name}-{comp:?}"));
            std::fs::create_dir_all(&out).unwrap();
            let w = rpm_writer::write_rpm(&pkg, &t, &out, comp).unwrap();
            assert_eq!(
                w.file_name,
                format!("{}-{}-{}.x86_64.rpm", c.name, c.version, c.revision)
            );
            assert_eq!(w.path, out.join(&w.file_name));
            let (digest, size) = xtask::digest::sha256_file(&w.path).unwrap();
            assert_eq!((digest, size), (w.sha256.clone(), w.size));
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&w.path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o644, "published packages are world-readable");
            }
            assert_eq!(
                std::fs::read_dir(&out).unwrap().count(),
                1,
                "no temporary files left"
            );
            check_package(&pkg, &w.path, comp);
            if comp == Compression::Xz {
                check_scriptlets(&pkg, &w.path);
            }
        }
    }
}

/// Neither catalogue component keeps state yet: a package whose service does (StateDirectory=)
/// removes it on erase, never on upgrade, and still leaves /etc to rpm.
#[test]
fn state_is_removed_on_erase_only() {
    let t = Templates::load(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let st = staged(&work.path().join("stage"));
    let mut pkg = describe(&load("mysqld_exporter"), &t, &st, work.path());
    let s = pkg.service.as_mut().unwrap();
    assert!(s.purge_paths.iter().any(|p| p.starts_with("/etc/")));
    s.purge_paths.push("/var/lib/mysqld_exporter".into());
    let w = rpm_writer::write_rpm(&pkg, &t, work.path(), Compression::Gzip).unwrap();
    let postun = qp(&w.path, &["--qf", "%{POSTUN}"]);
    assert!(
        postun.contains("rm -rf -- '/var/lib/mysqld_exporter'"),
        "{postun}"
    );
    check_scriptlets(&pkg, &w.path);
}

#[test]
fn credential_file_is_group_readable_config() {
    let t = Templates::load(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let st = staged(&work.path().join("stage"));
    let c = load("mysqld_exporter");
    let pkg = describe(&c, &t, &st, work.path());
    let w = rpm_writer::write_rpm(&pkg, &t, work.path(), Compression::Gzip).unwrap();
    let listing = qp(
        &w.path,
        &[
            "--qf",
            "[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags}\n]",
        ],
    );
    assert!(
        listing
            .lines()
            .any(|l| l == "/etc/mysqld_exporter/my.cnf -rw-r----- root mysqld_exporter cn"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l == "/etc/mysqld_exporter drwxr-xr-x root root "),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l == "/etc/sysconfig/mysqld_exporter -rw-r--r-- root root cn"),
        "{listing}"
    );
    let cfg = qp(&w.path, &["--configfiles"]);
    assert!(cfg.contains("/etc/mysqld_exporter/my.cnf"), "{cfg}");
}

#[test]
fn same_inputs_give_identical_bytes() {
    let t = Templates::load(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let st = staged(&work.path().join("stage"));
    let c = load("node_exporter");
    let pkg = describe(&c, &t, &st, work.path());
    for comp in [Compression::Xz, Compression::Zstd] {
        let a = work.path().join(format!("a-{comp:?}"));
        let b = work.path().join(format!("b-{comp:?}"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let wa = rpm_writer::write_rpm(&pkg, &t, &a, comp).unwrap();
        // Different mtime of the source file: must not show.
        let f = std::fs::File::options()
            .write(true)
            .open(&st.binary.path)
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .unwrap();
        let wb = rpm_writer::write_rpm(&pkg, &t, &b, comp).unwrap();
        assert_eq!(wa.sha256, wb.sha256);
        assert_eq!(
            std::fs::read(&wa.path).unwrap(),
            std::fs::read(&wb.path).unwrap()
        );
    }
    // A different SOURCE_DATE_EPOCH is a different package.
    let mut later = pkg.clone();
    later.source_date_epoch += 1;
    let d = work.path().join("later");
    std::fs::create_dir_all(&d).unwrap();
    let wl = rpm_writer::write_rpm(&later, &t, &d, Compression::Xz).unwrap();
    let a = rpm_writer::write_rpm(&pkg, &t, &work.path().join("a-Xz"), Compression::Xz).unwrap();
    assert_ne!(wl.sha256, a.sha256);
}

#[test]
fn installs_into_a_throwaway_root() {
    let t = Templates::load(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let st = staged(&work.path().join("stage"));
    let root = tempfile::tempdir().unwrap();
    for name in ["node_exporter", "mysqld_exporter"] {
        let pkg = describe(&load(name), &t, &st, work.path());
        let w = rpm_writer::write_rpm(&pkg, &t, work.path(), Compression::Xz).unwrap();
        must(
            Command::new("rpm")
                .arg(format!("--root={}", root.path().display()))
                .args(["--nodeps", "--noscripts", "-i"])
                .arg(&w.path),
        );
        use std::os::unix::fs::PermissionsExt;
        for f in &pkg.files {
            let p = root.path().join(f.path.trim_start_matches('/'));
            let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(m.permissions().mode() & 0o7777, f.mode, "{}", f.path);
            assert_eq!(
                xtask::digest::sha256_file(&p).unwrap().0,
                f.sha256,
                "{}",
                f.path
            );
        }
        let lic = root
            .path()
            .join(format!("usr/share/licenses/{name}/LICENSE"));
        assert_eq!(std::fs::read_to_string(lic).unwrap(), LICENSE_TEXT);
        let q = must(
            Command::new("rpm")
                .arg(format!("--root={}", root.path().display()))
                .args([
                    "-q",
                    "--qf",
                    "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\n",
                    name,
                ]),
        );
        assert_eq!(
            q.trim(),
            w.file_name.trim_end_matches(".rpm"),
            "installed package"
        );
        let v = must(
            Command::new("rpm")
                .arg(format!("--root={}", root.path().display()))
                .args(["-V", "--nodeps", "--nouser", "--nogroup", name]),
        );
        assert!(v.trim().is_empty(), "rpm -V: {v}");
    }
}

#[test]
fn refuses_values_that_would_break_the_header_or_scripts() {
    let t = Templates::load(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let st = staged(&work.path().join("stage"));
    let pkg = describe(&load("node_exporter"), &t, &st, work.path());
    type Spoil = Box<dyn Fn(&mut Package)>;
    let bad: Vec<(&str, Spoil)> = vec![
        ("summary", Box::new(|p| p.summary.push_str("\nX"))),
        ("requires", Box::new(|p| p.depends.push("a b".into()))),
        (
            "conflicts",
            Box::new(|p| p.conflicts.push("(x or y)".into())),
        ),
        (
            "purge path",
            Box::new(|p| p.service.as_mut().unwrap().purge_paths.push("/".into())),
        ),
        (
            "purge path",
            Box::new(|p| {
                p.service
                    .as_mut()
                    .unwrap()
                    .purge_paths
                    .push("/usr/lib/x".into())
            }),
        ),
        (
            "sysusers",
            Box::new(|p| p.service.as_mut().unwrap().sysusers_file = "/nope.conf".into()),
        ),
        (
            "does not create user",
            Box::new(|p| p.service.as_mut().unwrap().user = "someone_else".into()),
        ),
        (
            "listed twice",
            Box::new(|p| p.files.push(p.files[0].clone())),
        ),
        ("32-bit", Box::new(|p| p.source_date_epoch = 1 << 40)),
    ];
    for (want, f) in bad {
        let mut p = pkg.clone();
        f(&mut p);
        let out = work.path().join(format!("bad-{}", want.replace(' ', "_")));
        std::fs::create_dir_all(&out).unwrap();
        let e = rpm_writer::write_rpm(&p, &t, &out, Compression::Gzip).expect_err(want);
        let full = format!("{e:#}");
        assert!(full.contains(want), "{want}: {full}");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "nothing written"
        );
    }
}

#[test]
fn signed_package_verifies_with_rpmkeys() {
    let t = Templates::load(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let st = staged(&work.path().join("stage"));
    let pkg = describe(&load("node_exporter"), &t, &st, work.path());

    let gnupg = work.path().join("gnupg");
    std::fs::create_dir(&gnupg).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
    let gpg = || {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &gnupg).args(["--batch", "--yes"]);
        c
    };
    must(gpg().args([
        "--passphrase",
        "",
        "--quick-gen-key",
        "rpm test key <rpm-test@invalid>",
        "rsa4096",
        "sign",
        "never",
    ]));
    let secret = must(gpg().args(["--armor", "--export-secret-keys", "rpm-test@invalid"]));
    let public = work.path().join("pub.asc");
    must(
        gpg()
            .args(["--armor", "--output"])
            .arg(&public)
            .args(["--export", "rpm-test@invalid"]),
    );

    let signer = rpm::signature::pgp::Signer::from_asc(&secret).unwrap();
    let a = work.path().join("signed-a");
    let b = work.path().join("signed-b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let w = rpm_writer::write_rpm_signed(&pkg, &t, &a, Compression::Xz, Some(&signer)).unwrap();
    let w2 = rpm_writer::write_rpm_signed(&pkg, &t, &b, Compression::Xz, Some(&signer)).unwrap();
    assert_eq!(w.sha256, w2.sha256, "signed packages are reproducible too");

    let db = work.path().join("rpmdb");
    std::fs::create_dir(&db).unwrap();
    let before = run(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(&db)
        .arg("--checksig")
        .arg(&w.path));
    assert!(!before.0, "unknown key must not verify: {}", before.1);
    must(
        Command::new("rpmkeys")
            .arg("--dbpath")
            .arg(&db)
            .arg("--import")
            .arg(&public),
    );
    let out = must(
        Command::new("rpmkeys")
            .arg("--dbpath")
            .arg(&db)
            .arg("--checksig")
            .arg("-v")
            .arg(&w.path),
    );
    println!("{out}");
    assert!(
        out.contains("Header V4 RSA/SHA256 Signature") && out.contains("OK"),
        "{out}"
    );
    assert!(!out.contains("NOKEY") && !out.contains("BAD"), "{out}");
    // rpmlint's signature check asks rpm with the default database; point rpm at the temporary
    // one through a throw-away HOME (~/.rpmmacros), never the machine's own.
    let home = work.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(
        home.join(".rpmmacros"),
        format!("%_dbpath {}\n", db.display()),
    )
    .unwrap();
    let (_, lint) = run(Command::new("rpmlint").env("HOME", &home).arg(&w.path));
    println!("rpmlint (signed):\n{lint}");
    // A signed package has no signature error; the only error left is the one every
    // 0640 root:<group> conffile gets (here the disabled web config), see rpmlint_error_accepted.
    assert!(!lint.contains("no-signature"), "{lint}");
    let errors: Vec<&str> = lint
        .lines()
        .filter(|l| l.contains(" E: ") && !rpmlint_error_accepted(&pkg, l))
        .collect();
    assert!(errors.is_empty(), "rpmlint errors:\n{lint}");
    assert!(
        lint.contains("1 packages and 0 specfiles checked"),
        "rpmlint did not run:\n{lint}"
    );
    let sig = must(
        Command::new("rpm")
            .args(["-qp", "--qf", "%{RSAHEADER:pgpsig}\n"])
            .arg(&w.path),
    );
    assert!(sig.contains("RSA/SHA256"), "{sig}");

    // The unsigned one is the same package without a signature.
    let u = work.path().join("unsigned");
    std::fs::create_dir_all(&u).unwrap();
    let wu = rpm_writer::write_rpm(&pkg, &t, &u, Compression::Xz).unwrap();
    let (ok, text) = run(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(&db)
        .arg("--checksig")
        .arg(&wu.path));
    assert!(ok, "{text}");
    assert!(!text.contains("signatures"), "unsigned: {text}");
}

/// The arch only names things: aarch64 in the file name, the header and the ISA provide.
#[test]
fn arm64_package_is_named_aarch64() {
    let t = Templates::load(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let st = staged(&work.path().join("stage"));
    let mut pkg = describe(&load("node_exporter"), &t, &st, work.path());
    pkg.arch = Arch::Arm64;
    let w = rpm_writer::write_rpm(&pkg, &t, work.path(), Compression::Zstd).unwrap();
    assert_eq!(w.file_name, "node_exporter-1.10.2-1.aarch64.rpm");
    assert_eq!(qp(&w.path, &["--qf", "%{ARCH}"]), "aarch64");
    let provides = qp(&w.path, &["--provides"]);
    assert!(
        provides
            .lines()
            .any(|l| l == "node_exporter(aarch-64) = 1.10.2-1"),
        "{provides}"
    );
}

/// Size of the generated binary of the peak-memory test (`OBS_RSS_TEST_MIB` overrides; the
/// bench packages 1 GiB).
fn rss_test_bytes() -> u64 {
    std::env::var("OBS_RSS_TEST_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(256)
        << 20
}

/// Peak RSS bound of the writer, whatever the size of the binary.
const RSS_BOUND_KIB: i64 = 64 << 10;

/// Deterministic, partly compressible content (so the compressor works for real): xorshift
/// words mapped onto a 16-letter alphabet, written in 1 MiB chunks.
fn generate(path: &Path, bytes: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for b in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for (i, c) in b.iter_mut().enumerate() {
                *c = b'a' + ((x >> (i * 4)) & 0xf) as u8;
            }
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// Peak RSS (KiB) of this process's own address space: `VmHWM` of /proc/self/status.
/// (Not getrusage's ru_maxrss: Linux carries the parent's peak over fork+exec into it, so a
/// child of a busy test process would report the parent's memory.)
fn own_peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// B6: packaging a large binary streams it. The test re-runs itself as a child process (the
/// child packages and reports its own peak RSS, VmHWM), then checks the package with rpm: digests (rpm -K), the installed size, and the
/// binary's bytes back out of the payload (rpm2cpio).
#[test]
fn large_binary_packages_in_bounded_memory() {
    const NAME: &str = "large_binary_packages_in_bounded_memory";
    if let Ok(dir) = std::env::var("OBS_RSS_CHILD_DIR") {
        let dir = Path::new(&dir);
        let comp = match std::env::var("OBS_RSS_CHILD_COMP").unwrap().as_str() {
            "Xz" => Compression::Xz,
            "Zstd" => Compression::Zstd,
            "Gzip" => Compression::Gzip,
            "None" => Compression::None,
            other => panic!("{other}"),
        };
        let t = Templates::load(None).unwrap();
        let st = staged(&dir.join("stage"));
        let mut pkg = describe(&load("node_exporter"), &t, &st, dir);
        let big = dir.join("big");
        let f = pkg
            .files
            .iter_mut()
            .find(|f| f.path == "/usr/bin/node_exporter")
            .unwrap();
        f.content = Content::File(big.clone());
        let out = dir.join(format!("out-{comp:?}"));
        std::fs::create_dir_all(&out).unwrap();
        rpm_writer::write_rpm(&pkg, &t, &out, comp).unwrap();
        std::fs::write(
            dir.join(format!("peak-{comp:?}")),
            own_peak_rss_kib().to_string(),
        )
        .unwrap();
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bytes = rss_test_bytes();
    let big = work.path().join("big");
    generate(&big, bytes);
    let (want_sha, _) = xtask::digest::sha256_file(&big).unwrap();
    // xz (the default) is inside the bound too: preset 6 with a 1 MiB dictionary and 4 MiB
    // blocks, threads limited to liblzma's estimate of 52 MiB (deb.rs). zstd -19 is streamed
    // the same way, but its encoder's own state is larger than the bound (with 2 workers ~230
    // MiB measured, whatever the input size) and it needs minutes for this much data here.
    for comp in ["Gzip", "None", "Xz"] {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env("OBS_RSS_CHILD_DIR", work.path())
            .env("OBS_RSS_CHILD_COMP", comp);
        let st = cmd.status().unwrap();
        assert!(st.success(), "{comp}: child failed: {st}");
        let kib: i64 = std::fs::read_to_string(work.path().join(format!("peak-{comp}")))
            .unwrap()
            .parse()
            .unwrap();
        println!("{comp}: {} MiB binary, peak RSS {kib} KiB", bytes >> 20);
        assert!(
            kib <= RSS_BOUND_KIB,
            "{comp}: peak RSS {kib} KiB > {RSS_BOUND_KIB} KiB for a {} MiB binary",
            bytes >> 20
        );
        let out = work.path().join(format!("out-{comp}"));
        let rpm = std::fs::read_dir(&out)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let k = must(Command::new("rpm").args(["-Kv", "--nosignature"]).arg(&rpm));
        assert!(k.contains("Payload SHA256 digest: OK"), "{k}");
        assert!(!k.contains("BAD") && !k.contains("NOT OK"), "{k}");
        let size: u64 = qp(&rpm, &["--qf", "%{SIZE}"]).trim().parse().unwrap();
        assert!(size > bytes && size < bytes + (1 << 20), "{size}");
        let sh = format!(
            "rpm2cpio '{}' | cpio -i --quiet --to-stdout ./usr/bin/node_exporter | sha256sum",
            rpm.display()
        );
        let got = must(Command::new("sh").args(["-c", &sh]));
        assert_eq!(
            got.split_whitespace().next(),
            Some(want_sha.as_str()),
            "{comp}"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}
