//! sluice's integration tests: one binary (link time), modules mirroring the product surface.

#[path = "../fuzz/src/checks.rs"]
mod checks;
mod cli;
mod fuzz_corpus;
mod hostile;
mod ingest;
mod properties;
mod routing;
mod support;
