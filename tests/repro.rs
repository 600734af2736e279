//! Reproducible output and what ships with it, driving the real binary:
//! - two `dist` runs in different directories, from different working directories, with
//!   different umasks and time zones, a second apart, give identical trees (packages, indexes,
//!   SBOMs, provenance; signatures too, since they are dated SOURCE_DATE_EPOCH); a difference
//!   is reported with the file and the first differing offset;
//! - without SOURCE_DATE_EPOCH the date comes from the inputs (the component files), never
//!   from the clock;
//! - the SPDX SBOM and in-toto/SLSA provenance of every package: required fields, digests equal
//!   to the real files (the package, its payload as dpkg-deb and rpm2cpio extract it, the
//!   component file, the templates, the upstream asset), signatures checked by gpgv, and
//!   `verify` refusing a tampered, re-signed-by-another-key or lying document.

#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/distfx.rs"]
mod distfx;
#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/gpg.rs"]
mod gpg;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cmd::{must, run};
use distfx::{sha256, Fx};

/// Every file and directory below `root`: relative path → (mode, bytes or link target).
fn tree(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, m: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = md.mode() & 0o7777;
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                m.insert(rel, (mode, t.display().to_string().into_bytes()));
            } else if md.is_dir() {
                m.insert(format!("{rel}/"), (mode, Vec::new()));
                walk(root, &p, m);
            } else {
                m.insert(rel, (mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(root, root, &mut m);
    m
}

/// Every difference between two trees, one line each: the file and the first differing byte.
fn differences(a: &Path, b: &Path) -> Vec<String> {
    let (ta, tb) = (tree(a), tree(b));
    let mut out = Vec::new();
    for (k, (ma, da)) in &ta {
        match tb.get(k) {
            None => out.push(format!("{k}: only in {}", a.display())),
            Some((mb, db)) => {
                if ma != mb {
                    out.push(format!("{k}: mode {ma:04o} vs {mb:04o}"));
                }
                if da != db {
                    let at = da
                        .iter()
                        .zip(db.iter())
                        .position(|(x, y)| x != y)
                        .unwrap_or(da.len().min(db.len()));
                    out.push(format!(
                        "{k}: first difference at byte offset {at} (sizes {} and {})",
                        da.len(),
                        db.len()
                    ));
                }
            }
        }
    }
    for k in tb.keys().filter(|k| !ta.contains_key(*k)) {
        out.push(format!("{k}: only in {}", b.display()));
    }
    out
}

/// `dist` through `sh -c` so that umask, TZ and the working directory are the run's own.
fn dist_in(fx: &Fx, out: &Path, cwd: &Path, umask: &str, tz: &str, sde: Option<&str>) {
    dist_with(fx, None, out, cwd, umask, tz, sde)
}

/// [`dist_in`] with another `xtask` executable (`None`: the one cargo built).
fn dist_with(
    fx: &Fx,
    exe: Option<&Path>,
    out: &Path,
    cwd: &Path,
    umask: &str,
    tz: &str,
    sde: Option<&str>,
) {
    std::fs::create_dir_all(cwd).unwrap();
    let c = fx.cmd();
    let bin = exe.map_or_else(|| c.get_program().to_owned(), |p| p.as_os_str().to_owned());
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(bin)
        .arg("dist")
        .arg("--components")
        .arg(&fx.components)
        .arg("--out")
        .arg(out)
        .arg("--signing-key")
        .arg(&fx.key_file)
        .args(["--base-url", "https://repo.example.org/obs"])
        .arg("--cache")
        .arg(fx.path("cache"))
        .arg("--mirror")
        .arg(format!("file://{}", fx.mirror.display()))
        .current_dir(cwd)
        .env("TZ", tz);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    match sde {
        Some(v) => sh.env("SOURCE_DATE_EPOCH", v),
        None => sh.env_remove("SOURCE_DATE_EPOCH"),
    };
    let (ok, text) = run(&mut sh);
    assert!(ok, "dist into {} failed:\n{text}", out.display());
}

#[test]
fn two_builds_in_different_places_umasks_zones_and_times_are_identical() {
    let fx = Fx::new();
    let (a, b) = (fx.path("one/dist"), fx.path("elsewhere/deeper/dist"));
    dist_in(&fx, &a, &fx.path("cwd-a"), "022", "UTC", Some("1700000000"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The second by another build of the same code: the executable with one byte appended
    // (a checkout elsewhere, another user's cargo home: other bytes, same behaviour). Nothing
    // published may depend on the tool's own digest.
    let exe = fx.path("bin/xtask");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_xtask")).unwrap();
    bytes.push(0);
    std::fs::write(&exe, bytes).unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dist_with(
        &fx,
        Some(&exe),
        &b,
        &fx.path("cwd-b/x"),
        "077",
        "Pacific/Kiritimati",
        Some("1700000000"),
    );
    let (ca, cb) = (a.join("current"), b.join("current"));
    let d = differences(&ca, &cb);
    assert!(d.is_empty(), "the two builds differ:\n{}", d.join("\n"));
    // The comparison covered what matters.
    let t = tree(&ca);
    for needle in [
        ".deb",
        ".rpm",
        "/Packages",
        "/InRelease",
        "repomd.xml",
        SBOM,
        PROV,
    ] {
        assert!(
            t.keys().any(|k| k.ends_with(needle)),
            "no {needle} in the tree"
        );
    }
    // The comparison itself reports the file and offset of a difference.
    let copy = fx.path("copy");
    must(Command::new("cp").arg("-a").arg(cb.join(".")).arg(&copy));
    let rel = t.keys().find(|k| k.ends_with(".deb")).unwrap().clone();
    let mut bytes = std::fs::read(copy.join(&rel)).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(copy.join(&rel), bytes).unwrap();
    assert_eq!(
        differences(&ca, &copy),
        vec![format!(
            "{rel}: first difference at byte offset 1000 (sizes {} and {})",
            t[&rel].1.len(),
            t[&rel].1.len()
        )]
    );
}

#[test]
fn without_source_date_epoch_the_date_comes_from_the_component_files_not_the_clock() {
    let fx = Fx::new();
    // Not in git: the newest component file's modification time is the date.
    for (i, (comp, _)) in distfx::COMPONENTS.iter().enumerate() {
        must(
            Command::new("touch")
                .arg("-d")
                .arg(format!("@{}", 1_600_000_000 + i as u64 * 1000))
                .arg(fx.components.join(format!("{comp}.toml"))),
        );
    }
    let (a, b) = (fx.path("a"), fx.path("b"));
    dist_in(&fx, &a, &fx.path("ca"), "022", "UTC", None);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    dist_in(&fx, &b, &fx.path("cb"), "027", "Asia/Kolkata", None);
    let d = differences(&a.join("current"), &b.join("current"));
    assert!(d.is_empty(), "the two builds differ:\n{}", d.join("\n"));
    let release = std::fs::read_to_string(a.join("current/apt/dists/stable/Release")).unwrap();
    let date = xtask::date::rfc2822(1_600_001_000, "UTC");
    assert!(
        release.contains(&format!("Date: {date}")),
        "Release is not dated by the newest component file ({date}):\n{release}"
    );
}

const SBOM: &str = ".spdx.json";
const PROV: &str = ".intoto.json";

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The payload of a package, extracted by the real tools: path → sha256.
fn payload(pkg: &Path, work: &Path) -> BTreeMap<String, String> {
    std::fs::create_dir_all(work).unwrap();
    if pkg.extension().unwrap() == "deb" {
        must(Command::new("dpkg-deb").arg("-x").arg(pkg).arg(work));
    } else {
        must(Command::new("sh").current_dir(work).arg("-c").arg(format!(
            "rpm2cpio '{}' | cpio -idm --quiet --no-absolute-filenames",
            pkg.display()
        )));
    }
    distfx::listing(work)
        .into_iter()
        .filter(|(k, v)| !k.ends_with('/') && !v.starts_with("-> "))
        .map(|(k, v)| (format!("./{k}"), v))
        .collect()
}

#[test]
fn every_package_has_a_signed_sbom_and_provenance_that_verify_checks() {
    let fx = Fx::new();
    let out = fx.path("dist");
    let (ok, text) = fx.dist(
        &out,
        &[
            "--cache",
            &fx.path("cache").display().to_string(),
            "--mirror",
            &format!("file://{}", fx.mirror.display()),
        ],
    );
    assert!(ok, "{text}");
    let cur = out.join("current");
    let manifest = json(&cur.join("manifest.json"));
    let packages = manifest["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 4, "2 components × deb/rpm (amd64)");
    let atts = manifest["attestations"].as_array().unwrap();
    assert_eq!(atts.len(), packages.len());
    let sums = std::fs::read_to_string(cur.join("SHA256SUMS")).unwrap();
    let keyring = fx.path("keyring.gpg");
    fx.key.write_keyring(&keyring);
    let templates = xtask::render::Templates::load(None).unwrap();
    let rustc =
        String::from_utf8(Command::new("rustc").arg("-V").output().unwrap().stdout).unwrap();

    for p in packages {
        let file = p["file"].as_str().unwrap();
        let name = file.rsplit('/').next().unwrap();
        let comp = p["component"].as_str().unwrap();
        let (pkg_sha, _) = xtask::digest::sha256_file(&cur.join(file)).unwrap();
        let att = atts.iter().find(|a| a["package"] == file).unwrap();
        let sbom_rel = format!("sbom/{name}{SBOM}");
        let prov_rel = format!("provenance/{name}{PROV}");
        assert_eq!(att["sbom"], sbom_rel.as_str());
        assert_eq!(att["provenance"], prov_rel.as_str());
        for rel in [&sbom_rel, &prov_rel] {
            // Listed (so covered by SHA256SUMS.asc), signed, and the signature is good for gpgv.
            let h = sha256(&std::fs::read(cur.join(rel)).unwrap());
            assert!(
                sums.contains(&format!("{h}  {rel}\n")),
                "{rel} not in SHA256SUMS"
            );
            assert!(
                sums.contains(&format!("  {rel}.asc\n")),
                "{rel}.asc not in SHA256SUMS"
            );
            must(
                Command::new("gpgv")
                    .arg("--keyring")
                    .arg(&keyring)
                    .arg(cur.join(format!("{rel}.asc")))
                    .arg(cur.join(rel)),
            );
        }

        // SPDX 2.3: the document, the package with its digest, its payload, the upstream.
        let s = json(&cur.join(&sbom_rel));
        assert_eq!(s["spdxVersion"], "SPDX-2.3");
        assert_eq!(s["dataLicense"], "CC0-1.0");
        assert_eq!(s["SPDXID"], "SPDXRef-DOCUMENT");
        assert!(s["documentNamespace"]
            .as_str()
            .unwrap()
            .starts_with("https://"));
        assert_eq!(s["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        assert!(s["creationInfo"]["creators"][0]
            .as_str()
            .unwrap()
            .starts_with("Tool: "));
        let pk = s["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["SPDXID"] == "SPDXRef-Package")
            .unwrap();
        assert_eq!(pk["packageFileName"], name);
        assert_eq!(pk["checksums"][0]["algorithm"], "SHA256");
        assert_eq!(pk["checksums"][0]["checksumValue"], pkg_sha.as_str());
        let c = xtask::component::load_file(&fx.components.join(format!("{comp}.toml"))).unwrap();
        assert_eq!(pk["licenseDeclared"], c.license.as_str());
        let up = s["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["SPDXID"] == "SPDXRef-Upstream")
            .unwrap();
        let a = xtask::package::Arch::Amd64;
        assert_eq!(up["name"], comp);
        assert_eq!(up["versionInfo"], c.version.as_str());
        assert_eq!(up["downloadLocation"], c.url(a).as_str());
        assert_eq!(up["licenseDeclared"], c.license.as_str());
        let asset = fx
            .mirror
            .join(c.url(a).trim_start_matches("https://github.com/"));
        let asset_sha = xtask::digest::sha256_file(&asset).unwrap().0;
        assert_eq!(up["checksums"][0]["checksumValue"], asset_sha.as_str());
        // Every listed file is in the package (as the real tools extract it) with that digest,
        // and the package's own program and unit are among them.
        let real = payload(&cur.join(file), &fx.path(&format!("x/{name}")));
        let files = s["files"].as_array().unwrap();
        assert!(files.len() >= 3, "{files:?}");
        let mut ids = Vec::new();
        for f in files {
            let path = f["fileName"].as_str().unwrap();
            let sha = f["checksums"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["algorithm"] == "SHA256")
                .unwrap()["checksumValue"]
                .as_str()
                .unwrap();
            assert!(f["checksums"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["algorithm"] == "SHA1"));
            assert_eq!(
                real.get(path).map(String::as_str),
                Some(sha),
                "{name}: {path}"
            );
            ids.push(f["SPDXID"].as_str().unwrap().to_string());
        }
        assert!(real.contains_key(&format!("./usr/bin/{comp}")));
        assert!(files
            .iter()
            .any(|f| f["fileName"] == format!("./usr/bin/{comp}").as_str()));
        assert_eq!(pk["hasFiles"].as_array().unwrap().len(), ids.len());
        let rels = s["relationships"].as_array().unwrap();
        assert!(rels.iter().any(|r| r["relationshipType"] == "DESCRIBES"
            && r["relatedSpdxElement"] == "SPDXRef-Package"));
        for id in &ids {
            assert!(rels
                .iter()
                .any(|r| r["relationshipType"] == "CONTAINS"
                    && r["relatedSpdxElement"] == id.as_str()));
        }

        // in-toto v1 + SLSA provenance v1: subject, every input with its real digest.
        let v = json(&cur.join(&prov_rel));
        assert_eq!(v["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(v["predicateType"], "https://slsa.dev/provenance/v1");
        assert_eq!(v["subject"][0]["name"], name);
        assert_eq!(v["subject"][0]["digest"]["sha256"], pkg_sha.as_str());
        let bd = &v["predicate"]["buildDefinition"];
        assert!(bd["buildType"].as_str().unwrap().starts_with("https://"));
        assert!(v["predicate"]["runDetails"]["builder"]["id"]
            .as_str()
            .unwrap()
            .starts_with("https://"));
        assert_eq!(
            bd["internalParameters"]["toolchain"]["rustc"],
            rustc.trim(),
            "toolchain version"
        );
        let deps = bd["resolvedDependencies"].as_array().unwrap();
        let dep = |n: &str| {
            deps.iter()
                .find(|d| d["name"] == n)
                .unwrap_or_else(|| panic!("{prov_rel}: no input {n}"))["digest"]["sha256"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let comp_file = fx.components.join(format!("{comp}.toml"));
        assert_eq!(
            dep(&format!("components/{comp}.toml")),
            sha256(&std::fs::read(&comp_file).unwrap())
        );
        for (t, h) in &templates.digests {
            let on_disk = cmd::workspace().join(format!("templates/{t}.hbs"));
            assert_eq!(&dep(&format!("templates/{t}.hbs")), h);
            assert_eq!(h, &sha256(&std::fs::read(&on_disk).unwrap()), "{t}");
        }
        let asset_name = c.url(a).rsplit('/').next().unwrap().to_string();
        assert_eq!(dep(&asset_name), asset_sha);
    }
    let ok = fx.verify_ok(&out);
    assert!(ok.starts_with("OK "), "{ok}");

    // Refusals, each on a fresh copy; the failure lines say which document and why.
    let deb_name = packages
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .find(|f| f.ends_with(".deb"))
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let sbom_rel = format!("sbom/{deb_name}{SBOM}");
    let prov_rel = format!("provenance/{deb_name}{PROV}");
    let verify_fails = |dir: &Path| -> String {
        let (ok, text) = run(fx
            .cmd()
            .arg("verify")
            .arg(dir)
            .arg("--key")
            .arg(&fx.pub_asc));
        assert!(!ok, "verify accepted {}:\n{text}", dir.display());
        text
    };
    let copy = |n: &str| -> PathBuf {
        let d = fx.path(n);
        must(Command::new("cp").arg("-a").arg(cur.join(".")).arg(&d));
        d
    };
    // 1. A changed SBOM: its signature fails (and SHA256SUMS says so too).
    let d = copy("t1");
    let p = d.join(&sbom_rel);
    let t = std::fs::read_to_string(&p)
        .unwrap()
        .replace("Apache-2.0", "MIT");
    std::fs::write(&p, t).unwrap();
    let text = verify_fails(&d);
    assert!(
        text.contains(&format!("FAIL {sbom_rel}.asc: signature does not verify")),
        "{text}"
    );
    // 2. A provenance statement signed by another key (SHA256SUMS re-signed by that key too).
    let d = copy("t2");
    let other = gpg::GpgKey::generate("someone else <else@example.invalid>");
    let p = d.join(&prov_rel);
    let sign = |k: &gpg::GpgKey, f: &Path| {
        let sig =
            xtask::signer::Signer::detach_sign_armored(k, &std::fs::read(f).unwrap()).unwrap();
        std::fs::write(format!("{}.asc", f.display()), sig).unwrap();
    };
    sign(&other, &p);
    let text = verify_fails(&d);
    assert!(
        text.contains(&format!("FAIL {prov_rel}.asc: signature does not verify")),
        "{text}"
    );
    // 3. A well-signed SBOM and provenance that state another digest for the package (as the
    //    holder of the key would have to sign them): the digest check itself refuses them.
    let d = copy("t3");
    let fake = "0".repeat(64);
    for rel in [&sbom_rel, &prov_rel] {
        let p = d.join(rel);
        let mut v = json(&p);
        if rel == &sbom_rel {
            v["packages"][0]["checksums"][0]["checksumValue"] = fake.clone().into();
        } else {
            v["subject"][0]["digest"]["sha256"] = fake.clone().into();
        }
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        sign(&fx.key, &p);
    }
    let sums: String = std::fs::read_to_string(d.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .map(|l| {
            let (_, f) = l.split_once("  ").unwrap();
            format!("{}  {f}\n", sha256(&std::fs::read(d.join(f)).unwrap()))
        })
        .collect();
    std::fs::write(d.join("SHA256SUMS"), &sums).unwrap();
    sign(&fx.key, &d.join("SHA256SUMS"));
    let text = verify_fails(&d);
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 2, "{text}");
    for rel in [&sbom_rel, &prov_rel] {
        assert!(
            fails.iter().any(|l| l.starts_with(&format!(
                "FAIL {rel}: names {deb_name} with sha256 {fake}, but "
            ))),
            "{text}"
        );
    }
    // 4. A package whose SBOM is gone (SHA256SUMS re-made without it).
    let d = copy("t4");
    std::fs::remove_file(d.join(&sbom_rel)).unwrap();
    std::fs::remove_file(d.join(format!("{sbom_rel}.asc"))).unwrap();
    let sums: String = std::fs::read_to_string(d.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains(&sbom_rel))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.join("SHA256SUMS"), &sums).unwrap();
    sign(&fx.key, &d.join("SHA256SUMS"));
    let text = verify_fails(&d);
    assert!(text.contains(&format!("FAIL {sbom_rel}: ")), "{text}");
}
