//! Helpers shared by the workspace's tests (soft-rdma's, the shim's, the
//! end-to-end tests) and its benches, instead of a copy in each.
//!
//! - [`verbs`]: devices, connected QP pairs, buffers, waiting for
//!   completions (feature `verbs`, on by default: it links soft-rdma);
//! - [`forward_rest_of_link!`]: the `Link` methods a test's link wrapper
//!   forwards unchanged (feature `verbs`);
//! - [`net`]: whether a TCP port listens (here or in a network namespace),
//!   two network-namespace hosts joined by a veth pair;
//! - [`serial`]: one lock for the tests of a binary that must not overlap;
//! - [`procs`]: child processes with a deadline, their output as text;
//! - [`tools`]: whether an external tool is installed, and
//!   `SOFTRDMA_REQUIRE_TOOLS` (set by scripts/test.sh), which turns a missing
//!   tool from a skip into a failure;
//! - [`shim`]: the shim (`libibverbs.so`) and `softrdma` built beside a test
//!   executable.

#[cfg(feature = "verbs")]
mod link;
pub mod net;
pub mod procs;
pub mod serial;
pub mod shim;
pub mod tools;
#[cfg(feature = "verbs")]
pub mod verbs;
