//! sluice's integration tests: one binary (link time), modules mirroring the product surface.

mod cli;
mod hostile;
mod ingest;
mod interop;
mod relay;
mod routing;
mod support;
mod tls;
