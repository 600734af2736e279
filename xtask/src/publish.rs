//! Atomic publishing of repository generations.
//!
//! The output directory holds numbered generations and one symlink that names the published
//! one:
//!
//! ```text
//! OUT/.lock                 held (flock) by the run that is writing
//! OUT/.inputs               "generation 0007\nfingerprint <hex>\n": which inputs made 0007
//! OUT/current -> generations/0007
//! OUT/generations/0004 … 0007
//! OUT/generations/.staging-XXXX   a run in progress (or one killed: removed by the next run)
//! ```
//!
//! A run builds the whole new generation in a staging directory beside the others, renames it
//! to the next number, then replaces `current` by renaming a new symlink over it: a reader (or
//! a web server) sees the old tree or the new one, never a mix, and a run killed at any point
//! leaves `current` as it was. The previous [`KEEP_PREVIOUS`] generations stay on disk, and the
//! index writers carry their by-hash/repodata files into the new one (see [`carry_over`]) so
//! a client that fetched an older index can still fetch what it names.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// Generations kept besides the current one.
pub const KEEP_PREVIOUS: usize = 3;
const GENERATIONS: &str = "generations";
const CURRENT: &str = "current";
const STAGING_PREFIX: &str = ".staging-";
/// The state file of `dist`'s no-op check (outside every generation: a generation's
/// SHA256SUMS lists every file in it). See [`record_inputs`].
pub const INPUTS_FILE: &str = ".inputs";
const INPUTS_NEW: &str = ".inputs.new";

/// An exclusive hold on an output directory, released on drop.
pub struct OutLock {
    _file: File,
    pub out: PathBuf,
}

/// Take the output directory's lock; when another run holds it, say so and wait for it.
pub fn lock(out: &Path) -> Result<OutLock> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    refuse_foreign(out)?;
    let path = out.join(".lock");
    if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.file_type().is_file()) {
        bail!(
            "{}: exists and is not a regular file (a planted symlink?); remove it",
            path.display()
        );
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!(
                "waiting: another run is writing {} (lock {})",
                out.display(),
                path.display()
            );
            file.lock()
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(anyhow!("locking {}: {e}", path.display()));
        }
    }
    if let Ok(m) = std::fs::symlink_metadata(out.join(CURRENT)) {
        if !m.file_type().is_symlink() {
            bail!(
                "{}: exists and is not a symlink to a generation; move it away (this directory \
                 was not written by this version of `dist`)",
                out.join(CURRENT).display()
            );
        }
    }
    Ok(OutLock {
        _file: file,
        out: out.to_path_buf(),
    })
}

/// What `dist` itself keeps in an output directory.
const OWN_ENTRIES: &[&str] = &[
    ".lock",
    GENERATIONS,
    CURRENT,
    ".current.new",
    INPUTS_FILE,
    INPUTS_NEW,
];

/// Refuse an output directory that holds anything `dist` did not put there (a home directory,
/// `/`, an older layout): publishing into it would mix our tree with someone else's files.
fn refuse_foreign(out: &Path) -> Result<()> {
    let mut foreign: Vec<String> = std::fs::read_dir(out)
        .with_context(|| format!("reading {}", out.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !OWN_ENTRIES.contains(&n.as_str()))
        .collect();
    if !foreign.is_empty() {
        foreign.sort();
        foreign.truncate(5);
        bail!(
            "{}: not an output directory of `dist` (it holds {}); give --out an empty or new \
             directory, or one that `dist` wrote",
            out.display(),
            foreign.join(", ")
        );
    }
    Ok(())
}

/// A generation being built; removed on drop unless committed.
pub struct Staging {
    dir: Option<tempfile::TempDir>,
}

impl Staging {
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("staging").path()
    }
}

/// Start a new generation under the locked output directory. Staging directories left by
/// runs that were killed are removed first (the lock proves nobody is writing them).
pub fn begin(lock: &OutLock) -> Result<Staging> {
    let gens = lock.out.join(GENERATIONS);
    std::fs::create_dir_all(&gens).with_context(|| format!("creating {}", gens.display()))?;
    for e in std::fs::read_dir(&gens)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            std::fs::remove_dir_all(e.path())
                .with_context(|| format!("removing stale {}", e.path().display()))?;
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(&gens)
        .with_context(|| format!("creating a staging directory in {}", gens.display()))?;
    Ok(Staging { dir: Some(dir) })
}

/// The existing generations, oldest first.
pub fn generations(out: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let gens = out.join(GENERATIONS);
    let mut v = Vec::new();
    let rd = match std::fs::read_dir(&gens) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(anyhow!("{}: {e}", gens.display())),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        // Only names this module writes (`{n:04}`): `42`, `+7` or `00042` are someone else's
        // directories, and pruning must never remove them.
        let Ok(n) = name.parse::<u32>() else { continue };
        if name != format!("{n:04}") || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if e.file_type()?.is_dir() {
            v.push((n, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// The published generation (what `current` points at), if any.
pub fn current(out: &Path) -> Option<PathBuf> {
    let link = out.join(CURRENT);
    let target = std::fs::read_link(&link).ok()?;
    let p = out.join(target);
    p.is_dir().then_some(p)
}

/// The generations before the one being built, newest first, at most [`KEEP_PREVIOUS`].
pub fn previous(out: &Path) -> Result<Vec<PathBuf>> {
    let mut g: Vec<PathBuf> = generations(out)?.into_iter().map(|x| x.1).collect();
    g.reverse();
    g.truncate(KEEP_PREVIOUS);
    Ok(g)
}

/// Publish the staged generation: rename it to the next number, switch `current` to it
/// atomically, then prune generations beyond [`KEEP_PREVIOUS`]. Returns the new generation's
/// path.
///
/// Whatever publishes (`dist`, `index --merge`, `mirror import`), the record of the inputs
/// that made the current generation ([`INPUTS_FILE`]) goes first: the new generation was not
/// necessarily made from them, and only `dist` knows (it records them again after this).
pub fn commit(lock: &OutLock, mut staging: Staging) -> Result<PathBuf> {
    let out = &lock.out;
    let gens = out.join(GENERATIONS);
    forget_inputs(out)?;
    let next = match generations(out)?.last() {
        None => 1,
        Some((n, p)) => n
            .checked_add(1)
            .ok_or_else(|| anyhow!("{}: no generation number after it", p.display()))?,
    };
    let name = format!("{next:04}");
    let dest = gens.join(&name);
    let dir = staging.dir.take().expect("staging").keep();
    // Served to everyone: every directory 0755, every file 0644, whatever the umask of the
    // run was (a temporary directory starts out 0700; create_dir_all follows the umask).
    sync_tree(&dir)?;
    std::fs::rename(&dir, &dest)
        .with_context(|| format!("renaming {} to {}", dir.display(), dest.display()))?;
    sync_dir(&gens)?;
    let tmp_link = out.join(format!(".{CURRENT}.new"));
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(Path::new(GENERATIONS).join(&name), &tmp_link)
        .with_context(|| format!("creating {}", tmp_link.display()))?;
    std::fs::rename(&tmp_link, out.join(CURRENT))
        .with_context(|| format!("switching {}", out.join(CURRENT).display()))?;
    sync_dir(out)?;
    let all = generations(out)?;
    if all.len() > KEEP_PREVIOUS + 1 {
        for (_, p) in &all[..all.len() - KEEP_PREVIOUS - 1] {
            std::fs::remove_dir_all(p).with_context(|| format!("pruning {}", p.display()))?;
        }
    }
    Ok(dest)
}

/// Record that `generation` (a directory this lock's [`commit`] returned) was made from the
/// inputs whose fingerprint is `fingerprint` (hex): `OUT/.inputs` =
/// `generation NNNN\nfingerprint <hex>\n`, written to a temporary name, synced, made 0644 and
/// renamed into place. The file is only ever read as "which fingerprint produced generation
/// N": `dist` still verifies that generation before it relies on it.
pub fn record_inputs(lock: &OutLock, generation: &Path, fingerprint: &str) -> Result<()> {
    use std::io::Write;
    let name = generation
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !valid_generation_name(&name) || !is_hex64(fingerprint) {
        bail!(
            "recording inputs: generation {name:?} / fingerprint {fingerprint:?} is not a \
             generation name and a sha256"
        );
    }
    let out = &lock.out;
    let tmp = out.join(INPUTS_NEW);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(format!("generation {name}\nfingerprint {fingerprint}\n").as_bytes())
        .and_then(|_| f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644)))
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, out.join(INPUTS_FILE))
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    sync_dir(out)
}

/// What [`INPUTS_FILE`] says: (generation name, fingerprint); `Ok(None)` when there is none,
/// `Err` (the reason, naming the file) when it is not exactly what [`record_inputs`] writes.
pub fn recorded_inputs(out: &Path) -> Result<Option<(String, String)>, String> {
    let path = out.join(INPUTS_FILE);
    let bytes = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if !m.file_type().is_file() || m.len() > 4096 => {
            return Err(format!("{}: not a small regular file", path.display()))
        }
        Ok(_) => std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?,
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.split_inclusive('\n');
    let gen = lines.next().and_then(|l| l.strip_prefix("generation "));
    let fpr = lines.next().and_then(|l| l.strip_prefix("fingerprint "));
    match (gen, fpr, lines.next()) {
        (Some(g), Some(f), None)
            if g.ends_with('\n')
                && f.ends_with('\n')
                && valid_generation_name(g.trim_end_matches('\n'))
                && is_hex64(f.trim_end_matches('\n')) =>
        {
            Ok(Some((
                g.trim_end_matches('\n').to_string(),
                f.trim_end_matches('\n').to_string(),
            )))
        }
        _ => Err(format!(
            "{}: malformed (expected `generation NNNN` and `fingerprint <sha256>` lines), it \
             holds {:?}",
            path.display(),
            text.chars().take(120).collect::<String>()
        )),
    }
}

/// Whether `out` has an [`INPUTS_FILE`] at all (a hint, read without the lock: `dist`
/// checks it under the lock with [`recorded_inputs`]).
pub fn has_recorded_inputs(out: &Path) -> bool {
    std::fs::symlink_metadata(out.join(INPUTS_FILE)).is_ok()
}

/// Remove [`INPUTS_FILE`] (nothing to do when there is none).
fn forget_inputs(out: &Path) -> Result<()> {
    match std::fs::remove_file(out.join(INPUTS_FILE)) {
        Ok(()) => sync_dir(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!("removing {}: {e}", out.join(INPUTS_FILE).display())),
    }
}

/// A name [`commit`] gives a generation (`{n:04}`).
fn valid_generation_name(s: &str) -> bool {
    s.len() >= 4
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u32>().is_ok_and(|n| format!("{n:04}") == s)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The name of the published generation (`NNNN`) when `current` is a link to
/// `generations/NNNN`, a directory, exactly as [`commit`] makes it.
pub fn current_generation(out: &Path) -> Option<String> {
    let target = std::fs::read_link(out.join(CURRENT)).ok()?;
    let name = target.strip_prefix(GENERATIONS).ok()?.to_str()?.to_string();
    (valid_generation_name(&name) && out.join(GENERATIONS).join(&name).is_dir()).then_some(name)
}

/// The directory of generation `name` in `out`.
pub fn generation_dir(out: &Path, name: &str) -> PathBuf {
    out.join(GENERATIONS).join(name)
}

/// A file a generation's own index names (relative to the generation), and the digest that
/// index gives it: the by-hash name of an apt index, the checksum `repomd.xml` states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub rel: PathBuf,
    pub digest: NamedDigest,
    /// The sha256 the generation's signed `SHA256SUMS` lists for `rel`.
    pub signed_sha256: String,
}

/// Lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedDigest {
    Sha256(String),
    Sha512(String),
}

/// Copy into `new_root` every file that `files_of(prev)` names (paths relative to the
/// generation) and `new_root` lacks, for each previous generation. Used for apt's by-hash
/// files and dnf's repodata: `files_of` names only what a generation's own indexes reference,
/// so older indexes stay fetchable after a switch while files carried into a previous
/// generation from even older ones are not carried again (a generation holds the indexes of
/// itself and the previous [`KEEP_PREVIOUS`], no more).
///
/// A previous generation is not trusted for content: `files_of` names only what its signed
/// `SHA256SUMS` lists (see `dist::own_index_files`), and what lands in the new one (and so in
/// its signed `SHA256SUMS`) is a copy, made from a regular file (not a link), whose bytes have
/// both the sha256 that listing gives and the digest its index names, hashed as they were
/// written. Anything else is left behind with a warning: the new generation is complete
/// without it (a client holding that older index fails to fetch it either way).
pub fn carry_over(
    previous: &[PathBuf],
    new_root: &Path,
    files_of: impl Fn(&Path) -> Vec<Named>,
) -> Result<usize> {
    let mut n = 0;
    for prev in previous {
        for named in files_of(prev) {
            let rel = &named.rel;
            if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
                bail!(
                    "{}: refusing to carry over {}",
                    prev.display(),
                    rel.display()
                );
            }
            let from = prev.join(rel);
            let to = new_root.join(rel);
            if to.symlink_metadata().is_ok() {
                continue;
            }
            match carry_one(&from, &to, &named) {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(why) => {
                    eprintln!("warning: not carrying over {}: {why:#}", from.display());
                }
            }
        }
    }
    Ok(n)
}

/// One file of [`carry_over`]: `Ok(false)` when `from` does not exist. A copy, never a hard
/// link: the new generation's file is not an inode an older generation (or whoever can write
/// there) shares, so the bytes checked here are the bytes its `SHA256SUMS` will list.
fn carry_one(from: &Path, to: &Path, named: &Named) -> Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(from)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(anyhow!("opening it: {e} (a symlink?)")),
    };
    if !f.metadata()?.is_file() {
        bail!("not a regular file");
    }
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut copy = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    // Nothing half-made or refused stays behind under the name.
    let checked = copy_checked(&mut f, &mut copy, named);
    if checked.is_err() {
        let _ = std::fs::remove_file(to);
    }
    checked.map(|()| true)
}

/// Copy `f` into `copy`, hashing as it goes; `Err` unless the bytes have the digests `named`
/// gives (the signed sha256, and the one its index names).
fn copy_checked(f: &mut File, copy: &mut File, named: &Named) -> Result<()> {
    use std::io::{Read, Write};
    let mut h256 = sha2::Sha256::default();
    let mut h512 = matches!(named.digest, NamedDigest::Sha512(_)).then(sha2::Sha512::default);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        sha2::Digest::update(&mut h256, &buf[..k]);
        if let Some(h) = h512.as_mut() {
            sha2::Digest::update(h, &buf[..k]);
        }
        copy.write_all(&buf[..k])?;
    }
    let sha256 = hex::encode(sha2::Digest::finalize(h256));
    if sha256 != named.signed_sha256 {
        bail!(
            "its sha256 is {sha256}, its generation's signed SHA256SUMS lists {}",
            named.signed_sha256
        );
    }
    let (algo, got, want) = match &named.digest {
        NamedDigest::Sha256(want) => ("sha256", sha256, want),
        NamedDigest::Sha512(want) => (
            "sha512",
            h512.map(|h| hex::encode(sha2::Digest::finalize(h)))
                .unwrap_or_default(),
            want,
        ),
    };
    if &got != want {
        bail!("its {algo} is {got}, its index names {want}");
    }
    Ok(())
}

fn sync_dir(p: &Path) -> Result<()> {
    File::open(p)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", p.display()))
}

/// fsync every file and directory of a tree, so that the rename publishes durable content.
fn sync_tree(root: &Path) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                std::fs::set_permissions(
                    e.path(),
                    std::os::unix::fs::PermissionsExt::from_mode(0o644),
                )?;
                File::open(e.path())
                    .and_then(|f| f.sync_all())
                    .with_context(|| format!("syncing {}", e.path().display()))?;
            }
        }
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        sync_dir(&d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(out: &Path, content: &str) -> PathBuf {
        let l = lock(out).unwrap();
        let s = begin(&l).unwrap();
        std::fs::write(s.path().join("f"), content).unwrap();
        commit(&l, s).unwrap()
    }

    #[test]
    fn generations_switch_and_prune() {
        let t = tempfile::tempdir().unwrap();
        for i in 1..=6 {
            let g = publish(t.path(), &format!("gen {i}"));
            assert_eq!(g.file_name().unwrap(), format!("{i:04}").as_str());
            assert_eq!(
                std::fs::read_to_string(t.path().join("current/f")).unwrap(),
                format!("gen {i}")
            );
        }
        let kept: Vec<u32> = generations(t.path()).unwrap().iter().map(|g| g.0).collect();
        assert_eq!(kept, vec![3, 4, 5, 6]);
        assert_eq!(previous(t.path()).unwrap().len(), 3);
    }

    #[test]
    fn abandoned_staging_leaves_current_and_is_cleaned() {
        let t = tempfile::tempdir().unwrap();
        publish(t.path(), "one");
        {
            let l = lock(t.path()).unwrap();
            let s = begin(&l).unwrap();
            std::fs::write(s.path().join("f"), "half").unwrap();
            // Simulate a killed run: the staging dir survives the process.
            let _ = s.dir.map(|d| d.keep());
        }
        assert_eq!(
            std::fs::read_to_string(t.path().join("current/f")).unwrap(),
            "one"
        );
        publish(t.path(), "two");
        let stale = std::fs::read_dir(t.path().join(GENERATIONS))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(STAGING_PREFIX)
            })
            .count();
        assert_eq!(stale, 0);
    }

    #[test]
    fn a_second_run_waits_for_the_lock() {
        let t = tempfile::tempdir().unwrap();
        let first = lock(t.path()).unwrap();
        let out = t.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let _l = lock(&out).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the second lock must wait while the first is held"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second lock is taken once the first is released");
        h.join().unwrap();
    }

    #[test]
    fn directories_it_did_not_write_are_never_pruned() {
        let t = tempfile::tempdir().unwrap();
        let gens = t.path().join(GENERATIONS);
        for d in ["42", "+7", "00042", "precious"] {
            std::fs::create_dir_all(gens.join(d)).unwrap();
            std::fs::write(gens.join(d).join("photo"), d).unwrap();
        }
        for i in 1..=6 {
            publish(t.path(), &format!("gen {i}"));
        }
        for d in ["42", "+7", "00042", "precious"] {
            assert_eq!(
                std::fs::read_to_string(gens.join(d).join("photo")).unwrap(),
                d,
                "{d} was removed"
            );
        }
        let kept: Vec<u32> = generations(t.path()).unwrap().iter().map(|g| g.0).collect();
        assert_eq!(kept, vec![3, 4, 5, 6]);
    }

    #[test]
    fn the_last_generation_number_is_an_error_not_a_wrap() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join(GENERATIONS).join(u32::MAX.to_string())).unwrap();
        let l = lock(t.path()).unwrap();
        let s = begin(&l).unwrap();
        let e = commit(&l, s).err().unwrap().to_string();
        assert!(e.contains("no generation number after it"), "{e}");
    }

    #[test]
    fn a_directory_holding_other_files_is_refused_and_left_alone() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("notes.txt"), "mine").unwrap();
        let e = lock(t.path()).err().unwrap().to_string();
        assert!(e.contains("not an output directory of `dist`"), "{e}");
        assert!(e.contains("notes.txt"), "{e}");
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["notes.txt"], "nothing was added");
    }

    #[test]
    fn a_symlinked_lock_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let target = t.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, out.join(".lock")).unwrap();
        let e = lock(&out).err().unwrap().to_string();
        assert!(e.contains("is not a regular file"), "{e}");
        assert!(!target.exists(), "nothing created through the link");
    }

    #[test]
    fn a_real_current_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("current")).unwrap();
        let e = lock(t.path()).err().unwrap().to_string();
        assert!(e.contains("is not a symlink"), "{e}");
    }

    #[test]
    fn recorded_inputs_round_trip_and_any_commit_forgets_them() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        let g = publish(out, "one");
        let f = "0123456789abcdef".repeat(4);
        assert_eq!(recorded_inputs(out), Ok(None));
        assert!(!has_recorded_inputs(out));
        let l = lock(out).unwrap();
        record_inputs(&l, &g, &f).unwrap();
        drop(l);
        let path = out.join(INPUTS_FILE);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("generation 0001\nfingerprint {f}\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o644);
        assert!(!out.join(INPUTS_NEW).exists());
        assert!(has_recorded_inputs(out));
        assert_eq!(recorded_inputs(out), Ok(Some(("0001".into(), f.clone()))));
        assert_eq!(current_generation(out).as_deref(), Some("0001"));
        assert_eq!(generation_dir(out, "0001"), g);
        // The state file is one of our own entries: the directory is still accepted.
        drop(lock(out).unwrap());
        // Whatever publishes next (here not `dist`) removes the record before the switch.
        publish(out, "two");
        assert_eq!(recorded_inputs(out), Ok(None));
        assert_eq!(current_generation(out).as_deref(), Some("0002"));
        let l = lock(out).unwrap();
        assert!(record_inputs(&l, &out.join("elsewhere"), &f).is_err());
        assert!(record_inputs(&l, &g, "not a sha256").is_err());
        drop(l);
        for bad in [
            String::new(),
            "garbage\n".into(),
            "generation 0001\n".into(),
            format!("generation 1\nfingerprint {f}\n"),
            format!("generation 0001\nfingerprint {}\n", f.to_uppercase()),
            format!("generation 0001\nfingerprint {f}\nmore\n"),
            format!("generation 0001\nfingerprint {f}"),
            format!("fingerprint {f}\ngeneration 0001\n"),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let e = recorded_inputs(out).expect_err(&bad);
            assert!(e.contains("malformed"), "{e}");
        }
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(recorded_inputs(out)
            .unwrap_err()
            .contains("not a small regular file"));
    }

    /// A named file whose signed listing is `signed` (sha256 hex).
    fn named(rel: &str, digest: NamedDigest, signed: &str) -> Named {
        Named {
            rel: rel.into(),
            digest,
            signed_sha256: signed.to_string(),
        }
    }

    #[test]
    fn carry_over_copies_missing_named_files_only() {
        let t = tempfile::tempdir().unwrap();
        let prev = t.path().join("prev");
        let new = t.path().join("new");
        std::fs::create_dir_all(prev.join("r")).unwrap();
        std::fs::create_dir_all(new.join("r")).unwrap();
        std::fs::write(prev.join("r/a"), "old a").unwrap();
        std::fs::write(prev.join("r/b"), "old b").unwrap();
        std::fs::write(prev.join("r/unnamed"), "x").unwrap();
        std::fs::write(new.join("r/b"), "new b").unwrap();
        let sha = |s: &str| crate::digest::sha256_hex(s.as_bytes());
        let list = |_: &Path| {
            [("r/a", "old a"), ("r/b", "old b"), ("r/gone", "")]
                .map(|(r, c)| named(r, NamedDigest::Sha256(sha(c)), &sha(c)))
                .to_vec()
        };
        let n = carry_over(std::slice::from_ref(&prev), &new, list).unwrap();
        assert_eq!(n, 1);
        assert_eq!(std::fs::read_to_string(new.join("r/a")).unwrap(), "old a");
        assert_eq!(std::fs::read_to_string(new.join("r/b")).unwrap(), "new b");
        assert!(!new.join("r/unnamed").exists());
        // A copy, not the older generation's inode.
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            std::fs::metadata(new.join("r/a")).unwrap().ino(),
            std::fs::metadata(prev.join("r/a")).unwrap().ino()
        );
        let escape = |_: &Path| vec![named("../x", NamedDigest::Sha256(sha("")), &sha(""))];
        assert!(carry_over(std::slice::from_ref(&prev), &new, escape).is_err());
    }

    #[test]
    fn carry_over_leaves_behind_what_is_not_signed_or_not_named() {
        use sha2::Digest;
        let t = tempfile::tempdir().unwrap();
        let prev = t.path().join("prev");
        let new = t.path().join("new");
        std::fs::create_dir_all(prev.join("r")).unwrap();
        std::fs::create_dir_all(&new).unwrap();
        for f in ["good", "good512", "wrongalgo", "unsigned", "upper"] {
            std::fs::write(prev.join("r").join(f), "good").unwrap();
        }
        std::fs::write(prev.join("r/tampered"), "tampered").unwrap();
        std::os::unix::fs::symlink("good", prev.join("r/link")).unwrap();
        std::fs::create_dir(prev.join("r/dir")).unwrap();
        let good = crate::digest::sha256_hex(b"good");
        let good512 = hex::encode(sha2::Sha512::digest(b"good"));
        let bad = crate::digest::sha256_hex(b"bad");
        let list = |_: &Path| {
            vec![
                named("r/good", NamedDigest::Sha256(good.clone()), &good),
                named("r/good512", NamedDigest::Sha512(good512.clone()), &good),
                // Index and listing both name "good": the bytes are not.
                named("r/tampered", NamedDigest::Sha256(good.clone()), &good),
                named("r/link", NamedDigest::Sha256(good.clone()), &good),
                named("r/dir", NamedDigest::Sha256(good.clone()), &good),
                // The right digest, under the other algorithm: not a match.
                named("r/wrongalgo", NamedDigest::Sha512(good.clone()), &good),
                // The index agrees with the bytes, the signed listing does not.
                named("r/unsigned", NamedDigest::Sha256(good.clone()), &bad),
                // Hex is compared as written: lower case.
                named("r/upper", NamedDigest::Sha256(good.to_uppercase()), &good),
            ]
        };
        let n = carry_over(std::slice::from_ref(&prev), &new, list).unwrap();
        assert_eq!(n, 2);
        assert_eq!(std::fs::read(new.join("r/good")).unwrap(), b"good");
        assert_eq!(std::fs::read(new.join("r/good512")).unwrap(), b"good");
        for gone in [
            "r/tampered",
            "r/wrongalgo",
            "r/link",
            "r/dir",
            "r/unsigned",
            "r/upper",
        ] {
            assert!(
                new.join(gone).symlink_metadata().is_err(),
                "{gone} was carried over"
            );
        }
    }
}
