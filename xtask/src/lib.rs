//! observability-stack pipeline: components → fetch → unpack → render → describe → deb/rpm.
//!
//! Each stage is a function of its inputs; `dist` strings them together. See ARCHITECTURE.md.

pub mod apt_repo;
pub mod attest;
pub mod bench;
pub mod build_cache;
pub mod component;
pub mod date;
pub mod deb;
pub mod debsig;
pub mod digest;
pub mod dist;
pub mod dnf_repo;
pub mod elf;
pub mod fetch;
pub mod index_cache;
pub mod inputs;
pub mod merge;
pub mod minisign;
pub mod mirror;
pub mod package;
pub mod pgzip;
pub mod publish;
pub mod render;
pub mod rpm_writer;
pub mod signer;
pub mod signing;
pub mod unpack;
pub mod verify;
