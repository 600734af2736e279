//! The mirror of real exporter binaries (../shared/upstream-mirror): where it is (built once
//! when missing), what it carries (manifest.tsv), and serve.py serving it over HTTPS on
//! loopback. (Include with `#[path = "support/mirror.rs"] mod mirror;` after `mod cmd;`.)
#![allow(dead_code)]

use crate::cmd::{must, workspace};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn shared() -> PathBuf {
    std::env::var_os("OBS_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared"))
}

/// The mirror's directory, built once (cached in target/ between runs).
pub fn mirror_dir() -> PathBuf {
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

pub struct Row {
    pub component: String,
    pub version: String,
    pub arch: String,
    pub sha256: String,
}

pub fn manifest(dir: &Path) -> Vec<Row> {
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

pub struct Server {
    child: Child,
    pub url: String,
    pub ca: PathBuf,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
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
