//! Placeholder with the agreed API; replaced by the real module from the `deb` branch.
use std::path::Path;

use crate::package::{Compression, Package, Written};
use crate::render::Templates;

pub fn write_deb(
    _pkg: &Package,
    _t: &Templates,
    _out_dir: &Path,
    _c: Compression,
) -> anyhow::Result<Written> {
    anyhow::bail!("deb writer not merged yet")
}
