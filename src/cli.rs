//! The command line (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// castellan: a self-hosted authentication and session service.
///
/// Configuration comes from defaults, then a TOML file (--config, or
/// ./castellan.toml if present), then CASTELLAN_* environment variables.
/// See docs/configuration.md.
#[derive(Debug, Parser)]
#[command(name = "castellan", version, about, long_about)]
pub struct Cli {
    /// TOML configuration file (default: ./castellan.toml if it exists)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (applies pending migrations first)
    Serve,
    /// Apply pending database migrations and exit
    Migrate,
}
