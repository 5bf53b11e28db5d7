//! One function per subcommand.

pub mod migrate;
pub mod serve;
