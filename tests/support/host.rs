//! A booted systemd test host: a minimal Debian bookworm root file system (debootstrap),
//! cached outside the checkout and booted throw-away with
//! `systemd-nspawn --volatile=overlay --boot` (writes go to a tmpfs over it); commands run inside with `nsenter -t <its systemd> -a`.
//! (Include with `#[path = "support/host.rs"] mod host;`.)
//!
//! The cache is `OBS_HOST_ROOTFS` (default /var/cache/observability-stack/host-rootfs/bookworm).
//! It is built under a lock (`<cache>.lock`) into a temporary directory beside it and renamed
//! into place only when complete, and rebuilt when it is missing or when the package list it
//! records differs from [`PACKAGES`]. Needs root, debootstrap, systemd-nspawn
//! (systemd-container) and nsenter; without them the caller fails with a message naming what
//! is missing (a test host that cannot be made is a failure, never a skip).
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian suite and mirror of the test host.
pub const SUITE: &str = "bookworm";
pub const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// What the host has besides minbase: systemd as init (with logind, which polkitd and so
/// firewalld need), rpm for the rpm lifecycle, the three firewall front ends whose files we
/// ship, curl for the admin's setup steps and the metrics check, python3 for the loopback
/// HTTP server that serves our repository inside the host, nginx-light for a real NGINX whose
/// stub_status page nginx_exporter scrapes (and blackbox_exporter's HTTP probe target).
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "rpm",
    "ufw",
    "firewalld",
    "nftables",
    "curl",
    "python3",
    "nginx-light",
];

/// Recorded inside the root file system: what it was built from.
const RECORD: &str = ".observability-stack-host-packages";

fn record_text() -> String {
    format!(
        "suite={SUITE}\nmirror={DEBIAN_MIRROR}\npackages={}\n",
        PACKAGES.join(",")
    )
}

/// The cache directory of the root file system.
pub fn rootfs_path() -> PathBuf {
    std::env::var_os("OBS_HOST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/observability-stack/host-rootfs").join(SUITE))
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|d| d.join(tool).is_file())
        })
        .unwrap_or(false)
}

/// Fail (never skip) unless this runs as root with the tools a booted host needs.
pub fn require_tools() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "the booted-host test needs root (debootstrap, systemd-nspawn, nsenter); run it as root \
         (.ci/run does)"
    );
    let missing: Vec<(&str, &str)> = [
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
    ]
    .into_iter()
    .filter(|(t, _)| !in_path(t))
    .collect();
    assert!(
        missing.is_empty(),
        "the booted-host test needs {}: apt-get install {} (.ci/run installs them)",
        missing
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
            .join(", "),
        missing
            .iter()
            .map(|(_, p)| *p)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn is_current(root: &Path) -> bool {
    std::fs::read_to_string(root.join(RECORD)).is_ok_and(|t| t == record_text())
        && root.join("usr/lib/systemd/systemd").is_file()
}

/// The cached root file system, built (or rebuilt) first when needed.
pub fn rootfs() -> PathBuf {
    require_tools();
    let root = rootfs_path();
    if is_current(&root) {
        return root;
    }
    let parent = root
        .parent()
        .expect("OBS_HOST_ROOTFS has a parent")
        .to_path_buf();
    let name = root.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::create_dir_all(&parent)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    let lock = std::fs::File::create(parent.join(format!("{name}.lock"))).unwrap();
    if lock.try_lock().is_err() {
        eprintln!("host: waiting for the lock on {}.lock", root.display());
        lock.lock().unwrap();
    }
    if is_current(&root) {
        return root; // another run built it while we waited
    }
    // Left-overs of an interrupted build (we hold the lock, so nobody is building).
    for e in std::fs::read_dir(&parent).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&format!(".{name}.building-")) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let work = tempfile::Builder::new()
        .prefix(&format!(".{name}.building-"))
        .tempdir_in(&parent)
        .unwrap();
    let new = work.path().join("rootfs");
    eprintln!(
        "host: debootstrap {SUITE} into {} (a few minutes; cached afterwards)",
        new.display()
    );
    let t = Instant::now();
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "--merged-usr"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&new)
        .arg(DEBIAN_MIRROR)
        .stdin(Stdio::null())
        .output()
        .expect("debootstrap");
    assert!(
        out.status.success(),
        "debootstrap failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The host knows only the repositories the test configures (ours): no network needed.
    std::fs::write(new.join("etc/apt/sources.list"), "").unwrap();
    for dir in ["var/lib/apt/lists", "var/cache/apt/archives"] {
        for e in std::fs::read_dir(new.join(dir)).unwrap().flatten() {
            if e.path().is_file() && e.file_name() != "lock" {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    // firewall-offline-cmd refuses to run while firewalld does, and the test only reads
    // firewall files: firewalld stays installed but does not start at boot.
    let (ok, text) = crate::cmd::run(
        Command::new("systemctl")
            .arg(format!("--root={}", new.display()))
            .args(["disable", "firewalld.service"]),
    );
    assert!(ok, "systemctl --root disable firewalld:\n{text}");
    std::fs::write(new.join("etc/hostname"), "obs-test-host\n").unwrap();
    std::fs::write(new.join(RECORD), record_text()).unwrap();
    // Replace an outdated cache: move it aside first, then rename the new one in.
    if root.exists() {
        std::fs::rename(&root, work.path().join("old")).unwrap();
    }
    std::fs::rename(&new, &root).unwrap();
    drop(work); // removes the old tree, if any
    eprintln!("host: root file system ready in {:?}", t.elapsed());
    root
}

/// A booted throw-away copy of the root file system; powered off (then killed) on drop.
pub struct Host {
    nspawn: Option<Child>,
    /// PID (on this machine) of the host's systemd.
    pub leader: u32,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Host {
    /// Boot `rootfs` (a volatile overlay on it: the cache stays clean) with its own network namespace (its
    /// loopback is its own, so the exporters' ports cannot clash with this machine's), with
    /// each `(dir, target)` bind-mounted read-only. Waits until systemd says running or
    /// degraded.
    pub fn boot(rootfs: &Path, binds: &[(&Path, &str)]) -> Host {
        remove_stale_propagate_dir().unwrap();
        stop_orphaned_gpg_agents();
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("console.log");
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args([
            "--quiet",
            "--register=no",
            "--keep-unit",
            // The cache is the read-only lower layer of an overlay whose upper layer is a
            // tmpfs: nothing is copied, nothing the host writes survives it.
            "--volatile=overlay",
            "--private-network",
            "--console=pipe",
            "--machine=obs-test-host",
        ])
        .arg("-D")
        .arg(rootfs);
        for (dir, target) in binds {
            cmd.arg(format!("--bind-ro={}:{target}", dir.display()));
        }
        cmd.arg("--boot")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(logdir.path().join("nspawn.err")).unwrap());
        let child = cmd.spawn().expect("systemd-nspawn");
        let mut host = Host {
            leader: 0,
            nspawn: Some(child),
            log,
            _logdir: logdir,
        };
        let t = Instant::now();
        let pid = host.nspawn.as_ref().unwrap().id();
        loop {
            if let Some(st) = host.nspawn.as_mut().unwrap().try_wait().unwrap() {
                panic!("systemd-nspawn exited ({st}) during boot:\n{}", host.logs());
            }
            // nspawn's first child is a helper that forks the host's init and exits: wait
            // for a child that is systemd.
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let init = children.split_whitespace().find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "systemd\n")
            });
            if let Some(p) = init {
                host.leader = p.parse().unwrap();
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "no container init after 120 s:\n{}",
                host.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let state = loop {
            let (_, s) = host.sh("systemctl is-system-running");
            let s = s.trim().to_string();
            if s == "running" || s == "degraded" {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "host not up after 120 s (is-system-running: {s}):\n{}",
                host.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        };
        eprintln!("host: booted ({state}) in {:?}", t.elapsed());
        if state == "degraded" {
            let (_, failed) = host.sh("systemctl --failed --no-legend");
            eprintln!("host: failed units at boot:\n{failed}");
        }
        host
    }

    fn logs(&self) -> String {
        let console = std::fs::read_to_string(&self.log).unwrap_or_default();
        let err =
            std::fs::read_to_string(self.log.with_file_name("nspawn.err")).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(40).collect();
        format!(
            "console (last lines):\n{}\nnspawn stderr:\n{err}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// A command in all of the host's namespaces, with a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.leader.to_string())
            .arg("-a")
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        c
    }

    /// `sh -c script` in the host: success, and stdout followed by stderr.
    pub fn sh(&self, script: &str) -> (bool, String) {
        crate::cmd::run(&mut self.cmd(&["/bin/sh", "-c", script]))
    }

    /// As `sh`, and the script must succeed.
    pub fn must(&self, script: &str) -> String {
        let (ok, text) = self.sh(script);
        assert!(ok, "in the host: {script}\nfailed:\n{text}");
        text
    }

    /// Write `content` to `path` in the host (through `cat`, so owner and mode of an existing
    /// file stay).
    pub fn write(&self, path: &str, content: &str) {
        let mut c = self.cmd(&["/bin/sh", "-c", "cat > \"$1\"", "sh", path]);
        c.stdin(Stdio::piped());
        let mut child = c.spawn().expect("nsenter");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        let st = child.wait().unwrap();
        assert!(st.success(), "writing {path} in the host failed");
    }

    /// Poll `script` until it succeeds; its output, or a failure after `secs`.
    pub fn wait_for(&self, script: &str, secs: u64) -> String {
        let t = Instant::now();
        loop {
            let (ok, text) = self.sh(script);
            if ok {
                return text;
            }
            if t.elapsed() >= Duration::from_secs(secs) {
                let (_, journal) = self.sh("journalctl -b --no-pager -n 40");
                panic!(
                    "in the host, after {secs} s still failing: {script}\n{text}\n\
                     the host's journal (last 40 lines):\n{journal}"
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Power the host off (systemctl poweroff; then SIGTERM to systemd-nspawn, which asks
    /// the host to stop); kill it when it is still there after that.
    pub fn shutdown(&mut self) {
        let Some(mut child) = self.nspawn.take() else {
            return;
        };
        let pid = child.id().to_string();
        let exited = |child: &mut Child, secs: u64| {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(secs) {
                if child.try_wait().ok().flatten().is_some() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            false
        };
        if self.leader != 0 {
            let _ = self.cmd(&["systemctl", "poweroff"]).output();
            if exited(&mut child, 60) {
                return;
            }
        }
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if exited(&mut child, 60) {
            return;
        }
        eprintln!("host: still running after poweroff and SIGTERM; killing it");
        if self.leader != 0 {
            // The host's init: killing it ends every process of its PID namespace.
            let _ = Command::new("kill")
                .args(["-KILL", &self.leader.to_string()])
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown();
        // (not a panic inside drop: the next boot removes it, or says why it cannot)
        let _ = remove_stale_propagate_dir();
    }
}

/// gpg-agents whose GNUPGHOME is gone: started by the tools earlier tests drove (gpg in a
/// temporary home, dnf's and rpm's key checks) and left running with their sockets under
/// /run/user/0. Each holds inotify instances, and the per-user limit (128 by default) is
/// shared with the host's systemd, which cannot start without one (`inotify_init1: EMFILE`,
/// exit 255 during boot). They serve nothing any more: stopped.
fn stop_orphaned_gpg_agents() {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut stopped = 0;
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if !args.first().is_some_and(|a| a.ends_with(b"gpg-agent")) {
            continue;
        }
        let home = args
            .windows(2)
            .find(|w| w[0] == b"--homedir")
            .map(|w| Path::new(std::ffi::OsStr::from_bytes(w[1])));
        if home.is_some_and(|h| !h.exists()) {
            // SAFETY: kill(2) with a pid read from /proc and SIGTERM; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            stopped += 1;
        }
    }
    if stopped > 0 {
        eprintln!("stopped {stopped} gpg-agent(s) whose GNUPGHOME is gone");
    }
}

/// systemd-nspawn keeps `/run/systemd/nspawn/propagate/<machine>` while a container runs and
/// removes it on exit only where /run is a tmpfs: on a disk file system (as on this kind of
/// machine) it leaves it, and the next boot under the same name refuses to remove the leftover
/// ("Attempted to remove disk file system …, and we can't allow that") and exits 255. The
/// name is this test's own (`--machine=obs-test-host`), so the leftover is its own to remove.
fn remove_stale_propagate_dir() -> Result<(), String> {
    let stale = Path::new("/run/systemd/nspawn/propagate/obs-test-host");
    if stale.symlink_metadata().is_ok() {
        std::fs::remove_dir_all(stale).map_err(|e| format!("removing {}: {e}", stale.display()))?;
    }
    Ok(())
}
