//! A throw-away OpenPGP key held by real gpg in a temporary GNUPGHOME, implementing
//! `xtask::signer::Signer`, for tests of the index writers that should not depend on how the
//! pipeline's own key handling works. (Include with `#[path = "support/gpg.rs"] mod gpg;`.)
#![allow(dead_code)]

use std::io::Read;
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

fn run(c: Command, input: Option<&[u8]>) -> Vec<u8> {
    run_streamed(c, &mut input.unwrap_or_default())
}

/// As `run`, with stdin streamed from `input` (gpg reads all of it before it writes the
/// signature, so copying first and collecting afterwards cannot dead-lock).
fn run_streamed(mut c: Command, input: &mut dyn Read) -> Vec<u8> {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("gpg");
    {
        let mut stdin = child.stdin.take().unwrap();
        std::io::copy(input, &mut stdin).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn detach_sign_command(home: &Path, fpr: &str) -> Command {
    let mut c = gpg(home);
    c.args([
        "--digest-algo",
        "SHA256",
        "--armor",
        "--detach-sign",
        "-u",
        fpr,
    ]);
    c
}

/// The key's gpg-agent ends with it (it would outlive the test binary, holding inotify
/// instances: enough of them exhaust the per-user limit that systemd in tests/host.rs needs).
impl Drop for GpgKey {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl GpgKey {
    /// A new RSA-3072 signing key (smaller than production's 4096 only to keep tests fast).
    pub fn generate(uid: &str) -> GpgKey {
        let home = tempfile::tempdir().unwrap();
        let mut c = gpg(home.path());
        c.args(["--quick-gen-key", uid, "rsa3072", "sign", "never"]);
        run(c, None);
        let fpr = Self::primary_fpr(home.path());
        GpgKey { home, fpr }
    }

    /// A certify-only RSA-3072 primary key with an RSA-3072 signing subkey.
    pub fn generate_with_signing_subkey(uid: &str) -> GpgKey {
        let home = tempfile::tempdir().unwrap();
        let mut c = gpg(home.path());
        c.args(["--quick-gen-key", uid, "rsa3072", "cert", "never"]);
        run(c, None);
        let fpr = Self::primary_fpr(home.path());
        let mut c = gpg(home.path());
        c.args(["--quick-add-key", &fpr, "rsa3072", "sign", "never"]);
        run(c, None);
        GpgKey { home, fpr }
    }

    fn primary_fpr(home: &Path) -> String {
        let mut c = gpg(home);
        c.args(["--with-colons", "--list-secret-keys"]);
        let text = String::from_utf8(run(c, None)).unwrap();
        text.lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("fingerprint")
            .to_string()
    }

    /// The secret key, armored and unprotected (what `--signing-key FILE` takes).
    pub fn export_secret_armored(&self) -> Vec<u8> {
        let mut c = gpg(self.home.path());
        c.args(["--armor", "--export-secret-keys", &self.fpr]);
        run(c, None)
    }

    /// Write the armored secret key to `path` with the given mode (`--signing-key FILE` takes
    /// 0600 and refuses a file others can read).
    pub fn write_secret_key(&self, path: &Path, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, self.export_secret_armored()).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_path_buf()
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
        let c = detach_sign_command(self.home.path(), &self.fpr);
        Ok(String::from_utf8(run(c, Some(data)))?)
    }
    fn detach_sign_armored_reader(&self, data: &mut dyn Read) -> anyhow::Result<String> {
        let c = detach_sign_command(self.home.path(), &self.fpr);
        Ok(String::from_utf8(run_streamed(c, data))?)
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
