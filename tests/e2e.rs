//! Real input, end to end: the real-binary upstream mirror (../shared/upstream-mirror) served
//! over HTTPS on loopback, pinned into a copy of components/, built by `dist`, judged by
//! lintian, rpmlint and rpm, then installed and purged on this machine with dpkg.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn shared() -> PathBuf {
    std::env::var_os("OBS_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(cmd: &mut Command) -> String {
    let desc = format!("{cmd:?}");
    let (ok, text) = run(cmd);
    assert!(ok, "{desc} failed:\n{text}");
    text
}

/// The mirror's directory, built once (cached in target/ between runs).
fn mirror_dir() -> PathBuf {
    let dir = std::env::var_os("OBS_MIRROR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/upstream-mirror"));
    if !dir.join("manifest.tsv").is_file() {
        must(
            Command::new("bash")
                .arg(shared().join("upstream-mirror/build.sh"))
                .arg(&dir)
                .env("ARCHES", "amd64 arm64"),
        );
    }
    dir
}

struct Row {
    component: String,
    version: String,
    arch: String,
    sha256: String,
}

fn manifest(dir: &Path) -> Vec<Row> {
    std::fs::read_to_string(dir.join("manifest.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                component: f[0].into(),
                version: f[1].into(),
                arch: f[2].into(),
                sha256: f[4].into(),
            }
        })
        .collect()
}

struct Server {
    child: Child,
    url: String,
    ca: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = Command::new("python3")
            .arg(shared().join("upstream-mirror/serve.py"))
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut it = line.split_whitespace();
        let url = it.next().expect("serve.py printed no URL").to_string();
        let ca = PathBuf::from(it.next().expect("serve.py printed no CA"));
        Server { child, url, ca }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

fn installed(pkg: &str) -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .1
        .contains("install ok installed")
}

#[test]
fn real_binaries_pin_dist_lint_install_purge() {
    let mirror = mirror_dir();
    let rows = manifest(&mirror);
    let server = Server::start(&mirror);
    let tmp = tempfile::tempdir().unwrap();
    let comps = tmp.path().join("components");
    std::fs::create_dir(&comps).unwrap();
    let names = ["node_exporter", "mysqld_exporter"];
    for n in names {
        std::fs::copy(
            workspace().join(format!("components/{n}.toml")),
            comps.join(format!("{n}.toml")),
        )
        .unwrap();
    }

    // Pin the mirror's versions, as a release engineer pins a new upstream release.
    for n in names {
        let version = &rows.iter().find(|r| r.component == n).unwrap().version;
        let out = must(
            xtask()
                .args(["pin", n, version, "--components"])
                .arg(&comps)
                .args(["--mirror", &server.url, "--ca-cert"])
                .arg(&server.ca),
        );
        assert!(
            out.contains(&format!("+version = \"{version}\"")),
            "pin printed no diff:\n{out}"
        );
        let text = std::fs::read_to_string(comps.join(format!("{n}.toml"))).unwrap();
        for r in rows.iter().filter(|r| r.component == n) {
            assert!(
                text.contains(&format!("{} = \"{}\"", r.arch, r.sha256)),
                "{n} {}: pin not written:\n{text}",
                r.arch
            );
        }
    }
    must(xtask().args(["check", "--components"]).arg(&comps));

    // Build everything.
    let out_dir = tmp.path().join("dist");
    let json = must(
        xtask()
            .args(["dist", "--json", "--components"])
            .arg(&comps)
            .arg("--out")
            .arg(&out_dir)
            .arg("--cache")
            .arg(tmp.path().join("cache"))
            .args(["--mirror", &server.url, "--ca-cert"])
            .arg(&server.ca)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    let start = json.find('{').expect("json output");
    let v: serde_json::Value =
        serde_json::from_str(&json[start..]).unwrap_or_else(|e| panic!("{e}: {json}"));
    let pkgs = v["packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), 8, "2 components × 2 arches × 2 formats: {json}");
    let sums = std::fs::read_to_string(out_dir.join("SHA256SUMS")).unwrap();
    for p in pkgs {
        let file = out_dir.join(p["file"].as_str().unwrap());
        let (digest, size) = xtask::digest::sha256_file(&file).unwrap();
        assert_eq!(digest, p["sha256"].as_str().unwrap());
        assert_eq!(size, p["size"].as_u64().unwrap());
        assert!(sums.contains(&format!("{digest}  {}", p["file"].as_str().unwrap())));
    }
    drop(server);

    // The judges.
    for p in pkgs {
        let file = out_dir.join(p["file"].as_str().unwrap());
        match p["format"].as_str().unwrap() {
            "deb" => {
                let (ok, text) = run(Command::new("lintian")
                    .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
                    .arg(&file));
                println!("lintian {}:\n{text}", file.display());
                assert!(ok, "lintian rejects {}:\n{text}", file.display());
                let fields = must(Command::new("dpkg-deb").arg("-I").arg(&file));
                assert!(
                    fields.contains("Depends: libc6 (>= 2."),
                    "mirror binaries are dynamic:\n{fields}"
                );
                assert!(fields.contains("Conflicts: prometheus-"), "{fields}");
            }
            "rpm" => {
                let (_, text) = run(Command::new("rpmlint").arg(&file));
                println!("rpmlint {}:\n{text}", file.display());
                let errors: Vec<&str> = text.lines().filter(|l| l.contains(" E: ")).collect();
                assert!(
                    errors.is_empty(),
                    "rpmlint errors in {}:\n{text}",
                    file.display()
                );
                let scripts = must(Command::new("rpm").args(["-qp", "--scripts"]).arg(&file));
                for needle in ["useradd", "systemctl", "try-restart", "disable"] {
                    assert!(
                        scripts.contains(needle),
                        "{}: scriptlets lack {needle}:\n{scripts}",
                        file.display()
                    );
                }
                let requires = must(Command::new("rpm").args(["-qp", "--requires"]).arg(&file));
                assert!(requires.contains("libc.so.6"), "{requires}");
            }
            f => panic!("unknown format {f}"),
        }
    }

    // Install, run, purge on this machine (amd64 only).
    if must(Command::new("dpkg").arg("--print-architecture")).trim() != "amd64" {
        return;
    }
    let deb = |name: &str| {
        out_dir.join(
            pkgs.iter()
                .find(|p| p["package"] == name && p["arch"] == "amd64" && p["format"] == "deb")
                .unwrap()["file"]
                .as_str()
                .unwrap(),
        )
    };
    let node_version = &rows
        .iter()
        .find(|r| r.component == "node_exporter")
        .unwrap()
        .version;
    assert!(
        !installed("node-exporter"),
        "node-exporter is already installed on this machine"
    );
    must(Command::new("dpkg").arg("-i").arg(deb("node-exporter")));
    let guard = Purge("node-exporter");
    let version = must(Command::new("/usr/bin/node_exporter").arg("--version"));
    assert!(version.contains(node_version.as_str()), "{version}");
    let pw = must(Command::new("getent").args(["passwd", "node_exporter"]));
    assert!(pw.trim_end().ends_with("/usr/sbin/nologin"), "{pw}");
    assert!(!pw.contains("/home/"), "{pw}");
    let unit = Path::new("/usr/lib/systemd/system/node_exporter.service");
    assert!(unit.is_file());
    let (ok, text) = run(Command::new("systemd-analyze").arg("verify").arg(unit));
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
    assert!(Path::new("/etc/default/node-exporter").is_file());
    drop(guard);
    assert!(!installed("node-exporter"));
    assert!(!Path::new("/usr/bin/node_exporter").exists());
    assert!(!unit.exists());
    assert!(
        !Path::new("/etc/default/node-exporter").exists(),
        "purge keeps the env file"
    );

    assert!(
        !installed("mysqld-exporter"),
        "mysqld-exporter is already installed on this machine"
    );
    must(Command::new("dpkg").arg("-i").arg(deb("mysqld-exporter")));
    let guard = Purge("mysqld-exporter");
    let st = must(Command::new("stat").args(["-c", "%a %U %G", "/etc/mysqld_exporter/my.cnf"]));
    assert_eq!(
        st.trim(),
        "640 root mysqld_exporter",
        "credential file permissions"
    );
    let unit = must(Command::new("cat").arg("/usr/lib/systemd/system/mysqld_exporter.service"));
    assert!(unit.contains("ExecCondition="), "{unit}");
    assert!(
        unit.contains("--config.my-cnf=/etc/mysqld_exporter/my.cnf"),
        "{unit}"
    );
    drop(guard);
    assert!(
        !Path::new("/etc/mysqld_exporter").exists(),
        "purge keeps /etc/mysqld_exporter"
    );
}

/// Purges a package when dropped (also when an assertion fails).
struct Purge(&'static str);

impl Drop for Purge {
    fn drop(&mut self) {
        let (ok, text) = run(Command::new("dpkg").arg("--purge").arg(self.0));
        if !ok {
            eprintln!("dpkg --purge {} failed:\n{text}", self.0);
        }
        assert!(
            ok || std::thread::panicking(),
            "dpkg --purge {}:\n{text}",
            self.0
        );
    }
}
