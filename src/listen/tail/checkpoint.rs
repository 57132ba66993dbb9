//! The positions file of a tail listener, `STATE_DIR/tail/NAME.positions`: for each file being
//! followed, its device and inode, the offset up to which its lines reached the outputs' queues,
//! and a fingerprint of its first bytes (so an inode reused by another file is not taken for
//! it). Written whole to a temporary file, synced and renamed over the old one: a crash leaves
//! the old positions or the new ones, never a mix.
//!
//! Format, one header line and one line per file:
//!
//! ```text
//! sluice-tail-positions 1
//! DEV INODE OFFSET FINGERPRINT_LEN FINGERPRINT_CRC32 PATH
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

/// The first line of a positions file.
const HEADER: &str = "sluice-tail-positions 1";
/// Bytes at the start of a file its fingerprint covers (fewer while the file is shorter).
pub const FINGERPRINT_BYTES: u64 = 256;

/// Device and inode: what a file is followed by, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// The CRC-32 of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Bytes covered (at most [`FINGERPRINT_BYTES`]).
    pub len: u64,
    /// Their CRC-32.
    pub crc: u32,
}

impl Fingerprint {
    /// The fingerprint of `head`, a file's first bytes.
    pub fn of(head: &[u8]) -> Fingerprint {
        Fingerprint {
            len: head.len() as u64,
            crc: crc32fast::hash(head),
        }
    }
}

/// One file's saved position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Which file.
    pub id: FileId,
    /// Offset of the first byte whose line has not reached the outputs' queues.
    pub offset: u64,
    /// Its first bytes, as they were.
    pub fingerprint: Fingerprint,
    /// Its name when saved (for people reading the file; files are found by `id`).
    pub path: PathBuf,
}

/// Why a positions file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// It could not be read at all.
    #[error("reading {path}: {source}")]
    Io {
        /// The positions file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It is not a positions file, or a line of it is damaged.
    #[error("{path}:{line}: {why}")]
    Corrupt {
        /// The positions file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Where listener `name` keeps its positions under `state_dir`.
pub fn path_for(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("tail").join(format!("{name}.positions"))
}

/// Reads a positions file: `Ok(None)` when there is none (the listener's first run).
pub fn load(path: &Path) -> Result<Option<Vec<Position>>, CheckpointError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse(&text)
        .map(Some)
        .map_err(|(line, why)| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            line,
            why,
        })
}

/// Parses a positions file's bytes; the error names the line and what is wrong with it.
pub fn parse(text: &[u8]) -> Result<Vec<Position>, (usize, String)> {
    let text = std::str::from_utf8(text).map_err(|e| (1, format!("not UTF-8: {e}")))?;
    if !text.ends_with('\n') {
        return Err((text.lines().count().max(1), "the last line is cut".into()));
    }
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err((1, format!("expected {HEADER:?}")));
    }
    let mut out = Vec::new();
    for (i, l) in lines.enumerate() {
        let n = i + 2;
        let mut f = l.splitn(6, ' ');
        let mut num = |what: &str| -> Result<u64, (usize, String)> {
            f.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| (n, format!("expected {what}")))
        };
        let dev = num("a device number")?;
        let ino = num("an inode number")?;
        let offset = num("an offset")?;
        let len = num("a fingerprint length")?;
        let crc = f
            .next()
            .and_then(|v| u32::from_str_radix(v, 16).ok())
            .ok_or_else(|| (n, "expected a fingerprint".to_string()))?;
        let path = f.next().ok_or_else(|| (n, "expected a path".to_string()))?;
        if len > FINGERPRINT_BYTES {
            return Err((
                n,
                format!("fingerprint length {len} over {FINGERPRINT_BYTES}"),
            ));
        }
        out.push(Position {
            id: FileId { dev, ino },
            offset,
            fingerprint: Fingerprint { len, crc },
            path: PathBuf::from(path),
        });
    }
    Ok(out)
}

/// The bytes of a positions file.
pub fn render(positions: &[Position]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + positions.len() * 96);
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
    for p in positions {
        // A name is for reading only; a line end in it would break the line.
        let name = p.path.to_string_lossy().replace(['\n', '\r'], "?");
        let _ = writeln!(
            out,
            "{} {} {} {} {:08x} {name}",
            p.id.dev, p.id.ino, p.offset, p.fingerprint.len, p.fingerprint.crc
        );
    }
    out
}

/// Replaces the positions file at `path` with `positions`, durably (temporary file, fsync,
/// rename, fsync of the directory).
pub fn save(path: &Path, positions: &[Position]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("positions.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&render(positions))?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Position> {
        vec![
            Position {
                id: FileId { dev: 2049, ino: 77 },
                offset: 123_456,
                fingerprint: Fingerprint::of(b"first line\n"),
                path: PathBuf::from("/var/log/app/a b.log"),
            },
            Position {
                id: FileId { dev: 2049, ino: 78 },
                offset: 0,
                fingerprint: Fingerprint::of(b""),
                path: PathBuf::from("/var/log/app/new.log"),
            },
        ]
    }

    #[test]
    fn positions_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "nginx");
        assert!(load(&path).unwrap().is_none(), "no file: first run");
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), sample());
        save(&path, &[]).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), Vec::new());
        assert!(!path.with_extension("positions.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_line() {
        let good = render(&sample());
        let bad_number = String::from_utf8(good.clone())
            .unwrap()
            .replace("123456", "12x456");
        let cases: Vec<(Vec<u8>, usize, &str)> = vec![
            (b"garbage\n".to_vec(), 1, "expected"),
            (good[..good.len() - 3].to_vec(), 3, "cut"),
            (bad_number.into_bytes(), 2, "offset"),
            (vec![0xff, 0xfe, b'\n'], 1, "UTF-8"),
            (
                b"sluice-tail-positions 1\n1 2 3 999 0 /x\n".to_vec(),
                2,
                "fingerprint length",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.positions");
        for (bytes, line, what) in cases {
            std::fs::write(&path, &bytes).unwrap();
            match load(&path) {
                Err(CheckpointError::Corrupt { line: l, why, .. }) => {
                    assert_eq!(l, line, "{why}");
                    assert!(why.contains(what), "{why}");
                }
                other => panic!("{other:?} for {:?}", String::from_utf8_lossy(&bytes)),
            }
        }
    }
}
