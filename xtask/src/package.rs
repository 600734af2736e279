//! The format-neutral package description that both writers consume.
//!
//! `describe` (in `dist`) turns a component, its verified binary and the rendered files into a
//! [`Package`]. Paths in it are final; the per-format differences that the rendered files
//! depend on (unit directory, env file location) come from [`Layout`].

use std::path::PathBuf;

/// Target architecture, in our (Debian) spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    pub fn deb(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
    pub fn rpm(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "amd64" | "x86_64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.deb())
    }
}

/// Package format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Deb,
    Rpm,
}

/// Where a format puts the things the rendered files refer to.
#[derive(Debug, Clone)]
pub struct Layout {
    pub format: Format,
    /// Directory for system units (no trailing slash).
    pub unit_dir: &'static str,
    /// Directory of the environment file read by the unit.
    pub env_dir: &'static str,
    /// Directory for sysusers.d entries.
    pub sysusers_dir: &'static str,
}

impl Layout {
    pub const DEB: Layout = Layout {
        format: Format::Deb,
        unit_dir: "/usr/lib/systemd/system",
        env_dir: "/etc/default",
        sysusers_dir: "/usr/lib/sysusers.d",
    };
    pub const RPM: Layout = Layout {
        format: Format::Rpm,
        unit_dir: "/usr/lib/systemd/system",
        env_dir: "/etc/sysconfig",
        sysusers_dir: "/usr/lib/sysusers.d",
    };
}

/// Where a file's bytes come from. Large files are streamed from disk, never held in memory.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Vec<u8>),
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Ordinary file owned by the package.
    Regular,
    /// Configuration the admin may edit: dpkg conffile / rpm %config(noreplace).
    Config,
    /// Documentation (copyright, changelog) — rpm %doc / %license.
    Doc,
    /// License text (rpm %license).
    License,
}

#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Absolute path on the target system.
    pub path: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub kind: FileKind,
    pub content: Content,
    /// sha256 of the content, hex.
    pub sha256: String,
    pub size: u64,
}

/// A directory the package owns (created with this mode/owner).
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub path: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
}

/// What the maintainer scripts must do, as behaviours; each writer spells them in its format.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceBehaviour {
    /// Unit file name, e.g. `node_exporter.service`.
    pub unit: String,
    pub user: String,
    pub group: String,
    /// Absolute path of the sysusers.d file in the package.
    pub sysusers_file: String,
    /// Enable and start on first install.
    pub enable_on_install: bool,
    /// Restart on upgrade.
    pub restart_on_upgrade: bool,
    /// Paths (config/state) removed on purge, beyond the package's own files.
    pub purge_paths: Vec<String>,
}

/// One binary package, ready to be written by either writer.
#[derive(Debug, Clone)]
pub struct Package {
    /// Package name in this format (deb: `node-exporter`, rpm: `node_exporter`).
    pub name: String,
    /// Upstream version.
    pub version: String,
    /// Package revision (deb revision / rpm release).
    pub revision: u32,
    pub arch: Arch,
    pub summary: String,
    pub description: String,
    pub license: String,
    pub homepage: String,
    pub maintainer: String,
    /// Packages this one conflicts with (names in this format).
    pub conflicts: Vec<String>,
    /// Runtime dependencies, already in this format's syntax
    /// (deb: `libc6 (>= 2.34)`; rpm: `libc.so.6(GLIBC_2.34)(64bit)`).
    pub depends: Vec<String>,
    pub files: Vec<FileEntry>,
    pub dirs: Vec<DirEntry>,
    pub service: Option<ServiceBehaviour>,
    /// Changelog entry text (one line per item, no bullets).
    pub changelog: Vec<String>,
    /// Seconds since the epoch for every timestamp in the output (SOURCE_DATE_EPOCH).
    pub source_date_epoch: u64,
    /// Lintian overrides as (`tag [context]`, one-line reason); deb only.
    pub lintian_overrides: Vec<(String, String)>,
    /// Upstream copyright holder line (for debian/copyright), e.g. `The Prometheus Authors`.
    pub copyright_holder: String,
    /// The upstream license text shipped in the release archive, if any.
    pub upstream_license: Option<Content>,
}

/// Payload compression for either writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Xz,
    Zstd,
    Gzip,
    None,
}

/// A package file written to disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub path: PathBuf,
    /// File name only, e.g. `node-exporter_1.10.2-1_amd64.deb`.
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
}

impl Package {
    /// Installed size of the files, in bytes.
    pub fn installed_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}
