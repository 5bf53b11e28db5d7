//! One function per subcommand.

pub mod admin;
pub mod audit;
pub mod doctor;
pub mod health;
pub mod migrate;
pub mod serve;
