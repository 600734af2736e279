//! A throw-away OpenPGP key held by real gpg in a temporary GNUPGHOME, implementing
//! `xtask::signer::Signer`, for tests of the index writers that should not depend on how the
//! pipeline's own key handling works. (Include with `#[path = "support/gpg.rs"] mod gpg;`.)
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct GpgKey {
    pub home: tempfile::TempDir,
    pub fpr: String,
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.arg("--homedir").arg(home).args([
        "--batch",
        "--no-tty",
        "--quiet",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    c
}

fn run(mut c: Command, input: Option<&[u8]>) -> Vec<u8> {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("gpg");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Some(i) = input {
            stdin.write_all(i).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl GpgKey {
    /// A new RSA-3072 signing key (smaller than production's 4096 only to keep tests fast).
    pub fn generate(uid: &str) -> GpgKey {
        let home = tempfile::tempdir().unwrap();
        let mut c = gpg(home.path());
        c.args(["--quick-gen-key", uid, "rsa3072", "sign", "never"]);
        run(c, None);
        let mut c = gpg(home.path());
        c.args(["--with-colons", "--list-secret-keys"]);
        let text = String::from_utf8(run(c, None)).unwrap();
        let fpr = text
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("fingerprint")
            .to_string();
        GpgKey { home, fpr }
    }

    /// Write the binary public keyring to `path` (for gpgv/sqv/apt Signed-By).
    pub fn write_keyring(&self, path: &Path) -> PathBuf {
        std::fs::write(
            path,
            xtask::signer::Signer::public_key_binary(self).unwrap(),
        )
        .unwrap();
        path.to_path_buf()
    }
}

impl xtask::signer::Signer for GpgKey {
    fn clearsign(&self, text: &str) -> anyhow::Result<String> {
        let mut c = gpg(self.home.path());
        c.args(["--digest-algo", "SHA256", "--clearsign", "-u", &self.fpr]);
        Ok(String::from_utf8(run(c, Some(text.as_bytes())))?)
    }
    fn detach_sign_armored(&self, data: &[u8]) -> anyhow::Result<String> {
        let mut c = gpg(self.home.path());
        c.args([
            "--digest-algo",
            "SHA256",
            "--armor",
            "--detach-sign",
            "-u",
            &self.fpr,
        ]);
        Ok(String::from_utf8(run(c, Some(data)))?)
    }
    fn public_key_armored(&self) -> anyhow::Result<String> {
        let mut c = gpg(self.home.path());
        c.args(["--armor", "--export", &self.fpr]);
        Ok(String::from_utf8(run(c, None))?)
    }
    fn public_key_binary(&self) -> anyhow::Result<Vec<u8>> {
        let mut c = gpg(self.home.path());
        c.args(["--export", &self.fpr]);
        Ok(run(c, None))
    }
    fn fingerprint(&self) -> String {
        self.fpr.clone()
    }
}
