//! `cargo xtask bench`: the pipeline side by side with the tools users would pick instead.
//!
//! Every input is generated here, deterministically (a seeded PRNG decides sizes and bytes),
//! into a work directory that later runs reuse. Each benchmark runs ours and theirs
//! alternately (A/B, B/A, …), each run in a process of its own, so that its wall time and its
//! peak RSS (`wait4`'s `ru_maxrss`, which covers the process and the children it waited for)
//! belong to that run only. Our side runs as `xtask bench-child …` (or the commands users run:
//! `xtask dist`, `xtask index --pool`), theirs as the tool (or a bash script of tools). The
//! report gives medians, ratios ours/theirs, peak RSS, and ends with one line per benchmark for
//! scripts:
//! `B<n> <name> ratio=<ours/theirs> target=<target> PASS|MISS` (B6: `rss=<MiB>`).
//! Nothing is installed: a missing tool is listed and its benchmarks are reported as
//! `SKIP(tool)`.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;

use crate::component::Component;
use crate::package::{Arch, Compression, Content, FileEntry, FileKind, Layout, Package};
use crate::render::Templates;

/// Every timestamp of generated inputs and outputs (both sides).
const SDE: u64 = 1_700_000_000;
/// Bumped when a generator changes: inputs generated before are made again.
const GEN_VERSION: &str = "bench-gen-v1";
const MIB: f64 = 1024.0 * 1024.0;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Shrink every input so the whole command takes a minute or two (CI).
    #[arg(long)]
    pub small: bool,
    /// Runs of each side per benchmark (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Only these benchmarks (comma-separated: B1,B4,…).
    #[arg(long, value_delimiter = ',', value_name = "B1,B2,…")]
    pub only: Vec<String>,
    /// Work directory for generated inputs and outputs (kept, reused by later runs).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// The catalogue whose dist B2 and B3 measure (default: the workspace's components/).
    #[arg(long = "components", value_name = "DIR")]
    pub components: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    #[command(subcommand)]
    cmd: ChildCmd,
}

#[derive(clap::Subcommand, Debug)]
enum ChildCmd {
    /// Package FILE as /usr/bin/bench-large into a .deb in OUT.
    Deb {
        file: PathBuf,
        #[arg(long)]
        sha256: String,
        #[arg(long, value_enum)]
        compression: Compression,
        #[arg(long)]
        out: PathBuf,
    },
    /// Package FILE as /usr/bin/bench-large into a .rpm in OUT.
    Rpm {
        file: PathBuf,
        #[arg(long)]
        sha256: String,
        #[arg(long, value_enum)]
        compression: Compression,
        #[arg(long)]
        out: PathBuf,
    },
    /// sha256 of FILE (digest::sha256_file), printed like sha256sum.
    Sha256 { file: PathBuf },
}

// ---------------------------------------------------------------------------------------------
// The child: one measured step of ours

pub fn child(a: ChildArgs) -> Result<()> {
    child_cmd(a)?;
    // The child's own peak (B6 reads it from the log): wait4's ru_maxrss also carries the
    // parent's peak, which the kernel folds in when the spawned child execs.
    if let Some(kib) = own_peak_rss_kib() {
        eprintln!("{PEAK_PREFIX}{kib}");
    }
    Ok(())
}

/// The line a child ends its log with: `bench-child: VmHWM KiB <n>`.
const PEAK_PREFIX: &str = "bench-child: VmHWM KiB ";

/// Peak RSS of this process's own address space (`VmHWM` of /proc/self/status), in KiB.
fn own_peak_rss_kib() -> Option<u64> {
    fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn child_cmd(a: ChildArgs) -> Result<()> {
    let templates = Templates::load(None)?;
    match a.cmd {
        ChildCmd::Deb {
            file,
            sha256,
            compression,
            out,
        } => {
            let pkg = large_package(&file, &sha256)?;
            fs::create_dir_all(&out)?;
            let w = crate::deb::write_deb(&pkg, &templates, &out, compression)?;
            println!("{} {}", w.sha256, w.path.display());
        }
        ChildCmd::Rpm {
            file,
            sha256,
            compression,
            out,
        } => {
            let pkg = large_package(&file, &sha256)?;
            fs::create_dir_all(&out)?;
            let w = crate::rpm_writer::write_rpm(&pkg, &templates, &out, compression)?;
            println!("{} {}", w.sha256, w.path.display());
        }
        ChildCmd::Sha256 { file } => {
            let (h, _) =
                crate::digest::sha256_file(&file).with_context(|| format!("{}", file.display()))?;
            println!("{h}  {}", file.display());
        }
    }
    Ok(())
}

fn base_package(name: &str, version: &str, files: Vec<FileEntry>) -> Package {
    Package {
        name: name.into(),
        version: version.into(),
        revision: 1,
        arch: Arch::Amd64,
        summary: "Generated package for cargo xtask bench".into(),
        description: "Generated by cargo xtask bench; not for installation.".into(),
        license: "Apache-2.0".into(),
        homepage: "https://example.org/observability-stack-bench".into(),
        maintainer: crate::dist::DEFAULT_MAINTAINER.into(),
        conflicts: vec![],
        depends: vec![],
        files,
        dirs: vec![],
        service: None,
        changelog: vec!["Generated for the benchmark.".into()],
        source_date_epoch: SDE,
        lintian_overrides: vec![],
        copyright_holder: "The observability-stack authors".into(),
        upstream_license: None,
    }
}

fn large_package(file: &Path, sha256: &str) -> Result<Package> {
    let size = fs::metadata(file)
        .with_context(|| format!("{}", file.display()))?
        .len();
    Ok(base_package(
        "bench-large",
        "1.0.0",
        vec![FileEntry {
            path: "/usr/bin/bench-large".into(),
            mode: 0o755,
            owner: "root".into(),
            group: "root".into(),
            kind: FileKind::Regular,
            content: Content::File(file.to_path_buf()),
            sha256: sha256.into(),
            size,
        }],
    ))
}

// ---------------------------------------------------------------------------------------------
// Generated inputs

/// splitmix64: small, fast, and the same everywhere.
struct Prng(u64);

impl Prng {
    fn new(seed: &str) -> Prng {
        let h = crate::digest::sha256_hex(seed.as_bytes());
        Prng(u64::from_str_radix(&h[..16], 16).unwrap_or(1))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// What the "large binary" is made of: 64 KiB blocks, each chosen by the PRNG: 30% random
/// bytes (like compressed sections: incompressible), 40% "words" (tokens from a 512-entry
/// vocabulary with a skewed choice, like symbol tables and strings), 30% a repeated 4 KiB
/// pattern with sparse mutations (like padding, tables and repetitive code). xz -6 makes it
/// about 45% of its size, gzip -9 about 55%: close to what they do with Go exporter binaries.
pub const LARGE_BINARY_MIX: &str = "64 KiB blocks: 30% random bytes, 40% skewed tokens from a \
512-word vocabulary, 30% a repeated 4 KiB pattern with sparse mutations (seeded splitmix64)";

const BLOCK: usize = 64 << 10;

/// Write `size` generated bytes to `path` (with an ELF header for `machine` first, when
/// given); returns the sha256. Skipped when a previous run made the same file.
fn generate_binary(path: &Path, size: u64, seed: &str, machine: Option<u16>) -> Result<String> {
    let stamp_text = format!("{GEN_VERSION} {size} {seed} {machine:?}");
    let stamp = path.with_extension("stamp");
    if let (Ok(s), Ok(m)) = (fs::read_to_string(&stamp), fs::metadata(path)) {
        if let Some((text, sha)) = s.rsplit_once(' ') {
            if text == stamp_text && m.len() == size {
                return Ok(sha.to_string());
            }
        }
    }
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    let mut rng = Prng::new(seed);
    let vocab: Vec<Vec<u8>> = (0..512)
        .map(|_| {
            let n = 3 + rng.below(10) as usize;
            (0..n)
                .map(|_| b"abcdefghijklmnopqrstuvwxyz_./0123456789"[rng.below(39) as usize])
                .collect()
        })
        .collect();
    let mut pattern = vec![0u8; 4096];
    rng.fill(&mut pattern);
    let mut w = crate::digest::HashingWriter::new(BufWriter::with_capacity(
        1 << 20,
        fs::File::create(path).with_context(|| format!("{}", path.display()))?,
    ));
    let mut written = 0u64;
    if let Some(m) = machine {
        let h = elf_header(m, size);
        let n = (h.len() as u64).min(size) as usize;
        w.write_all(&h[..n])?;
        written += n as u64;
    }
    let mut block = vec![0u8; BLOCK];
    while written < size {
        let kind = rng.below(10);
        if kind < 3 {
            rng.fill(&mut block);
        } else if kind < 7 {
            let mut i = 0;
            while i < BLOCK {
                let a = rng.below(512);
                let b = rng.below(512);
                let word = &vocab[(a & b) as usize];
                let n = word.len().min(BLOCK - i);
                block[i..i + n].copy_from_slice(&word[..n]);
                i += n;
                if i < BLOCK {
                    block[i] = 0;
                    i += 1;
                }
            }
        } else {
            for c in block.chunks_mut(4096) {
                c.copy_from_slice(&pattern[..c.len()]);
            }
            for _ in 0..(BLOCK / 512) {
                let at = rng.below(BLOCK as u64) as usize;
                block[at] = rng.next() as u8;
            }
        }
        let n = (BLOCK as u64).min(size - written) as usize;
        w.write_all(&block[..n])?;
        written += n as u64;
    }
    let (bw, sha, _) = w.finish();
    bw.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::write(&stamp, format!("{stamp_text} {sha}"))?;
    Ok(sha)
}

/// A 64-bit little-endian ELF header with one PT_LOAD program header covering the file: what
/// `elf::inspect` needs to see a static executable for `machine`.
fn elf_header(machine: u16, size: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(120);
    h.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h.extend_from_slice(&machine.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&0x40_0078u64.to_le_bytes()); // entry
    h.extend_from_slice(&64u64.to_le_bytes()); // phoff
    h.extend_from_slice(&0u64.to_le_bytes()); // shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    h.extend_from_slice(&5u32.to_le_bytes()); // R+X
    h.extend_from_slice(&0u64.to_le_bytes());
    h.extend_from_slice(&0x40_0000u64.to_le_bytes());
    h.extend_from_slice(&0x40_0000u64.to_le_bytes());
    h.extend_from_slice(&size.to_le_bytes());
    h.extend_from_slice(&size.to_le_bytes());
    h.extend_from_slice(&0x1000u64.to_le_bytes());
    h
}

// ---------------------------------------------------------------------------------------------
// Running and measuring

#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_kib: u64,
}

/// Run `cmd` to completion as a child of its own; wall time and `ru_maxrss`. stdout and
/// stderr go to `log`; a failure shows its end.
fn measure(cmd: &mut Command, log: &Path) -> Result<Sample> {
    let f = fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
    let mut desc = format!("{cmd:?}");
    if desc.len() > 300 {
        let mut end = 300;
        while !desc.is_char_boundary(end) {
            end -= 1;
        }
        desc = format!("{}…", &desc[..end]);
    }
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("cannot run {desc}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value of the plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own unreaped child; status and ru point to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e).with_context(|| format!("waiting for {desc}"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(child);
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{desc} failed (wait status {status}); end of {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(Sample {
        secs,
        rss_kib: ru.ru_maxrss.max(0) as u64,
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Medians of a side's runs.
#[derive(Debug, Clone, Copy)]
struct Side {
    secs: f64,
    rss_mib: f64,
}

fn side(samples: &[Sample]) -> Side {
    Side {
        secs: median(&samples.iter().map(|s| s.secs).collect::<Vec<_>>()),
        rss_mib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0,
    }
}

/// `runs` alternating pairs: ours then theirs, then theirs then ours, …
fn ab(
    runs: usize,
    mut ours: impl FnMut(usize) -> Result<Sample>,
    mut theirs: impl FnMut(usize) -> Result<Sample>,
) -> Result<(Side, Side)> {
    let (mut o, mut t) = (Vec::new(), Vec::new());
    for i in 0..runs {
        if i % 2 == 0 {
            o.push(ours(i)?);
            t.push(theirs(i)?);
        } else {
            t.push(theirs(i)?);
            o.push(ours(i)?);
        }
    }
    Ok((side(&o), side(&t)))
}

fn reset_dir(p: &Path) -> Result<()> {
    if p.exists() {
        fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    Ok(())
}

/// Total size of the `*.ext` files below `dir`.
fn package_bytes(dir: &Path, ext: &str) -> Result<u64> {
    let mut total = 0;
    if !dir.is_dir() {
        return Ok(0);
    }
    for e in fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let e = e?;
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() {
            total += package_bytes(&p, ext)?;
        } else if p.extension().is_some_and(|x| x == ext) {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}

fn remove(p: &Path) -> Result<()> {
    if p.is_dir() {
        fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    } else if p.exists() {
        fs::remove_file(p)?;
    }
    Ok(())
}

fn bash(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c").arg(format!("set -euo pipefail\n{script}"));
    c
}

/// Single-quoted for bash.
fn q(p: impl AsRef<std::ffi::OsStr>) -> String {
    crate::render::sh_quote(&p.as_ref().to_string_lossy())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).any(|d| {
                let p = d.join(tool);
                fs::metadata(&p)
                    .map(|m| {
                        use std::os::unix::fs::PermissionsExt;
                        m.is_file() && m.permissions().mode() & 0o111 != 0
                    })
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------------------------
// Results

/// How a row is judged.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// ours/theirs wall time at most this.
    RatioAtMost(f64),
    /// Throughput ours/theirs (= theirs/ours time) at least this.
    ThroughputAtLeast(f64),
    /// Our median wall time at most this many seconds (ratio still reported).
    OursSecsAtMost(f64),
    /// Our peak RSS at most this many MiB.
    RssAtMost(f64),
}

struct Row {
    id: &'static str,
    name: String,
    ours: Option<Side>,
    theirs: Option<Side>,
    goal: Goal,
    skip: Option<String>,
    note: String,
}

impl Row {
    fn new(id: &'static str, name: &str, goal: Goal) -> Row {
        Row {
            id,
            name: name.into(),
            ours: None,
            theirs: None,
            goal,
            skip: None,
            note: String::new(),
        }
    }
    fn skipped(id: &'static str, name: &str, goal: Goal, why: &str) -> Row {
        Row {
            skip: Some(why.into()),
            ..Row::new(id, name, goal)
        }
    }
    fn measured(mut self, ours: Side, theirs: Option<Side>) -> Row {
        self.ours = Some(ours);
        self.theirs = theirs;
        self
    }
    fn with_note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
    fn value(&self) -> Option<f64> {
        let o = self.ours?;
        match self.goal {
            Goal::RssAtMost(_) => Some(o.rss_mib),
            Goal::ThroughputAtLeast(_) => Some(self.theirs?.secs / o.secs),
            _ => Some(o.secs / self.theirs?.secs),
        }
    }
    fn unit(&self) -> &'static str {
        match self.goal {
            Goal::RssAtMost(_) => "rss",
            _ => "ratio",
        }
    }
    fn target(&self) -> String {
        match self.goal {
            Goal::RatioAtMost(x) => format!("<={x}"),
            Goal::ThroughputAtLeast(x) => format!(">={x}"),
            Goal::OursSecsAtMost(x) => format!("ours<={x}s"),
            Goal::RssAtMost(x) => format!("<={x}MiB"),
        }
    }
    fn verdict(&self) -> String {
        if let Some(s) = &self.skip {
            return format!("SKIP({s})");
        }
        let Some(v) = self.value() else {
            return "SKIP(no measurement)".into();
        };
        let pass = match self.goal {
            Goal::RatioAtMost(x) => v <= x,
            Goal::ThroughputAtLeast(x) => v >= x,
            Goal::OursSecsAtMost(x) => self.ours.is_some_and(|o| o.secs <= x),
            Goal::RssAtMost(x) => v <= x,
        };
        if pass { "PASS" } else { "MISS" }.into()
    }
    fn line(&self) -> String {
        let v = match (self.skip.is_some(), self.value()) {
            (false, Some(v)) => match self.goal {
                Goal::RssAtMost(_) => format!("{v:.1}"),
                _ => format!("{v:.3}"),
            },
            _ => "n/a".into(),
        };
        format!(
            "{} {} {}={v} target={} {}",
            self.id,
            self.name,
            self.unit(),
            self.target(),
            self.verdict()
        )
    }
}

fn secs(s: Option<Side>) -> String {
    s.map(|s| format!("{:.3}s", s.secs)).unwrap_or("-".into())
}
fn rss(s: Option<Side>) -> String {
    s.map(|s| format!("{:.0}", s.rss_mib)).unwrap_or("-".into())
}

// ---------------------------------------------------------------------------------------------
// The benchmarks

struct Sizes {
    b1_binary: u64,
    catalogue_binary: u64,
    index_packages: usize,
    big_file: u64,
}

struct Ctx {
    small: bool,
    runs: usize,
    work: PathBuf,
    exe: PathBuf,
    sizes: Sizes,
    components: PathBuf,
    missing: Vec<&'static str>,
    key: Option<Key>,
    logs: PathBuf,
}

/// The benchmark's signing key: made by gpg once, used by both sides.
struct Key {
    gnupg: PathBuf,
    fpr: String,
    secret: PathBuf,
}

impl Ctx {
    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }
    fn need(&self, tools: &[&'static str]) -> Option<String> {
        let m: Vec<&str> = tools
            .iter()
            .copied()
            .filter(|t| self.missing.contains(t))
            .collect();
        (!m.is_empty()).then(|| m.join(","))
    }
    fn ours(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.env("SOURCE_DATE_EPOCH", SDE.to_string());
        c
    }
    fn gpg_prefix(&self) -> String {
        let k = self.key.as_ref().expect("key");
        format!(
            "export GNUPGHOME={}\nG() {{ gpg --batch --yes --quiet --pinentry-mode loopback --passphrase '' --digest-algo SHA256 -u {} \"$@\"; }}\n",
            q(&k.gnupg),
            k.fpr
        )
    }
}

const TOOLS: &[&str] = &[
    "dpkg-deb",
    "rpmbuild",
    "rpmsign",
    "apt-ftparchive",
    "createrepo_c",
    "gpg",
    "sha256sum",
    "bash",
    "tar",
    "gzip",
    "xz",
    "md5sum",
];

pub fn run(a: BenchArgs) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs 0: at least one run of each side is needed");
    }
    let ids: Vec<String> = a.only.iter().map(|s| s.trim().to_uppercase()).collect();
    for id in &ids {
        if !["B1", "B2", "B3", "B4", "B5", "B6"].contains(&id.as_str()) {
            bail!("--only {id:?}: benchmarks are B1 … B6");
        }
    }
    let want = |id: &str| ids.is_empty() || ids.iter().any(|i| i == id);
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = match &a.work {
        Some(w) => w.clone(),
        None if ws.join("Cargo.toml").is_file() => ws.join("target/bench"),
        None => std::env::temp_dir().join("observability-stack-bench"),
    };
    let work = work.join(if a.small { "small" } else { "full" });
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let work = fs::canonicalize(&work)?;
    let components = a
        .components
        .clone()
        .unwrap_or_else(|| ws.join("components"));
    let logs = work.join("logs");
    fs::create_dir_all(&logs)?;
    let missing: Vec<&'static str> = TOOLS.iter().copied().filter(|t| !which(t)).collect();
    let sizes = if a.small {
        Sizes {
            b1_binary: 2 << 20,
            catalogue_binary: 512 << 10,
            index_packages: 100,
            big_file: 8 << 20,
        }
    } else {
        Sizes {
            b1_binary: 32 << 20,
            catalogue_binary: 16 << 20,
            index_packages: 10_000,
            big_file: 1 << 30,
        }
    };
    let mut ctx = Ctx {
        small: a.small,
        runs: a.runs,
        work,
        exe: std::env::current_exe().context("the running executable")?,
        sizes,
        components,
        missing,
        key: None,
        logs,
    };
    let started = Instant::now();
    eprintln!(
        "bench: work directory {}{}",
        ctx.work.display(),
        if ctx.small { " (--small)" } else { "" }
    );
    if !ctx.missing.is_empty() {
        eprintln!(
            "bench: missing tools (their benchmarks are skipped, nothing is installed): {}",
            ctx.missing.join(", ")
        );
    }
    if a.runs < 5 {
        eprintln!(
            "bench: note: {} run(s) per side; medians of 5 or more are what the targets mean",
            a.runs
        );
    }
    if !ctx.missing.contains(&"gpg") && (want("B2") || want("B3") || want("B4")) {
        ctx.key = Some(make_key(&ctx).context("making the benchmark's signing key with gpg")?);
    }

    let mut rows: Vec<Row> = Vec::new();
    // A benchmark that fails is reported (as SKIP(error)) and the others still run.
    let step = |id: &'static str, r: Result<Vec<Row>>, rows: &mut Vec<Row>| match r {
        Ok(v) => rows.extend(v),
        Err(e) => {
            eprintln!("bench: {id} failed: {e:#}");
            rows.push(Row::skipped(id, "error", Goal::RatioAtMost(1.0), "error"));
        }
    };
    if want("B1") {
        step("B1", b1(&ctx), &mut rows);
    }
    if want("B2") || want("B3") {
        let r = b2_b3(&ctx, want("B2"), want("B3"));
        step("B2", r, &mut rows);
    }
    if want("B4") {
        step("B4", b4(&ctx), &mut rows);
    }
    if want("B5") {
        step("B5", b5(&ctx), &mut rows);
    }
    if want("B6") {
        step("B6", b6(&ctx), &mut rows);
    }
    // The gpg-agent the key's GNUPGHOME started would outlive the run (one per work
    // directory, holding inotify instances): stopped, best effort.
    if let Some(k) = &ctx.key {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &k.gnupg)
            .args(["--kill", "gpg-agent"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    report(&ctx, &rows, started.elapsed().as_secs_f64());
    Ok(())
}

fn report(ctx: &Ctx, rows: &[Row], elapsed: f64) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .map(|k| format!("{:.1} GiB", k as f64 / MIB))
        .unwrap_or_else(|| "?".into());
    println!(
        "# cargo xtask bench{}",
        if ctx.small { " --small" } else { "" }
    );
    println!("date: {}", crate::date::rfc2822(now, "UTC"));
    println!("machine: {cores} cores, CPU {cpu}, memory {mem}");
    println!("cores: {cores}");
    println!(
        "runs: {} per side, alternating A/B; times are medians; RSS is the peak of any run (MiB)",
        ctx.runs
    );
    println!("large binary: {LARGE_BINARY_MIX}");
    println!(
        "sizes: B1 {} MiB; B2/B3 catalogue binaries {} KiB each; B4 {} packages; B5/B6 {} MiB",
        ctx.sizes.b1_binary >> 20,
        ctx.sizes.catalogue_binary >> 10,
        ctx.sizes.index_packages,
        ctx.sizes.big_file >> 20
    );
    println!(
        "tools: {} | {} | apt-ftparchive (apt {}) | {} | {} | {}",
        first_line("dpkg-deb", &["--version"]),
        first_line("rpmbuild", &["--version"]),
        first_line("apt-config", &["--version"])
            .split_whitespace()
            .nth(1)
            .unwrap_or("?"),
        first_line("createrepo_c", &["--version"]),
        first_line("sha256sum", &["--version"]),
        first_line("gpg", &["--version"]),
    );
    if !ctx.missing.is_empty() {
        println!("missing tools: {}", ctx.missing.join(", "));
    }
    println!();
    let w = rows
        .iter()
        .map(|r| r.id.len() + 1 + r.name.len())
        .max()
        .unwrap_or(10)
        .max(12);
    println!(
        "| {:<w$} | {:>10} | {:>10} | {:>7} | {:>13} | {:>10} | {:<14} |",
        "benchmark", "ours", "theirs", "ratio", "RSS ours/them", "target", "result"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|{}|",
        "-".repeat(w + 2),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(9),
        "-".repeat(15),
        "-".repeat(12),
        "-".repeat(16)
    );
    for r in rows {
        let v = if r.skip.is_some() {
            "n/a".to_string()
        } else {
            r.value()
                .map(|v| match r.goal {
                    Goal::RssAtMost(_) => format!("{v:.0}MiB"),
                    _ => format!("{v:.3}"),
                })
                .unwrap_or("n/a".into())
        };
        println!(
            "| {:<w$} | {:>10} | {:>10} | {:>7} | {:>13} | {:>10} | {:<14} |",
            format!("{} {}", r.id, r.name),
            secs(r.ours),
            secs(r.theirs),
            v,
            format!("{}/{}", rss(r.ours), rss(r.theirs)),
            r.target(),
            r.verdict()
        );
    }
    println!();
    for r in rows.iter().filter(|r| !r.note.is_empty()) {
        println!("note {} {}: {}", r.id, r.name, r.note);
    }
    println!("total bench time: {elapsed:.0}s");
    println!();
    for r in rows {
        println!("{}", r.line());
    }
}

fn make_key(ctx: &Ctx) -> Result<Key> {
    let gnupg = ctx.work.join("gnupg");
    let secret = ctx.work.join("signing-key.asc");
    let fpr_file = ctx.work.join("signing-key.fpr");
    if let (Ok(fpr), true) = (fs::read_to_string(&fpr_file), secret.is_file()) {
        return Ok(Key {
            gnupg,
            fpr: fpr.trim().to_string(),
            secret,
        });
    }
    reset_dir(&gnupg)?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&gnupg, fs::Permissions::from_mode(0o700))?;
    }
    let log = ctx.log("gpg-keygen");
    let script = format!(
        "export GNUPGHOME={h}\n\
         gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-gen-key \
         'observability-stack bench (generated test key) <bench@example.org>' rsa3072 sign never\n\
         fpr=$(gpg --batch --with-colons --list-secret-keys | awk -F: '/^fpr:/ {{print $10; exit}}')\n\
         umask 077\n\
         gpg --batch --pinentry-mode loopback --passphrase '' --armor --export-secret-keys \"$fpr\" > {s}\n\
         printf '%s\\n' \"$fpr\" > {f}\n",
        h = q(&gnupg),
        s = q(&secret),
        f = q(&fpr_file)
    );
    measure(&mut bash(&script), &log)?;
    let fpr = fs::read_to_string(&fpr_file)?.trim().to_string();
    Ok(Key { gnupg, fpr, secret })
}

// B1 ------------------------------------------------------------------------------------------

fn b1(ctx: &Ctx) -> Result<Vec<Row>> {
    eprintln!("bench: B1 one package from a large binary");
    let dir = ctx.work.join("b1");
    fs::create_dir_all(&dir)?;
    let bin = dir.join("large.bin");
    let sha = generate_binary(&bin, ctx.sizes.b1_binary, "b1-large", None)?;
    let mut rows = Vec::new();
    for (c, name, z) in [
        (Compression::Xz, "deb-xz", "-Zxz -z6"),
        (Compression::Gzip, "deb-gzip", "-Zgzip -z9"),
    ] {
        let goal = Goal::RatioAtMost(1.0);
        if let Some(t) = ctx.need(&["dpkg-deb", "md5sum"]) {
            rows.push(Row::skipped("B1", name, goal, &t));
            continue;
        }
        // theirs: a staged tree (the file hard-linked in) + control; md5sums and the build
        // are timed, as dh_md5sums + dh_builddeb would run them.
        let tree = dir.join(format!("tree-{name}"));
        reset_dir(&tree)?;
        fs::create_dir_all(tree.join("DEBIAN"))?;
        fs::create_dir_all(tree.join("usr/bin"))?;
        fs::hard_link(&bin, tree.join("usr/bin/bench-large"))
            .or_else(|_| fs::copy(&bin, tree.join("usr/bin/bench-large")).map(|_| ()))?;
        fs::write(
            tree.join("DEBIAN/control"),
            format!(
                "Package: bench-large\nVersion: 1.0.0-1\nArchitecture: amd64\nMaintainer: {}\n\
                 Installed-Size: {}\nSection: misc\nPriority: optional\n\
                 Homepage: https://example.org/observability-stack-bench\n\
                 Description: Generated package for cargo xtask bench\n Generated by cargo xtask bench.\n",
                crate::dist::DEFAULT_MAINTAINER,
                ctx.sizes.b1_binary.div_ceil(1024) + 3
            ),
        )?;
        let theirs_out = dir.join(format!("theirs-{name}.deb"));
        let script = format!(
            "cd {t}\nfind usr -type f -print0 | sort -z | xargs -0 md5sum > DEBIAN/md5sums\n\
             SOURCE_DATE_EPOCH={SDE} dpkg-deb --root-owner-group {z} --build {t} {o} >/dev/null\n",
            t = q(&tree),
            o = q(&theirs_out)
        );
        let ours_out = dir.join(format!("ours-{name}"));
        let (o, t) = ab(
            ctx.runs,
            |_| {
                reset_dir(&ours_out)?;
                measure(
                    ctx.ours()
                        .args(["bench-child", "deb"])
                        .arg(&bin)
                        .args(["--sha256", &sha, "--compression"])
                        .arg(compression_name(c))
                        .arg("--out")
                        .arg(&ours_out),
                    &ctx.log(&format!("b1-ours-{name}")),
                )
            },
            |_| {
                remove(&theirs_out)?;
                measure(&mut bash(&script), &ctx.log(&format!("b1-theirs-{name}")))
            },
        )?;
        let (ob, tb) = (
            package_bytes(&ours_out, "deb")?,
            fs::metadata(&theirs_out).map(|m| m.len()).unwrap_or(0),
        );
        rows.push(
            Row::new("B1", name, goal)
                .measured(o, Some(t))
                .with_note(format!(
                    "vs dpkg-deb --build {z} (+ md5sum of the tree); package {} KiB ours, {} KiB theirs{}",
                    ob >> 10,
                    tb >> 10,
                    if c == Compression::Xz {
                        " (xz -6 both; ours with a 1 MiB dictionary in 4 MiB blocks)"
                    } else {
                        ""
                    }
                )),
        );
    }
    // rpm vs rpmbuild -bb of an equivalent spec, same payload compression.
    let goal = Goal::RatioAtMost(1.0);
    if let Some(t) = ctx.need(&["rpmbuild"]) {
        rows.push(Row::skipped("B1", "rpm-xz", goal, &t));
        return Ok(rows);
    }
    let spec = dir.join("bench-large.spec");
    fs::write(
        &spec,
        "%define _binary_payload w6.xzdio\n%global debug_package %{nil}\n\
         %define __os_install_post %{nil}\n%define _build_id_links none\n\
         Name: bench-large\nVersion: 1.0.0\nRelease: 1\n\
         Summary: Generated package for cargo xtask bench\nLicense: Apache-2.0\n\
         URL: https://example.org/observability-stack-bench\nAutoReqProv: no\n\
         %description\nGenerated by cargo xtask bench.\n\
         %install\nmkdir -p %{buildroot}/usr/bin\n\
         ln %{large} %{buildroot}/usr/bin/bench-large || cp %{large} %{buildroot}/usr/bin/bench-large\n\
         %files\n%attr(0755,root,root) /usr/bin/bench-large\n",
    )?;
    let top = dir.join("rpmbuild");
    let script = format!(
        "rm -rf {top}\nSOURCE_DATE_EPOCH={SDE} rpmbuild -bb --quiet --define {td} --define {lg} {spec} >/dev/null\n",
        top = q(&top),
        td = q(format!("_topdir {}", top.display())),
        lg = q(format!("large {}", bin.display())),
        spec = q(&spec)
    );
    let ours_out = dir.join("ours-rpm");
    let (o, t) = ab(
        ctx.runs,
        |_| {
            reset_dir(&ours_out)?;
            measure(
                ctx.ours()
                    .args(["bench-child", "rpm"])
                    .arg(&bin)
                    .args(["--sha256", &sha, "--compression", "xz", "--out"])
                    .arg(&ours_out),
                &ctx.log("b1-ours-rpm"),
            )
        },
        |_| measure(&mut bash(&script), &ctx.log("b1-theirs-rpm")),
    )?;
    let (ob, tb) = (
        package_bytes(&ours_out, "rpm")?,
        package_bytes(&top.join("RPMS"), "rpm")?,
    );
    rows.push(
        Row::new("B1", "rpm-xz", goal)
            .measured(o, Some(t))
            .with_note(format!(
                "vs rpmbuild -bb, %_binary_payload w6.xzdio (one thread); package {} KiB ours \
                 (xz -6, 1 MiB dictionary, 4 MiB blocks, 2 threads), {} KiB theirs",
                ob >> 10,
                tb >> 10
            )),
    );
    Ok(rows)
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
        Compression::None => "none",
    }
}

// B2 + B3 -------------------------------------------------------------------------------------

/// The catalogue with generated release archives: a components copy pinned to them, and a
/// `file:` mirror in the upstream layout.
struct Catalogue {
    components: PathBuf,
    mirror: PathBuf,
    jobs: Vec<(Component, Arch, PathBuf)>,
}

fn catalogue(ctx: &Ctx) -> Result<Catalogue> {
    let dir = ctx.work.join("catalogue");
    let comps = dir.join("components");
    let mirror = dir.join("mirror");
    fs::create_dir_all(&comps)?;
    fs::create_dir_all(&mirror)?;
    let all = crate::component::load_dir(&ctx.components)?;
    let mut jobs = Vec::new();
    for c in &all {
        let src = fs::read_to_string(&c.file)?;
        let mut doc: toml_edit::DocumentMut = src
            .parse()
            .with_context(|| format!("{}", c.file.display()))?;
        for arch in c.pinned_arches() {
            let url = c.url(arch);
            let rest = url.split_once("://").map(|x| x.1).unwrap_or(&url);
            let path = rest.find('/').map(|i| &rest[i + 1..]).unwrap_or(rest);
            let archive = mirror.join(path);
            let machine = match arch {
                Arch::Amd64 => 62u16,
                Arch::Arm64 => 183,
            };
            let bin = dir.join(format!("bin/{}-{arch}", c.name));
            let seed = format!("catalogue {} {arch}", c.name);
            let bin_sha = generate_binary(&bin, ctx.sizes.catalogue_binary, &seed, Some(machine))?;
            let sha = release_archive(c, arch, &bin, &bin_sha, &archive)?;
            doc["source"]["sha256"][arch.deb()] = toml_edit::value(sha);
            jobs.push((c.clone(), arch, archive));
        }
        let dest = comps.join(c.file.file_name().unwrap_or_default());
        let text = doc.to_string();
        if fs::read_to_string(&dest).ok().as_deref() != Some(text.as_str()) {
            fs::write(&dest, text)?;
        }
    }
    let loaded = crate::component::load_dir(&comps)?;
    let jobs = jobs
        .into_iter()
        .map(|(c, a, p)| {
            let c = loaded
                .iter()
                .find(|x| x.name == c.name)
                .cloned()
                .ok_or_else(|| anyhow!("{}: not in the copy", c.name))?;
            Ok((c, a, p))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Catalogue {
        components: comps,
        mirror,
        jobs,
    })
}

/// A .tar.gz in the upstream layout holding the generated binary (and a license text when
/// the component names one). Deterministic; reused when its stamp matches.
fn release_archive(
    c: &Component,
    arch: Arch,
    bin: &Path,
    bin_sha: &str,
    dest: &Path,
) -> Result<String> {
    let stamp = dest.with_extension("stamp");
    let stamp_text = format!("{GEN_VERSION} members2 {} {arch} {bin_sha}", c.name);
    if let Ok(s) = fs::read_to_string(&stamp) {
        if let Some((t, sha)) = s.rsplit_once(' ') {
            if t == stamp_text && dest.is_file() {
                return Ok(sha.to_string());
            }
        }
    }
    fs::create_dir_all(dest.parent().unwrap_or(Path::new(".")))?;
    // The members the component reads from the archive: the binary, the license text and any
    // configuration it installs from the archive (`[[config]] source`, e.g. snmp.yml).
    let license = b"Apache License 2.0 (text generated for cargo xtask bench)\n";
    let config_text = b"# configuration generated for cargo xtask bench\n{}\n";
    let mut texts: Vec<(String, &[u8])> = Vec::new();
    if let Some(l) = &c.source.license_file {
        texts.push((c.expand(l, arch), &license[..]));
    }
    for cf in &c.config {
        if let Some(src) = &cf.source {
            texts.push((c.expand(src, arch), &config_text[..]));
        }
    }
    let f = fs::File::create(dest).with_context(|| format!("{}", dest.display()))?;
    let mut hw = crate::digest::HashingWriter::new(BufWriter::new(f));
    if dest.to_string_lossy().ends_with(".zip") {
        // zip needs Seek: write it in memory-free steps through a temporary file, then hash.
        let tmp = dest.with_extension("zip.tmp");
        {
            let mut z = zip::ZipWriter::new(fs::File::create(&tmp)?);
            let opts = |mode: u32| {
                zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .last_modified_time(zip::DateTime::default())
                    .unix_permissions(mode)
            };
            z.start_file(c.expand(&c.source.binary, arch), opts(0o755))?;
            io::copy(&mut fs::File::open(bin)?, &mut z)?;
            for (name, text) in &texts {
                z.start_file(name.as_str(), opts(0o644))?;
                z.write_all(text)?;
            }
            z.finish()?.sync_all()?;
        }
        io::copy(&mut fs::File::open(&tmp)?, &mut hw)?;
        fs::remove_file(&tmp)?;
        let (bw, sha, _) = hw.finish();
        bw.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::write(&stamp, format!("{stamp_text} {sha}"))?;
        return Ok(sha);
    }
    let gz = flate2::GzBuilder::new()
        .mtime(SDE as u32)
        .write(hw, flate2::Compression::new(6));
    let mut tar = tar::Builder::new(gz);
    let header = |size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(SDE);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    let size = fs::metadata(bin)?.len();
    let mut h = header(size, 0o755);
    tar.append_data(
        &mut h,
        c.expand(&c.source.binary, arch),
        fs::File::open(bin)?,
    )?;
    for (name, text) in &texts {
        let mut h = header(text.len() as u64, 0o644);
        tar.append_data(&mut h, name, &text[..])?;
    }
    let gz = tar.into_inner()?;
    let hw = gz.finish()?;
    let (bw, sha, _) = hw.finish();
    bw.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::write(&stamp, format!("{stamp_text} {sha}"))?;
    Ok(sha)
}

fn dist_command(ctx: &Ctx, cat: &Catalogue, cache: &Path, out: &Path, no_cache: bool) -> Command {
    let key = ctx.key.as_ref().expect("key");
    let mut c = ctx.ours();
    c.arg("dist")
        .arg("--components")
        .arg(&cat.components)
        .arg("--mirror")
        .arg(&cat.mirror)
        .arg("--cache")
        .arg(cache)
        .arg("--out")
        .arg(out)
        .arg("--signing-key")
        .arg(&key.secret)
        .env("XTASK_LOG", "warn");
    if no_cache {
        c.arg("--no-build-cache");
    }
    c
}

fn b2_b3(ctx: &Ctx, do_b2: bool, do_b3: bool) -> Result<Vec<Row>> {
    eprintln!("bench: B2/B3 the catalogue's signed dist");
    let mut rows = Vec::new();
    let b2_goal = Goal::RatioAtMost(0.5);
    let b3_goal = Goal::RatioAtMost(0.05);
    if ctx.key.is_none() {
        if do_b2 {
            rows.push(Row::skipped("B2", "dist", b2_goal, "gpg"));
        }
        if do_b3 {
            rows.push(Row::skipped("B3", "noop-rebuild", b3_goal, "gpg"));
        }
        return Ok(rows);
    }
    let cat = catalogue(ctx)?;
    let dir = ctx.work.join("b2");
    fs::create_dir_all(&dir)?;
    let cache = dir.join("cache");
    // Warm the download cache (B2 is "from a warm cache": downloads are not measured).
    measure(
        Command::new(&ctx.exe)
            .arg("fetch")
            .arg("--components")
            .arg(&cat.components)
            .arg("--mirror")
            .arg(&cat.mirror)
            .arg("--cache")
            .arg(&cache),
        &ctx.log("b2-fetch"),
    )?;
    if do_b2 {
        let need = [
            "dpkg-deb",
            "rpmbuild",
            "rpmsign",
            "apt-ftparchive",
            "createrepo_c",
            "gpg",
            "tar",
            "gzip",
            "xz",
            "md5sum",
            "sha256sum",
        ];
        if let Some(t) = ctx.need(&need) {
            rows.push(Row::skipped("B2", "dist", b2_goal, &t));
        } else {
            let script = baseline_script(ctx, &cat, &dir)?;
            let out = dir.join("ours-out");
            let theirs_out = dir.join("theirs-out");
            let (o, t) = ab(
                ctx.runs,
                |_| {
                    remove(&out)?;
                    measure(
                        &mut dist_command(ctx, &cat, &cache, &out, true),
                        &ctx.log("b2-ours"),
                    )
                },
                |_| {
                    remove(&theirs_out)?;
                    measure(
                        bash(&script).arg("baseline").arg(&theirs_out),
                        &ctx.log("b2-theirs"),
                    )
                },
            )?;
            // Both sides' packages, in bytes: the compression is the same level (xz -6), but
            // ours uses a 1 MiB dictionary in 4 MiB blocks (bounded memory, deb.rs), theirs
            // dpkg-deb's and rpmbuild's 8 MiB.
            let ours_bytes = package_bytes(&out.join("current/apt/pool"), "deb")?
                + package_bytes(&out.join("current/dnf"), "rpm")?;
            let theirs_bytes = package_bytes(&theirs_out.join("debs"), "deb")?
                + package_bytes(&theirs_out.join("rpms"), "rpm")?;
            rows.push(Row::new("B2", "dist", b2_goal).measured(o, Some(t)).with_note(format!(
                "packages: ours {:.1} MiB, theirs {:.1} MiB ({:+.1}%; xz -6 on both sides, ours with a 1 MiB dictionary in 4 MiB blocks, theirs with 8 MiB); \
                 {} packages ({} jobs × deb+rpm), xz; ours: `dist --no-build-cache` (fetch from the warm download cache, build, sign, index, verify, publish); \
                 theirs: bash of tar + dpkg-deb -Zxz -z6 + rpmbuild w6.xzdio + rpmsign + apt-ftparchive + createrepo_c --no-database + gpg, run sequentially as such scripts are",
                ours_bytes as f64 / MIB,
                theirs_bytes as f64 / MIB,
                (ours_bytes as f64 / theirs_bytes.max(1) as f64 - 1.0) * 100.0,
                cat.jobs.len() * 2,
                cat.jobs.len()
            )));
        }
    }
    if do_b3 {
        let out = dir.join("b3-out");
        let builds = cache.join("builds");
        let mut full = Vec::new();
        let mut noop = Vec::new();
        for i in 0..ctx.runs {
            remove(&builds)?;
            remove(&out)?;
            full.push(measure(
                &mut dist_command(ctx, &cat, &cache, &out, false),
                &ctx.log(&format!("b3-full-{i}")),
            )?);
            let published = published_generations(&out)?;
            noop.push(measure(
                &mut dist_command(ctx, &cat, &cache, &out, false),
                &ctx.log(&format!("b3-noop-{i}")),
            )?);
            let log = fs::read_to_string(ctx.log(&format!("b3-noop-{i}"))).unwrap_or_default();
            if !log.contains(" 0 built") {
                bail!("B3: the no-op rebuild built packages:\n{log}");
            }
            let after = published_generations(&out)?;
            if after != published {
                bail!(
                    "B3: the no-op rebuild published a generation ({:?} before, {:?} after):\n{log}",
                    published,
                    after
                );
            }
        }
        rows.push(
            Row::new("B3", "noop-rebuild", b3_goal)
                .measured(side(&noop), Some(side(&full)))
                .with_note(
                    "ours = `dist` again with nothing changed: the fingerprint of its inputs \
                     (tool, key, package build-cache keys made from the pins, repository \
                     options) matches the one recorded for the current generation, which is \
                     verified in full (every signature and hash); nothing fetched, built or \
                     published (checked: `current` and the generations are unchanged); \
                     theirs = the same `dist` from an empty build cache into an empty output \
                     directory",
                ),
        );
    }
    Ok(rows)
}

/// What `current` of a `dist` output directory names, and its generations (B3: a no-op
/// publishes nothing).
fn published_generations(out: &Path) -> Result<(PathBuf, Vec<String>)> {
    let current = fs::read_link(out.join("current"))
        .with_context(|| format!("{}: no current generation", out.display()))?;
    let mut gens: Vec<String> = fs::read_dir(out.join("generations"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    gens.sort();
    Ok((current, gens))
}

/// The scripted baseline of B2: for every job, unpack the binary, lay out the package tree
/// (the same rendered files ours ships), dpkg-deb and rpmbuild it, sign; then the apt
/// repository (apt-ftparchive), the dnf repository (createrepo_c), SHA256SUMS, all signed
/// with gpg. The per-package trees and specs are prepared here, untimed (a packaging repo
/// would hold them); `$1` is the output directory.
fn baseline_script(ctx: &Ctx, cat: &Catalogue, dir: &Path) -> Result<String> {
    let templates = Templates::load(None)?;
    let prep = dir.join("theirs-prep");
    reset_dir(&prep)?;
    let mut s = ctx.gpg_prefix();
    s.push_str(&format!(
        "O=\"$1\"\nmkdir -p \"$O\"/debs \"$O\"/rpms \"$O\"/work\nexport SOURCE_DATE_EPOCH={SDE}\n"
    ));
    let maint = crate::dist::DEFAULT_MAINTAINER;
    for (c, arch, archive) in &cat.jobs {
        let id = format!("{}-{arch}", c.name);
        let bin_member = c.expand(&c.source.binary, *arch);
        // deb tree
        let deb_tree = prep.join(format!("deb-{id}"));
        fs::create_dir_all(deb_tree.join("DEBIAN"))?;
        let mut conffiles = String::new();
        for r in crate::render::render_component(&templates, c, &Layout::DEB)? {
            let p = deb_tree.join(r.path.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap_or(&deb_tree))?;
            fs::write(&p, &r.text)?;
            set_mode(&p, r.mode)?;
            if r.config {
                conffiles.push_str(&format!("{}\n", r.path));
            }
        }
        fs::create_dir_all(deb_tree.join("usr/bin"))?;
        fs::write(
            deb_tree.join("DEBIAN/control"),
            format!(
                "Package: {}\nVersion: {}-{}\nArchitecture: {arch}\nMaintainer: {maint}\n\
                 Installed-Size: {}\n{}Section: net\nPriority: optional\n\
                 Homepage: {}\nDescription: {}\n .\n",
                c.deb_name,
                c.version,
                c.revision,
                ctx.sizes.catalogue_binary.div_ceil(1024) + 20,
                if c.conflicts_deb.is_empty() {
                    String::new()
                } else {
                    format!("Conflicts: {}\n", c.conflicts_deb.join(", "))
                },
                c.homepage,
                c.summary
            ),
        )?;
        if !conffiles.is_empty() {
            fs::write(deb_tree.join("DEBIAN/conffiles"), conffiles)?;
        }
        // rpm tree + spec
        let rpm_tree = prep.join(format!("rpm-{id}"));
        fs::create_dir_all(&rpm_tree)?;
        let mut files = format!("%attr(0755,root,root) /usr/bin/{}\n", c.name);
        for r in crate::render::render_component(&templates, c, &Layout::RPM)? {
            let p = rpm_tree.join(r.path.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap_or(&rpm_tree))?;
            fs::write(&p, &r.text)?;
            set_mode(&p, r.mode)?;
            let (owner, group) = c
                .config
                .iter()
                .find(|f| f.path == r.path)
                .map(|f| (f.owner.clone(), f.group.clone()))
                .unwrap_or(("root".into(), "root".into()));
            files.push_str(&format!(
                "{}%attr({:04o},{owner},{group}) {}\n",
                if r.config { "%config(noreplace) " } else { "" },
                r.mode,
                r.path
            ));
        }
        let spec = prep.join(format!("{id}.spec"));
        fs::write(
            &spec,
            format!(
                "%define _binary_payload w6.xzdio\n%global debug_package %{{nil}}\n\
                 %define __os_install_post %{{nil}}\n%define _build_id_links none\n\
                 Name: {name}\nVersion: {ver}\nRelease: {rel}\nSummary: {sum}\nLicense: {lic}\n\
                 URL: {url}\nAutoReqProv: no\n{conf}%description\n{sum}.\n\
                 %install\ncp -a {tree}/. %{{buildroot}}/\nmkdir -p %{{buildroot}}/usr/bin\n\
                 cp -l %{{bin}} %{{buildroot}}/usr/bin/{name} || cp %{{bin}} %{{buildroot}}/usr/bin/{name}\n\
                 %files\n{files}",
                name = c.name,
                ver = c.version,
                rel = c.revision,
                sum = c.summary,
                lic = c.license,
                url = c.homepage,
                conf = if c.conflicts_rpm.is_empty() {
                    String::new()
                } else {
                    format!("Conflicts: {}\n", c.conflicts_rpm.join(", "))
                },
                tree = rpm_tree.display(),
            ),
        )?;
        let deb_name = format!("{}_{}-{}_{arch}.deb", c.deb_name, c.version, c.revision);
        s.push_str(&format!(
            "# {id}\nw=\"$O\"/work/{id}\nmkdir -p \"$w\"\n\
             {extract} > \"$w\"/bin\nchmod 0755 \"$w\"/bin\n\
             cp -a {deb_tree} \"$w\"/deb\ncp -l \"$w\"/bin \"$w\"/deb/usr/bin/{name}\n\
             (cd \"$w\"/deb && find . -path ./DEBIAN -prune -o -type f -printf '%P\\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)\n\
             dpkg-deb --root-owner-group -Zxz -z6 --build \"$w\"/deb \"$O\"/debs/{deb_name} >/dev/null\n\
             G --detach-sign --armor -o \"$O\"/debs/{deb_name}.asc \"$O\"/debs/{deb_name}\n\
             rpmbuild -bb --quiet --target {rarch} --define \"_topdir $w/rpmbuild\" --define \"_rpmdir $O/rpms\" \
             --define \"bin $w/bin\" {spec} >/dev/null\n",
            // (zip assets — promtail, alloy — through python3's zipfile: GNU tar reads no zip)
            extract = if archive.to_string_lossy().ends_with(".zip") {
                format!(
                    "python3 -c 'import sys,zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' {} {}",
                    q(archive),
                    q(&bin_member)
                )
            } else {
                format!("tar -xzf {} -O {}", q(archive), q(&bin_member))
            },
            deb_tree = q(&deb_tree),
            name = c.name,
            rarch = arch.rpm(),
            spec = q(&spec),
        ));
    }
    let k = ctx.key.as_ref().expect("key");
    s.push_str(&format!(
        "# sign the rpms\n\
         find \"$O\"/rpms -name '*.rpm' -print0 | xargs -0 rpmsign --addsign --define '_gpg_name {fpr}' \
         --define \"_gpg_path $GNUPGHOME\" --define \"__gpg $(command -v gpg)\" >/dev/null\n\
         # apt\nA=\"$O\"/apt\nmkdir -p \"$A\"/pool/main\ncp -l \"$O\"/debs/*.deb \"$A\"/pool/main/\ncd \"$A\"\n\
         for a in amd64 arm64; do\n  mkdir -p dists/stable/main/binary-$a\n\
           apt-ftparchive --arch $a packages pool > dists/stable/main/binary-$a/Packages\n\
           gzip -9kn dists/stable/main/binary-$a/Packages\n  xz -k dists/stable/main/binary-$a/Packages\ndone\n\
         apt-ftparchive -o APT::FTPArchive::Release::Origin=observability-stack \
         -o APT::FTPArchive::Release::Label=observability-stack -o APT::FTPArchive::Release::Suite=stable \
         -o APT::FTPArchive::Release::Codename=stable -o 'APT::FTPArchive::Release::Architectures=amd64 arm64' \
         -o APT::FTPArchive::Release::Components=main release dists/stable > \"$O\"/Release\n\
         mv \"$O\"/Release dists/stable/Release\n\
         G --clearsign -o dists/stable/InRelease dists/stable/Release\n\
         G --detach-sign --armor -o dists/stable/Release.gpg dists/stable/Release\n\
         # dnf\nD=\"$O\"/dnf\nmkdir -p \"$D\"/Packages\nfind \"$O\"/rpms -name '*.rpm' -exec cp -l {{}} \"$D\"/Packages/ \\;\n\
         createrepo_c --quiet --no-database \"$D\"\n\
         G --detach-sign --armor -o \"$D\"/repodata/repomd.xml.asc \"$D\"/repodata/repomd.xml\n\
         # SHA256SUMS\ncd \"$O\"\nfind apt dnf -type f -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS\n\
         G --detach-sign --armor -o SHA256SUMS.asc SHA256SUMS\n\
         rm -rf \"$O\"/work\n",
        fpr = k.fpr
    ));
    fs::write(dir.join("baseline.sh"), &s)?;
    Ok(s)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

// B4 ------------------------------------------------------------------------------------------

/// `n` small generated packages of each format (+ one extra of each, for the incremental
/// add), made once in parallel with our writers (gzip payloads) and reused.
fn index_inputs(ctx: &Ctx, n: usize) -> Result<(PathBuf, PathBuf, PathBuf, PathBuf)> {
    let dir = ctx.work.join("b4-inputs");
    let (debs, rpms, extra) = (dir.join("debs"), dir.join("rpms"), dir.join("extra"));
    let stamp = dir.join(format!(".complete-{GEN_VERSION}-{n}"));
    let extra_deb = extra.join("bench-extra_1.0.0-1_amd64.deb");
    let extra_rpm = extra.join("bench-extra-1.0.0-1.x86_64.rpm");
    if stamp.is_file() {
        return Ok((debs, rpms, extra_deb, extra_rpm));
    }
    eprintln!("bench: B4 generating {n} .deb and {n} .rpm files (once)");
    reset_dir(&debs)?;
    reset_dir(&rpms)?;
    reset_dir(&extra)?;
    let templates = Templates::load(None)?;
    let make = |i: Option<usize>| -> Result<()> {
        let (name, seed) = match i {
            Some(i) => (format!("bench-pkg-{i:05}"), format!("b4 {i}")),
            None => ("bench-extra".to_string(), "b4 extra".to_string()),
        };
        let mut rng = Prng::new(&seed);
        let nfiles = 1 + rng.below(4) as usize;
        let mut files = Vec::new();
        for f in 0..nfiles {
            let len = 100 + rng.below(3000) as usize;
            let mut bytes = vec![0u8; len];
            rng.fill(&mut bytes);
            for b in bytes.iter_mut() {
                *b = b"abcdefghijklmnopqrstuvwxyz \n"[(*b % 28) as usize];
            }
            files.push(FileEntry {
                path: format!("/usr/share/{name}/data-{f}.txt"),
                mode: 0o644,
                owner: "root".into(),
                group: "root".into(),
                kind: FileKind::Regular,
                sha256: crate::digest::sha256_hex(&bytes),
                size: bytes.len() as u64,
                content: Content::Bytes(bytes),
            });
        }
        let version = match i {
            Some(i) => format!("1.{}.{}", i % 7, i % 13),
            None => "1.0.0".into(),
        };
        let pkg = base_package(&name, &version, files);
        let (d, r) = match i {
            Some(_) => (&debs, &rpms),
            None => (&extra, &extra),
        };
        crate::deb::write_deb(&pkg, &templates, d, Compression::Gzip)?;
        crate::rpm_writer::write_rpm(&pkg, &templates, r, Compression::Gzip)?;
        Ok(())
    };
    (0..n).into_par_iter().try_for_each(|i| make(Some(i)))?;
    make(None)?;
    fs::write(&stamp, "")?;
    Ok((debs, rpms, extra_deb, extra_rpm))
}

/// One format's half of B4: its inputs, where a package sits in a repository, what our
/// `xtask index --pool` indexes and the baseline script.
struct IndexCase<'a> {
    fmt: &'static str,
    goal: Goal,
    tools: &'static [&'static str],
    inputs: &'a Path,
    extra: &'a Path,
    /// Directory below a repository root that holds the packages (what is indexed).
    pool: &'static str,
    /// Index outputs removed before a cold run (relative to the root).
    outputs: &'static [&'static str],
    /// The baseline's index command (cold and add alike; its own cache where it has one).
    theirs: String,
    note_index: String,
    note_add: String,
}

/// Where `file` (a generated package) sits in a repository: the place our writer gives it, so
/// that our side finds every package already in place (nothing copied) and the baseline
/// indexes the same tree.
fn pool_place(fmt: &str, file: &str) -> String {
    match fmt {
        // pool/main/<first letter>/<source = package>/<file>
        "apt" => {
            let package = file.split('_').next().unwrap_or(file);
            format!("pool/main/{}/{package}/{file}", &package[..1])
        }
        // Packages/<first letter>/<file>
        _ => format!("Packages/{}/{file}", &file[..1]),
    }
}

/// Hard-link every package of `inputs` to its place under `root`, once (a stamp records it).
fn populate(fmt: &str, inputs: &Path, root: &Path, n: usize) -> Result<()> {
    let stamp = root.join(format!(".populated-{GEN_VERSION}-{n}"));
    if stamp.is_file() {
        return Ok(());
    }
    reset_dir(root)?;
    for e in fs::read_dir(inputs).with_context(|| format!("{}", inputs.display()))? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let dest = root.join(pool_place(fmt, name));
        fs::create_dir_all(dest.parent().expect("parent"))?;
        fs::hard_link(&p, &dest)
            .with_context(|| format!("linking {} to {}", p.display(), dest.display()))?;
    }
    fs::write(&stamp, "")?;
    Ok(())
}

/// Both sides of one format: `runs` alternating pairs of (cold index, then add one package).
fn index_case(ctx: &Ctx, c: &IndexCase, n: usize) -> Result<Vec<Row>> {
    let add_goal = Goal::OursSecsAtMost(1.0);
    let (index_name, add_name) = (format!("{}-index", c.fmt), format!("{}-add", c.fmt));
    if let Some(t) = ctx.need(c.tools) {
        return Ok(vec![
            Row::skipped("B4", &index_name, c.goal, &t),
            Row::skipped("B4", &add_name, add_goal, &t),
        ]);
    }
    let key = ctx.key.as_ref().expect("key");
    let dir = ctx.work.join("b4");
    let extra_name = c.extra.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let extra_rel = pool_place(c.fmt, extra_name);
    // Ours: the repository root, its pool (what `index --pool` reads) and its cache file (outside
    // the tree, as `dist` keeps build state). Theirs: a root of the same layout.
    let ours_root = dir.join(format!("ours-{}", c.fmt));
    let ours_cache = dir.join(format!("ours-{}-cache", c.fmt));
    let theirs_root = dir.join(format!("theirs-{}", c.fmt));
    let theirs_db = dir.join(format!("theirs-{}.db", c.fmt));
    populate(c.fmt, c.inputs, &ours_root, n)?;
    populate(c.fmt, c.inputs, &theirs_root, n)?;
    // Untimed, before each cold run: no index, no cache (nor what is kept beside it: the
    // compressed chunks in `<cache>.*/`), no extra package.
    let reset = |root: &Path, cache: &Path| -> Result<()> {
        remove(&root.join(&extra_rel))?;
        for o in c.outputs {
            remove(&root.join(o))?;
        }
        remove(cache)?;
        let prefix = format!(
            "{}.",
            cache.file_name().unwrap_or_default().to_string_lossy()
        );
        for e in fs::read_dir(cache.parent().expect("parent"))? {
            let p = e?.path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            {
                remove(&p)?;
            }
        }
        Ok(())
    };
    let add_extra = |root: &Path| -> Result<()> {
        let dest = root.join(&extra_rel);
        fs::create_dir_all(dest.parent().expect("parent"))?;
        fs::hard_link(c.extra, &dest).with_context(|| format!("linking {}", dest.display()))
    };
    let ours_cmd = || {
        let mut cmd = ctx.ours();
        // What a user runs: `xtask index --pool` (SOURCE_DATE_EPOCH from `ours()`).
        cmd.args(["index", "--format", c.fmt, "--pool"])
            .arg(ours_root.join(c.pool))
            .arg("--out")
            .arg(&ours_root)
            .arg("--signing-key")
            .arg(&key.secret)
            .arg("--index-cache")
            .arg(&ours_cache);
        cmd
    };
    let theirs_script = format!(
        "{g}cd {r}\n{t}",
        g = ctx.gpg_prefix(),
        r = q(&theirs_root),
        t = c.theirs.replace("{db}", &q(&theirs_db))
    );
    let (mut ours_add, mut theirs_add) = (Vec::new(), Vec::new());
    let (o, t) = ab(
        ctx.runs,
        |i| {
            reset(&ours_root, &ours_cache)?;
            let s = measure(&mut ours_cmd(), &ctx.log(&format!("b4-ours-{}", c.fmt)))?;
            add_extra(&ours_root)?;
            ours_add.push(measure(
                &mut ours_cmd(),
                &ctx.log(&format!("b4-ours-{}-add-{i}", c.fmt)),
            )?);
            Ok(s)
        },
        |i| {
            reset(&theirs_root, &theirs_db)?;
            let s = measure(
                &mut bash(&theirs_script),
                &ctx.log(&format!("b4-theirs-{}", c.fmt)),
            )?;
            add_extra(&theirs_root)?;
            theirs_add.push(measure(
                &mut bash(&theirs_script),
                &ctx.log(&format!("b4-theirs-{}-add-{i}", c.fmt)),
            )?);
            Ok(s)
        },
    )?;
    Ok(vec![
        Row::new("B4", &index_name, c.goal)
            .measured(o, Some(t))
            .with_note(c.note_index.clone()),
        Row::new("B4", &add_name, add_goal)
            .measured(side(&ours_add), Some(side(&theirs_add)))
            .with_note(c.note_add.clone()),
    ])
}

fn b4(ctx: &Ctx) -> Result<Vec<Row>> {
    eprintln!("bench: B4 indexes of many packages");
    let n = ctx.sizes.index_packages;
    let apt_goal = Goal::RatioAtMost(0.5);
    let dnf_goal = Goal::RatioAtMost(0.7);
    if ctx.key.is_none() {
        let add_goal = Goal::OursSecsAtMost(1.0);
        return Ok(vec![
            Row::skipped("B4", "apt-index", apt_goal, "gpg"),
            Row::skipped("B4", "apt-add", add_goal, "gpg"),
            Row::skipped("B4", "dnf-index", dnf_goal, "gpg"),
            Row::skipped("B4", "dnf-add", add_goal, "gpg"),
        ]);
    }
    let (debs, rpms, extra_deb, extra_rpm) = index_inputs(ctx, n)?;
    fs::create_dir_all(ctx.work.join("b4"))?;
    let same = "both sides index the same tree, every package already at its place \
                (hard-linked before the timed runs, which time only the indexer, compression and signing), \
                output files removed untimed before each cold run";
    // apt-ftparchive publishes MD5sum and SHA1 by default; ours publishes SHA256 and SHA512
    // only (see apt_repo's docs), so theirs is told to do the same.
    let hashes = "-o APT::FTPArchive::MD5=false -o APT::FTPArchive::SHA1=false";
    let apt = IndexCase {
        fmt: "apt",
        goal: apt_goal,
        tools: &["apt-ftparchive", "gpg", "gzip", "xz"],
        inputs: &debs,
        extra: &extra_deb,
        pool: "pool",
        outputs: &["dists"],
        theirs: format!(
            "B=dists/stable/main/binary-amd64\nmkdir -p $B\n\
             apt-ftparchive {hashes} --db {{db}} packages pool > $B/Packages\n\
             gzip -9nkf $B/Packages\nxz -6kf $B/Packages\n\
             apt-ftparchive {hashes} -o APT::FTPArchive::Release::Origin=observability-stack \
             -o APT::FTPArchive::Release::Label=observability-stack \
             -o APT::FTPArchive::Release::Suite=stable -o APT::FTPArchive::Release::Codename=stable \
             -o APT::FTPArchive::Release::Architectures=amd64 -o APT::FTPArchive::Release::Components=main \
             release dists/stable > Release.tmp\nmv Release.tmp dists/stable/Release\n\
             G --clearsign -o dists/stable/InRelease dists/stable/Release\n\
             G --detach-sign --armor -o dists/stable/Release.gpg dists/stable/Release\n"
        ),
        note_index: format!(
            "{n} .debs, cold (no cache); ours: `xtask index --pool` (apt_repo::index_dir: Packages, by-hash, Release, InRelease, Release.gpg); \
             theirs: apt-ftparchive --db (empty) packages + release; same hashes (SHA256+SHA512: theirs with \
             APT::FTPArchive::{{MD5,SHA1}}=false), same compressions (Packages.gz gzip -9, Packages.xz xz -6; \
             ours multi-threaded xz in 1 MiB blocks, theirs xz's default single thread), both sign InRelease \
             and Release.gpg (ours: the pgp crate, theirs: gpg); {same}"
        ),
        note_add: format!(
            "one more .deb into the {n}-package repository, warm: ours `xtask index --pool` with the metadata cache \
             of the cold run (an unchanged package costs an open + fstat: size, mtime, ctime, inode, \
             device, trusted alone for files only their owner can write; a cached chunk costs a \
             decode check; see index_cache); \
             theirs apt-ftparchive with its --db of the cold run (stat only), then the same compression and signing"
        ),
    };
    let dnf = IndexCase {
        fmt: "dnf",
        goal: dnf_goal,
        tools: &["createrepo_c", "gpg"],
        inputs: &rpms,
        extra: &extra_rpm,
        pool: "Packages",
        outputs: &["repodata"],
        theirs: "if [ -d repodata ]; then U=--update; else U=; fi\n\
                 createrepo_c --quiet --no-database $U .\n\
                 G --detach-sign --armor -o repodata/repomd.xml.asc repodata/repomd.xml\n"
            .into(),
        note_index: format!(
            "{n} .rpms, cold (no cache); ours: `xtask index --pool` (dnf_repo::index_dir: primary/filelists/other.xml.gz, repomd.xml + .asc); \
             theirs: createrepo_c --no-database (its default workers) + gpg --detach-sign; same checksums \
             (sha256), same compression (gzip), no sqlite databases on either side, both sign repomd.xml; {same}"
        ),
        note_add: format!(
            "one more .rpm into the {n}-package repository, warm: ours `xtask index --pool` with the metadata cache of the \
             cold run (an unchanged package costs an open + fstat); theirs createrepo_c --update \
             (reuses the old metadata of files whose size and mtime match) + gpg"
        ),
    };
    let mut rows = index_case(ctx, &apt, n)?;
    rows.extend(index_case(ctx, &dnf, n)?);
    Ok(rows)
}

// B5, B6 --------------------------------------------------------------------------------------

fn big_file(ctx: &Ctx) -> Result<(PathBuf, String)> {
    let p = ctx.work.join("big/large-1.bin");
    let sha = generate_binary(&p, ctx.sizes.big_file, "big-file", None)?;
    Ok((p, sha))
}

fn b5(ctx: &Ctx) -> Result<Vec<Row>> {
    eprintln!("bench: B5 sha256 of a large file");
    let goal = Goal::ThroughputAtLeast(0.9);
    let name = if ctx.small {
        "sha256-8MiB"
    } else {
        "sha256-1GiB"
    };
    if let Some(t) = ctx.need(&["sha256sum"]) {
        return Ok(vec![Row::skipped("B5", name, goal, &t)]);
    }
    let (p, sha) = big_file(ctx)?;
    // Both sides read from the page cache: one untimed pass first.
    measure(
        ctx.ours().args(["bench-child", "sha256"]).arg(&p),
        &ctx.log("b5-warm"),
    )?;
    let check = |log: &Path| -> Result<()> {
        let out = fs::read_to_string(log)?;
        if !out.starts_with(&sha) {
            bail!("{}: sha256 {} expected, got {out}", log.display(), sha);
        }
        Ok(())
    };
    let (o, t) = ab(
        ctx.runs,
        |_| {
            let log = ctx.log("b5-ours");
            let s = measure(ctx.ours().args(["bench-child", "sha256"]).arg(&p), &log)?;
            check(&log)?;
            Ok(s)
        },
        |_| {
            let log = ctx.log("b5-theirs");
            let s = measure(Command::new("sha256sum").arg(&p), &log)?;
            check(&log)?;
            Ok(s)
        },
    )?;
    let size = ctx.sizes.big_file as f64 / MIB;
    Ok(vec![Row::new("B5", name, goal)
        .measured(o, Some(t))
        .with_note(format!(
            "ratio = throughput ours/theirs: ours {:.0} MiB/s ({}), sha256sum {:.0} MiB/s; file in the page cache",
            size / o.secs,
            sha_backend(),
            size / t.secs
        ))])
}

/// Which sha256 implementation the sha2 crate picks at run time on this CPU.
fn sha_backend() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    let r = if std::arch::is_x86_feature_detected!("sha") {
        "SHA-NI"
    } else {
        "software, no SHA-NI"
    };
    #[cfg(target_arch = "aarch64")]
    let r = if std::arch::is_aarch64_feature_detected!("sha2") {
        "ARMv8 SHA2"
    } else {
        "software"
    };
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    let r = "software";
    r
}

fn b6(ctx: &Ctx) -> Result<Vec<Row>> {
    eprintln!("bench: B6 peak RSS packaging a large binary");
    let (p, sha) = big_file(ctx)?;
    let goal = Goal::RssAtMost(64.0);
    let tag = if ctx.small { "8MiB" } else { "1GiB" };
    let mut rows = Vec::new();
    let dir = ctx.work.join("b6");
    for (fmt, c) in [
        ("deb", Compression::Xz),
        ("deb", Compression::Gzip),
        ("rpm", Compression::Xz),
    ] {
        let out = dir.join(format!("{fmt}-{}", compression_name(c)));
        reset_dir(&out)?;
        let log = ctx.log(&format!("b6-{fmt}-{}", compression_name(c)));
        let mut s = measure(
            ctx.ours()
                .args(["bench-child", fmt])
                .arg(&p)
                .args([
                    "--sha256",
                    &sha,
                    "--compression",
                    compression_name(c),
                    "--out",
                ])
                .arg(&out),
            &log,
        )?;
        // The child's own VmHWM, not ru_maxrss (which includes this process's peak).
        let own = fs::read_to_string(&log)?
            .lines()
            .find_map(|l| l.strip_prefix(PEAK_PREFIX)?.trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow!("{}: the child reported no VmHWM", log.display()))?;
        s.rss_kib = own;
        remove(&out)?;
        let note = match (fmt, c) {
            (_, Compression::Xz) => {
                "one run, the child's own VmHWM; xz preset 6 with a 1 MiB dictionary in 4 MiB \
                 blocks, threads limited to liblzma's estimate of 52 MiB (2 threads)"
            }
            _ => "one run, the child's own VmHWM; gzip -9 in parallel 128 KiB chunks (pgzip.rs): the streaming of the writer",
        };
        rows.push(
            Row::new("B6", &format!("{fmt}-{}-{tag}", compression_name(c)), goal)
                .measured(side(&[s]), None)
                .with_note(note),
        );
    }
    Ok(rows)
}
