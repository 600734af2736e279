//! The optional exporter-toolkit web config (TLS + basic auth), switched on the way an admin
//! would: a generated certificate (openssl) and a bcrypt password (htpasswd), the shipped
//! all-comment template filled in, and a live check of a running exporter with curl.
//! tests/webconfig.rs runs it against a local exporter; tests/host.rs against every installed
//! exporter with a web config flag, inside the booted host.
//! (Include with `#[path = "support/webconfig.rs"] mod webconfig;`.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A self-signed certificate for 127.0.0.1/localhost, its key, and one basic-auth user.
pub struct Material {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub user: String,
    pub password: String,
    /// bcrypt hash of `password` (htpasswd -B).
    pub hash: String,
}

fn must(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Material {
    pub fn generate(dir: &Path) -> Material {
        std::fs::create_dir_all(dir).unwrap();
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        must(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
                .args(["-subj", "/CN=localhost"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        let user = "prometheus".to_string();
        let password = "correct horse battery staple".to_string();
        let line = must(Command::new("htpasswd").args(["-nbBC", "10", &user, &password]));
        let hash = line
            .trim()
            .split_once(':')
            .map(|x| x.1.to_string())
            .expect("htpasswd output user:hash");
        assert!(hash.starts_with("$2"), "not a bcrypt hash: {hash}");
        Material {
            cert,
            key,
            user,
            password,
            hash,
        }
    }
}

/// The shipped template with its TLS and basic-auth lines uncommented, pointing at `cert` and
/// `key` (paths as the exporter will see them) and holding `m`'s user and hash. Every other
/// line stays a comment, so what is enabled is exactly what the template documents.
pub fn enable(shipped: &str, cert: &str, key: &str, m: &Material) -> String {
    let mut out = String::new();
    let mut enabled = 0;
    for line in shipped.lines() {
        let b = line.as_bytes();
        let setting = b.first() == Some(&b'#')
            && ((b.len() > 1 && b[1] != b' ' && b[1] != b'#')
                || (b.len() > 3 && &b[1..3] == b"  " && b[3] != b' '));
        if !setting {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        enabled += 1;
        let l = &line[1..];
        let l = if l.trim_start().starts_with("cert_file:") {
            format!("  cert_file: {cert}")
        } else if l.trim_start().starts_with("key_file:") {
            format!("  key_file: {key}")
        } else if l.trim_start().starts_with(&format!("{}:", m.user)) {
            format!("  {}: {}", m.user, m.hash)
        } else {
            l.to_string()
        };
        out.push_str(&l);
        out.push('\n');
    }
    assert_eq!(enabled, 5, "the template's five settings:\n{shipped}");
    out
}

/// Runs curl where the exporter is: a plain `Command` here, or one inside a booted host
/// (`|a| host.cmd(a)`). Given curl's argument vector, program name first.
pub type Runner<'a> = &'a dyn Fn(&[&str]) -> Command;

/// The local machine as a [`Runner`].
pub fn local(args: &[&str]) -> Command {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]);
    c
}

/// curl `SCHEME://ADDR/metrics` trusting `cacert` (a path where curl runs): (ok, body then
/// the HTTP status on the last line).
fn curl(
    run: Runner<'_>,
    addr: &str,
    cacert: &str,
    auth: Option<(&str, &str)>,
    scheme: &str,
) -> (bool, String) {
    let url = format!("{scheme}://{addr}/metrics");
    let cred = auth.map(|(u, p)| format!("{u}:{p}"));
    let mut args = vec![
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ];
    args.extend(["--cacert", cacert]);
    if let Some(c) = &cred {
        args.extend(["-u", c.as_str()]);
    }
    args.push(&url);
    let out = run(&args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A running exporter at `addr` (host:port) with the web config of `m` enabled: serves
/// `metric` over TLS to the right user only, and nothing over plain HTTP. curl runs through
/// `run` and finds `m`'s certificate at `cacert`.
pub fn check_live(run: Runner<'_>, addr: &str, cacert: &str, m: &Material, metric: &str) {
    let (ok, text) = curl(run, addr, cacert, Some((&m.user, &m.password)), "https");
    assert!(
        ok && text.ends_with("\n200"),
        "TLS + auth on {addr}: {text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(metric)),
        "no {metric} over TLS on {addr}"
    );
    let (_, text) = curl(run, addr, cacert, None, "https");
    assert!(
        text.ends_with("\n401"),
        "no credentials must get 401 on {addr}: {text}"
    );
    let (_, text) = curl(run, addr, cacert, Some((&m.user, "wrong")), "https");
    assert!(
        text.ends_with("\n401"),
        "a wrong password must get 401 on {addr}: {text}"
    );
    let (_, text) = curl(run, addr, cacert, Some((&m.user, &m.password)), "http");
    assert!(
        !text.ends_with("\n200"),
        "plain HTTP must not serve metrics on {addr}: {text}"
    );
}
