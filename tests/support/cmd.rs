//! Running the real tools from tests, and where the workspace is.
//! (Include with `#[path = "support/cmd.rs"] mod cmd;`.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the directory above `xtask/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Run a command; whether it succeeded, and its stdout followed by its stderr.
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Run a command that must succeed; its stdout followed by its stderr.
pub fn must(cmd: &mut Command) -> String {
    let desc = format!("{cmd:?}");
    let (ok, text) = run(cmd);
    assert!(ok, "{desc} failed:\n{text}");
    text
}

/// The overall score from `systemd-analyze security` output; `what` names the unit in the
/// panic when the output has none.
pub fn exposure_score(what: &str, text: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{what}: no exposure score:\n{text}"));
    line.split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

/// `xtask index --format FORMAT --pool POOL --out OUT --signing-key KEY` (what a release
/// engineer runs over a directory of packages), with HOME in `home` (nothing of the user's).
pub fn index_pool(format: &str, pool: &Path, out: &Path, key: &Path, home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(["index", "--format", format, "--pool"])
        .arg(pool)
        .arg("--out")
        .arg(out)
        .arg("--signing-key")
        .arg(key)
        .env("HOME", home)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("OBS_SIGNING_KEY")
        .env_remove("SOURCE_DATE_EPOCH");
    c
}
