//! Shared helpers for integration tests: a real OpenSSH `sshd` serving SFTP on loopback
//! ([`sshd::Sshd`]) and a gateway simulator that moves uploaded batch files to `success/` or
//! `error/` by SPEC.md's rules ([`gateway::Gateway`]).
//!
//! Use from a test file with `mod support;` then `use support::sshd::Sshd;`.
#![allow(dead_code)]

pub mod gateway;
pub mod setup;
pub mod sshd;
pub mod statuses;
