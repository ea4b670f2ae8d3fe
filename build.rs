//! Marks whether OpenSSH's sshd is installed (`cfg(has_sshd)`), so the tests that drive a real
//! sshd show as "ignored" on a machine without it instead of failing, while CI sets
//! `SMSDROP_REQUIRE_SSHD=1` to make them run (and fail if sshd cannot start).

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_sshd)");
    println!("cargo::rustc-check-cfg=cfg(sshd_as_root)");
    println!("cargo::rerun-if-env-changed=SMSDROP_REQUIRE_SSHD");
    println!("cargo::rerun-if-env-changed=SSHD");
    println!("cargo::rerun-if-changed=build.rs");
    let sshd =
        std::env::var_os("SSHD").map_or_else(|| PathBuf::from("/usr/sbin/sshd"), PathBuf::from);
    if let Some(dir) = sshd.parent().filter(|d| d.is_dir()) {
        println!("cargo::rerun-if-changed={}", dir.display());
    }
    let required = std::env::var_os("SMSDROP_REQUIRE_SSHD").is_some_and(|v| v != "0");
    if required || sshd.exists() {
        println!("cargo::rustc-cfg=has_sshd");
        // Password logins (a real local user) and tmpfs mounts need root: CI runs as root.
        if required || is_root() {
            println!("cargo::rustc-cfg=sshd_as_root");
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
