//! Fail-closed integration tests for `cargo xtask fetch` and `dist`, driving the real binary
//! against in-process servers on 127.0.0.1: an HTTPS server (rustls, certificates from a CA
//! generated with rcgen) serving generated tar.gz archives and injecting faults, a plain-HTTP
//! server that only counts connections (nothing may ever reach it), and `file:` mirrors.
//!
//! Every refusal asserts: non-zero exit; the message names component, arch and URL (and the
//! exact expected and actual sha256 for a digest mismatch); the cache directory's complete
//! listing (temporary files included) is unchanged; `--out` is unchanged and no staging
//! directory is left beside it.

#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/gpg.rs"]
mod gpg;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

// ------------------------------------------------------------------------------------------
// archives and components

/// The components of the repository and the versions pinned there.
const COMPONENTS: [(&str, &str); 2] = [("node_exporter", "1.10.2"), ("mysqld_exporter", "0.18.0")];
const ARCHES: [&str; 2] = ["amd64", "arm64"];

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The URL path of a component's upstream asset (the mirror keeps it).
fn asset_path(comp: &str, version: &str, arch: &str) -> String {
    format!("/prometheus/{comp}/releases/download/v{version}/{comp}-{version}.linux-{arch}.tar.gz")
}

#[derive(Clone)]
struct Asset {
    comp: &'static str,
    arch: &'static str,
    /// URL path, e.g. /prometheus/node_exporter/releases/download/v1.10.2/….tar.gz
    path: String,
    /// The good bytes (pinned).
    bytes: Vec<u8>,
    sha: String,
}

// ------------------------------------------------------------------------------------------
// certificates

struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut sp =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    sp.distinguished_name
        .push(DnType::CommonName, format!("{name} server"));
    sp.is_ca = IsCa::ExplicitNoCa;
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = sp.signed_by(&key, &ca, &ca_key).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

// ------------------------------------------------------------------------------------------
// servers

#[derive(Clone)]
enum Reply {
    Ok(Vec<u8>),
    Status(u16),
    Redirect(String),
    /// Declares `declared` bytes, sends `body`, then closes (with or without TLS close_notify).
    Truncated {
        body: Vec<u8>,
        declared: usize,
        close_notify: bool,
    },
    /// Headers, then one byte per `pause`.
    Drip {
        body: Vec<u8>,
        pause: Duration,
    },
    /// Reads the request and says nothing for `pause`.
    Stall(Duration),
}

#[derive(Clone)]
struct Server {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    /// Request paths served (https) or connections accepted (plain).
    hits: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
}

impl Server {
    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    fn route(&self, path: &str, r: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), r);
    }
    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

/// An HTTPS server; `tls: None` makes a plain-HTTP one (which must never be reached).
fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let s = Server {
        port: l.local_addr().unwrap().port(),
        routes: Default::default(),
        hits: Default::default(),
        connections: Default::default(),
    };
    let srv = s.clone();
    std::thread::spawn(move || {
        for sock in l.incoming() {
            let Ok(sock) = sock else { continue };
            srv.connections.fetch_add(1, Ordering::SeqCst);
            let srv = srv.clone();
            let tls = tls.clone();
            std::thread::spawn(move || {
                sock.set_read_timeout(Some(Duration::from_secs(20))).ok();
                sock.set_write_timeout(Some(Duration::from_secs(20))).ok();
                match tls {
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg).unwrap();
                        let mut st = rustls::StreamOwned::new(conn, sock);
                        if let Some(close_notify) = handle(&srv, &mut st) {
                            if close_notify {
                                st.conn.send_close_notify();
                                st.flush().ok();
                            }
                        }
                        st.sock.shutdown(std::net::Shutdown::Both).ok();
                    }
                    None => {
                        let mut sock = sock;
                        handle(&srv, &mut sock);
                    }
                }
            });
        }
    });
    s
}

/// Serve one request; returns whether to send close_notify (None: connection failed).
fn handle(srv: &Server, st: &mut (impl Read + Write)) -> Option<bool> {
    let path;
    {
        let mut r = BufReader::new(&mut *st);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        loop {
            line.clear();
            if r.read_line(&mut line).ok()? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
        }
    }
    srv.hits.lock().unwrap().push(path.clone());
    let reply = srv.routes.lock().unwrap().get(&path).cloned();
    let head = |status: &str, len: usize, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
    };
    match reply {
        None => {
            st.write_all(head("404 Not Found", 0, "").as_bytes()).ok()?;
        }
        Some(Reply::Ok(b)) => {
            st.write_all(head("200 OK", b.len(), "").as_bytes()).ok()?;
            st.write_all(&b).ok()?;
        }
        Some(Reply::Status(code)) => {
            let body = format!("status {code}\n");
            st.write_all(head(&format!("{code} Injected"), body.len(), "").as_bytes())
                .ok()?;
            st.write_all(body.as_bytes()).ok()?;
        }
        Some(Reply::Redirect(loc)) => {
            st.write_all(head("302 Found", 0, &format!("Location: {loc}\r\n")).as_bytes())
                .ok()?;
        }
        Some(Reply::Truncated {
            body,
            declared,
            close_notify,
        }) => {
            st.write_all(head("200 OK", declared, "").as_bytes()).ok()?;
            st.write_all(&body).ok()?;
            st.flush().ok()?;
            return Some(close_notify);
        }
        Some(Reply::Drip { body, pause }) => {
            st.write_all(head("200 OK", body.len(), "").as_bytes())
                .ok()?;
            st.flush().ok()?;
            for b in body {
                std::thread::sleep(pause);
                st.write_all(&[b]).ok()?;
                st.flush().ok()?;
            }
        }
        Some(Reply::Stall(pause)) => {
            std::thread::sleep(pause);
            return None;
        }
    }
    st.flush().ok()?;
    Some(true)
}

// ------------------------------------------------------------------------------------------
// fixture

struct Fx {
    dir: tempfile::TempDir,
    components: PathBuf,
    cache: PathBuf,
    out: PathBuf,
    ca: PathBuf,
    pki: Pki,
    assets: Vec<Asset>,
}

impl Fx {
    /// A temporary copy of components/ pinned to generated archives, an empty cache
    /// directory, an absent --out, and the CA's PEM.
    fn new() -> Fx {
        let dir = tempfile::Builder::new()
            .prefix("xtask-fetch-")
            .tempdir()
            .unwrap();
        let components = dir.path().join("components");
        std::fs::create_dir(&components).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../components");
        let mut assets = Vec::new();
        for (comp, version) in COMPONENTS {
            let file = src.join(format!("{comp}.toml"));
            let orig = xtask::component::load_file(&file).unwrap();
            assert_eq!(orig.version, version, "{comp}: update COMPONENTS");
            let mut text = std::fs::read_to_string(&file).unwrap();
            for arch in ARCHES {
                let bytes = fixture::release_tar_gz(comp, version, arch, "");
                let sha = sha256(&bytes);
                let a = xtask::package::Arch::parse(arch).unwrap();
                let old = &orig.source.sha256[&a];
                assert!(text.contains(old.as_str()));
                text = text.replace(old.as_str(), &sha);
                assert_eq!(
                    orig.url(a),
                    format!("https://github.com{}", asset_path(comp, version, arch))
                );
                assets.push(Asset {
                    comp,
                    arch,
                    path: asset_path(comp, version, arch),
                    bytes,
                    sha,
                });
            }
            std::fs::write(components.join(format!("{comp}.toml")), text).unwrap();
        }
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let pki = pki("observability-stack test CA");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        Fx {
            out: dir.path().join("dist"),
            dir,
            components,
            cache,
            ca,
            pki,
            assets,
        }
    }

    fn asset(&self, comp: &str, arch: &str) -> &Asset {
        self.assets
            .iter()
            .find(|a| a.comp == comp && a.arch == arch)
            .unwrap()
    }

    /// An HTTPS server with this fixture's certificate serving every good asset.
    fn good_server(&self) -> Server {
        let s = serve(Some(self.pki.server.clone()));
        for a in &self.assets {
            s.route(&a.path, Reply::Ok(a.bytes.clone()));
        }
        s
    }

    /// Common arguments: components, cache, CA.
    fn args(&self, cmd: &str) -> Vec<String> {
        let mut v = vec![
            cmd.to_string(),
            "--components".into(),
            self.components.display().to_string(),
            "--cache".into(),
            self.cache.display().to_string(),
            "--ca-cert".into(),
            self.ca.display().to_string(),
        ];
        if cmd == "dist" {
            v.push("--out".into());
            v.push(self.out.display().to_string());
        }
        v
    }

    fn run(&self, args: &[String]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("HOME", self.dir.path())
            .env("XDG_CACHE_HOME", self.dir.path().join("xdg-cache"))
            .env("XTASK_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Everything that must not change on a refusal.
    fn state(&self) -> State {
        State {
            cache: listing(&self.cache),
            out: listing(&self.out),
            beside_out: std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("staging"))
                .collect(),
        }
    }

    /// Run a command that must be refused; check the refusal left no trace; return stderr.
    fn refused(&self, args: &[String], needles: &[&str]) -> String {
        let before = self.state();
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success(),
            "{args:?} succeeded but must be refused\nstdout:\n{}\nstderr:\n{err}",
            String::from_utf8_lossy(&o.stdout)
        );
        for n in needles {
            assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
        }
        let after = self.state();
        assert_eq!(
            after.cache, before.cache,
            "the cache changed on a refusal\n{err}"
        );
        assert_eq!(after.out, before.out, "--out changed on a refusal\n{err}");
        assert!(
            after.beside_out.is_empty(),
            "left beside --out: {:?}",
            after.beside_out
        );
        err
    }

    /// Run a command that must succeed; return stdout.
    fn ok(&self, args: &[String]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} failed\nstderr:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn cache_entry(&self, a: &Asset) -> PathBuf {
        self.cache.join("sha256").join(&a.sha)
    }
}

#[derive(Debug, PartialEq)]
struct State {
    cache: BTreeMap<String, String>,
    out: BTreeMap<String, String>,
    beside_out: Vec<String>,
}

/// Complete recursive listing: every directory, file (size and sha256) and symlink, with
/// modes; `<absent>` when the root does not exist.
fn listing(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut m = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, m: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                m.insert(
                    rel,
                    format!("symlink -> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if md.is_dir() {
                m.insert(rel, format!("dir {mode:o}"));
                walk(root, &p, m);
            } else {
                let b = std::fs::read(&p).unwrap();
                m.insert(rel, format!("file {mode:o} {} {}", b.len(), sha256(&b)));
            }
        }
    }
    if std::fs::symlink_metadata(root).is_err() {
        m.insert(String::new(), "<absent>".into());
    } else {
        walk(root, root, &mut m);
    }
    m
}

fn with(mut v: Vec<String>, more: &[&str]) -> Vec<String> {
    v.extend(more.iter().map(|s| s.to_string()));
    v
}

/// The part of every fetch failure that names what failed.
fn names(comp: &str, arch: &str, url: &str) -> String {
    format!("component {comp}, arch {arch}, url {url}:")
}

/// `--component C --arch A`
fn one(comp: &str, arch: &str) -> Vec<String> {
    vec![
        "--component".into(),
        comp.into(),
        "--arch".into(),
        arch.into(),
    ]
}

fn mirror(url: &str) -> Vec<String> {
    vec!["--mirror".into(), url.into()]
}

fn join(parts: &[Vec<String>]) -> Vec<String> {
    parts.concat()
}

// ------------------------------------------------------------------------------------------
// success paths

#[test]
fn good_fetch_then_offline_uses_only_the_cache() {
    let fx = Fx::new();
    let s = fx.good_server();
    let stdout = fx.ok(&join(&[fx.args("fetch"), mirror(&s.base())]));
    for a in &fx.assets {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(a.comp) && l.contains(a.arch))
            .unwrap_or_else(|| panic!("no line for {} {}:\n{stdout}", a.comp, a.arch));
        assert!(
            line.contains(&a.sha) && line.ends_with("downloaded"),
            "{line}"
        );
        assert_eq!(std::fs::read(fx.cache_entry(a)).unwrap(), a.bytes);
    }
    let mut served = s.hits();
    served.sort();
    let mut want: Vec<String> = fx.assets.iter().map(|a| a.path.clone()).collect();
    want.sort();
    assert_eq!(served, want);
    // Nothing is left in the cache's temporary directory.
    let tmp: Vec<_> = std::fs::read_dir(fx.cache.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");

    // Offline: the server is not asked again; every asset comes from the cache.
    let before = listing(&fx.cache);
    let stdout = fx.ok(&with(
        join(&[fx.args("fetch"), mirror(&s.base())]),
        &["--offline"],
    ));
    assert_eq!(
        s.hits().len(),
        fx.assets.len(),
        "--offline used the network"
    );
    assert_eq!(
        stdout.matches(" cached").count(),
        fx.assets.len(),
        "{stdout}"
    );
    assert_eq!(listing(&fx.cache), before);

    // Online again with a warm cache: still no download.
    let stdout = fx.ok(&join(&[fx.args("fetch"), mirror(&s.base())]));
    assert_eq!(
        stdout.matches(" cached").count(),
        fx.assets.len(),
        "{stdout}"
    );
    assert_eq!(s.hits().len(), fx.assets.len());

    // --json reports the same.
    let stdout = fx.ok(&with(fx.args("fetch"), &["--offline", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), fx.assets.len());
    for a in v.as_array().unwrap() {
        assert_eq!(a["cached"], true);
    }
}

#[test]
fn https_to_https_redirects_are_followed() {
    let fx = Fx::new();
    let s = fx.good_server();
    let other = fx.good_server();
    let node = fx.asset("node_exporter", "amd64");
    let mysqld = fx.asset("mysqld_exporter", "arm64");
    // node: a relative redirect on the same server; mysqld: absolute, to another https host.
    s.route(&node.path, Reply::Redirect("/moved/node.tar.gz".into()));
    s.route("/moved/node.tar.gz", Reply::Ok(node.bytes.clone()));
    s.route(
        &mysqld.path,
        Reply::Redirect(format!("{}/elsewhere/m.tar.gz", other.base())),
    );
    other.route("/elsewhere/m.tar.gz", Reply::Ok(mysqld.bytes.clone()));
    let stdout = fx.ok(&join(&[
        fx.args("fetch"),
        mirror(&s.base()),
        vec!["--arch".into(), "amd64".into()],
        vec!["--component".into(), "node_exporter".into()],
    ]));
    assert!(stdout.contains("downloaded"), "{stdout}");
    assert_eq!(
        s.hits(),
        vec![node.path.clone(), "/moved/node.tar.gz".into()]
    );
    assert_eq!(std::fs::read(fx.cache_entry(node)).unwrap(), node.bytes);
    fx.ok(&join(&[
        fx.args("fetch"),
        mirror(&s.base()),
        one("mysqld_exporter", "arm64"),
    ]));
    assert_eq!(other.hits(), vec!["/elsewhere/m.tar.gz".to_string()]);
    assert_eq!(std::fs::read(fx.cache_entry(mysqld)).unwrap(), mysqld.bytes);
}

#[test]
fn file_mirrors_work() {
    let fx = Fx::new();
    let root = fx.dir.path().join("mirror");
    for a in &fx.assets {
        let p = root.join(a.path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &a.bytes).unwrap();
    }
    // file:// URL
    let url = format!("file://{}", root.display());
    let stdout = fx.ok(&join(&[
        fx.args("fetch"),
        mirror(&url),
        one("node_exporter", "amd64"),
    ]));
    assert!(stdout.contains("downloaded"), "{stdout}");
    let a = fx.asset("node_exporter", "amd64");
    assert_eq!(std::fs::read(fx.cache_entry(a)).unwrap(), a.bytes);
    // A plain local directory.
    fx.ok(&join(&[
        fx.args("fetch"),
        mirror(&root.display().to_string()),
    ]));
    for a in &fx.assets {
        assert_eq!(std::fs::read(fx.cache_entry(a)).unwrap(), a.bytes);
    }
    // Then offline, without any mirror.
    let stdout = fx.ok(&with(fx.args("fetch"), &["--offline"]));
    assert_eq!(
        stdout.matches(" cached").count(),
        fx.assets.len(),
        "{stdout}"
    );

    // A tampered file in a file: mirror is refused like any other.
    let fx = Fx::new();
    let a = fx.asset("mysqld_exporter", "amd64");
    let p = root.join(a.path.trim_start_matches('/'));
    let bad = fixture::release_tar_gz(a.comp, "0.18.0", a.arch, "tampered");
    std::fs::write(&p, &bad).unwrap();
    fx.refused(
        &join(&[fx.args("fetch"), mirror(&url), one(a.comp, a.arch)]),
        &[
            &names(a.comp, a.arch, &format!("{url}{}", a.path)),
            &format!("expected sha256 {}, actual {}", a.sha, sha256(&bad)),
        ],
    );
}

// ------------------------------------------------------------------------------------------
// refusals

#[test]
fn tampered_archive_is_refused_with_both_digests() {
    let fx = Fx::new();
    let s = fx.good_server();
    let a = fx.asset("node_exporter", "amd64");
    let bad = fixture::release_tar_gz(a.comp, "1.10.2", a.arch, "tampered");
    s.route(&a.path, Reply::Ok(bad.clone()));
    let url = format!("{}{}", s.base(), a.path);
    let want_digests = format!("expected sha256 {}, actual {}", a.sha, sha256(&bad));
    for cmd in ["fetch", "dist"] {
        fx.refused(
            &join(&[fx.args(cmd), mirror(&s.base()), one(a.comp, a.arch)]),
            &[
                &names(a.comp, a.arch, &url),
                "sha256 mismatch",
                &want_digests,
            ],
        );
    }
    assert_eq!(s.hits().len(), 2);
}

#[test]
fn one_bad_asset_adds_nothing_to_the_cache_even_when_others_verify() {
    let fx = Fx::new();
    let s = fx.good_server();
    let a = fx.asset("mysqld_exporter", "arm64");
    let bad = fixture::release_tar_gz(a.comp, "0.18.0", a.arch, "tampered");
    s.route(&a.path, Reply::Ok(bad.clone()));
    let url = format!("{}{}", s.base(), a.path);
    // Pre-existing out/ with content: must stay byte-identical.
    std::fs::create_dir_all(fx.out.join("deb")).unwrap();
    std::fs::write(fx.out.join("deb/old.deb"), b"previous build").unwrap();
    std::fs::write(fx.out.join("SHA256SUMS"), b"x  deb/old.deb\n").unwrap();
    for cmd in ["fetch", "dist"] {
        fx.refused(
            &join(&[fx.args(cmd), mirror(&s.base())]),
            &[
                &names(a.comp, a.arch, &url),
                &format!("expected sha256 {}, actual {}", a.sha, sha256(&bad)),
            ],
        );
    }
    // All four were downloaded each time (three verified), none was kept.
    assert_eq!(s.hits().len(), 8);
    assert_eq!(listing(&fx.cache).len(), 0, "{:?}", listing(&fx.cache));
}

#[test]
fn truncated_bodies_are_refused() {
    for close_notify in [true, false] {
        let fx = Fx::new();
        let s = fx.good_server();
        let a = fx.asset("node_exporter", "arm64");
        let half = a.bytes[..a.bytes.len() / 2].to_vec();
        s.route(
            &a.path,
            Reply::Truncated {
                body: half,
                declared: a.bytes.len(),
                close_notify,
            },
        );
        let url = format!("{}{}", s.base(), a.path);
        for cmd in ["fetch", "dist"] {
            fx.refused(
                &join(&[fx.args(cmd), mirror(&s.base()), one(a.comp, a.arch)]),
                &[
                    &names(a.comp, a.arch, &url),
                    &format!("expected sha256 {}, actual none", a.sha),
                ],
            );
        }
        assert_eq!(s.hits().len(), 2);
    }
}

#[test]
fn http_errors_are_refused() {
    for code in [500u16, 404, 403, 503] {
        let fx = Fx::new();
        let s = fx.good_server();
        let a = fx.asset("mysqld_exporter", "amd64");
        s.route(&a.path, Reply::Status(code));
        let url = format!("{}{}", s.base(), a.path);
        for cmd in ["fetch", "dist"] {
            fx.refused(
                &join(&[fx.args(cmd), mirror(&s.base()), one(a.comp, a.arch)]),
                &[
                    &names(a.comp, a.arch, &url),
                    &format!("HTTP {code}"),
                    &format!("expected sha256 {}, actual none", a.sha),
                ],
            );
        }
    }
    // A path the mirror does not have at all (the server's default 404).
    let fx = Fx::new();
    let s = serve(Some(fx.pki.server.clone()));
    let a = fx.asset("node_exporter", "amd64");
    fx.refused(
        &join(&[fx.args("fetch"), mirror(&s.base()), one(a.comp, a.arch)]),
        &[
            &names(a.comp, a.arch, &format!("{}{}", s.base(), a.path)),
            "HTTP 404",
        ],
    );
}

#[test]
fn redirect_to_plain_http_is_refused_without_connecting() {
    let fx = Fx::new();
    let s = fx.good_server();
    let plain = serve(None);
    let a = fx.asset("node_exporter", "amd64");
    let target = format!("http://127.0.0.1:{}{}", plain.port, a.path);
    s.route(&a.path, Reply::Redirect(target.clone()));
    let url = format!("{}{}", s.base(), a.path);
    for cmd in ["fetch", "dist"] {
        fx.refused(
            &join(&[fx.args(cmd), mirror(&s.base()), one(a.comp, a.arch)]),
            &[
                &names(a.comp, a.arch, &url),
                &format!("redirect to {target}: a redirect off https is refused"),
                &format!("expected sha256 {}", a.sha),
            ],
        );
    }
    assert_eq!(plain.connections.load(Ordering::SeqCst), 0);
}

#[test]
fn redirect_loops_are_refused() {
    let fx = Fx::new();
    let s = fx.good_server();
    let a = fx.asset("node_exporter", "amd64");
    s.route(&a.path, Reply::Redirect(a.path.clone()));
    fx.refused(
        &join(&[fx.args("fetch"), mirror(&s.base()), one(a.comp, a.arch)]),
        &[
            &names(a.comp, a.arch, &format!("{}{}", s.base(), a.path)),
            "too many redirects",
        ],
    );
    assert_eq!(s.hits().len(), 6, "{:?}", s.hits());
}

#[test]
fn slow_servers_time_out() {
    let fx = Fx::new();
    let s = fx.good_server();
    let a = fx.asset("node_exporter", "amd64");
    let b = fx.asset("node_exporter", "arm64");
    // a: the body trickles in; b: no response at all.
    s.route(
        &a.path,
        Reply::Drip {
            body: a.bytes.clone(),
            pause: Duration::from_millis(200),
        },
    );
    s.route(&b.path, Reply::Stall(Duration::from_secs(30)));
    for x in [a, b] {
        let start = Instant::now();
        let err = fx.refused(
            &with(
                join(&[fx.args("fetch"), mirror(&s.base()), one(x.comp, x.arch)]),
                &["--timeout", "2"],
            ),
            &[
                &names(x.comp, x.arch, &format!("{}{}", s.base(), x.path)),
                &format!("expected sha256 {}, actual none", x.sha),
            ],
        );
        assert!(err.contains("did not finish within --timeout 2s"), "{err}");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(15), "took {took:?}");
    }
}

#[test]
fn a_certificate_not_from_the_ca_is_refused() {
    let fx = Fx::new();
    // Same asset, served by a server whose certificate another CA signed.
    let rogue = pki("rogue CA");
    let s = serve(Some(rogue.server.clone()));
    let a = fx.asset("node_exporter", "amd64");
    s.route(&a.path, Reply::Ok(a.bytes.clone()));
    let url = format!("{}{}", s.base(), a.path);
    for cmd in ["fetch", "dist"] {
        let err = fx.refused(
            &join(&[fx.args(cmd), mirror(&s.base()), one(a.comp, a.arch)]),
            &[&names(a.comp, a.arch, &url)],
        );
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    }
    assert!(s.hits().is_empty(), "the request was sent: {:?}", s.hits());

    // The good server without --ca-cert: its CA is not trusted by default.
    let good = fx.good_server();
    let args: Vec<String> = fx
        .args("fetch")
        .into_iter()
        .filter(|x| x != "--ca-cert" && x != &fx.ca.display().to_string())
        .collect();
    assert!(!args.iter().any(|x| x.contains("ca.pem")));
    fx.refused(
        &join(&[args, mirror(&good.base()), one(a.comp, a.arch)]),
        &[&names(
            a.comp,
            a.arch,
            &format!("{}{}", good.base(), a.path),
        )],
    );
    assert!(good.hits().is_empty());
}

#[test]
fn plain_http_mirror_is_refused_without_connecting() {
    let fx = Fx::new();
    let plain = serve(None);
    let base = format!("http://127.0.0.1:{}", plain.port);
    let a = fx.asset("mysqld_exporter", "amd64");
    for cmd in ["fetch", "dist"] {
        fx.refused(
            &join(&[fx.args(cmd), mirror(&base), one(a.comp, a.arch)]),
            &[
                &names(a.comp, a.arch, &format!("{base}{}", a.path)),
                "plain http is refused",
            ],
        );
    }
    // Every pinned asset at once: each is named.
    let err = fx.refused(&join(&[fx.args("fetch"), mirror(&base)]), &[]);
    for x in &fx.assets {
        assert!(
            err.contains(&names(x.comp, x.arch, &format!("{base}{}", x.path))),
            "{err}"
        );
    }
    assert_eq!(plain.connections.load(Ordering::SeqCst), 0);
}

#[test]
fn offline_with_an_empty_cache_fails_clearly() {
    let fx = Fx::new();
    for cmd in ["fetch", "dist"] {
        let err = fx.refused(
            &with(fx.args(cmd), &["--offline"]),
            &["--offline and not in the cache"],
        );
        for a in &fx.assets {
            let upstream = format!("https://github.com{}", a.path);
            assert!(err.contains(&names(a.comp, a.arch, &upstream)), "{err}");
            assert!(err.contains(&format!("expected sha256 {}", a.sha)), "{err}");
        }
    }
    // A cache directory that does not exist is not created either.
    let absent = fx.dir.path().join("no-cache");
    let mut args = with(fx.args("fetch"), &["--offline"]);
    let i = args.iter().position(|x| x == "--cache").unwrap();
    args[i + 1] = absent.display().to_string();
    fx.refused(&args, &[]);
    assert!(!absent.exists());
}

#[test]
fn a_failed_download_into_a_new_cache_directory_leaves_nothing() {
    let fx = Fx::new();
    let s = fx.good_server();
    let a = fx.asset("node_exporter", "amd64");
    s.route(&a.path, Reply::Status(500));
    let absent = fx.dir.path().join("new/cache");
    let mut args = join(&[fx.args("fetch"), mirror(&s.base())]);
    let i = args.iter().position(|x| x == "--cache").unwrap();
    args[i + 1] = absent.display().to_string();
    fx.refused(&args, &["HTTP 500"]);
    assert!(!fx.dir.path().join("new").exists());
    assert_eq!(s.hits().len(), fx.assets.len());
}

#[test]
fn a_corrupted_cache_entry_is_detected_and_not_used() {
    let fx = Fx::new();
    let s = fx.good_server();
    let a = fx.asset("node_exporter", "amd64");
    let sel = one(a.comp, a.arch);
    fx.ok(&join(&[fx.args("fetch"), mirror(&s.base()), sel.clone()]));
    let entry = fx.cache_entry(a);
    // Flip one byte in place.
    let mut b = std::fs::read(&entry).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0xff;
    let corrupted_sha = sha256(&b);
    std::fs::write(&entry, &b).unwrap();

    // Offline: refused, naming the corruption; the bad entry is not kept.
    let o = fx.run(&join(&[
        with(fx.args("fetch"), &["--offline"]),
        sel.clone(),
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("was corrupted"), "{err}");
    assert!(err.contains(&corrupted_sha), "{err}");
    assert!(
        err.contains(&names(
            a.comp,
            a.arch,
            &format!("https://github.com{}", a.path)
        )),
        "{err}"
    );
    assert!(!entry.exists());
    // dist --offline with the corrupted entry is refused as well, out untouched.
    std::fs::write(&entry, &b).unwrap();
    let o = fx.run(&join(&[with(fx.args("dist"), &["--offline"]), sel.clone()]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("was corrupted"));
    assert!(!fx.out.exists());
    assert!(!entry.exists());

    // Online: the entry is re-downloaded and verified again.
    std::fs::write(&entry, &b).unwrap();
    let stdout = fx.ok(&join(&[fx.args("fetch"), mirror(&s.base()), sel.clone()]));
    assert!(stdout.contains("downloaded"), "{stdout}");
    assert_eq!(std::fs::read(&entry).unwrap(), a.bytes);
    assert_eq!(s.hits().len(), 2);

    // A truncated entry and an entry replaced by a symlink are not used either.
    std::fs::write(&entry, &a.bytes[..100]).unwrap();
    let o = fx.run(&join(&[
        with(fx.args("fetch"), &["--offline"]),
        sel.clone(),
    ]));
    assert!(!o.status.success());
    let target = fx.dir.path().join("elsewhere");
    std::fs::write(&target, &a.bytes).unwrap();
    std::os::unix::fs::symlink(&target, &entry).unwrap();
    let err = fx.refused(
        &join(&[with(fx.args("fetch"), &["--offline"]), sel]),
        &["is not a regular file"],
    );
    assert!(err.contains(&names(
        a.comp,
        a.arch,
        &format!("https://github.com{}", a.path)
    )));
}

// ------------------------------------------------------------------------------------------
// upstream signatures ([source.signature]): keys made here, signatures served by the server

/// Append a `[source.signature]` table to a component of the fixture.
fn declare_signature(fx: &Fx, comp: &str, table: &str) {
    let f = fx.components.join(format!("{comp}.toml"));
    let mut t = std::fs::read_to_string(&f).unwrap();
    t.push_str("\n[source.signature]\n");
    t.push_str(table);
    std::fs::write(&f, t).unwrap();
}

/// A minisign key pair by the real CLI (no password); returns (public key file, secret key).
fn minisign_keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (p, s) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    );
    cmd::must(
        std::process::Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(&p)
            .arg("-s")
            .arg(&s)
            .stdin(std::process::Stdio::null()),
    );
    (p, s)
}

/// A minisign signature (by the real CLI) over `data`.
fn minisign_sign(secret: &Path, data: &[u8]) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("data");
    std::fs::write(&f, data).unwrap();
    cmd::must(
        std::process::Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(secret)
            .arg("-m")
            .arg(&f)
            .stdin(std::process::Stdio::null()),
    );
    std::fs::read(d.path().join("data.minisig")).unwrap()
}

#[test]
fn minisign_signatures_over_the_asset_are_checked_before_the_cache() {
    let fx = Fx::new();
    let keys = fx.dir.path().join("keys/upstream");
    let (public, secret) = minisign_keypair(&keys, "node_exporter");
    let (_, other) = minisign_keypair(&fx.dir.path().join("elsewhere"), "other");
    declare_signature(
        &fx,
        "node_exporter",
        "kind = \"minisign\"\nurl = \"https://github.com/prometheus/node_exporter/releases/download/v{version}/node_exporter-{version}.linux-{arch}.tar.gz.minisig\"\nover = \"asset\"\nkey = \"keys/upstream/node_exporter.pub\"\n",
    );
    let s = fx.good_server();
    let a = fx.asset("node_exporter", "amd64");
    let sig_path = format!("{}.minisig", a.path);
    let sig_url = format!("https://github.com{sig_path}");
    let args = join(&[fx.args("fetch"), mirror(&s.base()), one(a.comp, a.arch)]);
    let url = format!("{}{}", s.base(), a.path);

    // Missing signature: refused like a wrong pin, nothing cached.
    fx.refused(
        &args,
        &[
            &names(a.comp, a.arch, &url),
            "upstream signature: cannot fetch the signature",
            &sig_url,
            "nothing was added to the cache",
        ],
    );
    // Signed by another key.
    s.route(&sig_path, Reply::Ok(minisign_sign(&other, &a.bytes)));
    fx.refused(
        &args,
        &[
            &names(a.comp, a.arch, &url),
            "minisign signature",
            "does not verify with",
            &public.display().to_string(),
        ],
    );
    // A good signature of other bytes (the asset was replaced and its signature kept).
    s.route(
        &sig_path,
        Reply::Ok(minisign_sign(&secret, b"another release")),
    );
    fx.refused(&args, &["minisign signature", "does not verify"]);
    // A damaged signature file.
    let mut bad = minisign_sign(&secret, &a.bytes);
    let i = bad.iter().position(|b| *b == b'\n').unwrap() + 10;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    s.route(&sig_path, Reply::Ok(bad));
    fx.refused(&args, &["upstream signature", "minisign"]);
    // The good signature: fetched, verified, cached.
    s.route(&sig_path, Reply::Ok(minisign_sign(&secret, &a.bytes)));
    let out = fx.ok(&args);
    assert!(out.contains(&a.sha) && out.contains("downloaded"), "{out}");
    assert_eq!(std::fs::read(fx.cache_entry(a)).unwrap(), a.bytes);
    assert!(s.hits().contains(&sig_path));

    // Validation names file, field and value.
    let f = fx.components.join("node_exporter.toml");
    let t = std::fs::read_to_string(&f).unwrap();
    for (from, to, needle) in [
        (
            "kind = \"minisign\"",
            "kind = \"gpg\"",
            "source.signature.kind",
        ),
        (
            "keys/upstream/node_exporter.pub",
            "keys/upstream/absent.pub",
            "keys/upstream/absent.pub",
        ),
        (
            "keys/upstream/node_exporter.pub",
            "../secret.pub",
            "must be a file under keys/upstream/",
        ),
        (
            "over = \"asset\"",
            "over = \"everything\"",
            "source.signature.over",
        ),
    ] {
        std::fs::write(&f, t.replace(from, to)).unwrap();
        let o = fx.run(&[
            "check".to_string(),
            "--components".into(),
            fx.components.display().to_string(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{to}: accepted");
        assert!(
            err.contains(&f.display().to_string()) && err.contains(needle),
            "{to}:\n{err}"
        );
    }
    std::fs::write(&f, &t).unwrap();
    // A key file that is not a minisign key.
    std::fs::write(&public, "untrusted comment: x\nnot base64\n").unwrap();
    let o = fx.run(&[
        "check".to_string(),
        "--components".into(),
        fx.components.display().to_string(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("source.signature.key")
            && err.contains("not a minisign public key"),
        "{err}"
    );
}

#[test]
fn openpgp_signatures_over_the_checksum_file_must_verify_and_list_the_pin() {
    let fx = Fx::new();
    let key = gpg::GpgKey::generate("mysqld_exporter upstream <upstream@example.invalid>");
    let other = gpg::GpgKey::generate("not upstream <other@example.invalid>");
    let keys = fx.dir.path().join("keys/upstream");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(
        keys.join("mysqld_exporter.asc"),
        xtask::signer::Signer::public_key_armored(&key).unwrap(),
    )
    .unwrap();
    declare_signature(
        &fx,
        "mysqld_exporter",
        "kind = \"openpgp\"\nurl = \"https://github.com/prometheus/mysqld_exporter/releases/download/v{version}/sha256sums.txt.asc\"\nover = \"checksums\"\nkey = \"keys/upstream/mysqld_exporter.asc\"\n",
    );
    let s = fx.good_server();
    let a = fx.asset("mysqld_exporter", "amd64");
    let dir = a.path.rsplit_once('/').unwrap().0.to_string();
    let (sums_path, sig_path) = (
        format!("{dir}/sha256sums.txt"),
        format!("{dir}/sha256sums.txt.asc"),
    );
    let sums_of = |sha: &str| -> Vec<u8> {
        let name = a.path.rsplit('/').next().unwrap();
        format!("{sha}  {name}\n{}  other-asset.tar.gz\n", "1".repeat(64)).into_bytes()
    };
    let sign = |k: &gpg::GpgKey, b: &[u8]| {
        xtask::signer::Signer::detach_sign_armored(k, b)
            .unwrap()
            .into_bytes()
    };
    let args = join(&[fx.args("fetch"), mirror(&s.base()), one(a.comp, a.arch)]);
    let good = sums_of(&a.sha);

    // Signed by another key.
    s.route(&sums_path, Reply::Ok(good.clone()));
    s.route(&sig_path, Reply::Ok(sign(&other, &good)));
    fx.refused(
        &args,
        &[
            "OpenPGP signature",
            "over the checksum file",
            "does not verify",
        ],
    );
    // The checksum file changed after it was signed.
    s.route(&sig_path, Reply::Ok(sign(&key, &good)));
    let mut changed = good.clone();
    changed[0] = if changed[0] == b'0' { b'1' } else { b'0' };
    s.route(&sums_path, Reply::Ok(changed));
    fx.refused(&args, &["OpenPGP signature", "does not verify"]);
    // A properly signed checksum file that lists another digest than the pin.
    let wrong = sums_of(&"2".repeat(64));
    s.route(&sums_path, Reply::Ok(wrong.clone()));
    s.route(&sig_path, Reply::Ok(sign(&key, &wrong)));
    fx.refused(
        &args,
        &[
            &format!("lists {}", a.path.rsplit('/').next().unwrap()),
            "but the pin is",
            &a.sha,
        ],
    );
    // … or does not list the asset at all.
    let none = format!("{}  other-asset.tar.gz\n", "1".repeat(64)).into_bytes();
    s.route(&sums_path, Reply::Ok(none.clone()));
    s.route(&sig_path, Reply::Ok(sign(&key, &none)));
    fx.refused(&args, &["does not list"]);
    // No checksum file.
    s.route(&sums_path, Reply::Status(404));
    fx.refused(&args, &["cannot fetch the checksum file"]);
    // Good: a binary (.sig-style) signature is accepted as well as an armored one.
    s.route(&sums_path, Reply::Ok(good.clone()));
    let armored = sign(&key, &good);
    let text = String::from_utf8(armored).unwrap();
    use pgp::composed::Deserializable;
    let (sig, _) = pgp::composed::DetachedSignature::from_string(&text).unwrap();
    let binary = pgp::ser::Serialize::to_bytes(&sig).unwrap();
    assert_ne!(binary[0], b'-', "binary, not armored");
    s.route(&sig_path, Reply::Ok(binary));
    let out = fx.ok(&args);
    assert!(out.contains(&a.sha) && out.contains("downloaded"), "{out}");
    assert_eq!(std::fs::read(fx.cache_entry(a)).unwrap(), a.bytes);
}
