//! Real input, end to end: the real-binary upstream mirror (../shared/upstream-mirror) served
//! over HTTPS on loopback, pinned into a copy of components/, built by `dist`, judged by
//! lintian, rpmlint and rpm, fetched by isolated apt and dnf clients. Nothing is installed on
//! this machine: tests/host.rs installs, upgrades and purges on a booted systemd host.

#[path = "support/clients.rs"]
mod clients;
#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/gpg.rs"]
mod gpg;
#[path = "support/mirror.rs"]
mod mirror;

use cmd::{must, run, workspace};
use mirror::{manifest, mirror_dir, Server};
use std::process::{Command, Stdio};

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

#[test]
fn real_binaries_pin_dist_lint_fetch() {
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

    // Before pinning: the mirror does not carry the catalogue's versions; the failure says
    // so and names `pin`, and nothing is left in the output or the cache.
    let early = tmp.path().join("early");
    let (ok, text) = run(xtask()
        .args(["dist", "--component", "node_exporter", "--components"])
        .arg(&comps)
        .args(["--mirror", &server.url, "--ca-cert"])
        .arg(&server.ca)
        .arg("--out")
        .arg(early.join("dist"))
        .arg("--cache")
        .arg(early.join("cache")));
    assert!(
        !ok && text.contains("404")
            && text.contains("does not carry the pinned version")
            && text.contains("cargo xtask pin NAME VERSION --mirror"),
        "{text}"
    );
    assert!(!early.join("dist/current").exists());

    // Pin the mirror's versions, as a release engineer pins a new upstream release.
    for n in names {
        let version = &rows.iter().find(|r| r.component == n).unwrap().version;
        let pin = || {
            must(
                xtask()
                    .args(["pin", n, version, "--components"])
                    .arg(&comps)
                    .args(["--mirror", &server.url, "--ca-cert"])
                    .arg(&server.ca),
            )
        };
        let out = pin();
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
        // The same pin again leaves the file alone: outside git its mtime dates the packages.
        let file = comps.join(format!("{n}.toml"));
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let out = pin();
        assert!(out.contains("(unchanged)"), "{out}");
        assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), old);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
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
    // (stdout's JSON document comes first; stderr's status lines follow it)
    let v: serde_json::Value = serde_json::Deserializer::from_str(&json[start..])
        .into_iter()
        .next()
        .expect("json output")
        .unwrap_or_else(|e| panic!("{e}: {json}"));
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
    let with_keyring = |uri: &str| clients::sources_at(&sources, uri, &keyring);
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

    // apt (own config and state: nothing of this machine's apt setup) downloads node-exporter
    // from the imported repository through its own .sources file and keyring: signatures
    // and index hashes check out and the package it fetches is the published one.
    let imported_sources = clients::sources_at(
        &sources,
        &format!("file:{}", imported.join("apt").display()),
        &imported.join("keys/observability-stack.gpg"),
    );
    let apt = clients::Apt::new(&imported_sources);
    apt.update_ok();
    let (ok, text) = apt.get(&["download", "node-exporter:amd64"]);
    assert!(ok, "apt-get download from the imported repository:\n{text}");
    let node_deb = pkgs
        .iter()
        .find(|p| p["package"] == "node-exporter" && p["arch"] == "amd64" && p["format"] == "deb")
        .unwrap()["file"]
        .as_str()
        .unwrap();
    let name = node_deb.rsplit('/').next().unwrap();
    assert_eq!(
        apt.downloaded(name),
        std::fs::read(imported.join(node_deb)).unwrap(),
        "apt fetched other bytes than the imported {node_deb}"
    );

    // Installing, upgrading, removing and purging happen on a booted host: tests/host.rs.
}
