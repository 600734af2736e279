//! RPM writer: a [`Package`] becomes `<name>-<version>-<release>.<arch>.rpm` through the `rpm`
//! crate (v4 format), with scriptlets rendered from `templates/rpm/*.hbs`.
//!
//! Reproducibility: build time, every file mtime and the signature time are the package's
//! `source_date_epoch`; the build host is a fixed string; owners are names, not host ids;
//! the crate sorts files and dependencies. The only things the crate adds by itself are
//! deterministic: `name = EVR` and `name(x86-64) = EVR` provides, `config(name)` provides and
//! requires (the package has %config files), `user()`/`group()` provides from the sysusers.d
//! file (what rpm >= 4.19 generates), a `group()` recommends for files owned by a non-root
//! group, `rpmlib(...)` requires and `/bin/sh` interpreter requires for each scriptlet.
//!
//! Streaming: file contents on disk (the binary, the license) are read by the crate in chunks
//! while it hashes and compresses them; the compressed payload is held in memory by the crate
//! (its API builds the package in memory before writing it), then streamed to disk.

use std::collections::BTreeSet;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rpm::{BuildConfig, CompressionWithLevel, Dependency, FileOptions, PackageBuilder, Scriptlet};

use crate::package::{Compression, Content, FileKind, Package, Written};
use crate::render::Templates;

/// The build host written into every package: never the real host name.
pub const BUILD_HOST: &str = "reproducible.observability-stack.invalid";
/// RPM group (legacy tag; rpm still writes it).
pub const GROUP: &str = "System Environment/Daemons";
/// Where rpm's %license puts license texts.
pub const LICENSE_DIR: &str = "/usr/share/licenses";

/// Payload compression levels: rpmbuild's usual choices, not the crate's slowest ones.
fn compression(c: Compression) -> CompressionWithLevel {
    match c {
        Compression::Xz => CompressionWithLevel::Xz(6),
        Compression::Zstd => CompressionWithLevel::Zstd(19),
        Compression::Gzip => CompressionWithLevel::Gzip(9),
        Compression::None => CompressionWithLevel::None,
    }
}

/// File name of the package: `<name>-<version>-<revision>.<arch>.rpm`.
pub fn file_name(pkg: &Package) -> String {
    format!(
        "{}-{}-{}.{}.rpm",
        pkg.name,
        pkg.version,
        pkg.revision,
        pkg.arch.rpm()
    )
}

/// Write the unsigned package into `out_dir`.
pub fn write_rpm(pkg: &Package, t: &Templates, out_dir: &Path, c: Compression) -> Result<Written> {
    write_rpm_signed(pkg, t, out_dir, c, None::<&rpm::signature::pgp::Signer>)
}

/// Write the package into `out_dir`, signed with `signer` when given (header signature, made
/// at `source_date_epoch`, so a signed package is reproducible too).
pub fn write_rpm_signed<S>(
    pkg: &Package,
    t: &Templates,
    out_dir: &Path,
    c: Compression,
    signer: Option<&S>,
) -> Result<Written>
where
    S: rpm::signature::Signing<Signature = Vec<u8>>,
{
    let what = || format!("rpm {} {} {}", pkg.name, pkg.version, pkg.arch);
    let mut b = builder(pkg, t, c).with_context(what)?;
    let built = match signer {
        None => b.build(),
        Some(s) => b.build_and_sign(s),
    }
    .map_err(|e| anyhow!("{e}"))
    .with_context(what)?;

    let name = file_name(pkg);
    let path = out_dir.join(&name);
    let tmp = tempfile::NamedTempFile::new_in(out_dir)
        .with_context(|| format!("creating a temporary file in {}", out_dir.display()))?;
    let mut w = crate::digest::HashingWriter::new(BufWriter::new(tmp.as_file()));
    built
        .write(&mut w)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("writing {}", path.display()))?;
    let (inner, sha256, size) = w.finish();
    inner
        .into_inner()
        .map_err(|e| anyhow!("{}: {}", path.display(), e.error()))?
        .sync_all()?;
    // A package is published: readable by everyone (a temporary file starts out 0600).
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(&path)
        .map_err(|e| anyhow!("{}: {}", path.display(), e.error))?;
    Ok(Written {
        path,
        file_name: name,
        size,
        sha256,
    })
}

/// A value that lands in a one-line header tag or a dependency.
fn one_line(field: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.chars().any(|c| c.is_control()) {
        bail!("{field} {v:?}: empty or contains a control character");
    }
    Ok(())
}

/// A dependency name: one token, no rich (`(…)`-first) or versioned syntax.
fn dep_name(field: &str, v: &str) -> Result<()> {
    one_line(field, v)?;
    if v.chars().any(char::is_whitespace) || v.starts_with('(') {
        bail!("{field} {v:?}: not a plain dependency name");
    }
    Ok(())
}

fn builder(pkg: &Package, t: &Templates, c: Compression) -> Result<PackageBuilder> {
    let sde = u32::try_from(pkg.source_date_epoch).map_err(|_| {
        anyhow!(
            "SOURCE_DATE_EPOCH {} does not fit rpm's 32-bit timestamps",
            pkg.source_date_epoch
        )
    })?;
    for (f, v) in [
        ("summary", &pkg.summary),
        ("license", &pkg.license),
        ("homepage", &pkg.homepage),
        ("maintainer", &pkg.maintainer),
    ] {
        one_line(f, v)?;
    }
    let release = pkg.revision.to_string();
    let mut b = PackageBuilder::new(
        &pkg.name,
        &pkg.version,
        &pkg.license,
        pkg.arch.rpm(),
        &pkg.summary,
    );
    b.using_config(
        BuildConfig::v4()
            .source_date(sde)
            .compression(compression(c)),
    )
    .release(release.clone())
    .description(pkg.description.trim_end())
    .url(pkg.homepage.clone())
    .packager(pkg.maintainer.clone())
    .vendor(pkg.maintainer.clone())
    .group(GROUP)
    .build_host(BUILD_HOST);
    for line in &pkg.changelog {
        one_line("changelog", line)?;
    }
    if !pkg.changelog.is_empty() {
        let text: Vec<String> = pkg.changelog.iter().map(|l| format!("- {l}")).collect();
        b.add_changelog_entry(
            format!("{} - {}-{}", pkg.maintainer, pkg.version, release),
            text.join("\n"),
            sde,
        );
    }

    // Files. Directories that hold %license/%doc files are owned too, as rpmbuild does.
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let mut paths: BTreeSet<&str> = BTreeSet::new();
    for f in &pkg.files {
        one_line("file path", &f.path)?;
        if !f.path.starts_with('/') || f.path.split('/').any(|s| s == "..") {
            bail!("file path {:?}: not absolute and normal", f.path);
        }
        if !paths.insert(&f.path) {
            bail!("file {:?} listed twice", f.path);
        }
        let mode = u16::try_from(f.mode & 0o7777).expect("masked");
        let mut o = FileOptions::new(f.path.clone())
            .permissions(mode)
            .user(f.owner.clone())
            .group(f.group.clone())
            .modified_at(sde.into());
        o = match f.kind {
            FileKind::Regular => o,
            FileKind::Config => o.config().noreplace(),
            FileKind::Doc => o.doc(),
            FileKind::License => o.license(),
        };
        if matches!(f.kind, FileKind::Doc | FileKind::License) {
            if let Some((d, _)) = f.path.rsplit_once('/') {
                if d.starts_with("/usr/share/doc/") || d.starts_with(&format!("{LICENSE_DIR}/")) {
                    dirs.insert(d.to_string());
                }
            }
        }
        add_content(&mut b, &f.content, o)
            .with_context(|| format!("adding {} to the package", f.path))?;
    }
    if let Some(l) = &pkg.upstream_license {
        let dir = format!("{LICENSE_DIR}/{}", pkg.name);
        let path = format!("{dir}/LICENSE");
        if !paths.contains(path.as_str()) {
            let o = FileOptions::new(path.clone())
                .permissions(0o644)
                .user("root")
                .group("root")
                .modified_at(sde.into())
                .license();
            add_content(&mut b, l, o).with_context(|| format!("adding {path} to the package"))?;
            dirs.insert(dir);
        }
    }
    for d in &pkg.dirs {
        one_line("directory", &d.path)?;
        dirs.remove(&d.path);
        let mode = u16::try_from(d.mode & 0o7777).expect("masked");
        b.with_dir_entry(
            FileOptions::dir(d.path.clone())
                .permissions(mode)
                .user(d.owner.clone())
                .group(d.group.clone())
                .modified_at(sde.into()),
        )
        .map_err(|e| anyhow!("directory {}: {e}", d.path))?;
    }
    for d in dirs {
        b.with_dir_entry(
            FileOptions::dir(d.clone())
                .permissions(0o755)
                .user("root")
                .group("root")
                .modified_at(sde.into()),
        )
        .map_err(|e| anyhow!("directory {d}: {e}"))?;
    }

    // Relations.
    for d in &pkg.depends {
        dep_name("requires", d)?;
        b.requires(Dependency::any(d.clone()));
    }
    for d in &pkg.conflicts {
        dep_name("conflicts", d)?;
        b.conflicts(Dependency::any(d.clone()));
    }

    // Scriptlets and what they run.
    if pkg.service.is_some() {
        let ctx = script_context(pkg)?;
        let sh = |name: &str| -> Result<Scriptlet> {
            let text = t.render(name, &ctx)?;
            Ok(Scriptlet::new(text).prog(vec!["/bin/sh"]))
        };
        b.pre_install_script(sh("rpm/pre")?)
            .post_install_script(sh("rpm/post")?)
            .pre_uninstall_script(sh("rpm/preun")?)
            .post_uninstall_script(sh("rpm/postun")?);
        for tool in PRE_TOOLS {
            b.requires(Dependency::script_pre(*tool));
        }
        b.requires(Dependency::script_post("systemd"))
            .requires(Dependency::script_preun("systemd"))
            .requires(Dependency::script_postun("systemd"));
    }
    Ok(b)
}

/// What %pre runs (by path: shadow-utils on Fedora/EL, shadow on SUSE; getent is glibc's).
pub const PRE_TOOLS: &[&str] = &["/usr/bin/getent", "/usr/sbin/groupadd", "/usr/sbin/useradd"];

fn add_content(b: &mut PackageBuilder, c: &Content, o: rpm::FileOptionsBuilder) -> Result<()> {
    match c {
        Content::Bytes(bytes) => b.with_file_contents(bytes.clone(), o),
        Content::File(p) => b.with_file(p, o),
    }
    .map(|_| ())
    .map_err(|e| anyhow!("{e}"))
}

/// One `u` line of a sysusers.d file, as %pre creates it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SysUser {
    pub name: String,
    pub group: String,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// Groups and users of a sysusers.d file, in the order %pre must create them (every group
/// first). Only what our template writes is accepted: `g NAME -` and
/// `u NAME -[:GROUP] ["GECOS"] [HOME] [SHELL]`; anything else is refused rather than guessed.
pub fn parse_sysusers(text: &str) -> Result<(Vec<String>, Vec<SysUser>)> {
    let mut groups: Vec<String> = Vec::new();
    let mut users = Vec::new();
    let add_group = |g: &str, groups: &mut Vec<String>| {
        if !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f = split_fields(line).map_err(|e| anyhow!("sysusers line {}: {e}", i + 1))?;
        let get = |k: usize| {
            f.get(k)
                .map(String::as_str)
                .filter(|s| !s.is_empty() && *s != "-")
        };
        let name = get(1).ok_or_else(|| anyhow!("sysusers line {}: no name", i + 1))?;
        valid_account(name).map_err(|e| anyhow!("sysusers line {}: {e}", i + 1))?;
        match f[0].as_str() {
            "g" => {
                if get(2).is_some() || f.len() > 3 {
                    bail!(
                        "sysusers line {}: only `g NAME -` is supported: {line:?}",
                        i + 1
                    );
                }
                add_group(name, &mut groups);
            }
            "u" => {
                let group = match get(2) {
                    None => name.to_string(),
                    Some(id) => match id.strip_prefix("-:") {
                        Some(g) => g.to_string(),
                        None => bail!(
                            "sysusers line {}: only a dynamic id (`-` or `-:GROUP`) is supported: {line:?}",
                            i + 1
                        ),
                    },
                };
                valid_account(&group).map_err(|e| anyhow!("sysusers line {}: {e}", i + 1))?;
                if f.len() > 6 {
                    bail!("sysusers line {}: too many fields: {line:?}", i + 1);
                }
                add_group(&group, &mut groups);
                let gecos = get(3).unwrap_or("").to_string();
                let home = get(4).unwrap_or("/").to_string();
                let shell = get(5).unwrap_or("/usr/sbin/nologin").to_string();
                for (k, v) in [("home", &home), ("shell", &shell)] {
                    if !v.starts_with('/') {
                        bail!("sysusers line {}: {k} {v:?} is not absolute", i + 1);
                    }
                }
                users.push(SysUser {
                    name: name.to_string(),
                    group,
                    gecos,
                    home,
                    shell,
                });
            }
            other => bail!(
                "sysusers line {}: type {other:?} is not supported by the rpm %pre",
                i + 1
            ),
        }
    }
    Ok((groups, users))
}

fn valid_account(n: &str) -> Result<()> {
    let ok = n.len() <= 32
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        bail!("{n:?} is not a valid system account name");
    }
    Ok(())
}

/// Whitespace-separated fields; a field may be double-quoted (no escapes inside).
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else { break };
        let mut field = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => return Err("escapes in quoted fields are not supported".into()),
                    Some(ch) if ch.is_control() => return Err("control character".into()),
                    Some(ch) => field.push(ch),
                    None => return Err("unterminated quote".into()),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err("text right after a closing quote".into());
            }
        } else {
            while let Some(ch) = chars.next_if(|c| !c.is_whitespace()) {
                if ch == '"' || ch.is_control() {
                    return Err("quote or control character inside a field".into());
                }
                field.push(ch);
            }
        }
        out.push(field);
    }
    Ok(out)
}

/// Paths %postun removes on erase: the state the service leaves behind (not /etc: rpm's own
/// %config rules decide what happens to configuration).
pub fn state_paths(purge: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in purge {
        one_line("purge path", p)?;
        let parts: Vec<&str> = p.split('/').collect();
        let normal = p.starts_with('/')
            && parts.len() >= 3
            && parts[1..]
                .iter()
                .all(|s| !s.is_empty() && *s != "." && *s != "..");
        if !normal {
            bail!("purge path {p:?}: not an absolute, normal path at least two levels deep");
        }
        if p.starts_with("/etc/") {
            continue;
        }
        if !["/var/lib/", "/var/cache/", "/var/log/"]
            .iter()
            .any(|d| p.starts_with(d))
        {
            bail!("purge path {p:?}: state must live under /var/lib, /var/cache or /var/log");
        }
        out.push(p.clone());
    }
    Ok(out)
}

/// The template context of the scriptlets.
pub fn script_context(pkg: &Package) -> Result<serde_json::Value> {
    let s = pkg
        .service
        .as_ref()
        .ok_or_else(|| anyhow!("package {} has no service", pkg.name))?;
    let sysusers = pkg
        .files
        .iter()
        .find(|f| f.path == s.sysusers_file)
        .ok_or_else(|| anyhow!("sysusers file {} is not in the package", s.sysusers_file))?;
    let text = match &sysusers.content {
        Content::Bytes(b) => String::from_utf8(b.clone())?,
        Content::File(p) => {
            std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?
        }
    };
    let (groups, users) =
        parse_sysusers(&text).with_context(|| format!("sysusers file {}", s.sysusers_file))?;
    if !users.iter().any(|u| u.name == s.user && u.group == s.group) {
        bail!(
            "sysusers file {} does not create user {} in group {}",
            s.sysusers_file,
            s.user,
            s.group
        );
    }
    Ok(serde_json::json!({
        "name": pkg.name,
        "unit": s.unit,
        "sysusers_file": s.sysusers_file,
        "groups": groups,
        "users": users,
        "enable_on_install": s.enable_on_install,
        "restart_on_upgrade": s.restart_on_upgrade,
        "state_paths": state_paths(&s.purge_paths)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysusers_lines_become_groups_then_users() {
        let (g, u) = parse_sysusers(
            "# c\ng obs -\nu obs -:obs \"obs service user\" - /usr/sbin/nologin\n\
             u node_exporter - \"n e\" /var/lib/ne\n",
        )
        .unwrap();
        assert_eq!(g, ["obs", "node_exporter"]);
        assert_eq!(u[0].home, "/");
        assert_eq!(u[0].gecos, "obs service user");
        assert_eq!(u[1].group, "node_exporter");
        assert_eq!(u[1].home, "/var/lib/ne");
        assert_eq!(u[1].shell, "/usr/sbin/nologin");
    }

    #[test]
    fn unsupported_sysusers_lines_are_refused() {
        for bad in [
            "u x 123 \"a\"",
            "m x grp",
            "u x - \"unterminated",
            "u X -",
            "u x - \"a\" home",
            "g x 12",
            "u x - \"a\\\"b\"",
        ] {
            assert!(parse_sysusers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn state_paths_skip_etc_and_refuse_odd_paths() {
        let ok = state_paths(&["/etc/x".into(), "/var/lib/x".into()]).unwrap();
        assert_eq!(ok, ["/var/lib/x"]);
        for bad in [
            "/",
            "/var",
            "/var/lib/../etc",
            "var/lib/x",
            "/usr/bin/x",
            "/var//x",
        ] {
            assert!(state_paths(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
