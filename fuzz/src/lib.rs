//! The invariants the fuzz targets check, shared with the stable test suite (which includes
//! checks.rs by path).

pub mod checks;
