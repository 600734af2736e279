//! Real package clients with configuration of their own in temporary directories, for tests:
//! apt (APT_CONFIG), dnf (--installroot/--config/reposdir) and a loopback HTTP server.
//! (Include with `#[path = "support/clients.rs"] mod clients;`, beside `support/cmd.rs` as
//! `mod cmd`.)
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::cmd::run;

pub struct Apt {
    pub dir: tempfile::TempDir,
}

/// A published `.sources` file pointed at another place: its `URIs:` replaced by `uri` and its
/// `Signed-By:` by `keyring` (an administrator's copy of the tree: a mirror, an import, a
/// checkout). Every other line is kept as written.
pub fn sources_at(sources: &str, uri: &str, keyring: &Path) -> String {
    sources
        .lines()
        .map(|l| {
            if l.starts_with("URIs:") {
                format!("URIs: {uri}\n")
            } else if l.starts_with("Signed-By:") {
                format!("Signed-By: {}\n", keyring.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

impl Apt {
    /// apt with its own config, state and cache, trusting nothing but the `.sources` file's
    /// Signed-By keyring.
    pub fn new(sources: &str) -> Apt {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "empty",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/log/apt",
            "download",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("status"), "").unwrap();
        std::fs::write(d.join("etc/apt/sources.list.d/test.sources"), sources).unwrap();
        let conf = format!(
            r#"Dir "{d}/";
Dir::State::status "{d}/status";
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "{d}/etc/apt/sources.list.d";
Dir::Etc::Trusted "{d}/empty/none.gpg";
Dir::Etc::TrustedParts "{d}/empty";
Dir::Etc::Parts "{d}/etc/apt/apt.conf.d";
Dir::Etc::PreferencesParts "{d}/etc/apt/preferences.d";
Debug::NoLocking "1";
APT::Architecture "amd64";
APT::Architectures {{ "amd64"; "arm64"; }};
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::Retries "0";
Acquire::http::Proxy "DIRECT";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
"#,
            d = d.display()
        );
        std::fs::write(d.join("apt.conf"), conf).unwrap();
        Apt { dir }
    }

    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.env("APT_CONFIG", self.dir.path().join("apt.conf"))
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("all_proxy")
            .env("LC_ALL", "C")
            .current_dir(self.dir.path().join("download"))
            .stdin(Stdio::null());
        c
    }

    pub fn get(&self, args: &[&str]) -> (bool, String) {
        run(self.cmd("apt-get").args(["-q", "-y"]).args(args))
    }

    pub fn update_ok(&self) {
        let (ok, text) = self.get(&["update"]);
        assert!(ok, "apt-get update failed:\n{text}");
        assert!(
            !text.contains("W:") && !text.contains("E:"),
            "apt-get update warned:\n{text}"
        );
    }

    pub fn downloaded(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join("download").join(name)).unwrap()
    }

    pub fn archives(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.dir.path().join("var/cache/apt/archives"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".deb"))
            .collect()
    }
}

/// `python3 -m http.server` on an ephemeral loopback port, stopped on drop.
pub struct Http {
    child: Child,
    pub url: String,
}

impl Http {
    pub fn serve(dir: &Path) -> Http {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port: u16 = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Http {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Dnf {
    pub t: tempfile::TempDir,
}

impl Dnf {
    pub fn new() -> Dnf {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("root")).unwrap();
        fs::create_dir_all(t.path().join("repos.d")).unwrap();
        fs::write(
            t.path().join("dnf.conf"),
            "[main]\ngpgcheck=1\nrepo_gpgcheck=1\nskip_if_unavailable=False\nkeepcache=1\nreposdir=\n",
        )
        .unwrap();
        Dnf { t }
    }
    pub fn cmd(&self) -> Command {
        self.cmd_plugins(false)
    }
    /// With `plugins`, only dnf-plugins-core's `download` is enabled.
    pub fn cmd_plugins(&self, plugins: bool) -> Command {
        let t = self.t.path();
        let mut c = Command::new("dnf");
        c.arg(format!("--installroot={}", t.join("root").display()))
            .arg(format!("--config={}", t.join("dnf.conf").display()))
            .arg(format!("--setopt=reposdir={}", t.join("repos.d").display()))
            .args([
                "--releasever=12",
                "--forcearch=x86_64",
                if plugins {
                    "--disableplugin=*"
                } else {
                    "--noplugins"
                },
                "--assumeyes",
                "--setopt=install_weak_deps=False",
            ])
            .env("LC_ALL", "C.UTF-8");
        if plugins {
            c.arg("--enableplugin=download");
        }
        c
    }
    /// The repository given on the command line, signature checks forced on.
    pub fn with_repo(&self, root: &Path, key: &Path) -> Command {
        let mut c = self.cmd();
        c.arg(format!("--repofrompath=obs,file://{}", root.display()))
            .args([
                "--repo=obs",
                "--setopt=obs.gpgcheck=1",
                "--setopt=obs.repo_gpgcheck=1",
            ])
            .arg(format!("--setopt=obs.gpgkey=file://{}", key.display()));
        c
    }
}
