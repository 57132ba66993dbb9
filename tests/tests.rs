//! sluice's integration tests: one binary (link time), modules mirroring the product surface.

mod cli;
mod fail2ban;
mod files;
mod hostile;
mod ingest;
mod interop;
mod logrotate;
mod metrics;
mod privileges;
mod relay;
mod rotation_t8;
mod routing;
mod support;
mod systemd;
mod tls;
