//! Parallel, deterministic gzip (the technique of pigz, written here): the input is cut into
//! fixed 128 KiB chunks, each compressed on its own as raw deflate primed with the previous
//! chunk's last 32 KiB (deflate's whole window, so matches across the cut are still found) and
//! ended with a sync flush (an empty stored block: the next chunk starts on a byte boundary);
//! the last chunk ends the stream. The chunks are one valid deflate stream in one gzip member
//! (header: no name, mtime 0, Unix; trailer: CRC-32 and size of the whole input).
//!
//! The chunk boundaries depend on the input alone, and each chunk's bytes on its own input and
//! dictionary, so the output is the same for any number of threads (rayon's pool compresses a
//! batch of chunks at a time). Memory: one batch of input and output (~2 MiB).
//! The output is a little larger than single-stream `gzip -9` (one sync marker per chunk and
//! no matches reaching across more than 32 KiB before a cut: about 0.1-0.3%).
//!
//! The raw-deflate chunk compressor ([`deflate_chunk`]) and the gzip member framing
//! ([`gzip_header`], [`gzip_trailer`], [`crc32`]) are shared with `apt_repo`'s content-defined
//! chunks (`Packages.gz`, rpm-md XML), which keep their own chunking.

use std::io::{self, Write};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use rayon::prelude::*;

/// Input bytes per independently compressed chunk.
const CHUNK: usize = 128 << 10;
/// Chunks compressed per batch (bounds memory; enough to keep a few cores busy).
const BATCH: usize = 8;
/// deflate's window: the dictionary a chunk is primed with.
const WINDOW: usize = 32 << 10;

pub struct ParGzEncoder<W: Write> {
    out: Option<W>,
    level: u32,
    buf: Vec<u8>,
    /// The last WINDOW bytes before `buf` (the dictionary of `buf`'s first chunk).
    tail: Vec<u8>,
    crc: Crc,
    header_written: bool,
}

impl<W: Write> ParGzEncoder<W> {
    pub fn new(out: W, level: u32) -> ParGzEncoder<W> {
        ParGzEncoder {
            out: Some(out),
            level: level.min(9),
            buf: Vec::with_capacity(CHUNK * BATCH),
            tail: Vec::new(),
            crc: Crc::new(),
            header_written: false,
        }
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            let h = gzip_header(self.level, OS_UNIX);
            self.out()?.write_all(&h)?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Compress the whole chunks of `buf` (and the rest too when `last`).
    fn flush_chunks(&mut self, last: bool) -> io::Result<()> {
        self.header()?;
        let n = if last {
            self.buf.len()
        } else {
            self.buf.len() / CHUNK * CHUNK
        };
        if n == 0 && !last {
            return Ok(());
        }
        let data = &self.buf[..n];
        let mut starts: Vec<usize> = (0..n).step_by(CHUNK).collect();
        if starts.is_empty() {
            starts.push(0); // an empty input still needs the final (empty) block
        }
        let level = self.level;
        let tail = &self.tail;
        let count = starts.len();
        let parts: Vec<io::Result<Vec<u8>>> = starts
            .par_iter()
            .enumerate()
            .map(|(i, &s)| {
                let e = (s + CHUNK).min(n);
                let dict: &[u8] = if s == 0 {
                    tail
                } else {
                    &data[s.saturating_sub(WINDOW)..s]
                };
                deflate_chunk(level, dict, &data[s..e], last && i + 1 == count)
            })
            .collect();
        let out = self.out.as_mut().expect("checked by header()");
        for p in parts {
            out.write_all(&p?)?;
        }
        self.crc.update(data);
        let keep_from = n.saturating_sub(WINDOW);
        let mut tail = if n >= WINDOW {
            Vec::new()
        } else {
            let t = &self.tail;
            t[t.len().saturating_sub(WINDOW - n)..].to_vec()
        };
        tail.extend_from_slice(&self.buf[keep_from..n]);
        self.tail = tail;
        self.buf.drain(..n);
        Ok(())
    }

    /// Ends the stream (last block, CRC-32, size) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_chunks(true)?;
        let trailer = gzip_trailer(self.crc.sum(), self.crc.amount().into());
        let mut out = self.out.take().expect("not finished twice");
        out.write_all(&trailer)?;
        Ok(out)
    }
}

/// gzip's OS byte: Unix (what package payloads say).
pub(crate) const OS_UNIX: u8 = 3;
/// gzip's OS byte: unknown (what `Packages.gz` and the rpm-md XML have always carried).
pub(crate) const OS_UNKNOWN: u8 = 0xff;

/// A gzip member header: deflate, no flags (no name), mtime 0, XFL for `level` (2: maximum
/// compression, 4: fastest, else 0), OS byte `os`.
pub(crate) fn gzip_header(level: u32, os: u8) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, os]
}

/// A gzip member trailer: CRC-32 and size (mod 2^32) of the whole uncompressed input.
pub(crate) fn gzip_trailer(crc: u32, size: u64) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.to_le_bytes());
    t[4..].copy_from_slice(&(size as u32).to_le_bytes());
    t
}

/// CRC-32 (gzip's, also xz's header and index check) of `parts` in order.
pub(crate) fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = Crc::new();
    for p in parts {
        c.update(p);
    }
    c.sum()
}

/// One chunk as raw deflate at `level`, primed with `dict` (may be empty); ends with a sync
/// flush (an empty stored block: byte-aligned, not final), or with the final block when
/// `last`, so chunks concatenate into one deflate stream. Shared by this module's fixed-size
/// chunks and `apt_repo`'s content-defined chunks of `Packages.gz` and the rpm-md XML: each
/// caller keeps its own chunking policy.
pub(crate) fn deflate_chunk(
    level: u32,
    dict: &[u8],
    input: &[u8],
    last: bool,
) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(64 << 10);
        }
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = c.total_in() as usize == input.len();
        let room_left = out.capacity() > out.len();
        match status {
            Status::StreamEnd => break,
            _ if !last && done_input && room_left => break,
            _ => {}
        }
    }
    Ok(out)
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.out()?;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK * BATCH {
            self.flush_chunks(false)?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out()?.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    b'a' + (x % 7) as u8
                } else {
                    b"observability "[i % 14]
                }
            })
            .collect()
    }

    fn gz(input: &[u8], threads: usize, write_size: usize) -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut e = ParGzEncoder::new(Vec::new(), 9);
            for part in input.chunks(write_size.max(1)) {
                e.write_all(part).unwrap();
            }
            e.finish().unwrap()
        })
    }

    /// The output bytes are pinned (sha256, from before the deflate/gzip framing was shared
    /// with `apt_repo`'s chunked index compression).
    #[test]
    fn output_bytes_are_pinned() {
        let input = data(3 * CHUNK * BATCH + 12345);
        let got: Vec<String> = [(9, &input[..]), (6, &input[..]), (9, &b""[..])]
            .iter()
            .map(|&(level, input)| {
                let mut e = ParGzEncoder::new(Vec::new(), level);
                e.write_all(input).unwrap();
                crate::digest::sha256_hex(&e.finish().unwrap())
            })
            .collect();
        let want = [
            "29c108f9c544fb5088bff4da50aaacf59933219285f830609de6f8be7fc14a90",
            "783f5394070eaa3cc8da441cc36bd734f829787a279a6f585630987840929043",
            "f61f27bd17de546264aa58f40f3aafaac7021e0ef69c17f6b1b4cd7664a037ec",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn round_trips_and_does_not_depend_on_threads_or_writes() {
        for n in [0, 1, 1000, CHUNK, CHUNK + 1, 3 * CHUNK * BATCH + 12345] {
            let input = data(n);
            let one = gz(&input, 1, 1 << 20);
            assert_eq!(one, gz(&input, 4, 1 << 20), "{n} bytes, 4 threads");
            assert_eq!(one, gz(&input, 2, 4097), "{n} bytes, small writes");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == input, "{n} bytes: round trip");
            // gzip(1) reads it too: one member, CRC and size right.
            if n == 3 * CHUNK * BATCH + 12345 {
                let dir = tempfile::tempdir().unwrap();
                let p = dir.path().join("x.gz");
                std::fs::write(&p, &one).unwrap();
                let st = std::process::Command::new("gzip")
                    .arg("-t")
                    .arg(&p)
                    .status()
                    .unwrap();
                assert!(st.success(), "gzip -t");
                // Within 1% of single-stream gzip -9.
                let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::best());
                single.write_all(&input).unwrap();
                let single = single.finish().unwrap();
                assert!(
                    (one.len() as f64) < single.len() as f64 * 1.01,
                    "{} vs {}",
                    one.len(),
                    single.len()
                );
            }
        }
    }
}
