//! Integration tests for xtask::unpack: real archives built in tempdirs with tar/flate2/zip.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use xtask::unpack::{extract_members, ArchiveKind, Extracted, Limits, UnpackError};

// ------------------------------------------------------------------------------------------
// archive builders

/// One tar entry. Names and link targets are written raw into the header, bypassing the tar
/// crate's path checks, so hostile archives can be made.
enum T<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
    Char(&'a str),
    /// A name longer than 100 bytes, via the builder (GNU long-name entry).
    LongFile(&'a str, &'a [u8]),
    /// A pax global header with one record.
    PaxGlobal(&'a str, &'a str),
    /// A file whose data is `n` zero bytes.
    Zeros(&'a str, usize),
}

fn raw_header(name: &[u8], kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        assert!(name.len() <= old.name.len(), "use LongFile for long names");
        old.name[..name.len()].copy_from_slice(name);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h
}

fn set_link(h: &mut tar::Header, target: &str) {
    let old = h.as_old_mut();
    old.linkname[..target.len()].copy_from_slice(target.as_bytes());
}

fn tar_gz(dir: &Path, file: &str, entries: &[T]) -> PathBuf {
    let path = dir.join(file);
    let gz = GzEncoder::new(File::create(&path).unwrap(), Compression::default());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        match e {
            T::File(name, data, mode) => {
                let mut h = raw_header(
                    name.as_bytes(),
                    tar::EntryType::Regular,
                    data.len() as u64,
                    *mode,
                );
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            T::Zeros(name, n) => {
                let mut h = raw_header(name.as_bytes(), tar::EntryType::Regular, *n as u64, 0o644);
                h.set_cksum();
                b.append(&h, std::io::repeat(0).take_n(*n)).unwrap();
            }
            T::Dir(name) => {
                let mut h = raw_header(name.as_bytes(), tar::EntryType::Directory, 0, 0o755);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            T::Symlink(name, target) | T::Hardlink(name, target) => {
                let kind = if matches!(e, T::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = raw_header(name.as_bytes(), kind, 0, 0o777);
                set_link(&mut h, target);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            T::Fifo(name) | T::Char(name) => {
                let kind = if matches!(e, T::Fifo(..)) {
                    tar::EntryType::Fifo
                } else {
                    tar::EntryType::Char
                };
                let mut h = raw_header(name.as_bytes(), kind, 0, 0o644);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            T::LongFile(name, data) => {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o755);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, name, *data).unwrap();
            }
            T::PaxGlobal(key, value) => {
                let body = format!(" {key}={value}\n");
                // the length prefix counts itself
                let mut len = body.len() + 1;
                while format!("{len}").len() + body.len() != len {
                    len += 1;
                }
                let rec = format!("{len}{body}");
                let mut h = raw_header(
                    b"pax_global_header",
                    tar::EntryType::XGlobalHeader,
                    rec.len() as u64,
                    0o644,
                );
                h.set_cksum();
                b.append(&h, rec.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap();
    path
}

trait TakeN: std::io::Read + Sized {
    fn take_n(self, n: usize) -> std::io::Take<Self> {
        self.take(n as u64)
    }
}
impl<R: std::io::Read> TakeN for R {}

enum Z<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Zeros(&'a str, usize),
}

fn zip_file(dir: &Path, file: &str, entries: &[Z]) -> PathBuf {
    let path = dir.join(file);
    let mut w = zip::ZipWriter::new(File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for e in entries {
        match e {
            Z::File(name, data, mode) => {
                w.start_file(*name, opts.unix_permissions(*mode)).unwrap();
                w.write_all(data).unwrap();
            }
            Z::Zeros(name, n) => {
                w.start_file(*name, opts.unix_permissions(0o644)).unwrap();
                w.write_all(&vec![0u8; *n]).unwrap();
            }
            Z::Dir(name) => w.add_directory(*name, opts).unwrap(),
            Z::Symlink(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
        }
    }
    w.finish().unwrap();
    path
}

/// Offset of the central directory record for `name` in zip bytes.
fn cd_record(bytes: &[u8], name: &str) -> usize {
    (0..bytes.len() - 46)
        .find(|&i| {
            bytes[i..i + 4] == *b"PK\x01\x02" && {
                let n = u16::from_le_bytes([bytes[i + 28], bytes[i + 29]]) as usize;
                bytes.get(i + 46..i + 46 + n) == Some(name.as_bytes())
            }
        })
        .unwrap_or_else(|| panic!("no central record for {name}"))
}

/// Rewrite the unix mode (external attributes, high 16 bits) of `name` in the central directory.
fn patch_zip_mode(path: &Path, name: &str, mode: u32) {
    let mut bytes = fs::read(path).unwrap();
    let i = cd_record(&bytes, name);
    bytes[i + 5] = 3; // version made by: Unix
    bytes[i + 38..i + 42].copy_from_slice(&(mode << 16).to_le_bytes());
    fs::write(path, bytes).unwrap();
}

/// Replace every occurrence of `from` by `to` (same length) in the file.
fn patch_bytes(path: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = fs::read(path).unwrap();
    let mut n = 0;
    for i in 0..=bytes.len() - from.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + to.len()].copy_from_slice(to);
            n += 1;
        }
    }
    assert!(n > 0, "pattern not found");
    fs::write(path, bytes).unwrap();
}

// ------------------------------------------------------------------------------------------
// helpers

struct Fx {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dest: PathBuf,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dest).unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o700)).unwrap();
    Fx {
        _tmp: tmp,
        src,
        dest,
    }
}

fn members(m: &[&str]) -> Vec<String> {
    m.iter().map(|s| s.to_string()).collect()
}

fn run(
    fx: &Fx,
    archive: &Path,
    m: &[&str],
    limits: &Limits,
) -> Result<Vec<Extracted>, UnpackError> {
    let kind = ArchiveKind::from_name(archive.to_str().unwrap()).unwrap();
    extract_members(archive, kind, &members(m), &fx.dest, limits)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The call failed, the message contains `needle`, and dest is empty.
fn assert_refused(r: Result<Vec<Extracted>, UnpackError>, fx: &Fx, needle: &str) -> UnpackError {
    let e = match r {
        Ok(v) => panic!("expected an error containing {needle:?}, got {v:?}"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(msg.contains(needle), "error {msg:?} lacks {needle:?}");
    assert!(
        listing(&fx.dest).is_empty(),
        "dest not empty after error: {:?}",
        listing(&fx.dest)
    );
    e
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

const BIN: &[u8] = b"\x7fELF pretend binary\n";
const DIR: &str = "node_exporter-1.8.2.linux-amd64";

fn good_tar_entries() -> Vec<T<'static>> {
    vec![
        T::Dir("node_exporter-1.8.2.linux-amd64/"),
        T::File("node_exporter-1.8.2.linux-amd64/node_exporter", BIN, 0o755),
        T::File(
            "node_exporter-1.8.2.linux-amd64/LICENSE",
            b"Apache\n",
            0o644,
        ),
    ]
}

fn bin_member() -> String {
    format!("{DIR}/node_exporter")
}

// ------------------------------------------------------------------------------------------
// happy paths

#[test]
fn tar_gz_happy_path() {
    let fx = fx();
    let mut entries = vec![T::PaxGlobal("comment", "abc123")];
    entries.extend(good_tar_entries());
    let a = tar_gz(&fx.src, "node.tar.gz", &entries);
    let m = [bin_member(), format!("./{DIR}/LICENSE")];
    let got = extract_members(&a, ArchiveKind::TarGz, &m, &fx.dest, &Limits::default()).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].member, bin_member());
    assert_eq!(got[0].path, fx.dest.join("node_exporter"));
    assert_eq!(got[0].mode, 0o755);
    assert_eq!(got[0].size, BIN.len() as u64);
    assert_eq!(got[0].sha256, sha(BIN));
    assert_eq!(fs::read(&got[0].path).unwrap(), BIN);
    assert_eq!(
        fs::metadata(&got[0].path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(got[1].path, fx.dest.join("LICENSE"));
    assert_eq!(got[1].mode, 0o644);
    assert_eq!(got[1].sha256, sha(b"Apache\n"));
    assert_eq!(listing(&fx.dest), ["LICENSE", "node_exporter"]);
}

#[test]
fn tar_gz_gnu_long_name() {
    let fx = fx();
    let long = format!("{DIR}/{}/node_exporter", "d".repeat(120));
    let a = tar_gz(&fx.src, "long.tgz", &[T::LongFile(&long, BIN)]);
    let got = run(&fx, &a, &[&long], &Limits::default()).unwrap();
    assert_eq!(got[0].sha256, sha(BIN));
    assert_eq!(got[0].mode, 0o755);
    assert_eq!(listing(&fx.dest), ["node_exporter"]);
}

#[test]
fn zip_happy_path() {
    let fx = fx();
    let a = zip_file(
        &fx.src,
        "windows.zip",
        &[
            Z::Dir("wmi/"),
            Z::File("wmi/exporter.exe", BIN, 0o755),
            Z::File("wmi/README", b"read me\n", 0o640),
            Z::Symlink("wmi/link", "README"),
        ],
    );
    let got = run(
        &fx,
        &a,
        &["wmi/exporter.exe", "wmi/README"],
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(got[0].path, fx.dest.join("exporter.exe"));
    assert_eq!(got[0].mode, 0o755);
    assert_eq!(got[0].size, BIN.len() as u64);
    assert_eq!(got[0].sha256, sha(BIN));
    assert_eq!(fs::read(&got[0].path).unwrap(), BIN);
    assert_eq!(got[1].mode, 0o640);
    assert_eq!(got[1].sha256, sha(b"read me\n"));
    assert_eq!(
        fs::metadata(&got[1].path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(listing(&fx.dest), ["README", "exporter.exe"]);
}

// ------------------------------------------------------------------------------------------
// declared members

#[test]
fn tar_missing_member_lists_entries() {
    let fx = fx();
    let a = tar_gz(&fx.src, "node.tar.gz", &good_tar_entries());
    let m = bin_member();
    let r = run(&fx, &a, &[&m, "nope/node_exporter2"], &Limits::default());
    let e = assert_refused(r, &fx, "declared member `nope/node_exporter2` not found");
    assert!(matches!(e, UnpackError::MissingMember { .. }));
    let msg = e.to_string();
    assert!(msg.contains(&format!("`{DIR}/LICENSE`")), "{msg}");
    assert!(msg.contains("node.tar.gz"), "{msg}");
}

#[test]
fn zip_missing_member() {
    let fx = fx();
    let a = zip_file(&fx.src, "w.zip", &[Z::File("a/b.exe", BIN, 0o755)]);
    let r = run(&fx, &a, &["a/b.exe", "a/c.exe"], &Limits::default());
    let e = assert_refused(
        r,
        &fx,
        "`a/c.exe` not found; entries present include: `a/b.exe`",
    );
    assert!(matches!(e, UnpackError::MissingMember { .. }));
}

#[test]
fn missing_member_lists_at_most_ten() {
    let fx = fx();
    let names: Vec<String> = (0..15).map(|i| format!("f{i:02}")).collect();
    let entries: Vec<T> = names.iter().map(|n| T::File(n, b"x", 0o644)).collect();
    let a = tar_gz(&fx.src, "many.tar.gz", &entries);
    let e = assert_refused(
        run(&fx, &a, &["zz"], &Limits::default()),
        &fx,
        "`zz` not found",
    );
    let msg = e.to_string();
    assert!(msg.contains("`f09`") && !msg.contains("`f10`"), "{msg}");
}

#[test]
fn declared_member_is_symlink() {
    let fx = fx();
    let mut entries = good_tar_entries();
    entries.push(T::Symlink(
        "node_exporter-1.8.2.linux-amd64/ne",
        "node_exporter",
    ));
    let a = tar_gz(&fx.src, "node.tar.gz", &entries);
    let m = bin_member();
    let r = run(&fx, &a, &[&m, &format!("{DIR}/ne")], &Limits::default());
    let e = assert_refused(r, &fx, "is a symlink, not a regular file");
    assert!(matches!(e, UnpackError::NotRegularFile { .. }));
}

#[test]
fn declared_member_is_directory() {
    let fx = fx();
    let a = tar_gz(&fx.src, "node.tar.gz", &good_tar_entries());
    let e = assert_refused(
        run(&fx, &a, &[DIR], &Limits::default()),
        &fx,
        "is a directory, not a regular file",
    );
    assert!(matches!(e, UnpackError::NotRegularFile { .. }));
}

#[test]
fn zip_declared_member_is_symlink() {
    let fx = fx();
    let a = zip_file(
        &fx.src,
        "w.zip",
        &[Z::File("a/b", BIN, 0o755), Z::Symlink("a/l", "b")],
    );
    let e = assert_refused(
        run(&fx, &a, &["a/b", "a/l"], &Limits::default()),
        &fx,
        "`a/l` is a symlink",
    );
    assert!(matches!(e, UnpackError::NotRegularFile { .. }));
}

#[test]
fn declared_members_with_same_basename() {
    let fx = fx();
    let a = tar_gz(&fx.src, "node.tar.gz", &good_tar_entries());
    let e = assert_refused(
        run(&fx, &a, &["a/x", "b/x"], &Limits::default()),
        &fx,
        "collides with declared member `a/x`",
    );
    assert!(matches!(e, UnpackError::BadDeclaredMember { .. }));
}

#[test]
fn existing_file_in_dest_is_left_alone() {
    let fx = fx();
    fs::write(fx.dest.join("node_exporter"), b"precious").unwrap();
    let a = tar_gz(&fx.src, "node.tar.gz", &good_tar_entries());
    let m = bin_member();
    let r = run(
        &fx,
        &a,
        &[&format!("{DIR}/LICENSE"), &m],
        &Limits::default(),
    );
    let e = r.unwrap_err();
    assert!(matches!(e, UnpackError::Write { .. }), "{e}");
    // LICENSE (written first) is gone again, the pre-existing file is untouched.
    assert_eq!(listing(&fx.dest), ["node_exporter"]);
    assert_eq!(
        fs::read(fx.dest.join("node_exporter")).unwrap(),
        b"precious"
    );
}

// ------------------------------------------------------------------------------------------
// hostile tar entries. The wanted member comes first, so these also prove cleanup.

fn tar_with_bad(fx: &Fx, bad: T) -> PathBuf {
    let mut entries = good_tar_entries();
    entries.push(bad);
    tar_gz(&fx.src, "node.tar.gz", &entries)
}

#[test]
fn tar_absolute_path() {
    let fx = fx();
    let a = tar_with_bad(&fx, T::File("/etc/cron.d/evil", b"x", 0o644));
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "entry `/etc/cron.d/evil`: absolute path",
    );
    assert!(matches!(e, UnpackError::AbsolutePath { .. }));
}

#[test]
fn tar_dotdot_path() {
    let fx = fx();
    let a = tar_with_bad(&fx, T::File("../../etc/passwd", b"root::0:0\n", 0o644));
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "node.tar.gz: entry `../../etc/passwd`: path escapes the archive root ('..' component)",
    );
    assert!(matches!(e, UnpackError::ParentComponent { .. }));
}

#[test]
fn tar_dotdot_inside_path() {
    let fx = fx();
    let a = tar_with_bad(&fx, T::Dir("node_exporter-1.8.2.linux-amd64/../../x/"));
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "'..' component",
    );
    assert!(matches!(e, UnpackError::ParentComponent { .. }));
}

#[test]
fn tar_symlink_absolute_target() {
    let fx = fx();
    let a = tar_with_bad(
        &fx,
        T::Symlink("node_exporter-1.8.2.linux-amd64/pw", "/etc/passwd"),
    );
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "symlink target `/etc/passwd` is absolute",
    );
    assert!(matches!(e, UnpackError::LinkEscapes { .. }));
}

#[test]
fn tar_symlink_relative_escape() {
    let fx = fx();
    let a = tar_with_bad(
        &fx,
        T::Symlink("node_exporter-1.8.2.linux-amd64/x", "../../x"),
    );
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "symlink target `../../x` resolves outside the archive root",
    );
    assert!(matches!(e, UnpackError::LinkEscapes { .. }));
}

#[test]
fn tar_symlink_inside_is_fine() {
    let fx = fx();
    // `../LICENSE` from inside the top directory stays in the archive.
    let a = tar_with_bad(
        &fx,
        T::Symlink("node_exporter-1.8.2.linux-amd64/sub/l", "../LICENSE"),
    );
    let got = run(&fx, &a, &[&bin_member()], &Limits::default()).unwrap();
    assert_eq!(got.len(), 1);
}

#[test]
fn tar_hardlink_outside() {
    let fx = fx();
    let a = tar_with_bad(
        &fx,
        T::Hardlink("node_exporter-1.8.2.linux-amd64/h", "../etc/shadow"),
    );
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "hardlink target `../etc/shadow` resolves outside the archive root",
    );
    assert!(matches!(e, UnpackError::LinkEscapes { .. }));
}

#[test]
fn tar_hardlink_absolute() {
    let fx = fx();
    let a = tar_with_bad(&fx, T::Hardlink("h", "/etc/shadow"));
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "hardlink target `/etc/shadow` is absolute",
    );
    assert!(matches!(e, UnpackError::LinkEscapes { .. }));
}

#[test]
fn tar_fifo() {
    let fx = fx();
    let a = tar_with_bad(&fx, T::Fifo("node_exporter-1.8.2.linux-amd64/pipe"));
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "entry `node_exporter-1.8.2.linux-amd64/pipe`: fifo entries are not allowed",
    );
    assert!(matches!(e, UnpackError::SpecialEntry { .. }));
}

#[test]
fn tar_char_device() {
    let fx = fx();
    let a = tar_with_bad(&fx, T::Char("dev/null"));
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "entry `dev/null`: character device entries are not allowed",
    );
    assert!(matches!(e, UnpackError::SpecialEntry { .. }));
}

#[test]
fn tar_duplicate_entries() {
    let fx = fx();
    // same file after normalising the `./` prefix
    let a = tar_with_bad(
        &fx,
        T::File("./node_exporter-1.8.2.linux-amd64/LICENSE", b"evil", 0o644),
    );
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "entry `./node_exporter-1.8.2.linux-amd64/LICENSE`: duplicate entry name",
    );
    assert!(matches!(e, UnpackError::Duplicate { .. }));
}

#[test]
fn tar_duplicate_directory_trailing_slash() {
    let fx = fx();
    let a = tar_with_bad(&fx, T::Dir("node_exporter-1.8.2.linux-amd64"));
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "duplicate entry name",
    );
    assert!(matches!(e, UnpackError::Duplicate { .. }));
}

#[test]
fn tar_non_utf8_name() {
    let fx = fx();
    // invalid UTF-8 in the raw header name
    let a = {
        let path = fx.src.join("raw.tar.gz");
        let gz = GzEncoder::new(File::create(&path).unwrap(), Compression::default());
        let mut b = tar::Builder::new(gz);
        for (name, data) in [
            (bin_member().into_bytes(), BIN.to_vec()),
            (b"bad-\xff\xfe".to_vec(), b"x".to_vec()),
        ] {
            let mut h = raw_header(&name, tar::EntryType::Regular, data.len() as u64, 0o755);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    };
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &Limits::default()),
        &fx,
        "invalid name: not valid UTF-8",
    );
    assert!(matches!(e, UnpackError::InvalidName { .. }));
}

#[test]
fn tar_too_many_entries() {
    let fx = fx();
    let a = tar_gz(&fx.src, "node.tar.gz", &good_tar_entries());
    let limits = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    let e = assert_refused(
        run(&fx, &a, &[&bin_member()], &limits),
        &fx,
        "more than 2 entries",
    );
    assert!(matches!(e, UnpackError::TooManyEntries { .. }));
    // and exactly at the limit is fine
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    run(&fx, &a, &[&bin_member()], &limits).unwrap();
}

// ------------------------------------------------------------------------------------------
// size limits / bombs

const MIB: u64 = 1 << 20;

#[test]
fn tar_gzip_bomb_member() {
    let fx = fx();
    let a = tar_gz(
        &fx.src,
        "bomb.tar.gz",
        &[
            T::File("ok", b"fine", 0o644),
            T::Zeros("zeros", 2 * MIB as usize),
        ],
    );
    assert!(
        fs::metadata(&a).unwrap().len() < 64 * 1024,
        "should compress well"
    );
    let limits = Limits {
        max_member_size: MIB,
        ..Limits::default()
    };
    // the big entry is not even wanted: every entry is checked
    let e = assert_refused(
        run(&fx, &a, &["ok"], &limits),
        &fx,
        "entry `zeros`: decompressed size exceeds the per-member limit of 1048576 bytes",
    );
    assert!(matches!(e, UnpackError::MemberTooLarge { .. }));
    // a wanted big member fails the same way
    let e = assert_refused(run(&fx, &a, &["zeros"], &limits), &fx, "per-member limit");
    assert!(matches!(e, UnpackError::MemberTooLarge { .. }));
}

#[test]
fn tar_gzip_bomb_total_stops_streaming() {
    let fx = fx();
    let a = tar_gz(
        &fx.src,
        "bomb.tar.gz",
        &[
            T::File("ok", b"fine", 0o644),
            T::Zeros("z1", MIB as usize),
            T::Zeros("z2", MIB as usize),
            T::Zeros("z3", MIB as usize),
        ],
    );
    let limits = Limits {
        max_member_size: 2 * MIB,
        max_total_size: 2 * MIB + 10_000,
        ..Limits::default()
    };
    let e = assert_refused(
        run(&fx, &a, &["ok"], &limits),
        &fx,
        "exceeds the total limit of",
    );
    assert!(matches!(e, UnpackError::TotalTooLarge { .. }));
    assert!(e.to_string().contains("`z3`"), "{e}");
    // with a roomier total the same archive is fine
    let limits = Limits {
        max_total_size: 4 * MIB,
        ..limits
    };
    run(&fx, &a, &["ok"], &limits).unwrap();
}

#[test]
fn zip_bomb_with_lying_header() {
    let fx = fx();
    let a = zip_file(
        &fx.src,
        "bomb.zip",
        &[
            Z::File("ok", b"fine", 0o644),
            Z::Zeros("zeros", 2 * MIB as usize),
        ],
    );
    // claim 100 bytes uncompressed in both the central directory and the local header
    let mut bytes = fs::read(&a).unwrap();
    let i = cd_record(&bytes, "zeros");
    bytes[i + 24..i + 28].copy_from_slice(&100u32.to_le_bytes());
    let lh = u32::from_le_bytes(bytes[i + 42..i + 46].try_into().unwrap()) as usize;
    assert_eq!(&bytes[lh..lh + 4], b"PK\x03\x04");
    if bytes[lh + 22..lh + 26] != [0, 0, 0, 0] {
        bytes[lh + 22..lh + 26].copy_from_slice(&100u32.to_le_bytes());
    }
    fs::write(&a, bytes).unwrap();
    let limits = Limits {
        max_member_size: MIB,
        ..Limits::default()
    };
    let e = assert_refused(
        run(&fx, &a, &["ok", "zeros"], &limits),
        &fx,
        "entry `zeros`: decompressed size exceeds the per-member limit",
    );
    assert!(matches!(e, UnpackError::MemberTooLarge { .. }));
}

#[test]
fn zip_total_limit() {
    let fx = fx();
    let a = zip_file(
        &fx.src,
        "big.zip",
        &[
            Z::File("ok", b"fine", 0o644),
            Z::Zeros("z1", MIB as usize),
            Z::Zeros("z2", MIB as usize),
        ],
    );
    let limits = Limits {
        max_total_size: MIB + 100,
        ..Limits::default()
    };
    let e = assert_refused(
        run(&fx, &a, &["ok", "z1"], &limits),
        &fx,
        "entry `z2`: decompressed archive exceeds the total limit",
    );
    assert!(matches!(e, UnpackError::TotalTooLarge { .. }));
}

// ------------------------------------------------------------------------------------------
// hostile zip entries

fn zip_with_bad(fx: &Fx, bad: Z) -> PathBuf {
    zip_file(
        &fx.src,
        "w.zip",
        &[Z::Dir("a/"), Z::File("a/b.exe", BIN, 0o755), bad],
    )
}

#[test]
fn zip_dotdot_name() {
    let fx = fx();
    let a = zip_with_bad(&fx, Z::File("../evil.sh", b"rm -rf /", 0o755));
    let e = assert_refused(
        run(&fx, &a, &["a/b.exe"], &Limits::default()),
        &fx,
        "w.zip: entry `../evil.sh`: path escapes the archive root ('..' component)",
    );
    assert!(matches!(e, UnpackError::ParentComponent { .. }));
}

#[test]
fn zip_absolute_name() {
    let fx = fx();
    let a = zip_with_bad(&fx, Z::File("/tmp/evil", b"x", 0o644));
    let e = assert_refused(
        run(&fx, &a, &["a/b.exe"], &Limits::default()),
        &fx,
        "entry `/tmp/evil`: absolute path",
    );
    assert!(matches!(e, UnpackError::AbsolutePath { .. }));
}

#[test]
fn zip_symlink_outside() {
    let fx = fx();
    let a = zip_with_bad(&fx, Z::Symlink("a/pw", "/etc/passwd"));
    let e = assert_refused(
        run(&fx, &a, &["a/b.exe"], &Limits::default()),
        &fx,
        "entry `a/pw`: symlink target `/etc/passwd` is absolute",
    );
    assert!(matches!(e, UnpackError::LinkEscapes { .. }));

    let fx = self::fx();
    let a = zip_with_bad(&fx, Z::Symlink("a/x", "../../x"));
    let e = assert_refused(
        run(&fx, &a, &["a/b.exe"], &Limits::default()),
        &fx,
        "symlink target `../../x` resolves outside the archive root",
    );
    assert!(matches!(e, UnpackError::LinkEscapes { .. }));
}

#[test]
fn zip_fifo_and_char_device() {
    for (mode, what) in [(0o010644, "fifo"), (0o020644, "character device")] {
        let fx = fx();
        let a = zip_with_bad(&fx, Z::File("a/dev", b"", 0o644));
        patch_zip_mode(&a, "a/dev", mode);
        let e = assert_refused(
            run(&fx, &a, &["a/b.exe"], &Limits::default()),
            &fx,
            &format!("entry `a/dev`: {what} entries are not allowed"),
        );
        assert!(matches!(e, UnpackError::SpecialEntry { .. }));
    }
}

#[test]
fn zip_duplicate_after_normalising() {
    let fx = fx();
    let a = zip_with_bad(&fx, Z::File("./a/b.exe", b"evil", 0o755));
    let e = assert_refused(
        run(&fx, &a, &["a/b.exe"], &Limits::default()),
        &fx,
        "entry `./a/b.exe`: duplicate entry name",
    );
    assert!(matches!(e, UnpackError::Duplicate { .. }));
}

#[test]
fn zip_exact_duplicate() {
    // The zip writer refuses exact duplicates, so write a different name and patch it.
    let fx = fx();
    let a = zip_with_bad(&fx, Z::File("a/X.exe", b"evil", 0o755));
    patch_bytes(&a, b"a/X.exe", b"a/b.exe");
    let e = assert_refused(
        run(&fx, &a, &["a/b.exe"], &Limits::default()),
        &fx,
        "entry `a/b.exe`: duplicate entry name",
    );
    assert!(matches!(e, UnpackError::Duplicate { .. }));
}

#[test]
fn zip_too_many_entries() {
    let fx = fx();
    let a = zip_with_bad(&fx, Z::File("a/c", b"c", 0o644));
    let limits = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    let e = assert_refused(
        run(&fx, &a, &["a/b.exe"], &limits),
        &fx,
        "more than 2 entries",
    );
    assert!(matches!(e, UnpackError::TooManyEntries { .. }));
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    run(&fx, &a, &["a/b.exe"], &limits).unwrap();
}

#[test]
fn not_an_archive() {
    let fx = fx();
    let a = fx.src.join("junk.tar.gz");
    fs::write(&a, b"this is not gzip").unwrap();
    let e = assert_refused(run(&fx, &a, &["x"], &Limits::default()), &fx, "junk.tar.gz");
    assert!(matches!(e, UnpackError::Malformed { .. }), "{e}");
    let a = fx.src.join("junk.zip");
    fs::write(&a, b"this is not a zip").unwrap();
    let e = assert_refused(run(&fx, &a, &["x"], &Limits::default()), &fx, "junk.zip");
    assert!(matches!(e, UnpackError::Malformed { .. }), "{e}");
}
