//! Leader elections found at run time rather than named in advance: which Leases are
//! leader elections at all, and what their holders tell of the pods and workloads behind
//! them.

pub mod holders;
pub mod leases;
pub mod resolve;
pub mod task;
