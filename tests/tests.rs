//! sluice's integration tests: one binary (link time), modules mirroring the product surface.

mod cli;
mod files;
mod hostile;
mod ingest;
mod routing;
mod support;
