//! Criterion benchmarks live in `benches/`; this library holds the
//! side-by-side comparison harness behind `src/bin/compare.rs`.

pub mod compare;
pub mod lookup;
