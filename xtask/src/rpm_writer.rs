//! Placeholder with the agreed API; replaced by the real module from the `rpm` branch.
use std::path::Path;

use crate::package::{Compression, Package, Written};
use crate::render::Templates;

pub fn write_rpm(
    _pkg: &Package,
    _t: &Templates,
    _out_dir: &Path,
    _c: Compression,
) -> anyhow::Result<Written> {
    anyhow::bail!("rpm writer not merged yet")
}
