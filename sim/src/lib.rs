//! A small simulated Kubernetes API server for pods and leases: the demo's control plane
//! and the integration tests' test bed. It speaks the real protocol over HTTP, so the
//! exporter talks to it through the ordinary kube client.

mod faults;
mod selector;
mod server;
mod store;

pub use faults::{Faults, ListPage};
pub use server::{SimServer, kubeconfig_for, router};
pub use store::{Kind, Store, lease, pod, set_ready};
