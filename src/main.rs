//! Thin entry point: parse the command line, load the configuration, start
//! telemetry, run one command. Errors end as one line on stderr and exit 1.

use std::process::ExitCode;

use clap::Parser;

use castellan::cli::{Cli, Command};
use castellan::config::{self, Config};
use castellan::{cli_output, commands, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(path) => Some((path.as_path(), true)),
        None => Some((std::path::Path::new("castellan.toml"), false)),
    };
    let env = config::process_env();
    // Doctor grades even a configuration that `serve` would refuse.
    let loaded = match &cli.command {
        Command::Doctor(_) => commands::doctor::load(file, &env).map(|(c, ctx)| (c, Some(ctx))),
        _ => Config::load(file, &env).map(|c| (c, None)),
    };
    let (config, doctor_context) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            cli_output::fatal(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    // Only the service logs to stdout; the other commands keep stdout for
    // their output (e.g. `audit export`).
    let log_to_stdout = matches!(cli.command, Command::Serve | Command::Migrate);
    let _log_writer = telemetry::init(&config.log, log_to_stdout);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            cli_output::fatal(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => commands::serve::run(config).await,
            Command::Migrate => commands::migrate::run(config).await,
            Command::Audit(command) => commands::audit::run(config, command).await,
            Command::Admin(command) => commands::admin::run(config, command).await,
            Command::Doctor(args) => {
                commands::doctor::run(config, doctor_context.unwrap_or_default(), args).await
            }
            Command::Health => commands::health::run(config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logged too, so a log collector sees why the process stopped.
            tracing::error!(error = %format!("{e:#}"), "castellan stopped on an error");
            cli_output::fatal(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
