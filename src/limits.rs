//! Descriptor limits (issue 21). Every connection and every open file takes a descriptor; when
//! they run out, accept fails (EMFILE) and file outputs cannot open their files. At start sluice
//! raises its soft RLIMIT_NOFILE to the hard limit, the most it may take without privileges, and
//! `--check-config` warns when the configuration could need more than that.

use crate::config::Config;
use crate::exporter::METRICS_MAX_CONNECTIONS;

/// Descriptors counted on top of connections, files and sockets: the runtime's epoll and
/// wakers, stdio, disk queue segments, a segment being rotated or compressed, and slack.
pub const DESCRIPTOR_MARGIN: u64 = 64;

/// The soft and hard RLIMIT_NOFILE, `u64::MAX` standing for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// What the process may open now.
    pub soft: u64,
    /// What the soft limit may be raised to without privileges.
    pub hard: u64,
}

/// The process's RLIMIT_NOFILE.
pub fn nofile_limit() -> std::io::Result<NofileLimit> {
    let (soft, hard) = crate::sys::nofile_limit()?;
    Ok(NofileLimit { soft, hard })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit as it was. sluice never
/// uses select(2), so descriptors above 1024 are safe.
pub fn raise_nofile_limit() -> std::io::Result<NofileLimit> {
    let was = nofile_limit()?;
    if was.soft < was.hard {
        crate::sys::set_nofile_limit(was.hard, was.hard)?;
    }
    Ok(was)
}

/// The descriptors a configuration may hold at once, by what holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// `max_connections` summed over the stream listeners (tcp, tls, unix_stream).
    pub connections: u64,
    /// `max_open_files` summed over the file outputs.
    pub files: u64,
    /// The metrics endpoint's connection cap, when it is enabled.
    pub metrics: u64,
    /// Listening and datagram sockets, forward connections, and [`DESCRIPTOR_MARGIN`].
    pub other: u64,
}

impl DescriptorBudget {
    /// The budget of `config`.
    pub fn of(config: &Config) -> DescriptorBudget {
        let mut b = DescriptorBudget {
            connections: 0,
            files: 0,
            metrics: 0,
            other: DESCRIPTOR_MARGIN,
        };
        for l in &config.listeners {
            let held = l.kind.descriptors();
            b.connections += held.connections as u64;
            b.other += held.sockets as u64;
        }
        for o in &config.outputs {
            let held = o.kind.descriptors();
            b.files += held.files as u64;
            b.other += held.connections as u64;
        }
        if config.daemon.metrics_address.is_some() {
            // The listening socket and the connections it serves.
            b.metrics = METRICS_MAX_CONNECTIONS as u64 + 1;
        }
        b
    }

    /// Every descriptor counted.
    pub fn total(&self) -> u64 {
        self.connections + self.files + self.metrics + self.other
    }

    /// A warning when the budget exceeds `hard_limit`, the soft limit sluice will have once it
    /// raised it; `None` when it fits.
    pub fn warning(&self, hard_limit: u64) -> Option<String> {
        (self.total() > hard_limit).then(|| {
            format!(
                "sluice may need {} file descriptors ({} for the listeners' max_connections, {} for \
                 the file outputs' max_open_files, {} for the metrics endpoint, {} for sockets and \
                 other files), more than its limit of {hard_limit} (the RLIMIT_NOFILE hard limit): \
                 accepts and file opens would fail; raise the limit (LimitNOFILE= in the systemd \
                 unit, ulimit -Hn) or lower max_connections or max_open_files",
                self.total(),
                self.connections,
                self.files,
                self.metrics,
                self.other
            )
        })
    }
}

/// The `--check-config` and start-up warning for `config` under this process's hard limit.
pub fn descriptor_warning(config: &Config) -> Option<String> {
    let hard = nofile_limit().ok()?.hard;
    DescriptorBudget::of(config).warning(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::from_toml_str(toml, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn budget_sums_connections_files_metrics_sockets_and_the_margin() {
        let c = config(
            r#"
[daemon]
metrics_address = "127.0.0.1:0"
[listen.t]
kind = "tcp"
address = "127.0.0.1:0"
max_connections = 500
[listen.s]
kind = "unix_stream"
path = "/tmp/x.sock"
max_connections = 20
[listen.u]
kind = "udp"
address = "127.0.0.1:0"
sockets = 4
[output.f]
kind = "file"
path = "/tmp/{hostname}.log"
max_open_files = 300
[output.g]
kind = "file"
path = "/tmp/all.log"
[output.fw]
kind = "forward"
addresses = ["127.0.0.1:1", "127.0.0.1:2"]
[[route]]
to = ["f", "g", "fw"]
"#,
        );
        let b = DescriptorBudget::of(&c);
        assert_eq!(
            b,
            DescriptorBudget {
                connections: 520,
                files: 300 + crate::output::file::DEFAULT_MAX_OPEN_FILES as u64,
                metrics: 65,
                // 2 listening sockets, 4 UDP sockets, 2 collectors.
                other: DESCRIPTOR_MARGIN + 2 + 4 + 2,
            }
        );
        assert_eq!(b.total(), 520 + 556 + 65 + 72);
        assert_eq!(b.warning(b.total()), None);
        let w = b.warning(b.total() - 1).unwrap();
        assert!(
            w.contains("need 1213 file descriptors") && w.contains("limit of 1212"),
            "{w}"
        );
    }
}
