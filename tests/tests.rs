//! sluice's integration tests: one binary (link time), modules mirroring the product surface.

mod alert;
mod alert_anomalies;
#[path = "../fuzz/src/checks.rs"]
mod checks;
mod cli;
mod elasticsearch_output;
mod es_interop;
mod es_server_selftest;
mod fail2ban;
mod files;
mod fuzz_corpus;
mod hostile;
mod http_output;
mod http_server_selftest;
mod ingest;
mod interop;
mod kafka;
mod kmsg;
mod limits;
mod logrotate;
mod loki_output;
mod loki_server_selftest;
mod metrics;
mod privileges;
mod properties;
mod python;
mod relay;
mod reload;
mod relp;
mod rotation_t8;
mod routing;
mod support;
mod systemd;
mod tail;
mod tls;
