//! Real input, end to end: the real-binary upstream mirror (../shared/upstream-mirror) served
//! over HTTPS on loopback, pinned into a copy of components/, built by `dist`, judged by
//! lintian, rpmlint and rpm, then installed and purged on this machine with dpkg.

#[path = "support/clients.rs"]
mod clients;
#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/gpg.rs"]
mod gpg;

use cmd::{must, run, workspace};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn shared() -> PathBuf {
    std::env::var_os("OBS_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared"))
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

    // A release key of our own (what a release engineer passes with --signing-key).
    let key = gpg::GpgKey::generate("e2e release <e2e@example.org>");
    let key_file = tmp.path().join("release-key.asc");
    let export = Command::new("gpg")
        .arg("--homedir")
        .arg(key.home.path())
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(["--armor", "--export-secret-keys", &key.fpr])
        .output()
        .unwrap();
    assert!(export.status.success(), "gpg --export-secret-keys failed");
    let secret = String::from_utf8(export.stdout).unwrap();
    std::fs::write(&key_file, &secret).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let pub_asc = tmp.path().join("release-key.pub.asc");
    std::fs::write(
        &pub_asc,
        xtask::signer::Signer::public_key_armored(&key).unwrap(),
    )
    .unwrap();

    // Build everything.
    let out_dir = tmp.path().join("dist");
    let (ok, json) = run(xtask()
        .args(["dist", "--json", "--components"])
        .arg(&comps)
        .arg("--out")
        .arg(&out_dir)
        .arg("--cache")
        .arg(tmp.path().join("cache"))
        .args(["--mirror", &server.url, "--ca-cert"])
        .arg(&server.ca)
        .arg("--signing-key")
        .arg(&key_file)
        .env("XDG_DATA_HOME", tmp.path().join("xdg"))
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(ok, "dist failed:\n{json}");
    let secret_body = secret
        .lines()
        .find(|l| l.len() > 40 && !l.starts_with('-'))
        .unwrap();
    assert!(
        !json.contains(secret_body),
        "dist printed secret key material"
    );
    assert!(
        !json.contains("DEVELOPMENT KEY"),
        "a real key was given:\n{json}"
    );
    let start = json.find('{').expect("json output");
    let v: serde_json::Value =
        serde_json::from_str(&json[start..]).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(v["signing_key"].as_str().unwrap(), key.fpr);
    let pkgs = v["packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), 8, "2 components × 2 arches × 2 formats: {json}");
    let cur = out_dir.join("current");
    let sums = std::fs::read_to_string(cur.join("SHA256SUMS")).unwrap();
    for p in pkgs {
        let file = cur.join(p["file"].as_str().unwrap());
        let (digest, size) = xtask::digest::sha256_file(&file).unwrap();
        assert_eq!(digest, p["sha256"].as_str().unwrap());
        assert_eq!(size, p["size"].as_u64().unwrap());
        assert!(sums.contains(&format!("{digest}  {}", p["file"].as_str().unwrap())));
    }

    // Reproducible: a second build of node_exporter from the warm cache, into another
    // directory, from another working directory, with another umask and time zone, gives
    // byte-identical packages, SBOMs and provenance (and signatures: they are dated
    // SOURCE_DATE_EPOCH). One component keeps the extra time small.
    let out2 = tmp.path().join("elsewhere/dist");
    let cwd2 = tmp.path().join("cwd2");
    std::fs::create_dir_all(&cwd2).unwrap();
    let (ok, text) = run(Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(["dist", "--component", "node_exporter", "--components"])
        .arg(&comps)
        .arg("--out")
        .arg(&out2)
        .arg("--cache")
        .arg(tmp.path().join("cache"))
        .args(["--offline", "--signing-key"])
        .arg(&key_file)
        .current_dir(&cwd2)
        .env("TZ", "Pacific/Kiritimati")
        .env("XDG_DATA_HOME", tmp.path().join("xdg"))
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(ok, "second dist failed:\n{text}");
    let cur2 = out2.join("current");
    let mut compared = 0;
    for p in pkgs.iter().filter(|p| p["component"] == "node_exporter") {
        let rel = p["file"].as_str().unwrap();
        let name = rel.rsplit('/').next().unwrap();
        for f in [
            rel.to_string(),
            format!("sbom/{name}.spdx.json"),
            format!("sbom/{name}.spdx.json.asc"),
            format!("provenance/{name}.intoto.json"),
            format!("provenance/{name}.intoto.json.asc"),
        ] {
            let (a, b) = (
                std::fs::read(cur.join(&f)).unwrap(),
                std::fs::read(cur2.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}")),
            );
            if a != b {
                let at = a.iter().zip(&b).position(|(x, y)| x != y);
                panic!(
                    "{f} differs between the two builds: first difference at byte offset {} \
                     (sizes {} and {})",
                    at.unwrap_or(a.len().min(b.len())),
                    a.len(),
                    b.len()
                );
            }
            compared += 1;
        }
    }
    assert_eq!(
        compared, 20,
        "4 node_exporter packages × (package, SBOM, provenance, 2 .asc)"
    );
    drop(server);

    // The whole tree verifies offline against the release key, and a tampered copy does not.
    let ver = must(
        xtask()
            .arg("verify")
            .arg(&out_dir)
            .arg("--key")
            .arg(&pub_asc),
    );
    assert!(ver.contains("OK "), "{ver}");
    let copy = tmp.path().join("copy");
    must(Command::new("cp").arg("-a").arg(cur.join(".")).arg(&copy));
    let some_deb = copy.join(
        pkgs.iter().find(|p| p["format"] == "deb").unwrap()["file"]
            .as_str()
            .unwrap(),
    );
    let mut bytes = std::fs::read(&some_deb).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&some_deb, bytes).unwrap();
    let (ok, text) = run(xtask().arg("verify").arg(&copy).arg("--key").arg(&pub_asc));
    assert!(!ok, "verify accepted a tampered package:\n{text}");
    assert!(text.contains("SHA256") && text.contains(".deb"), "{text}");

    // rpmlint and rpmkeys judge against a throw-away rpm database holding only our key.
    let rpmhome = tmp.path().join("rpmhome");
    let rpmdb = tmp.path().join("rpmdb");
    std::fs::create_dir_all(&rpmhome).unwrap();
    std::fs::write(
        rpmhome.join(".rpmmacros"),
        format!("%_dbpath {}\n", rpmdb.display()),
    )
    .unwrap();
    must(
        Command::new("rpmkeys")
            .arg("--dbpath")
            .arg(&rpmdb)
            .arg("--import")
            .arg(&pub_asc),
    );

    // The judges.
    for p in pkgs {
        let file = cur.join(p["file"].as_str().unwrap());
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
                let (_, text) = run(Command::new("rpmlint").arg(&file).env("HOME", &rpmhome));
                println!("rpmlint {}:\n{text}", file.display());
                // rpmlint has no setting for a file that must not be world-readable: the
                // credential file is 0640 root:<group> by design (issue: never readable by
                // others), and so is the disabled web config (it will name a TLS key and
                // password hashes), so exactly that error is accepted, for those files only.
                let name = p["package"].as_str().unwrap().replace('-', "_");
                let web = format!("E: non-readable /etc/{name}/web-config.yml 640");
                let errors: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(" E: "))
                    .filter(|l| !l.contains("E: non-readable /etc/mysqld_exporter/my.cnf 640"))
                    .filter(|l| !l.ends_with(&web))
                    .collect();
                assert!(
                    errors.is_empty(),
                    "rpmlint errors in {}:\n{text}",
                    file.display()
                );
                let sig = must(
                    Command::new("rpmkeys")
                        .arg("--dbpath")
                        .arg(&rpmdb)
                        .args(["--checksig", "-v"])
                        .arg(&file),
                );
                assert!(
                    sig.contains("Header V4 RSA/SHA256 Signature")
                        && sig.contains(": OK")
                        && !sig.contains("NOT OK"),
                    "{}: {sig}",
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

    // apt, as an administrator sets it up from the README: our .sources file with Signed-By
    // pointing at our keyring, over file: and over loopback HTTP.
    let sources = std::fs::read_to_string(cur.join("observability-stack.sources")).unwrap();
    let keyring = cur.join("keys/observability-stack.gpg");
    let with_keyring = |uri: &str| {
        sources
            .lines()
            .map(|l| {
                if l.starts_with("Signed-By:") {
                    format!("Signed-By: {}", keyring.display())
                } else if l.starts_with("URIs:") {
                    format!("URIs: {uri}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let node_deb = |arch: &str| {
        pkgs.iter()
            .find(|p| p["package"] == "node-exporter" && p["arch"] == arch && p["format"] == "deb")
            .unwrap()["file"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let http = clients::Http::serve(&cur);
    for uri in [
        format!("file:{}", cur.join("apt").display()),
        format!("{}/apt", http.url),
    ] {
        let apt = clients::Apt::new(&with_keyring(&uri));
        apt.update_ok();
        for arch in ["amd64", "arm64"] {
            let (ok, text) = apt.get(&["download", &format!("node-exporter:{arch}")]);
            assert!(
                ok,
                "apt-get download node-exporter:{arch} from {uri}:\n{text}"
            );
            let rel = node_deb(arch);
            let name = rel.rsplit('/').next().unwrap();
            assert_eq!(
                apt.downloaded(name),
                std::fs::read(cur.join(&rel)).unwrap(),
                "{uri}: downloaded {name} differs from the pool"
            );
        }
    }
    // dnf with our .repo file: gpgcheck and repo_gpgcheck on.
    let dnf = clients::Dnf::new();
    let repo_text = std::fs::read_to_string(cur.join("observability-stack.repo")).unwrap();
    assert!(repo_text.contains("gpgcheck=1") && repo_text.contains("repo_gpgcheck=1"));
    std::fs::write(
        dnf.t.path().join("repos.d/observability-stack.repo"),
        &repo_text,
    )
    .unwrap();
    let (ok, text) = run(dnf.cmd().arg("makecache"));
    assert!(ok, "dnf makecache:\n{text}");
    let dl = tmp.path().join("dnf-download");
    let (ok, text) = run(dnf
        .cmd_plugins(true)
        .args(["download", "--destdir"])
        .arg(&dl)
        .arg("node_exporter.x86_64"));
    assert!(ok, "dnf download:\n{text}");
    let rpm_rel = pkgs
        .iter()
        .find(|p| p["package"] == "node_exporter" && p["arch"] == "amd64" && p["format"] == "rpm")
        .unwrap()["file"]
        .as_str()
        .unwrap();
    let name = rpm_rel.rsplit('/').next().unwrap();
    assert_eq!(
        std::fs::read(dl.join(name)).unwrap(),
        std::fs::read(cur.join(rpm_rel)).unwrap()
    );
    drop(http);

    // Across the air gap: a signed bundle of the published tree (checked by the real
    // minisign), imported into an empty directory, which verifies and from which apt installs.
    let ms = tmp.path().join("minisign");
    std::fs::create_dir(&ms).unwrap();
    must(
        Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(ms.join("mirror.minisign.pub"))
            .arg("-s")
            .arg(ms.join("mirror.key"))
            .stdin(Stdio::null()),
    );
    let bundle = tmp.path().join("transfer/obs.tar.zst");
    must(
        xtask()
            .args(["mirror", "bundle"])
            .arg(&bundle)
            .arg("--zstd")
            .arg("--dist")
            .arg(&out_dir)
            .arg("--minisign-key")
            .arg(ms.join("mirror.key")),
    );
    must(
        Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(ms.join("mirror.minisign.pub"))
            .arg("-m")
            .arg(&bundle),
    );
    let airgapped = tmp.path().join("airgapped/repo");
    must(
        xtask()
            .args(["mirror", "import"])
            .arg(&bundle)
            .arg("--into")
            .arg(&airgapped)
            .arg("--minisign-pub")
            .arg(ms.join("mirror.minisign.pub")),
    );
    let imported = airgapped.join("current");
    let ver = must(
        xtask()
            .arg("verify")
            .arg(&airgapped)
            .arg("--key")
            .arg(&pub_asc),
    );
    assert!(ver.contains("OK "), "{ver}");
    for p in pkgs {
        let f = p["file"].as_str().unwrap();
        assert_eq!(
            std::fs::read(imported.join(f)).unwrap(),
            std::fs::read(cur.join(f)).unwrap(),
            "{f}"
        );
    }

    // Install, run, purge on this machine (amd64 only).
    if must(Command::new("dpkg").arg("--print-architecture")).trim() != "amd64" {
        return;
    }
    let deb = |name: &str| {
        cur.join(
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
    // node-exporter comes from the imported repository through the system's apt and dpkg
    // (sources, lists and archives of its own: nothing of the machine's apt setup is used).
    let aptd = tmp.path().join("system-apt");
    for d in ["sources.list.d", "lists/partial", "archives/partial"] {
        std::fs::create_dir_all(aptd.join(d)).unwrap();
    }
    std::fs::write(
        aptd.join("sources.list.d/observability-stack.sources"),
        sources
            .lines()
            .map(|l| {
                if l.starts_with("URIs:") {
                    format!("URIs: file:{}\n", imported.join("apt").display())
                } else if l.starts_with("Signed-By:") {
                    format!(
                        "Signed-By: {}\n",
                        imported.join("keys/observability-stack.gpg").display()
                    )
                } else {
                    format!("{l}\n")
                }
            })
            .collect::<String>(),
    )
    .unwrap();
    let system_apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.args(["-q", "-y"])
            .arg("-o")
            .arg("Dir::Etc::SourceList=/dev/null")
            .arg("-o")
            .arg(format!(
                "Dir::Etc::SourceParts={}",
                aptd.join("sources.list.d").display()
            ))
            .arg("-o")
            .arg(format!(
                "Dir::State::Lists={}",
                aptd.join("lists").display()
            ))
            .arg("-o")
            .arg(format!(
                "Dir::Cache::Archives={}",
                aptd.join("archives").display()
            ))
            .args([
                "-o",
                "Dir::Cache::pkgcache=",
                "-o",
                "Dir::Cache::srcpkgcache=",
            ])
            .args(["-o", "APT::Sandbox::User=root"])
            .args(["-o", "Acquire::Languages=none"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        c
    };
    let text = must(&mut system_apt(&["update"]));
    assert!(!text.contains("W:") && !text.contains("E:"), "{text}");
    let text = must(&mut system_apt(&[
        "install",
        "--no-install-recommends",
        "node-exporter",
    ]));
    let guard = Purge("node-exporter");
    assert!(
        text.contains("Setting up node-exporter"),
        "apt did not install node-exporter from the imported repository:\n{text}"
    );
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
