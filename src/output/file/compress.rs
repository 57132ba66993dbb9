//! Compression of rotated segments on a thread of its own, so the output thread keeps writing
//! while a big segment compresses (and neither runs on the async runtime).
//!
//! Each segment is compressed to `NAME.gz.tmp`, synced, renamed to `NAME.gz`, and only then is
//! the plain `NAME` removed: at every instant one complete copy exists under a final name. The
//! archive keeps the segment's mode, owner and modification time (so `max_age` counts from its
//! last line, as gzip(1) does).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use super::fs::{sync_dir, with_suffix};
use crate::metrics::{self, LogLimiter, OutputMetrics};

/// How rotated segments are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Kept plain.
    None,
    /// gzip (`.gz`), level 6 like gzip(1) and logrotate.
    Gzip,
    /// zstd (`.zst`), level 3, with a checksum.
    Zstd,
}

impl Compression {
    /// Parses a config name.
    pub fn from_name(name: &str) -> Option<Compression> {
        Some(match name {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }

    /// The file name suffix of a compressed segment (empty for none).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

/// Suffix of a compressed segment still being written.
pub const TEMP_SUFFIX: &str = ".tmp";

/// How often compression failures may be logged.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// gzip level: gzip(1)'s and logrotate's default.
const GZIP_LEVEL: u32 = 6;
/// zstd level: zstd(1)'s default.
const ZSTD_LEVEL: i32 = 3;

/// Segments queued or being compressed, by plain path; the output thread waits on it before
/// renaming a segment that may still be read.
#[derive(Default)]
struct Busy {
    paths: Mutex<HashSet<PathBuf>>,
    done: Condvar,
}

/// The compression thread of one output.
pub struct Compressor {
    compression: Compression,
    tx: Option<mpsc::Sender<PathBuf>>,
    busy: Arc<Busy>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Compressor {
    /// Starts the thread.
    pub fn start(
        name: Arc<str>,
        compression: Compression,
        metrics: Arc<OutputMetrics>,
    ) -> io::Result<Compressor> {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let busy = Arc::new(Busy::default());
        let thread_busy = busy.clone();
        let thread = std::thread::Builder::new()
            .name(format!("zip-{name}"))
            .spawn(move || {
                let mut error_log = LogLimiter::new(ERROR_LOG_INTERVAL);
                for src in rx {
                    if let Err(e) = compress_file(&src, compression) {
                        metrics::add(&metrics.compress_errors, 1);
                        if let Some(suppressed) = error_log.allow() {
                            tracing::warn!(output = %name, path = %src.display(), error = %e,
                                suppressed, "cannot compress segment; it stays plain");
                        }
                    }
                    let mut paths = thread_busy.paths.lock().unwrap_or_else(|p| p.into_inner());
                    paths.remove(&src);
                    thread_busy.done.notify_all();
                }
            })?;
        Ok(Compressor {
            compression,
            tx: Some(tx),
            busy,
            thread: Some(thread),
        })
    }

    /// The compression applied.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Queues the plain segment `src` for compression.
    pub fn submit(&self, src: PathBuf) {
        let Some(tx) = &self.tx else { return };
        self.lock().insert(src.clone());
        if let Err(mpsc::SendError(src)) = tx.send(src) {
            self.lock().remove(&src);
        }
    }

    /// True while `src` is queued or being compressed.
    pub fn is_busy(&self, src: &Path) -> bool {
        self.lock().contains(src)
    }

    /// Waits until `src` is neither queued nor being compressed.
    pub fn wait(&self, src: &Path) {
        let mut paths = self.lock();
        while paths.contains(src) {
            paths = self
                .busy
                .done
                .wait(paths)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Compresses everything queued, then stops the thread.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.busy.paths.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Compressor {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Compresses `src` into `src.EXT` through a temporary file, then removes `src`.
fn compress_file(src: &Path, compression: Compression) -> io::Result<()> {
    let dst = with_suffix(src, compression.extension());
    let tmp = with_suffix(&dst, TEMP_SUFFIX);
    let result = (|| {
        let input = File::open(src)?;
        let meta = input.metadata()?;
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(meta.mode() & 0o7777)
            .open(&tmp)?;
        // Same mode and owner as the segment: an archive must not be readable by more people.
        out.set_permissions(meta.permissions())?;
        let _ = std::os::unix::fs::fchown(&out, Some(meta.uid()), Some(meta.gid()));
        let mut reader = BufReader::with_capacity(256 * 1024, input);
        let out = match compression {
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    BufWriter::with_capacity(256 * 1024, out),
                    flate2::Compression::new(GZIP_LEVEL),
                );
                io::copy(&mut reader, &mut enc)?;
                enc.finish()?.into_inner().map_err(|e| e.into_error())?
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::Encoder::new(
                    BufWriter::with_capacity(256 * 1024, out),
                    ZSTD_LEVEL,
                )?;
                enc.include_checksum(true)?;
                io::copy(&mut reader, &mut enc)?;
                let mut w = enc.finish()?;
                w.flush()?;
                w.into_inner().map_err(|e| e.into_error())?
            }
            Compression::None => return Ok(()),
        };
        out.set_modified(meta.modified()?)?;
        out.sync_all()?;
        std::fs::rename(&tmp, &dst)?;
        if let Some(dir) = dst.parent() {
            sync_dir(dir)?;
        }
        std::fs::remove_file(src)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn segments_compress_and_decompress_to_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        for c in [Compression::Gzip, Compression::Zstd] {
            let src = dir.path().join(format!("seg{}", c.extension()));
            std::fs::write(&src, &data).unwrap();
            let mut z = Compressor::start("t".into(), c, Arc::default()).unwrap();
            z.submit(src.clone());
            z.wait(&src);
            z.finish();
            assert!(!src.exists());
            let packed = std::fs::read(with_suffix(&src, c.extension())).unwrap();
            assert!(packed.len() < data.len() / 3);
            let mut out = Vec::new();
            match c {
                Compression::Gzip => {
                    flate2::read::MultiGzDecoder::new(&packed[..])
                        .read_to_end(&mut out)
                        .unwrap();
                }
                _ => {
                    out = zstd::decode_all(&packed[..]).unwrap();
                }
            }
            assert_eq!(out, data);
        }
    }
}
