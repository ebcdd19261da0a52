//! Leader elections found at run time rather than named in advance: which Leases are
//! leader elections at all, and what their holders tell of the pods and workloads behind
//! them.

pub mod holders;
pub mod leases;
pub mod resolve;
pub mod task;

/// The API access discovery needs beyond what the watches need, as (API group, resource,
/// verbs): the ClusterRole in `deploy/discover-leaders` must grant exactly this.
pub const API_ACCESS: [(&str, &str, [&str; 1]); 4] = [
    ("apps", "replicasets", ["get"]),
    ("apps", "deployments", ["get"]),
    ("apps", "statefulsets", ["get"]),
    ("apps", "daemonsets", ["get"]),
];
