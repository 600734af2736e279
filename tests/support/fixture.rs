//! A package description built the way `dist` builds one, from a real component file and a
//! small real ELF (/usr/bin/true) standing in for the exporter binary.
//! (Include with `#[path = "support/fixture.rs"] mod fixture;`.)
#![allow(dead_code)]

use std::path::Path;

use xtask::dist::{describe, BuildOptions, Staged, DEFAULT_MAINTAINER};
use xtask::package::{Arch, Compression, Layout, Package};
use xtask::render::{render_component, Templates};
use xtask::unpack::Extracted;

/// The staged inputs of component `name`: /usr/bin/true as its binary and a short license.
pub fn staged(name: &str, work: &Path) -> Staged {
    std::fs::create_dir_all(work).unwrap();
    let bin = work.join(name);
    std::fs::copy("/usr/bin/true", &bin).unwrap();
    let (sha256, size) = xtask::digest::sha256_file(&bin).unwrap();
    let license = work.join("LICENSE");
    std::fs::write(&license, "Apache License\nVersion 2.0, January 2004\n").unwrap();
    let (lsha, lsize) = xtask::digest::sha256_file(&license).unwrap();
    Staged {
        binary: Extracted {
            member: format!("{name}-1/{name}"),
            path: bin.clone(),
            mode: 0o755,
            size,
            sha256,
        },
        license: Some(Extracted {
            member: format!("{name}-1/LICENSE"),
            path: license,
            mode: 0o644,
            size: lsize,
            sha256: lsha,
        }),
        elf: xtask::elf::inspect(&bin, Arch::Amd64).unwrap(),
        configs: vec![],
    }
}

/// `staged` plus a small stand-in file for each archive member the component installs as
/// configuration (`[[config]] source`).
pub fn staged_for(c: &xtask::component::Component, work: &Path) -> Staged {
    let mut s = staged(&c.name, work);
    for f in c.config.iter().filter(|f| f.source.is_some()) {
        let base = f.path.rsplit('/').next().unwrap();
        let p = work.join(format!("member-{base}"));
        std::fs::write(&p, format!("# stand-in for the archive's {base}\n")).unwrap();
        let (sha256, size) = xtask::digest::sha256_file(&p).unwrap();
        s.configs.push((
            f.path.clone(),
            Extracted {
                member: f.source.clone().unwrap(),
                path: p,
                mode: 0o644,
                size,
                sha256,
            },
        ));
    }
    s
}

/// The amd64 package of the workspace's `components/<name>.toml` for `layout`.
pub fn package(name: &str, work: &Path, layout: &Layout, sde: u64) -> Package {
    let c = xtask::component::load_file(
        &crate::cmd::workspace().join(format!("components/{name}.toml")),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let staged = staged_for(&c, work);
    let t = Templates::load(None).unwrap();
    let rendered = render_component(&t, &c, layout).unwrap();
    let opts = BuildOptions {
        out_dir: work.join("out"),
        deb_compression: Compression::Xz,
        rpm_compression: Compression::Xz,
        maintainer: DEFAULT_MAINTAINER.into(),
        source_date_epoch: Some(sde),
    };
    describe(&c, Arch::Amd64, layout, &staged, rendered, &opts, sde).unwrap()
}

/// A deterministic release archive in the upstream tar.gz layout
/// (`<comp>-<version>.linux-<arch>/{<comp>,LICENSE}`), /usr/bin/true as the binary; `salt`
/// changes the LICENSE so that a tampered archive is still a valid one.
pub fn release_tar_gz(comp: &str, version: &str, arch: &str, salt: &str) -> Vec<u8> {
    let top = format!("{comp}-{version}.linux-{arch}");
    let binary = std::fs::read("/usr/bin/true").expect("/usr/bin/true");
    let license = format!("Apache License 2.0 (test copy for {comp} {arch}){salt}\n");
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(&format!("{top}/"), tar::EntryType::Directory, 0o755, b"");
    add(
        &format!("{top}/{comp}"),
        tar::EntryType::Regular,
        0o755,
        &binary,
    );
    add(
        &format!("{top}/LICENSE"),
        tar::EntryType::Regular,
        0o644,
        license.as_bytes(),
    );
    b.into_inner().unwrap().finish().unwrap()
}
