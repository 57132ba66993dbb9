//! The `kmsg` listener: the kernel's log buffer (/dev/kmsg), for hosts without journald. Each
//! record becomes an RFC 5424 frame ([`crate::parse::kmsg`]) and is routed like any message.
//!
//! The kernel keeps its buffer whatever readers do; a reader that falls behind loses the oldest
//! records. So this listener waits for room in `block` outputs (the buffer absorbs the wait) and
//! counts every record the kernel overwrote, from the gaps in their sequence numbers, in
//! `kernel_drops`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use tokio::io::Interest;
use tokio_util::sync::CancellationToken;

use serde::Deserialize;
use toml::Spanned;

use super::kind::{
    BoundSocket, Endpoint, ListenerDescriptors, ListenerKindSpec, StartContext, wrong_socket,
};
use super::settings::RateLimit;
use super::{Dispatcher, Pipeline, is_blank, ratelimit};
use crate::decode::{Entry, Errors, Part, choice};
use crate::metrics::{self, ListenerMetrics};
use crate::output::format::local_hostname;
use crate::parse::kmsg::{BootClock, convert, record_len};
use crate::parse::{ParseOptions, Zone};

/// `kind = "kmsg"`.
pub const KIND: &str = "kmsg";
/// Where a `kmsg` listener reads when no `path` is given.
pub const DEFAULT_KMSG_PATH: &str = "/dev/kmsg";

/// The settings of a `kmsg` listener.
#[derive(Debug, Clone, PartialEq)]
pub struct KmsgConfig {
    /// The device (or a FIFO carrying records, for tests and containers).
    pub path: PathBuf,
    /// Whether the records already in the buffer at start are read.
    pub read_existing: ReadExisting,
}

/// Which of the records already in the kernel's buffer a `kmsg` listener reads when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadExisting {
    /// All of them while the system has been up less than [`ReadExisting::BOOT_WINDOW`] (the
    /// boot messages), else none (a restart does not log the buffer again). rsyslog's imkmsg
    /// default.
    AtBoot,
    /// All of them, every start.
    Always,
    /// Only records that arrive after the start.
    Never,
}

impl ReadExisting {
    /// Uptime under which `at_boot` reads the whole buffer (rsyslog's
    /// `expectedBootCompleteSeconds`).
    pub const BOOT_WINDOW: Duration = Duration::from_secs(90);
}

#[derive(Deserialize, Default)]
struct KmsgRaw {
    path: Option<Spanned<String>>,
    read_existing: Option<Spanned<String>>,
}

impl Part for KmsgRaw {}

impl ListenerKindSpec for KmsgConfig {
    const KIND: &'static str = KIND;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<KmsgConfig> {
        let raw = entry.part::<KmsgRaw>(errs)?;
        let read_existing = choice(
            errs,
            &entry.key("read_existing"),
            &raw.read_existing,
            "value",
            &[
                ("at_boot", ReadExisting::AtBoot),
                ("always", ReadExisting::Always),
                ("never", ReadExisting::Never),
            ],
            ReadExisting::AtBoot,
        );
        Some(KmsgConfig {
            path: raw.path.as_ref().map_or_else(
                || PathBuf::from(DEFAULT_KMSG_PATH),
                |p| PathBuf::from(p.get_ref()),
            ),
            read_existing,
        })
    }

    fn decode_endpoint(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<Endpoint> {
        KmsgConfig::decode(entry, errs).map(|k| Endpoint::Kmsg(k.path))
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Kmsg(self.path.clone())
    }

    fn descriptors(&self) -> ListenerDescriptors {
        ListenerDescriptors {
            connections: 0,
            sockets: 1,
        }
    }

    /// Opens the device, positioned as `read_existing` says.
    fn bind(&self) -> anyhow::Result<BoundSocket> {
        Ok(BoundSocket::Kmsg(open(&self.path, self.read_existing)?))
    }

    /// Not a socket: systemd never passes one for it.
    fn adopt(&self, _name: &str, socket: socket2::Socket) -> anyhow::Result<BoundSocket> {
        anyhow::bail!("systemd passed a socket ({socket:?}) for the kernel log, which is not one")
    }

    /// Shares the read position: a listener taking over goes on where this one was.
    fn take_over(&self, _name: &str, socket: &mut BoundSocket) -> anyhow::Result<()> {
        match socket {
            BoundSocket::Kmsg(_) => Ok(()),
            other => Err(wrong_socket(KIND, other)),
        }
    }

    /// `--check-config`: the device exists.
    fn check_environment(
        &self,
        key: &str,
        problems: &mut Vec<String>,
        _tls: &mut crate::tls::FileCheck,
    ) {
        if let Err(e) = std::fs::metadata(&self.path) {
            problems.push(format!("{key}.path: {}: {e}", self.path.display()));
        }
    }

    fn start(
        &self,
        socket: BoundSocket,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let BoundSocket::Kmsg(file) = socket else {
            return Err(wrong_socket(KIND, &socket));
        };
        let name = ctx.config.name.clone();
        tracing::info!(listener = %name, kind = KIND, path = %self.path.display(), "reading");
        Ok(tokio::spawn(run(
            file,
            KmsgSettings {
                name,
                path: self.path.clone(),
                max_message_size: ctx.config.limits.max_message_size,
                rate_limit: ctx.config.limits.rate_limit,
                timezone: ctx.config.limits.timezone,
            },
            ctx.pipeline,
            ctx.stop,
            ctx.hard_stop,
        )))
    }
}

/// Read buffer: the kernel refuses (EINVAL) a read smaller than the record, whose formatted
/// form is at most 8 KiB (CONSOLE_EXT_LOG_MAX); a FIFO may give several records at once.
const READ_BUF_BYTES: usize = 64 * 1024;
/// Records read per wake-up before the batch is handed on.
const RECORDS_PER_WAKE: usize = 256;

/// Opens the kernel log (before privileges are dropped: the kernel checks CAP_SYSLOG at open)
/// and positions it as `read_existing` says. A FIFO is accepted too, opened for writing as
/// well so that it never reads as ended when its writers close.
pub fn open(path: &Path, read_existing: ReadExisting) -> anyhow::Result<File> {
    let meta = std::fs::metadata(path).with_context(|| format!("kmsg {}", path.display()))?;
    let fifo = meta.file_type().is_fifo();
    if !fifo && !meta.file_type().is_char_device() {
        bail!(
            "{} is neither a character device like /dev/kmsg nor a FIFO",
            path.display()
        );
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(fifo)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| {
            format!(
                "opening {} (reading the kernel log needs root or CAP_SYSLOG)",
                path.display()
            )
        })?;
    if !fifo && !reads_existing(read_existing, uptime()) {
        (&file)
            .seek(SeekFrom::End(0))
            .with_context(|| format!("seeking to the end of {}", path.display()))?;
    }
    Ok(file)
}

/// Whether the records already in the buffer are read, given how long the system has been up.
fn reads_existing(read_existing: ReadExisting, uptime: Duration) -> bool {
    match read_existing {
        ReadExisting::Always => true,
        ReadExisting::Never => false,
        ReadExisting::AtBoot => uptime < ReadExisting::BOOT_WINDOW,
    }
}

/// Time since boot, suspend included (CLOCK_BOOTTIME).
fn uptime() -> Duration {
    crate::sys::boottime()
}

/// Settings of one kmsg listener.
#[derive(Debug, Clone)]
pub struct KmsgSettings {
    /// Listener name.
    pub name: Arc<str>,
    /// What was opened, for messages.
    pub path: PathBuf,
    /// Longer frames are cut and flagged.
    pub max_message_size: usize,
    /// One bucket for the whole listener; `None` does not limit.
    pub rate_limit: Option<RateLimit>,
    /// Unused by kernel records (they carry offsets), kept for user-space ones that do not.
    pub timezone: Zone,
}

/// Reads records until `shutdown`, then what the buffer still holds. Waits for room in `block`
/// outputs until `hard_stop`.
pub async fn run(
    file: File,
    settings: KmsgSettings,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) {
    let name = settings.name.clone();
    let fd = match crate::sys::fd::ReadyFile::new(file, Interest::READABLE) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(listener = %name, path = %settings.path.display(), error = %e, "cannot watch the kernel log; listener stops");
            return;
        }
    };
    let mut dispatcher = Dispatcher::new(pipeline, name.clone(), settings.timezone);
    let m = dispatcher.metrics().clone();
    let limiter = settings
        .rate_limit
        .map(|l| ratelimit::SourceLimiter::new(l, name.clone(), m.clone()));
    let mut reader = Reader {
        settings: &settings,
        metrics: m,
        limiter: limiter.as_ref(),
        buf: vec![0; READ_BUF_BYTES],
        pending: Vec::new(),
        frame: Vec::new(),
        last_seq: None,
        log: metrics::LogLimiter::new(Duration::from_secs(10)),
    };
    loop {
        let mut guard = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            g = fd.readable() => match g {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!(listener = %name, error = %e, "kernel log failed; listener stops");
                    return;
                }
            },
        };
        let state = reader.read(guard.get_inner(), &mut dispatcher);
        if state == ReadState::Drained {
            guard.clear_ready();
        }
        dispatcher.flush_or_cut(&hard_stop).await;
        if state == ReadState::Ended {
            tracing::warn!(listener = %name, path = %settings.path.display(), "kernel log ended; listener stops");
            return;
        }
    }
    // Shutdown: what the buffer holds now is read, not left for the next start.
    while reader.read(fd.get_ref(), &mut dispatcher) == ReadState::More {
        dispatcher.flush_or_cut(&hard_stop).await;
    }
    dispatcher.flush_or_cut(&hard_stop).await;
}

/// How a round of reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// Nothing more to read now.
    Drained,
    /// [`RECORDS_PER_WAKE`] reached: more may be waiting.
    More,
    /// End of file, or an error that would repeat forever.
    Ended,
}

struct Reader<'a> {
    settings: &'a KmsgSettings,
    metrics: Arc<ListenerMetrics>,
    limiter: Option<&'a ratelimit::SourceLimiter>,
    buf: Vec<u8>,
    /// Bytes of a record not yet whole (FIFOs only: /dev/kmsg gives whole records).
    pending: Vec<u8>,
    /// The RFC 5424 frame being built.
    frame: Vec<u8>,
    last_seq: Option<u64>,
    log: metrics::LogLimiter,
}

impl Reader<'_> {
    fn read(&mut self, mut file: &File, dispatcher: &mut Dispatcher) -> ReadState {
        let opts = ParseOptions::new(Utc::now(), self.settings.timezone);
        let clock = BootClock::now();
        for _ in 0..RECORDS_PER_WAKE {
            let n = match file.read(&mut self.buf) {
                Ok(0) => return ReadState::Ended,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return ReadState::Drained,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // The kernel overwrote records this reader had not read; the next read gives
                // the oldest one left, and the sequence gap is counted.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => {
                    metrics::add(&self.metrics.read_errors, 1);
                    tracing::error!(listener = %self.settings.name, error = %e, "reading the kernel log failed; listener stops");
                    return ReadState::Ended;
                }
            };
            metrics::add(&self.metrics.bytes, n as u64);
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(&self.buf[..n]);
            let mut start = 0;
            while let Some(len) = record_len(&pending[start..]) {
                self.record(&pending[start..start + len], &clock, &opts, dispatcher);
                start += len;
            }
            pending.drain(..start);
            self.pending = pending;
            // A FIFO writer that never ends its line: keep it, as a record, rather than grow.
            if self.pending.len() >= READ_BUF_BYTES {
                let record = std::mem::take(&mut self.pending);
                self.record(&record, &clock, &opts, dispatcher);
            }
        }
        ReadState::More
    }

    fn record(
        &mut self,
        record: &[u8],
        clock: &BootClock,
        opts: &ParseOptions,
        dispatcher: &mut Dispatcher,
    ) {
        if is_blank(record) {
            metrics::add(&self.metrics.empty_frames, 1);
            return;
        }
        if let Some(limiter) = self.limiter
            && !limiter.admit(None)
        {
            return;
        }
        let c = convert(
            record,
            clock,
            local_hostname(),
            opts,
            self.settings.max_message_size,
            &mut self.frame,
        );
        if let Some(seq) = c.seq {
            if let Some(last) = self.last_seq
                && seq > last.saturating_add(1)
            {
                let lost = seq - last - 1;
                metrics::add(&self.metrics.kernel_drops, lost);
                if let Some(suppressed) = self.log.allow() {
                    tracing::warn!(listener = %self.settings.name, lost, suppressed, "the kernel overwrote records before sluice read them");
                }
            }
            self.last_seq = Some(seq);
        }
        dispatcher.push_parsed(c.frame, c.parsed, c.truncated, None, opts.received_at());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_boot_reads_the_buffer_only_early() {
        let early = Duration::from_secs(5);
        let late = Duration::from_secs(3600);
        assert!(reads_existing(ReadExisting::AtBoot, early));
        assert!(!reads_existing(ReadExisting::AtBoot, late));
        assert!(reads_existing(ReadExisting::Always, late));
        assert!(!reads_existing(ReadExisting::Never, early));
    }

    #[test]
    fn a_regular_file_is_refused_with_a_reason() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = open(f.path(), ReadExisting::Never).unwrap_err();
        assert!(
            format!("{e:#}").contains("neither a character device"),
            "{e:#}"
        );
        let e = open(Path::new("/nonexistent/kmsg"), ReadExisting::Never).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/kmsg"), "{e:#}");
    }
}
