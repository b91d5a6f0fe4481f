//! Subcommands `run` and `check`, and exit codes (SPEC §1): 0 ok, 2 bad config, 1 other.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lb_core::config::{self, Loaded, Source};
use lb_core::runtime::{self, Threading};

use crate::logging::LogFormat;

pub const EXIT_BAD_CONFIG: u8 = 2;
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "lb", version, about = "A layer-4 TCP load balancer")]
pub struct Cli {
    /// Log format on stderr; the level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the balancer.
    Run(RunArgs),
    /// Validate a config and print the plan; binds nothing.
    Check(CheckArgs),
    /// Start three built-in backends and a balancer in front, send a burst, show the spread.
    Demo(crate::demo::DemoArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// How connections are spread over cores.
    #[arg(long, value_enum, default_value = "per-core")]
    pub threading: ThreadingArg,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ThreadingArg {
    /// One single-threaded runtime and SO_REUSEPORT socket per worker (default).
    PerCore,
    /// One tokio work-stealing runtime with `workers` threads.
    WorkStealing,
}

impl From<ThreadingArg> for Threading {
    fn from(t: ThreadingArg) -> Self {
        match t {
            ThreadingArg::PerCore => Threading::PerCore,
            ThreadingArg::WorkStealing => Threading::WorkStealing,
        }
    }
}

/// Reads and validates; prints every error (and warnings) to stderr on failure.
fn load(path: &PathBuf) -> Result<Loaded, ExitCode> {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read config file {name}: {e}");
            return Err(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    match config::load(Source { name, text }) {
        Ok(l) => {
            for w in &l.warnings {
                eprintln!("{}", w.render(&l.source));
            }
            Ok(l)
        }
        Err(invalid) => {
            eprintln!("{invalid}");
            Err(ExitCode::from(EXIT_BAD_CONFIG))
        }
    }
}

pub fn check(args: CheckArgs) -> ExitCode {
    match load(&args.config) {
        Ok(l) => {
            print!("{}", crate::plan::plan(&l));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

pub fn run(args: RunArgs) -> ExitCode {
    let loaded = match load(&args.config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let prometheus = crate::logging::install_metrics();
    let bound = match runtime::bind(loaded, args.threading.into(), prometheus) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match bound.run(shutdown_signal) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once.
pub async fn shutdown_signal() {
    ignore_hangup();
    wait_signal().await;
    tokio::spawn(async {
        wait_signal().await;
        eprintln!("second signal: exiting now without draining");
        std::process::exit(i32::from(EXIT_FAILURE));
    });
}

/// SIGHUP's default action would kill lb. Hot reload is not built yet, so an operator's
/// SIGHUP keeps the running config and says so instead.
fn ignore_hangup() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::warn!("SIGHUP received: hot reload is not available in this version; the running config is unchanged (restart lb to apply a new one)");
                }
            });
        }
    }
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Parses `--duration` values with the config's duration syntax.
pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}
