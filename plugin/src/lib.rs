//! `kubectl kubevirt-leader`, the tools for people, as a kubectl plugin (the binary
//! `kubectl-kubevirt_leader`, named as krew names plugins): [`diagnose`] looks into a
//! component with the user's own rights, [`status`] reads what a running exporter sees and [`render`] shows it.
//! [`cli`] holds the flags, [`kubeconfig`] kubectl's own among them.

pub mod cli;
pub mod diagnose;
pub mod kubeconfig;
pub mod render;
pub mod status;
