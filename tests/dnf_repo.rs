//! The dnf repository writer judged by the real clients: dnf (makecache, repoquery, install
//! --downloadonly) with gpgcheck and repo_gpgcheck on, rpmkeys --checksig, and createrepo_c
//! over the same packages as a cross-check of every index field.
//!
//! Everything runs in temporary directories: dnf gets its own --installroot, --config and
//! reposdir, rpmkeys its own --dbpath; the machine's rpm/dnf configuration is never read or
//! written.

#[path = "support/clients.rs"]
mod clients;
#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/gpg.rs"]
mod gpg;

use clients::Dnf;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rpm::{Dependency, FileOptions, PackageBuilder};
use xtask::dnf_repo::{self, MetadataCompression, RepoFile, Settings};
use xtask::signer::Signer;

const DATE: u32 = 1_700_000_000;

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    out
}

fn ok(c: &mut Command) -> String {
    let out = run(c);
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// dnf's `repoquery --qf QF` of the repository at `root` (its public key written under
/// `keys/obs.asc` first; package signatures not checked: the repodata is what is queried).
fn repoquery(root: &Path, key: &dyn Signer, qf: &str) -> String {
    dnf_repo::write_public_key(root, "obs", key).unwrap();
    let key = root.join("keys/obs.asc");
    ok(Dnf::new()
        .with_repo(root, &key)
        .args(["--setopt=obs.gpgcheck=0", "repoquery", "--qf", qf]))
}

/// One small test package. `base` is the noarch package that satisfies the others' requires
/// in an empty installroot.
fn build_rpm(dir: &Path, name: &str, arch: &str, base: bool) -> PathBuf {
    let cfg = rpm::BuildConfig::default()
        .source_date(DATE)
        .compression(rpm::CompressionType::Gzip);
    let mut b = PackageBuilder::new(
        name,
        "1.2.3",
        "Apache-2.0",
        arch,
        "Test <exporter> & \"friends\"",
    );
    b.using_config(cfg)
        .release("4.obs")
        .url("https://example.org/?a=1&b=2")
        .vendor("observability-stack")
        .packager("Release Engineering <re@example.org>")
        .group("System/Monitoring")
        .build_host("builder.invalid")
        .description("Line one with <tags> & 'quotes'.\nLine two.");
    if base {
        b.provides(Dependency::any("/bin/sh"))
            .provides(Dependency::eq("systemd", "252-1"))
            .provides(Dependency::eq("glibc", "2.36-9"))
            .provides(Dependency::any("libc.so.6()(64bit)"))
            .provides(Dependency::any("libc.so.6(GLIBC_2.2.5)(64bit)"))
            .provides(Dependency::any("libc.so.6(GLIBC_2.34)(64bit)"))
            .with_dir_entry(FileOptions::dir("/usr/share/obs-base"))
            .unwrap()
            .with_file_contents("base\n", FileOptions::new("/usr/share/obs-base/README"))
            .unwrap();
    } else {
        b.with_file_contents(
            format!("#!/bin/sh\necho {name} {arch}\n"),
            FileOptions::new(format!("/usr/bin/{name}")).permissions(0o755),
        )
        .unwrap()
        .with_dir_entry(FileOptions::dir(format!("/etc/{name}")))
        .unwrap()
        .with_file_contents(
            "# config\n",
            FileOptions::new(format!("/etc/{name}/{name}.conf"))
                .config()
                .noreplace(),
        )
        .unwrap()
        .with_file_contents(
            "doc\n",
            FileOptions::new(format!("/usr/share/doc/{name}/README")),
        )
        .unwrap()
        .with_ghost(FileOptions::ghost(format!("/var/lib/{name}/state")))
        .unwrap()
        .pre_install_script("getent group obs >/dev/null || :")
        .post_install_script("systemctl daemon-reload >/dev/null 2>&1 || :")
        .requires(Dependency::script_pre("/bin/sh"))
        .requires(Dependency::script_post("systemd"))
        .requires(Dependency::script_preun("systemd"))
        .requires(Dependency::greater_eq("glibc", "2.34"))
        .requires(Dependency::any("obs-base"))
        .requires(Dependency::any("obs-base"))
        // A require on one of its own primary files: createrepo_c drops it.
        .requires(Dependency::any(format!("/usr/bin/{name}")))
        .provides(Dependency::eq(format!("{name}-compat"), "1:2.0-3"))
        .conflicts(Dependency::less("prometheus-old", "1.0"))
        .obsoletes(Dependency::less_eq("old-exporter", "0.9-1"))
        .recommends(Dependency::any("obs-extras"))
        // What the pipeline's rpms carry for a dynamically linked binary.
        .requires(Dependency::any("libc.so.6()(64bit)"))
        .requires(Dependency::any("libc.so.6(GLIBC_2.34)(64bit)"))
        .requires(Dependency::any("libc.so.6(GLIBC_2.2.5)(64bit)"))
        .add_changelog_entry(
            "Release Engineering <re@example.org> - 1.2.3-4.obs",
            "- Newest: <b> & done",
            DATE - 10,
        )
        .add_changelog_entry(
            "Release Engineering <re@example.org> - 1.2.3-3.obs",
            "- Older entry",
            DATE - 86400,
        );
    }
    let pkg = b.build().unwrap();
    let path = dir.join(format!("{name}-1.2.3-4.obs.{arch}.rpm"));
    pkg.write_file(&path).unwrap();
    path
}

/// rpmsign with the test key (real rpm + gpg); afterwards the signature header is larger, so
/// the header range must be read from each file, not assumed.
fn rpmsign(key: &gpg::GpgKey, rpm: &Path) {
    ok(Command::new("rpmsign")
        .env("HOME", key.home.path())
        .arg("--define")
        .arg(format!("_gpg_path {}", key.home.path().display()))
        .arg("--define")
        .arg(format!("_gpg_name {}", key.fpr))
        .arg("--define")
        .arg("__gpg /usr/bin/gpg")
        .arg("--define")
        .arg("_gpg_digest_algo sha256")
        .arg("--define")
        .arg("_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback")
        .arg("--addsign")
        .arg(rpm));
}

struct Fixture {
    key: gpg::GpgKey,
    _tmp: tempfile::TempDir,
    inputs: Vec<PathBuf>,
}

fn fixture(sign: bool) -> Fixture {
    let key = gpg::GpgKey::generate("Obs Test Repo <repo@example.org>");
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![
        build_rpm(tmp.path(), "demo_exporter", "x86_64", false),
        build_rpm(tmp.path(), "demo_exporter", "aarch64", false),
        build_rpm(tmp.path(), "other-exporter", "x86_64", false),
        build_rpm(tmp.path(), "obs-base", "noarch", true),
    ];
    if sign {
        for i in &inputs {
            rpmsign(&key, i);
        }
    }
    Fixture {
        key,
        _tmp: tmp,
        inputs,
    }
}

/// A dnf that touches nothing outside `t`.
fn write(root: &Path, f: &Fixture, compression: MetadataCompression) -> dnf_repo::DnfRepo {
    let mut s = Settings::new(DATE as u64);
    s.compression = compression;
    let repo = dnf_repo::write_repo(root, &f.inputs, &s, &f.key).unwrap();
    dnf_repo::write_public_key(root, "obs", &f.key).unwrap();
    repo
}

fn stdout_stderr(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn copy_tree(from: &Path, to: &Path) {
    ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn href_of(repo: &dnf_repo::DnfRepo, kind: &str) -> String {
    repo.data
        .iter()
        .find(|d| d.kind == kind)
        .unwrap()
        .href
        .clone()
}

#[test]
fn dnf_accepts_signed_repository_and_packages() {
    let f = fixture(true);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    let repo = write(&root, &f, MetadataCompression::Gzip);
    let key = root.join("keys/obs.asc");
    assert_eq!(repo.packages.len(), 4);
    for p in &repo.packages {
        let first = p.info.name.chars().next().unwrap();
        assert_eq!(
            p.href,
            format!(
                "Packages/{first}/{}-1.2.3-4.obs.{}.rpm",
                p.info.name, p.info.arch
            )
        );
        let mode = fs::metadata(root.join(&p.href)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o644
        );
    }

    // The client configuration we ship: the .repo file, pointing at the key we wrote.
    let dnf = Dnf::new();
    dnf_repo::write_repo_file(
        &dnf.t.path().join("repos.d/obs.repo"),
        &RepoFile {
            id: "obs".into(),
            name: "Observability stack (test)".into(),
            baseurl: format!("file://{}", root.display()),
            gpgkey: format!("file://{}", key.display()),
        },
    )
    .unwrap();
    let out = run(dnf.cmd().arg("makecache"));
    assert!(out.status.success(), "makecache: {}", stdout_stderr(&out));
    assert!(
        stdout_stderr(&out).contains(&format!(
            "Fingerprint: {}",
            f.key
                .fingerprint()
                .as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        )),
        "repo key not imported: {}",
        stdout_stderr(&out)
    );

    // What dnf read from primary.xml.
    let q = ok(dnf.cmd().args([
        "repoquery",
        "--qf",
        "%{name} %{epoch}:%{version}-%{release} %{arch} %{location}",
    ]));
    let mut lines: Vec<&str> = q.lines().filter(|l| l.contains("1.2.3")).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "demo_exporter 0:1.2.3-4.obs aarch64 Packages/d/demo_exporter-1.2.3-4.obs.aarch64.rpm",
            "demo_exporter 0:1.2.3-4.obs x86_64 Packages/d/demo_exporter-1.2.3-4.obs.x86_64.rpm",
            "obs-base 0:1.2.3-4.obs noarch Packages/o/obs-base-1.2.3-4.obs.noarch.rpm",
            "other-exporter 0:1.2.3-4.obs x86_64 Packages/o/other-exporter-1.2.3-4.obs.x86_64.rpm",
        ],
        "{q}"
    );
    let req = ok(dnf.cmd().args(["repoquery", "--requires", "demo_exporter"]));
    let mut req: Vec<&str> = req
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("Last metadata"))
        .collect();
    req.sort();
    assert_eq!(
        req,
        [
            "/bin/sh",
            "glibc >= 2.34",
            "libc.so.6()(64bit)",
            "libc.so.6(GLIBC_2.2.5)(64bit)",
            "libc.so.6(GLIBC_2.34)(64bit)",
            "obs-base",
            "systemd"
        ],
        "requires"
    );
    let prov = ok(dnf.cmd().args(["repoquery", "--provides", "demo_exporter"]));
    assert!(prov.contains("demo_exporter-compat = 1:2.0-3"), "{prov}");
    let conf = ok(dnf
        .cmd()
        .args(["repoquery", "--conflicts", "demo_exporter"]));
    assert!(conf.contains("prometheus-old < 1.0"), "{conf}");
    let obs = ok(dnf
        .cmd()
        .args(["repoquery", "--obsoletes", "demo_exporter"]));
    assert!(obs.contains("old-exporter <= 0.9-1"), "{obs}");
    // File provides from the primary file list (filelists.xml is not loaded by default).
    let who = ok(dnf.cmd().args([
        "repoquery",
        "--whatprovides",
        "/etc/demo_exporter/demo_exporter.conf",
    ]));
    assert!(who.contains("demo_exporter-0:1.2.3-4.obs.x86_64"), "{who}");
    // Summary and description survive escaping.
    let info = ok(dnf.cmd().args([
        "repoquery",
        "--qf",
        "%{summary}|%{description}",
        "other-exporter",
    ]));
    assert!(
        info.contains("Test <exporter> & \"friends\"|Line one with <tags> & 'quotes'.\nLine two."),
        "{info}"
    );
    // Download with gpgcheck=1: dnf checks the package checksum from primary.xml and the rpm
    // signature against the key from gpgkey=.
    let dl = dnf.t.path().join("dl");
    let out = run(dnf
        .cmd()
        .arg("install")
        .arg("--downloadonly")
        .arg(format!("--downloaddir={}", dl.display()))
        .arg("demo_exporter"));
    assert!(out.status.success(), "download: {}", stdout_stderr(&out));
    for name in [
        "demo_exporter-1.2.3-4.obs.x86_64.rpm",
        "obs-base-1.2.3-4.obs.noarch.rpm",
    ] {
        let first = &name[..1];
        assert_eq!(
            fs::read(dl.join(name)).unwrap(),
            fs::read(root.join(format!("Packages/{first}/{name}"))).unwrap(),
            "{name}"
        );
    }

    // rpmkeys in a private database: every package in the repository is signed and OK.
    let db = tmp.path().join("rpmdb");
    fs::create_dir_all(&db).unwrap();
    ok(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(&db)
        .arg("--import")
        .arg(&key));
    for p in &repo.packages {
        let out = ok(Command::new("rpmkeys")
            .arg("--dbpath")
            .arg(&db)
            .arg("--checksig")
            .arg("-v")
            .arg(root.join(&p.href)));
        assert!(
            out.contains("Header V4 RSA/SHA256 Signature, key ID") && out.contains(": OK"),
            "{out}"
        );
        assert!(!out.contains("NOKEY") && !out.contains("BAD"), "{out}");
    }

    // --repofrompath with the options forced on the command line works the same.
    let dnf2 = Dnf::new();
    let out = run(dnf2.with_repo(&root, &key).arg("makecache"));
    assert!(out.status.success(), "makecache: {}", stdout_stderr(&out));
}

/// Run `makecache` against a modified copy of the repository; it must fail.
fn refused(root: &Path, key: &Path, what: &str, expect: &[&str]) {
    let dnf = Dnf::new();
    let out = run(dnf.with_repo(root, key).arg("makecache"));
    let text = stdout_stderr(&out);
    assert!(!out.status.success(), "{what}: dnf accepted it:\n{text}");
    assert!(
        expect.iter().any(|e| text.contains(e)),
        "{what}: refused, but not for the expected reason ({expect:?}):\n{text}"
    );
}

#[test]
fn dnf_refuses_tampered_metadata() {
    let f = fixture(false);
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let repo = write(&good, &f, MetadataCompression::Gzip);
    let key = good.join("keys/obs.asc");

    // Control: the untouched repository is accepted.
    let dnf = Dnf::new();
    let out = run(dnf.with_repo(&good, &key).arg("makecache"));
    assert!(out.status.success(), "control: {}", stdout_stderr(&out));

    // repomd.xml changed after signing.
    let r = tmp.path().join("repomd-changed");
    copy_tree(&good, &r);
    let p = r.join("repodata/repomd.xml");
    let text = fs::read_to_string(&p).unwrap();
    let changed = text.replace(
        &format!("<revision>{DATE}</revision>"),
        &format!("<revision>{}</revision>", DATE + 1),
    );
    assert_ne!(text, changed);
    fs::write(&p, changed).unwrap();
    refused(
        &r,
        &r.join("keys/obs.asc"),
        "tampered repomd.xml",
        &["GPG", "signature", "Signature"],
    );

    // A valid signature, by a key the client does not trust.
    let r = tmp.path().join("other-key");
    copy_tree(&good, &r);
    let stranger = gpg::GpgKey::generate("Stranger <x@example.org>");
    let sig = stranger
        .detach_sign_armored(&fs::read(r.join("repodata/repomd.xml")).unwrap())
        .unwrap();
    fs::write(r.join("repodata/repomd.xml.asc"), sig).unwrap();
    refused(
        &r,
        &r.join("keys/obs.asc"),
        "repomd.xml.asc by another key",
        &["GPG", "signature", "Signature"],
    );

    // No signature at all.
    let r = tmp.path().join("unsigned");
    copy_tree(&good, &r);
    fs::remove_file(r.join("repodata/repomd.xml.asc")).unwrap();
    refused(
        &r,
        &r.join("keys/obs.asc"),
        "missing repomd.xml.asc",
        &["repomd.xml.asc", "GPG", "signature", "Signature"],
    );

    // primary.xml.gz replaced by another valid gzip of a modified document.
    let r = tmp.path().join("primary-changed");
    copy_tree(&good, &r);
    let p = r.join(href_of(&repo, "primary"));
    let mut xml = String::new();
    flate2::read::GzDecoder::new(fs::File::open(&p).unwrap())
        .read_to_string(&mut xml)
        .unwrap();
    let evil = xml.replacen("<summary>", "<summary>EVIL ", 1);
    assert_ne!(xml, evil);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, evil.as_bytes()).unwrap();
    fs::write(&p, enc.finish().unwrap()).unwrap();
    refused(
        &r,
        &r.join("keys/obs.asc"),
        "tampered primary.xml.gz",
        &["checksum", "Checksum"],
    );
}

#[test]
fn dnf_refuses_tampered_packages() {
    let f = fixture(true);
    let tmp = tempfile::tempdir().unwrap();
    let target = "demo_exporter-1.2.3-4.obs.x86_64.rpm";

    // 1. The file in the repository changed after indexing: checksum mismatch.
    let root = tmp.path().join("a");
    write(&root, &f, MetadataCompression::Gzip);
    let p = root.join("Packages/d").join(target);
    flip_last_byte(&p);
    let dnf = Dnf::new();
    let out = run(dnf.with_repo(&root, &root.join("keys/obs.asc")).args([
        "install",
        "--downloadonly",
        "demo_exporter",
    ]));
    let text = stdout_stderr(&out);
    assert!(!out.status.success(), "tampered rpm accepted:\n{text}");
    assert!(
        text.contains("hecksum") || text.contains("Cannot download"),
        "{text}"
    );

    // 2. The package's header changed before indexing (the index agrees with the file): the
    //    rpm signature check refuses it.
    let root = tmp.path().join("b");
    let mut inputs = f.inputs.clone();
    let bad = tmp.path().join(target);
    fs::copy(inputs.iter().find(|i| i.ends_with(target)).unwrap(), &bad).unwrap();
    let mut b = fs::read(&bad).unwrap();
    let at = b
        .windows(9)
        .position(|w| w == b"Line two.")
        .expect("description in header");
    b[at] = b'X';
    fs::write(&bad, b).unwrap();
    inputs.retain(|i| !i.ends_with(target));
    inputs.push(bad.clone());
    let s = Settings::new(DATE as u64);
    dnf_repo::write_repo(&root, &inputs, &s, &f.key).unwrap();
    dnf_repo::write_public_key(&root, "obs", &f.key).unwrap();
    let dnf = Dnf::new();
    let out = run(dnf.with_repo(&root, &root.join("keys/obs.asc")).args([
        "install",
        "--downloadonly",
        "demo_exporter",
    ]));
    let text = stdout_stderr(&out);
    assert!(
        !out.status.success(),
        "re-indexed tampered rpm accepted:\n{text}"
    );
    assert!(
        text.contains("GPG") || text.contains("signature") || text.contains("digest"),
        "{text}"
    );

    // 3. A payload change is not seen by dnf's header check, but rpmkeys --checksig (which
    //    also checks the payload digest) reports it.
    let db = tmp.path().join("rpmdb");
    fs::create_dir_all(&db).unwrap();
    ok(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(&db)
        .arg("--import")
        .arg(root.join("keys/obs.asc")));
    let p = tmp.path().join("payload.rpm");
    fs::copy(f.inputs.iter().find(|i| i.ends_with(target)).unwrap(), &p).unwrap();
    ok(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(&db)
        .arg("--checksig")
        .arg(&p));
    flip_last_byte(&p);
    let out = run(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(&db)
        .arg("--checksig")
        .arg(&p));
    assert!(
        !out.status.success(),
        "payload change not detected: {}",
        stdout_stderr(&out)
    );
}

fn flip_last_byte(p: &Path) {
    let mut b = fs::read(p).unwrap();
    let n = b.len();
    b[n - 20] ^= 0x01;
    fs::write(p, b).unwrap();
}

/// Parse a repository's metadata with Python's XML parser (an implementation independent of
/// ours) into one JSON object per package keyed by pkgid, after checking every repomd.xml
/// checksum and size against the files.
const NORMALIZE: &str = r#"
import gzip, hashlib, json, subprocess, sys, xml.etree.ElementTree as ET
root = sys.argv[1]
R = '{http://linux.duke.edu/metadata/repo}'
C = '{http://linux.duke.edu/metadata/common}'
P = '{http://linux.duke.edu/metadata/rpm}'
F = '{http://linux.duke.edu/metadata/filelists}'
O = '{http://linux.duke.edu/metadata/other}'
def load(path):
    raw = open(path, 'rb').read()
    if path.endswith('.gz'):
        return raw, gzip.decompress(raw)
    if path.endswith('.zst'):
        return raw, subprocess.run(['zstd', '-dc', path], check=True, capture_output=True).stdout
    raise SystemExit('unknown compression ' + path)
repomd = ET.parse(root + '/repodata/repomd.xml').getroot()
docs = {}
for d in repomd.findall(R + 'data'):
    t = d.get('type')
    if t not in ('primary', 'filelists', 'other'):
        continue
    href = d.find(R + 'location').get('href')
    raw, opened = load(root + '/' + href)
    assert d.find(R + 'checksum').get('type') == 'sha256', t
    assert d.find(R + 'checksum').text == hashlib.sha256(raw).hexdigest(), t + ' checksum'
    assert int(d.find(R + 'size').text) == len(raw), t + ' size'
    assert d.find(R + 'open-checksum').text == hashlib.sha256(opened).hexdigest(), t + ' open-checksum'
    assert int(d.find(R + 'open-size').text) == len(opened), t + ' open-size'
    docs[t] = ET.fromstring(opened)
def deps(fmt, tag):
    e = fmt.find(P + tag)
    if e is None:
        return []
    return [[x.get('name'), x.get('flags'), x.get('epoch'), x.get('ver'), x.get('rel'), x.get('pre')]
            for x in e.findall(P + 'entry')]
def files(parent, ns):
    return [[f.text, f.get('type') or 'file'] for f in parent.findall(ns + 'file')]
out = {'revision': repomd.find(R + 'revision').text, 'packages': {}}
prim = docs['primary']
assert int(prim.get('packages')) == len(prim.findall(C + 'package'))
for p in prim.findall(C + 'package'):
    fmt = p.find(C + 'format')
    v = p.find(C + 'version')
    t = lambda e, tag: (e.find(tag).text or '') if e.find(tag) is not None else None
    pkgid = p.find(C + 'checksum').text
    assert p.find(C + 'checksum').get('pkgid') == 'YES'
    out['packages'][pkgid] = {
        'name': t(p, C + 'name'), 'arch': t(p, C + 'arch'),
        'evr': [v.get('epoch'), v.get('ver'), v.get('rel')],
        'summary': t(p, C + 'summary'), 'description': t(p, C + 'description'),
        'packager': t(p, C + 'packager'), 'url': t(p, C + 'url'),
        'time_build': p.find(C + 'time').get('build'),
        'size': dict(p.find(C + 'size').attrib),
        'location': p.find(C + 'location').get('href'),
        'license': t(fmt, P + 'license'), 'vendor': t(fmt, P + 'vendor'),
        'group': t(fmt, P + 'group'), 'buildhost': t(fmt, P + 'buildhost'),
        'sourcerpm': t(fmt, P + 'sourcerpm'),
        'header_range': dict(fmt.find(P + 'header-range').attrib),
        **{k: deps(fmt, k) for k in ('provides', 'requires', 'conflicts', 'obsoletes',
                                      'suggests', 'enhances', 'recommends', 'supplements')},
        'primary_files': files(fmt, C),
    }
for tag, ns in (('filelists', F), ('other', O)):
    doc = docs[tag]
    assert int(doc.get('packages')) == len(out['packages'])
    for p in doc.findall(ns + 'package'):
        e = out['packages'][p.get('pkgid')]
        assert (p.get('name'), p.get('arch')) == (e['name'], e['arch'])
        v = p.find(ns + 'version')
        assert [v.get('epoch'), v.get('ver'), v.get('rel')] == e['evr']
        if tag == 'filelists':
            e['files'] = files(p, ns)
        else:
            e['changelog'] = [[c.get('author'), c.get('date'), c.text] for c in p.findall(ns + 'changelog')]
json.dump(out, sys.stdout, indent=1, sort_keys=True)
"#;

fn normalized(root: &Path) -> serde_json::Value {
    let out = ok(Command::new("python3").arg("-c").arg(NORMALIZE).arg(root));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn createrepo_c_agrees() {
    let f = fixture(true);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ours");
    let repo = write(&root, &f, MetadataCompression::Gzip);
    let ours = normalized(&root);

    // createrepo_c over our Packages/ tree, so that locations are comparable.
    let theirs_dir = tmp.path().join("theirs");
    fs::create_dir_all(&theirs_dir).unwrap();
    ok(Command::new("createrepo_c")
        .args(["--no-database", "--revision"])
        .arg(DATE.to_string())
        .arg("--outputdir")
        .arg(&theirs_dir)
        .arg(&root));
    // Their locations are relative to `root`; give the normalizer a root with both.
    fs::rename(root.join("repodata"), tmp.path().join("our-repodata")).unwrap();
    fs::rename(theirs_dir.join("repodata"), root.join("repodata")).unwrap();
    let theirs = normalized(&root);
    if std::env::var_os("DNF_REPO_DUMP").is_some() {
        eprintln!("OURS {ours:#}\nTHEIRS {theirs:#}");
    }

    let (o, t) = (&ours["packages"], &theirs["packages"]);
    let ids = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        ids(o),
        ids(t),
        "same package set (by pkgid = sha256 of the file)"
    );
    assert_eq!(ids(o).len(), 4);
    for p in &repo.packages {
        assert!(o.get(&p.sha256).is_some());
    }
    // Every field compared. Allowed differences (see dnf_repo.rs): `time file` (not
    // extracted here) and libc.so.6 requires: we keep all of them, createrepo_c only the one
    // with the highest GLIBC version.
    let split_libc = |p: &serde_json::Value| {
        let mut p = p.clone();
        let req = p["requires"].as_array().unwrap().clone();
        let (libc, rest): (Vec<_>, Vec<_>) = req
            .into_iter()
            .partition(|r| r[0].as_str().unwrap().starts_with("libc.so.6"));
        p["requires"] = serde_json::Value::Array(rest);
        (p, libc)
    };
    for id in ids(o) {
        let ((a, our_libc), (b, their_libc)) = (split_libc(&o[&id]), split_libc(&t[&id]));
        let names = |v: &[serde_json::Value]| {
            let mut n = v
                .iter()
                .map(|r| r[0].as_str().unwrap().to_string())
                .collect::<Vec<_>>();
            n.sort();
            n
        };
        if a["arch"] != "noarch" {
            assert_eq!(
                names(&our_libc),
                [
                    "libc.so.6()(64bit)",
                    "libc.so.6(GLIBC_2.2.5)(64bit)",
                    "libc.so.6(GLIBC_2.34)(64bit)"
                ]
            );
            assert_eq!(names(&their_libc), ["libc.so.6(GLIBC_2.34)(64bit)"]);
        }
        assert!(their_libc.iter().all(|r| our_libc.contains(r)));
        let (a, b) = (&a, &b);
        let mut keys: Vec<_> = a.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let bkeys: Vec<_> = b.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), bkeys.len());
        for k in keys {
            assert_eq!(
                a[&k], b[&k],
                "{} {}: {k} differs from createrepo_c",
                a["name"], a["arch"]
            );
        }
    }
    // The fixtures exercise what the comparison is about.
    let demo = o
        .as_object()
        .unwrap()
        .values()
        .find(|p| p["name"] == "demo_exporter" && p["arch"] == "x86_64")
        .unwrap();
    let req = demo["requires"].as_array().unwrap();
    assert!(
        req.iter().any(|r| r[0] == "/bin/sh" && r[5] == "1"),
        "{req:?}"
    );
    assert!(
        req.iter().any(|r| r[0] == "systemd" && r[5] == "1"),
        "{req:?}"
    );
    assert!(
        !req.iter()
            .any(|r| r[0].as_str().unwrap().starts_with("rpmlib(")),
        "{req:?}"
    );
    assert!(
        !req.iter().any(|r| r[0] == "/usr/bin/demo_exporter"),
        "{req:?}"
    );
    assert_eq!(
        req.iter().filter(|r| r[0] == "obs-base").count(),
        1,
        "{req:?}"
    );
    // The header range points at the main header's magic and ends where the payload starts.
    for p in &repo.packages {
        let bytes = fs::read(root.join(&p.href)).unwrap();
        let r = p.info.header_range;
        assert_eq!(
            &bytes[r.start as usize..r.start as usize + 4],
            [0x8e, 0xad, 0xe8, 0x01]
        );
        let m = rpm::PackageMetadata::open(root.join(&p.href)).unwrap();
        assert_eq!(m.get_package_segment_offsets().payload, r.end);
        assert!(
            m.signature
                .entry_is_present(rpm::IndexSignatureTag::RPMSIGTAG_RSA)
                || m.signature
                    .entry_is_present(rpm::IndexSignatureTag::RPMSIGTAG_PGP)
                || m.signature
                    .entry_is_present(rpm::IndexSignatureTag::RPMSIGTAG_OPENPGP),
            "fixtures are signed"
        );
    }
    let files = demo["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f[1] == "dir"), "{files:?}");
    assert!(files.iter().any(|f| f[1] == "ghost"), "{files:?}");
    assert_eq!(demo["changelog"].as_array().unwrap().len(), 2);
    assert_eq!(ours["revision"], theirs["revision"]);
}

#[test]
fn deterministic_and_zstd() {
    let f = fixture(false);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let ra = write(&a, &f, MetadataCompression::Gzip);
    // Inputs in another order; an earlier, different index in the same root is replaced.
    let mut rev = f.inputs.clone();
    rev.reverse();
    let mut s = Settings::new(DATE as u64 - 5);
    dnf_repo::write_repo(&b, &rev[1..], &s, &f.key).unwrap();
    s.date = DATE as u64;
    let rb = dnf_repo::write_repo(&b, &rev, &s, &f.key).unwrap();
    assert_eq!(
        fs::read(a.join("repodata/repomd.xml")).unwrap(),
        fs::read(b.join("repodata/repomd.xml")).unwrap()
    );
    for (x, y) in ra.data.iter().zip(&rb.data) {
        assert_eq!(x.href, y.href);
        assert_eq!(
            fs::read(a.join(&x.href)).unwrap(),
            fs::read(b.join(&y.href)).unwrap()
        );
    }
    // repomd.xml.asc verifies over repomd.xml with the public key (gpgv, its own keyring).
    let ring = f.key.write_keyring(&tmp.path().join("ring.gpg"));
    ok(Command::new("gpgv")
        .arg("--keyring")
        .arg(&ring)
        .arg(a.join("repodata/repomd.xml.asc"))
        .arg(a.join("repodata/repomd.xml")));

    // zstd metadata: valid zstd frames, same documents, accepted by dnf.
    let z = tmp.path().join("z");
    let rz = write(&z, &f, MetadataCompression::Zstd);
    for (g, zz) in ra.data.iter().zip(&rz.data) {
        assert!(zz.href.ends_with(".xml.zst"), "{}", zz.href);
        assert_eq!(
            g.open_sha256, zz.open_sha256,
            "{} differs from the gzip one",
            zz.kind
        );
        ok(Command::new("zstd").arg("-tq").arg(z.join(&zz.href)));
    }
    let n = normalized(&z);
    assert_eq!(n["packages"].as_object().unwrap().len(), 4);
    let dnf = Dnf::new();
    let out = run(dnf.with_repo(&z, &z.join("keys/obs.asc")).arg("makecache"));
    assert!(
        out.status.success(),
        "zstd makecache: {}",
        stdout_stderr(&out)
    );
    let q = ok(dnf.with_repo(&z, &z.join("keys/obs.asc")).args([
        "repoquery",
        "--qf",
        "%{name}",
        "other-exporter",
    ]));
    assert!(q.contains("other-exporter"), "{q}");
}

#[test]
fn bad_inputs_are_refused() {
    let key = gpg::GpgKey::generate("Obs Test Repo <repo@example.org>");
    let tmp = tempfile::tempdir().unwrap();
    let s = Settings::new(DATE as u64);
    let one = build_rpm(tmp.path(), "obs-base", "noarch", true);
    let root = tmp.path().join("r");

    // Not an rpm.
    let fake = tmp.path().join("fake-1-1.noarch.rpm");
    fs::write(&fake, b"not an rpm at all, but long enough to have a lead of 96 bytes ..........................................").unwrap();
    let e = dnf_repo::write_repo(&root, &[fake], &s, &key).unwrap_err();
    assert!(format!("{e:#}").contains("not an rpm"), "{e:#}");

    // Two inputs with the same file name.
    let d2 = tmp.path().join("d2");
    fs::create_dir_all(&d2).unwrap();
    let other = d2.join(one.file_name().unwrap());
    fs::copy(&one, &other).unwrap();
    let e = dnf_repo::write_repo(&root, &[one.clone(), other], &s, &key).unwrap_err();
    assert!(format!("{e:#}").contains("two packages named"), "{e:#}");

    // The same package under two names.
    let renamed = tmp.path().join("obs-base-copy.noarch.rpm");
    fs::copy(&one, &renamed).unwrap();
    let e = dnf_repo::write_repo(&root, &[one.clone(), renamed], &s, &key).unwrap_err();
    assert!(format!("{e:#}").contains("is in both"), "{e:#}");

    // A file name that would need escaping in a URL.
    let odd = tmp.path().join("obs base.rpm");
    fs::copy(&one, &odd).unwrap();
    let e = dnf_repo::write_repo(&root, &[odd], &s, &key).unwrap_err();
    assert!(format!("{e:#}").contains("rpm file name"), "{e:#}");

    // Nothing was published by the failed runs.
    assert!(!root.join("repodata/repomd.xml").exists());
}

/// What the `index_dir` tests start from: (the fixture, a temporary directory, the fixture
/// packages' directory, the cache file's place `TMP/state/dnf-index-cache`, the repository's
/// `TMP/repo`, the settings).
fn cached_fixture() -> (
    Fixture,
    tempfile::TempDir,
    PathBuf,
    PathBuf,
    PathBuf,
    Settings,
) {
    let f = fixture(false);
    let tmp = tempfile::tempdir().unwrap();
    let dir = f.inputs[0].parent().unwrap().to_path_buf();
    let cache = tmp.path().join("state/dnf-index-cache");
    let root = tmp.path().join("repo");
    (f, tmp, dir, cache, root, Settings::new(DATE as u64))
}

/// `index_dir` with a metadata cache: the same repodata as `write_repo` over the same files;
/// an added package is read, placed and listed; an unchanged one is taken from the cache (a
/// cache entry edited by hand shows through in primary.xml, so the file was not read again),
/// and touching it (new mtime, new key) makes it read again. Then dnf reads the result.
#[test]
fn index_dir_reads_only_what_the_cache_does_not_describe() {
    let (f, tmp, dir, cache, root, s) = cached_fixture();
    let dir = dir.as_path();
    let first = dnf_repo::index_dir(dir, &root, &s, &f.key, Some(&cache)).unwrap();
    let plain = tmp.path().join("plain");
    let reference = dnf_repo::write_repo(&plain, &f.inputs, &s, &f.key).unwrap();
    let primary_of = |root: &Path, repo: &dnf_repo::DnfRepo| -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(fs::File::open(root.join(href_of(repo, "primary"))).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    assert_eq!(primary_of(&root, &first), primary_of(&plain, &reference));
    // The cache file: a header line, one line per entry, `end <count>`.
    let entries = || -> usize {
        let text = fs::read_to_string(&cache).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "obs-index-cache 4");
        assert_eq!(lines[lines.len() - 1], format!("end {}", lines.len() - 2));
        lines.len() - 2
    };
    // Each package: its input and its placed copy.
    assert_eq!(entries(), 2 * f.inputs.len());

    // Add a package; forge the cached summary of an unchanged one.
    let added = build_rpm(dir, "added-exporter", "x86_64", false);
    let text = fs::read_to_string(&cache).unwrap();
    let summary = "Test <exporter> & \\\"friends\\\"";
    assert!(text.contains(summary), "{text}");
    fs::write(&cache, text.replace(summary, "FORGED SUMMARY")).unwrap();
    let second = dnf_repo::index_dir(dir, &root, &s, &f.key, Some(&cache)).unwrap();
    let primary = primary_of(&root, &second);
    assert!(primary.contains("<name>added-exporter</name>"), "{primary}");
    assert!(
        primary.contains("FORGED SUMMARY"),
        "unchanged packages were read again"
    );
    assert_eq!(entries(), 2 * (f.inputs.len() + 1));

    // New mtimes are new keys: every file is read again, the forgery is gone.
    for p in f.inputs.iter().chain([&added]) {
        let h = fs::File::options().write(true).open(p).unwrap();
        h.set_modified(std::time::SystemTime::now()).unwrap();
    }
    for p in fs::read_dir(root.join("Packages")).unwrap() {
        for q in fs::read_dir(p.unwrap().path()).unwrap() {
            let h = fs::File::options()
                .write(true)
                .open(q.unwrap().path())
                .unwrap();
            h.set_modified(std::time::SystemTime::now()).unwrap();
        }
    }
    let third = dnf_repo::index_dir(dir, &root, &s, &f.key, Some(&cache)).unwrap();
    let primary = primary_of(&root, &third);
    assert!(!primary.contains("FORGED SUMMARY"), "{primary}");
    assert_eq!(
        entries(),
        2 * (f.inputs.len() + 1),
        "stale entries are dropped"
    );

    let q = repoquery(&root, &f.key, "%{name}");
    assert!(q.lines().any(|l| l == "added-exporter"), "{q}");
}

/// A cache entry is used only if it passes the checks a read makes: a sha256 that is not hex
/// (it is written unescaped into the XML), a size that is not the file's, a header range past
/// the file's end, a string XML cannot carry. Each forged entry is read again and the
/// repodata is what it is without the forgery; then dnf reads it. (The entries are made more
/// than the racy window after the files' last change, so they are trusted on their stat.)
#[test]
fn forged_cache_entries_are_read_again() {
    let (f, _tmp, dir, cache, root, s) = cached_fixture();
    let dir = dir.as_path();
    std::thread::sleep(xtask::index_cache::RACY + std::time::Duration::from_millis(200));
    let first = dnf_repo::index_dir(dir, &root, &s, &f.key, Some(&cache)).unwrap();
    // Once more after the racy window of the placed copies too: entries trusted on the stat.
    std::thread::sleep(xtask::index_cache::RACY + std::time::Duration::from_millis(200));
    dnf_repo::index_dir(dir, &root, &s, &f.key, Some(&cache)).unwrap();
    let good = fs::read_to_string(&cache).unwrap();
    assert!(!good.contains("\t1\t\""), "racy entries left:\n{good}");
    let primary = |repo: &dnf_repo::DnfRepo| -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(fs::File::open(root.join(href_of(repo, "primary"))).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let want = primary(&first);
    let bytes = fs::read(&f.inputs[0]).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let hr = {
        let at = good.find("\"header_range\":{").unwrap();
        let end = at + good[at..].find('}').unwrap() + 1;
        good[at..end].to_string()
    };
    let forgeries = [
        (
            format!("\"sha256\":\"{sha}\""),
            format!("\"sha256\":\"{}</checksum><evil/>\"", &sha[..40]),
        ),
        (
            format!("\"sha256\":\"{sha}\",\"size\":{}}}", bytes.len()),
            format!("\"sha256\":\"{sha}\",\"size\":{}}}", bytes.len() + 1),
        ),
        (
            hr.clone(),
            "\"header_range\":{\"start\":112,\"end\":1000000000000}".to_string(),
        ),
        (
            "Test <exporter> & \\\"friends\\\"".to_string(),
            "Test \\u0007 bell".to_string(),
        ),
    ];
    for (from, to) in &forgeries {
        assert!(good.contains(from.as_str()), "{from}");
        fs::write(&cache, good.replace(from.as_str(), to)).unwrap();
        let repo = dnf_repo::index_dir(dir, &root, &s, &f.key, Some(&cache))
            .unwrap_or_else(|e| panic!("{to}: {e:#}"));
        assert!(primary(&repo) == want, "{to}: the forged entry shows");
        assert!(
            !fs::read_to_string(&cache).unwrap().contains(to.as_str()),
            "{to}"
        );
    }
    let q = repoquery(&root, &f.key, "%{name} %{summary}");
    assert!(
        q.lines()
            .any(|l| l == "demo_exporter Test <exporter> & \"friends\""),
        "{q}"
    );
}

/// Cached compressed chunks of the XML are used only when they decode to the text they stand
/// for: with the primary and filelists chunks swapped in the cache, each file still
/// decompresses (gzip) to its own XML, and dnf reads the repository.
#[test]
fn swapped_cached_chunks_are_not_used() {
    let (f, tmp, dir, cache, root, s) = cached_fixture();
    let dir = dir.as_path();
    let first = dnf_repo::index_dir(dir, &root, &s, &f.key, Some(&cache)).unwrap();
    let chunks = tmp.path().join("state/dnf-index-cache.xml-chunks");
    let mut files: Vec<PathBuf> = fs::read_dir(&chunks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    let (a, b) = (fs::read(&files[0]).unwrap(), fs::read(&files[1]).unwrap());
    fs::write(&files[0], &b).unwrap();
    fs::write(&files[1], &a).unwrap();
    let second = dnf_repo::index_dir(dir, &root, &s, &f.key, Some(&cache)).unwrap();
    for kind in ["primary", "filelists", "other"] {
        assert_eq!(href_of(&first, kind), href_of(&second, kind), "{kind}");
        let p = root.join(href_of(&second, kind));
        ok(Command::new("gzip").arg("-t").arg(&p));
        let text = ok(Command::new("gzip").arg("-dc").arg(&p));
        let d = second.data.iter().find(|d| d.kind == kind).unwrap();
        assert_eq!(text.len() as u64, d.open_size, "{kind}");
        let root_elem = match kind {
            "primary" => "<metadata ",
            "filelists" => "<filelists ",
            _ => "<otherdata ",
        };
        assert!(text.contains(root_elem), "{kind}: {text}");
    }
    dnf_repo::write_public_key(&root, "obs", &f.key).unwrap();
    let dnf = Dnf::new();
    let key = root.join("keys/obs.asc");
    let out = run(dnf.with_repo(&root, &key).arg("makecache"));
    assert!(out.status.success(), "makecache: {}", stdout_stderr(&out));
}

/// `xtask index --pool DIR --format dnf` (what B4 measures on our side): a directory of signed
/// .rpms becomes a repository dnf installs from with gpgcheck and repo_gpgcheck on; a package
/// added to the directory is listed by the next run, which keeps its metadata cache in
/// CACHE/index (0600) and gives the same repodata as a run without it.
#[test]
fn index_pool_command_makes_a_repository_dnf_installs_from() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(true);
    let tmp = tempfile::tempdir().unwrap();
    let pool = f.inputs[0].parent().unwrap().to_path_buf();
    let root = tmp.path().join("repo");
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let secret = f.key.write_secret_key(&tmp.path().join("key.asc"), 0o600);
    let sde = DATE.to_string();
    let out = cmd::must(
        cmd::index_pool("dnf", &pool, &root, &secret, &home).env("SOURCE_DATE_EPOCH", &sde),
    );
    assert!(out.contains("4 package(s) indexed in"), "{out}");
    let caches: Vec<PathBuf> = fs::read_dir(home.join(".cache/observability-stack/index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dnf"))
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    assert_eq!(
        fs::metadata(&caches[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );

    dnf_repo::write_public_key(&root, "obs", &f.key).unwrap();
    let key = root.join("keys/obs.asc");
    let dnf = Dnf::new();
    let dl = dnf.t.path().join("dl");
    let out = run(dnf
        .with_repo(&root, &key)
        .arg("install")
        .arg("--downloadonly")
        .arg(format!("--downloaddir={}", dl.display()))
        .arg("demo_exporter"));
    assert!(out.status.success(), "download: {}", stdout_stderr(&out));
    assert!(dl.join("demo_exporter-1.2.3-4.obs.x86_64.rpm").is_file());

    // One more package in the directory: the next run lists it.
    let added = build_rpm(&pool, "added-exporter", "x86_64", false);
    rpmsign(&f.key, &added);
    let out = cmd::must(
        cmd::index_pool("dnf", &pool, &root, &secret, &home).env("SOURCE_DATE_EPOCH", &sde),
    );
    assert!(out.contains("5 package(s) indexed in"), "{out}");
    let q = repoquery(&root, &f.key, "%{name}");
    assert!(q.lines().any(|l| l == "added-exporter"), "{q}");

    // Warm cache and no cache: the same repomd.xml (it names every metadata file's digest).
    let plain = tmp.path().join("plain");
    cmd::must(
        cmd::index_pool("dnf", &pool, &plain, &secret, &home)
            .arg("--no-index-cache")
            .env("SOURCE_DATE_EPOCH", &sde),
    );
    let repomd = |r: &Path| fs::read(r.join("repodata/repomd.xml")).unwrap();
    assert_eq!(repomd(&root), repomd(&plain));
    // Never back in time.
    let out = run(cmd::index_pool("dnf", &pool, &root, &secret, &home)
        .env("SOURCE_DATE_EPOCH", (DATE - 1).to_string()));
    assert!(
        !out.status.success() && stdout_stderr(&out).contains("would silently keep it"),
        "{}",
        stdout_stderr(&out)
    );
    assert_eq!(repomd(&plain), repomd(&root));

    // The packages kept in the repository's own Packages/ (flat): the copies a run places in
    // Packages/<letter>/ are not taken for second packages of the same name by the next run.
    let flat = tmp.path().join("flat");
    fs::create_dir_all(flat.join("Packages")).unwrap();
    for p in &f.inputs {
        fs::copy(p, flat.join("Packages").join(p.file_name().unwrap())).unwrap();
    }
    for _ in 0..2 {
        let out = cmd::must(
            cmd::index_pool("dnf", &flat.join("Packages"), &flat, &secret, &home)
                .env("SOURCE_DATE_EPOCH", &sde),
        );
        assert!(out.contains("4 package(s) indexed in"), "{out}");
    }
}

/// A header that carries a tag twice (here the package name): librpm reads one, the rpm
/// crate the other, so an index could describe another package than the one installed.
/// Refused, by file and tag, before anything is indexed.
#[test]
fn a_header_with_a_tag_twice_is_refused() {
    let f = fixture(false);
    let src = fs::read(&f.inputs[0]).unwrap();
    let range = dnf_repo::header_range(&f.inputs[0]).unwrap();
    let start = range.start as usize;
    let count = u32::from_be_bytes(src[start + 8..start + 12].try_into().unwrap()) as usize;
    let index = &src[start + 16..start + 16 + count * 16];
    let name = index
        .chunks_exact(16)
        .find(|e| u32::from_be_bytes(e[..4].try_into().unwrap()) == 1000)
        .expect("a NAME entry")
        .to_vec();
    // The same entry once more at the end of the index (store offsets are relative to the
    // store, which moves along with it).
    let mut forged = src[..start + 8].to_vec();
    forged.extend_from_slice(&(count as u32 + 1).to_be_bytes());
    forged.extend_from_slice(&src[start + 12..start + 16 + count * 16]);
    forged.extend_from_slice(&name);
    forged.extend_from_slice(&src[start + 16 + count * 16..]);
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join(f.inputs[0].file_name().unwrap());
    fs::write(&bad, forged).unwrap();
    let e = dnf_repo::write_repo(
        &tmp.path().join("repo"),
        std::slice::from_ref(&bad),
        &Settings::new(DATE as u64),
        &f.key,
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains(&bad.display().to_string()) && e.contains("tag 1000 appears twice"),
        "{e}"
    );
    assert!(!tmp.path().join("repo/repodata").exists());
}
