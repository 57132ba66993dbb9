//! The `stdout` output: formatted lines on standard output, buffered and written in one call per
//! flush.

use std::io::Write;
use std::sync::Arc;

use crate::backoff::FAILURE_LOG_INTERVAL;
use crate::event::Event;
use crate::metrics::{self, LogLimiter, OutputMetrics};
use crate::output::Sink;
use crate::output::format::Format;

/// `kind = "stdout"`.
pub const KIND: &str = "stdout";
/// How often buffered lines are written out when the queue does not run dry.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// The settings of a `stdout` output: none beyond every output's `format` and `queue`.
#[derive(Debug, Clone, PartialEq)]
pub struct StdoutSettings;

impl crate::output::OutputKindSpec for StdoutSettings {
    const KIND: &'static str = KIND;

    /// It has no keys of its own.
    fn decode(
        _entry: &mut crate::decode::Entry<'_, '_>,
        _errs: &mut crate::decode::Errors<'_>,
    ) -> Option<StdoutSettings> {
        Some(StdoutSettings)
    }

    fn start(
        &self,
        output: &crate::output::OutputConfig,
        ctx: crate::output::OutputStart<'_>,
    ) -> anyhow::Result<crate::output::RunningOutput> {
        let sink = StdoutSink::new(output.format, ctx.metrics.clone());
        crate::output::start_sink(
            output,
            Box::new(sink),
            FLUSH_INTERVAL,
            ctx.metrics,
            ctx.predecessor,
        )
    }
}

/// Writes to the process's stdout; owned by the output thread.
pub struct StdoutSink {
    format: Format,
    buf: Vec<u8>,
    buffered_events: u64,
    metrics: Arc<OutputMetrics>,
    /// A closed stdout fails every flush: one line per interval, not one per flush.
    error_log: LogLimiter,
}

/// Write out once this much is buffered even before the batch ends.
const FLUSH_THRESHOLD_BYTES: usize = 256 * 1024;

impl StdoutSink {
    /// A sink writing `format` lines.
    pub fn new(format: Format, metrics: Arc<OutputMetrics>) -> StdoutSink {
        StdoutSink {
            format,
            buf: Vec::with_capacity(FLUSH_THRESHOLD_BYTES),
            buffered_events: 0,
            metrics,
            error_log: LogLimiter::new(FAILURE_LOG_INTERVAL),
        }
    }
}

impl Sink for StdoutSink {
    fn write_batch(&mut self, batch: &[Arc<Event>]) {
        for ev in batch {
            self.format.write_line(ev, &mut self.buf);
            self.buffered_events += 1;
            if self.buf.len() >= FLUSH_THRESHOLD_BYTES {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(&self.buf).and_then(|()| out.flush()) {
            Ok(()) => metrics::add(&self.metrics.written, self.buffered_events),
            Err(e) => {
                metrics::add(&self.metrics.write_errors, 1);
                metrics::add(&self.metrics.dropped_write_error, self.buffered_events);
                if let Some(suppressed) = self.error_log.allow() {
                    tracing::warn!(error = %e, lost = self.buffered_events, suppressed, "stdout write failed");
                }
            }
        }
        self.buf.clear();
        self.buffered_events = 0;
    }

    fn close(&mut self) {
        self.flush();
    }
}
