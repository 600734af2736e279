//! The air gap, driving the real binary: `fetch --export` then `dist --offline --cache` with no
//! reachable mirror; `mirror bundle` (checked by the real `minisign -V`) and `mirror import`
//! into an empty directory, from which apt installs and which `verify` accepts; and every
//! refusal of `mirror import` (tampered, truncated, signed by another key, an entry outside the
//! manifest, unsafe paths, links, devices, duplicates), each leaving the target unchanged.
//! Keys are made here: OpenPGP by gpg, minisign by the `minisign` CLI.

#[path = "support/clients.rs"]
mod clients;
#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/distfx.rs"]
mod distfx;
#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/gpg.rs"]
mod gpg;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cmd::{must, run};
use distfx::{listing, sha256, Fx};

// ------------------------------------------------------------------------------------------

#[test]
fn exported_cache_builds_offline_and_a_tampered_export_is_refused() {
    let fx = Fx::new();
    let export = fx.path("export");
    let out = must(
        fx.cmd()
            .arg("fetch")
            .arg("--components")
            .arg(&fx.components)
            .arg("--cache")
            .arg(fx.path("cache"))
            .arg("--mirror")
            .arg(format!("file://{}", fx.mirror.display()))
            .arg("--export")
            .arg(&export),
    );
    assert!(out.contains("2 verified asset(s) exported"), "{out}");
    let exported: Vec<String> = std::fs::read_dir(export.join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(exported.len(), 2, "{exported:?}");
    for name in &exported {
        let bytes = std::fs::read(export.join("sha256").join(name)).unwrap();
        assert_eq!(&sha256(&bytes), name, "exported file named by its digest");
    }
    // The other side of the gap: only the exported directory, a mirror that does not answer.
    std::fs::remove_dir_all(&fx.mirror).unwrap();
    std::fs::remove_dir_all(fx.path("cache")).unwrap();
    let unreachable = ["--mirror", "https://127.0.0.1:9/unreachable"];
    let offline = |cache: &Path, out: &Path| {
        let mut a: Vec<String> = vec!["--offline".into(), "--cache".into()];
        a.push(cache.display().to_string());
        a.extend(unreachable.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fx.dist(out, &a)
    };
    let (ok, text) = offline(&export, &fx.path("dist"));
    assert!(ok, "dist --offline from the export failed:\n{text}");
    let v = fx.verify_ok(&fx.path("dist"));
    assert!(v.starts_with("OK "), "{v}");

    // A tampered export: the build fails, naming the file, and nothing is published.
    let bad = fx.path("export-bad");
    must(Command::new("cp").arg("-a").arg(&export).arg(&bad));
    let victim = bad.join("sha256").join(&exported[0]);
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let (ok, text) = offline(&bad, &fx.path("dist-bad"));
    assert!(!ok, "dist --offline accepted a tampered export:\n{text}");
    assert!(
        text.contains("corrupted") && text.contains(&exported[0]) && text.contains("--offline"),
        "{text}"
    );
    assert!(
        !fx.path("dist-bad/current").exists(),
        "something was published from a tampered export"
    );
}

/// A minisign key pair made by the real CLI without a password (`-W`).
struct Minisign {
    public: PathBuf,
    secret: PathBuf,
}

fn minisign_key(dir: &Path) -> Minisign {
    std::fs::create_dir_all(dir).unwrap();
    let public = dir.join("mirror.minisign.pub");
    let secret = dir.join("mirror.key");
    must(
        Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(&public)
            .arg("-s")
            .arg(&secret)
            .stdin(Stdio::null()),
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    Minisign { public, secret }
}

/// Re-sign `file` with the real CLI (as an attacker holding the key, or a second key, would).
fn cli_sign(key: &Minisign, file: &Path) {
    must(
        Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(&key.secret)
            .arg("-m")
            .arg(file)
            .stdin(Stdio::null()),
    );
}

/// One entry of an uncompressed bundle.
#[derive(Clone)]
struct Ent {
    h: tar::Header,
    name: String,
    data: Vec<u8>,
}

fn entries(bundle: &Path) -> Vec<Ent> {
    let mut ar = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            Ent { h, name, data }
        })
        .collect()
}

fn ent(name: &str, kind: tar::EntryType, data: &[u8]) -> Ent {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    Ent {
        h,
        name: name.into(),
        data: data.to_vec(),
    }
}

/// Write `entries` as a tar. Names the tar crate would refuse (`..`, absolute) are planted raw
/// into the header.
fn write_entries(path: &Path, entries: &[Ent]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for e in entries {
        let mut h = e.h.clone();
        h.set_size(e.data.len() as u64);
        if e.name.starts_with('/') || e.name.split('/').any(|c| c == "..") {
            let n = &mut h.as_old_mut().name;
            n.fill(0);
            n[..e.name.len()].copy_from_slice(e.name.as_bytes());
            h.set_cksum();
            b.append(&h, &e.data[..]).unwrap();
        } else {
            b.append_data(&mut h, &e.name, &e.data[..]).unwrap();
        }
    }
    b.finish().unwrap();
}

#[test]
fn bundle_imports_into_an_empty_directory_apt_installs_and_every_refusal_changes_nothing() {
    let fx = Fx::new();
    let dist = fx.path("dist");
    let (ok, text) = fx.dist(
        &dist,
        &[
            "--cache",
            &fx.path("cache").display().to_string(),
            "--mirror",
            &format!("file://{}", fx.mirror.display()),
        ],
    );
    assert!(ok, "dist failed:\n{text}");
    let ms = minisign_key(&fx.path("minisign"));
    let other = minisign_key(&fx.path("minisign-other"));

    // A secret key file others can read is refused.
    std::fs::set_permissions(&ms.secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let bundle = fx.path("transfer/obs.tar");
    let mut bundle_cmd = fx.cmd();
    bundle_cmd
        .args(["mirror", "bundle"])
        .arg(&bundle)
        .arg("--dist")
        .arg(&dist)
        .arg("--minisign-key")
        .arg(&ms.secret);
    let (ok, text) = run(&mut bundle_cmd);
    assert!(!ok && text.contains("group or others"), "{text}");
    assert!(!bundle.exists());
    std::fs::set_permissions(&ms.secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = must(&mut bundle_cmd);
    assert!(text.contains("signed by minisign key"), "{text}");
    let sig = PathBuf::from(format!("{}.minisig", bundle.display()));
    // The real minisign accepts the signature.
    let v = must(
        Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(&ms.public)
            .arg("-m")
            .arg(&bundle)
            .arg("-x")
            .arg(&sig),
    );
    assert!(
        v.contains("Signature and comment signature verified"),
        "{v}"
    );
    // Deterministic: the same tree gives the same archive.
    let again = fx.path("transfer/again.tar");
    must(
        fx.cmd()
            .args(["mirror", "bundle"])
            .arg(&again)
            .arg("--dist")
            .arg(&dist)
            .arg("--minisign-key")
            .arg(&ms.secret),
    );
    assert_eq!(
        std::fs::read(&bundle).unwrap(),
        std::fs::read(&again).unwrap()
    );

    // The manifest names every file of the published generation with its digest.
    let ents = entries(&bundle);
    assert_eq!(ents[0].name, "MANIFEST");
    let manifest = String::from_utf8(ents[0].data.clone()).unwrap();
    let cur = dist.join("current");
    let gen_files = listing(&cur);
    for (rel, h) in gen_files.iter().filter(|(k, _)| !k.ends_with('/')) {
        let line = format!("{h}  ");
        assert!(
            manifest
                .lines()
                .any(|l| l.starts_with(&line) && l.ends_with(&format!("  repo/{rel}"))),
            "{rel} missing from the MANIFEST:\n{manifest}"
        );
    }
    assert!(
        manifest.contains("  keys/mirror-bundle.minisign.pub\n"),
        "{manifest}"
    );

    // Import into an empty directory.
    let into = fx.path("airgapped/repo");
    let import = |b: &Path, key: &Path| {
        run(fx
            .cmd()
            .args(["mirror", "import"])
            .arg(b)
            .arg("--into")
            .arg(&into)
            .arg("--minisign-pub")
            .arg(key))
    };
    let (ok, text) = import(&bundle, &ms.public);
    assert!(ok, "import failed:\n{text}");
    let imported = into.join("current");
    let imported_files = listing(&imported);
    assert_eq!(
        imported_files, gen_files,
        "imported tree differs from the bundled one"
    );
    let v = fx.verify_ok(&into);
    assert!(v.starts_with("OK "), "{v}");

    // apt, configured from the imported tree's own .sources (keyring from the tree, the tree
    // served over loopback HTTP as a mirror's web server would), installs.
    let http = clients::Http::serve(&imported);
    let sources = std::fs::read_to_string(imported.join("observability-stack.sources")).unwrap();
    let sources = clients::sources_at(
        &sources,
        &format!("{}/apt", http.url),
        &imported.join("keys/observability-stack.gpg"),
    );
    let apt = clients::Apt::new(&sources);
    // This machine's installed packages, so that apt resolves the package's Depends (libc6).
    std::fs::copy("/var/lib/dpkg/status", apt.dir.path().join("status")).unwrap();
    apt.update_ok();
    let (ok, text) = apt.get(&["download", "node-exporter"]);
    assert!(ok, "apt-get download:\n{text}");
    let deb = std::fs::read_dir(apt.dir.path().join("download"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".deb"))
        .expect("a .deb downloaded");
    let pool_copy = imported_files
        .keys()
        .find(|k| k.ends_with(&*deb.file_name().unwrap().to_string_lossy()))
        .expect("downloaded file is in the pool");
    assert_eq!(
        std::fs::read(&deb).unwrap(),
        std::fs::read(cur.join(pool_copy)).unwrap()
    );
    let (ok, text) = apt.get(&["install", "--download-only", "node-exporter"]);
    assert!(ok, "apt-get install --download-only:\n{text}");
    assert!(
        apt.archives()
            .iter()
            .any(|n| n.starts_with("node-exporter_")),
        "{text}"
    );
    drop(http);

    // --- refusals: every one leaves the imported directory exactly as it was ---
    let before = listing(&into);
    let bad = fx.path("bad.tar");
    let bad_sig = PathBuf::from(format!("{}.minisig", bad.display()));
    let refused = |what: &str, key: &Path, needle: &str| {
        let (ok, text) = import(&bad, key);
        assert!(!ok, "{what}: import accepted it:\n{text}");
        assert!(
            text.contains(needle),
            "{what}: expected {needle:?} in:\n{text}"
        );
        assert!(text.contains("nothing was imported"), "{what}:\n{text}");
        assert_eq!(listing(&into), before, "{what}: the directory changed");
    };
    let copy_bundle = || {
        std::fs::copy(&bundle, &bad).unwrap();
        std::fs::copy(&sig, &bad_sig).unwrap();
    };
    // Tampered: one byte in the middle.
    copy_bundle();
    let mut bytes = std::fs::read(&bad).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&bad, &bytes).unwrap();
    refused("tampered", &ms.public, "does not verify");
    // Truncated (signature left as it was).
    copy_bundle();
    let bytes = std::fs::read(&bundle).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    refused("truncated", &ms.public, "does not verify");
    // Truncated and re-signed by the trusted key: the manifest check catches it.
    cli_sign(&ms, &bad);
    refused("truncated, re-signed", &ms.public, "truncated");
    // Signed by another key.
    copy_bundle();
    cli_sign(&other, &bad);
    refused("another key", &ms.public, "does not verify");
    // A missing signature.
    copy_bundle();
    std::fs::remove_file(&bad_sig).unwrap();
    refused("no signature", &ms.public, "signature");
    // Crafted archives, signed by the trusted key (what a manifest check must still catch).
    let craft = |what: &str, edit: &dyn Fn(&mut Vec<Ent>), needle: &str| {
        let mut e = entries(&bundle);
        edit(&mut e);
        write_entries(&bad, &e);
        cli_sign(&ms, &bad);
        refused(what, &ms.public, needle);
    };
    let release = |e: &Vec<Ent>| e.iter().position(|x| x.name.ends_with("/Release")).unwrap();
    let reg = tar::EntryType::Regular;
    craft(
        "an entry outside the manifest",
        &|e| e.push(ent("repo/extra.txt", reg, b"not listed\n")),
        "not in the MANIFEST",
    );
    craft(
        "a changed file",
        &|e| {
            let i = release(e);
            e[i].data[0] ^= 1;
        },
        "sha256",
    );
    craft(
        "a path with ..",
        &|e| e.push(ent("repo/../../evil", reg, b"x")),
        "unsafe path",
    );
    craft(
        "an absolute path",
        &|e| e.push(ent("/tmp/evil", reg, b"x")),
        "unsafe path",
    );
    craft(
        "a symlink",
        &|e| {
            let mut s = ent("repo/link", tar::EntryType::Symlink, b"");
            s.h.set_link_name("/etc/passwd").unwrap();
            e.push(s);
        },
        "symlink",
    );
    craft(
        "a device",
        &|e| e.push(ent("repo/dev", tar::EntryType::Char, b"")),
        "device",
    );
    craft(
        "a duplicate",
        &|e| {
            let d = e[release(e)].clone();
            e.push(d);
        },
        "twice",
    );
    craft(
        "a missing file",
        &|e| {
            let i = release(e);
            e.remove(i);
        },
        "missing",
    );
    craft("no manifest first", &|e| e.swap(0, 1), "MANIFEST");

    // A second, zstd-compressed bundle of a new generation imports as the next generation;
    // the first stays on disk and `current` moves.
    must(
        fx.cmd()
            .args(["mirror", "bundle"])
            .arg(fx.path("transfer/obs.tar.zst"))
            .arg("--zstd")
            .arg("--dist")
            .arg(&dist)
            .arg("--minisign-key")
            .arg(&ms.secret),
    );
    let zst = std::fs::read(fx.path("transfer/obs.tar.zst")).unwrap();
    assert_eq!(&zst[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame");
    let (ok, text) = import(&fx.path("transfer/obs.tar.zst"), &ms.public);
    assert!(ok, "zstd import:\n{text}");
    assert_eq!(
        std::fs::read_link(into.join("current")).unwrap(),
        Path::new("generations/0002")
    );
    assert!(into.join("generations/0001/SHA256SUMS").is_file());
    assert_eq!(listing(&into.join("current")), gen_files);
}
