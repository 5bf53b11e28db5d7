//! One function per subcommand.

pub mod admin;
pub mod audit;
pub mod doctor;
pub mod health;
pub mod migrate;
pub mod serve;

/// The process runs as root: /proc/self belongs to its effective user.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
