//! The `[daemon]` table: timeouts, the state directory, whom to run as, the metrics address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::decode::{Errors, NumOrStr, duration_opt, id_opt};
use crate::privileges::{lookup_group, lookup_user, lookup_user_gid};

/// Default time open connections may keep sending after SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval of the periodic counter log line.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(300);
/// Default `[daemon] state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sluice";

/// `[daemon]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// How long open connections may keep sending after SIGTERM before they are cut.
    pub shutdown_timeout: Duration,
    /// Interval of the periodic counters log line.
    pub stats_interval: Duration,
    /// Where disk queues live.
    pub state_dir: PathBuf,
    /// `user`, `group`, `supplementary_groups`: whom to run as after binding; `None` stays.
    pub run_as: Option<crate::privileges::RunAs>,
    /// Where to serve Prometheus metrics at `/metrics`; `None` serves none.
    pub metrics_address: Option<SocketAddr>,
    /// The internal listener alert events enter the pipeline on, so routes can name it;
    /// `None`: they go only to their rules' `to` outputs.
    pub alert_listener: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawDaemon {
    shutdown_timeout: Option<Spanned<NumOrStr>>,
    stats_interval: Option<Spanned<NumOrStr>>,
    state_dir: Option<Spanned<String>>,
    user: Option<Spanned<NumOrStr>>,
    group: Option<Spanned<NumOrStr>>,
    supplementary_groups: Option<Spanned<Vec<NumOrStr>>>,
    metrics_address: Option<Spanned<String>>,
    alert_listener: Option<Spanned<String>>,
}

impl RawDaemon {
    /// The validated table; a bad key is reported and its default used, so the rest of the
    /// config is still checked against sensible values.
    pub(super) fn validate(&self, errs: &mut Errors<'_>) -> DaemonConfig {
        DaemonConfig {
            shutdown_timeout: duration_opt(errs, "daemon.shutdown_timeout", &self.shutdown_timeout)
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            stats_interval: duration_opt(errs, "daemon.stats_interval", &self.stats_interval)
                .unwrap_or(DEFAULT_STATS_INTERVAL),
            state_dir: self.state_dir.as_ref().map_or_else(
                || PathBuf::from(DEFAULT_STATE_DIR),
                |v| PathBuf::from(v.get_ref()),
            ),
            run_as: validate_run_as(errs, self),
            metrics_address: self.metrics_address.as_ref().and_then(|v| {
                v.get_ref()
                    .parse()
                    .map_err(|_| {
                        errs.at(
                            v.span(),
                            "daemon.metrics_address",
                            format!("invalid socket address {:?}", v.get_ref()),
                        )
                    })
                    .ok()
            }),
            alert_listener: self.alert_listener.as_ref().and_then(|v| {
                let n = v.get_ref();
                let ok = !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    errs.at(
                        v.span(),
                        "daemon.alert_listener",
                        "names may use only letters, digits, '_' and '-'",
                    );
                }
                ok.then(|| n.clone())
            }),
        }
    }
}

/// `[daemon] user`, `group`, `supplementary_groups`: names resolved now, so a typo fails the
/// config check rather than the start.
fn validate_run_as(errs: &mut Errors<'_>, d: &RawDaemon) -> Option<crate::privileges::RunAs> {
    let Some(user) = &d.user else {
        for (key, span) in [
            ("daemon.group", d.group.as_ref().map(|g| g.span())),
            (
                "daemon.supplementary_groups",
                d.supplementary_groups.as_ref().map(|g| g.span()),
            ),
        ] {
            if let Some(span) = span {
                errs.at(
                    span,
                    key,
                    "needs daemon.user: groups are dropped together with the user",
                );
            }
        }
        return None;
    };
    let uid = id_opt(errs, "daemon.user", &d.user, lookup_user)?;
    let gid = match (&d.group, user.get_ref()) {
        (Some(_), _) => id_opt(errs, "daemon.group", &d.group, lookup_group)?,
        (None, NumOrStr::Str(name)) if name.parse::<u32>().is_err() => lookup_user_gid(name)
            .map_err(|m| errs.at(user.span(), "daemon.user", m))
            .ok()?,
        (None, _) => {
            errs.at(
                user.span(),
                "daemon.user",
                "a numeric user needs daemon.group (there is no user entry to take it from)",
            );
            return None;
        }
    };
    let mut groups = Vec::new();
    if let Some(list) = &d.supplementary_groups {
        for g in list.get_ref() {
            let id = match g {
                NumOrStr::Num(n) => u32::try_from(*n).map_err(|_| format!("invalid id {n}")),
                NumOrStr::Str(s) => lookup_group(s),
            };
            match id {
                Ok(id) => groups.push(id),
                Err(m) => errs.at(list.span(), "daemon.supplementary_groups", m),
            }
        }
    }
    let name = match user.get_ref() {
        NumOrStr::Num(n) => n.to_string(),
        NumOrStr::Str(s) => s.clone(),
    };
    Some(crate::privileges::RunAs {
        user: name,
        uid,
        gid,
        groups,
    })
}
