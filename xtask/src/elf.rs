//! What a binary needs at run time, read from its ELF headers (like dpkg-shlibdeps/rpm's
//! find-requires, for the one binary a package ships). Reads through a cache of file ranges:
//! the binary is never loaded whole.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::read::ReadCache;
use object::Endianness;

use crate::package::Arch;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfInfo {
    /// PT_INTERP, e.g. `/lib64/ld-linux-x86-64.so.2` (None: static).
    pub interpreter: Option<String>,
    /// DT_NEEDED sonames.
    pub needed: Vec<String>,
    /// (soname, version) pairs from SHT_GNU_verneed, e.g. (`libc.so.6`, `GLIBC_2.34`).
    pub version_needs: Vec<(String, String)>,
    /// PIE (ET_DYN with an interpreter).
    pub pie: bool,
}

impl ElfInfo {
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }

    /// Highest GLIBC_x.y needed, as `x.y`.
    pub fn max_glibc(&self) -> Option<String> {
        let mut best: Option<(Vec<u32>, String)> = None;
        for (_, v) in &self.version_needs {
            if let Some(num) = v.strip_prefix("GLIBC_") {
                let parts: Option<Vec<u32>> = num.split('.').map(|p| p.parse().ok()).collect();
                if let Some(parts) = parts {
                    if best.as_ref().is_none_or(|(b, _)| parts > *b) {
                        best = Some((parts, num.to_string()));
                    }
                }
            }
        }
        best.map(|x| x.1)
    }

    /// Debian `Depends:` entries.
    pub fn deb_depends(&self) -> Result<Vec<String>> {
        let mut libc = false;
        for n in &self.needed {
            match n.as_str() {
                "libc.so.6"
                | "libpthread.so.0"
                | "libdl.so.2"
                | "libm.so.6"
                | "librt.so.1"
                | "libresolv.so.2"
                | "ld-linux-x86-64.so.2"
                | "ld-linux-aarch64.so.1" => libc = true,
                other => bail!(
                    "the binary needs {other}, and no Debian package is known to provide it; \
                     only glibc libraries are mapped"
                ),
            }
        }
        if self.interpreter.is_some() {
            libc = true;
        }
        Ok(if libc {
            vec![match self.max_glibc() {
                Some(v) => format!("libc6 (>= {v})"),
                None => "libc6".to_string(),
            }]
        } else {
            vec![]
        })
    }

    /// RPM `Requires:` entries in the form rpm's ELF dependency generator writes.
    pub fn rpm_requires(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.needed {
            out.push(format!("{n}()(64bit)"));
        }
        for (lib, ver) in &self.version_needs {
            out.push(format!("{lib}({ver})(64bit)"));
        }
        if let Some(i) = &self.interpreter {
            out.push(i.clone());
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Read the ELF information of `path` and check it is built for `arch`.
pub fn inspect(path: &Path, arch: Arch) -> Result<ElfInfo> {
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let cache = ReadCache::new(f);
    let data = &cache;
    let ctx = || format!("{}: not a readable 64-bit ELF executable", path.display());
    let header = elf::FileHeader64::<Endianness>::parse(data)
        .map_err(|e| anyhow!("{e}"))
        .with_context(ctx)?;
    let endian = header
        .endian()
        .map_err(|e| anyhow!("{e}"))
        .with_context(ctx)?;
    let want = match arch {
        Arch::Amd64 => elf::EM_X86_64,
        Arch::Arm64 => elf::EM_AARCH64,
    };
    let machine = header.e_machine(endian);
    if machine != want {
        bail!(
            "{}: ELF machine {machine} does not match arch {arch} (expected {want}): wrong binary for this arch",
            path.display()
        );
    }
    let mut info = ElfInfo::default();
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| anyhow!("{e}"))
        .with_context(ctx)?;
    for ph in phdrs {
        if let Some(interp) = ph
            .interpreter(endian, data)
            .map_err(|e| anyhow!("{e}"))
            .with_context(ctx)?
        {
            info.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    info.pie = header.e_type(endian) == elf::ET_DYN && info.interpreter.is_some();
    let sections = header
        .sections(endian, data)
        .map_err(|e| anyhow!("{e}"))
        .with_context(ctx)?;
    if let Some((dyns, link)) = sections
        .dynamic(endian, data)
        .map_err(|e| anyhow!("{e}"))
        .with_context(ctx)?
    {
        let strings = sections
            .strings(endian, data, link)
            .map_err(|e| anyhow!("{e}"))
            .with_context(ctx)?;
        for d in dyns {
            if d.tag32(endian) == Some(elf::DT_NEEDED) {
                let off: u64 = d.d_val(endian);
                let name = strings
                    .get(off as u32)
                    .map_err(|_| anyhow!("bad DT_NEEDED string offset"))
                    .with_context(ctx)?;
                info.needed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    if let Some((mut needs, link)) = sections
        .gnu_verneed(endian, data)
        .map_err(|e| anyhow!("{e}"))
        .with_context(ctx)?
    {
        let strings = sections
            .strings(endian, data, link)
            .map_err(|e| anyhow!("{e}"))
            .with_context(ctx)?;
        while let Some((need, mut aux)) =
            needs.next().map_err(|e| anyhow!("{e}")).with_context(ctx)?
        {
            let lib =
                String::from_utf8_lossy(need.file(endian, strings).map_err(|e| anyhow!("{e}"))?)
                    .into_owned();
            while let Some(a) = aux.next().map_err(|e| anyhow!("{e}")).with_context(ctx)? {
                let v =
                    String::from_utf8_lossy(a.name(endian, strings).map_err(|e| anyhow!("{e}"))?)
                        .into_owned();
                info.version_needs.push((lib.clone(), v));
            }
        }
    }
    info.version_needs.sort();
    info.version_needs.dedup();
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_dynamic_system_binary() {
        let arch = if cfg!(target_arch = "x86_64") {
            Arch::Amd64
        } else {
            Arch::Arm64
        };
        let info = inspect(Path::new("/usr/bin/true"), arch).unwrap();
        assert!(info.interpreter.is_some());
        assert!(info.needed.iter().any(|n| n == "libc.so.6"), "{info:?}");
        assert!(info.max_glibc().is_some());
        let deps = info.deb_depends().unwrap();
        assert!(deps[0].starts_with("libc6 (>= 2."), "{deps:?}");
        assert!(info
            .rpm_requires()
            .iter()
            .any(|r| r == "libc.so.6()(64bit)"));
        let other = if arch == Arch::Amd64 {
            Arch::Arm64
        } else {
            Arch::Amd64
        };
        let e = inspect(Path::new("/usr/bin/true"), other)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match arch"), "{e}");
        // A library outside glibc has no known package: refused, not guessed.
        let ls = inspect(Path::new("/bin/ls"), arch).unwrap();
        let e = ls.deb_depends().unwrap_err().to_string();
        assert!(e.contains("libselinux.so.1"), "{e}");
    }

    #[test]
    fn refuses_non_elf() {
        let e = inspect(Path::new("/etc/hostname"), Arch::Amd64).unwrap_err();
        assert!(
            format!("{e:#}").contains("not a readable 64-bit ELF"),
            "{e:#}"
        );
    }
}
