//! Placeholder with the agreed API; replaced by the real module from the `unpack` branch.
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy)]
pub enum ArchiveKind {
    TarGz,
    Zip,
}
impl ArchiveKind {
    pub fn from_name(name: &str) -> Option<ArchiveKind> {
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(ArchiveKind::TarGz)
        } else if name.ends_with(".zip") {
            Some(ArchiveKind::Zip)
        } else {
            None
        }
    }
}
pub struct Limits {
    pub max_entries: u64,
    pub max_member_size: u64,
    pub max_total_size: u64,
}
impl Default for Limits {
    fn default() -> Self {
        Limits { max_entries: 100_000, max_member_size: 1 << 30, max_total_size: 4 << 30 }
    }
}
pub struct Extracted {
    pub member: String,
    pub path: PathBuf,
    pub mode: u32,
    pub size: u64,
    pub sha256: String,
}
#[derive(thiserror::Error, Debug)]
pub enum UnpackError {
    #[error("not implemented")]
    Todo,
}
pub fn extract_members(
    _archive: &Path,
    _kind: ArchiveKind,
    _members: &[String],
    _dest_dir: &Path,
    _limits: &Limits,
) -> Result<Vec<Extracted>, UnpackError> {
    Err(UnpackError::Todo)
}
