//! `lb`: the command line. Parses arguments, loads the config, wires lb-core together, runs.

#![forbid(unsafe_code)]

mod cli;
mod demo;
mod diff;
mod logging;
mod plan;
mod reexec;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use cli::{Cli, Command};
use lb_core::proxy::handoff::HttpSide;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    // lb-core serves tcp and udp itself; http listeners are lb-l7's gateway.
    let http: Arc<dyn HttpSide> = Arc::new(lb_l7::gateway::Factory::default());
    match cli.command {
        Command::Run(args) => cli::run(args, http),
        Command::Check(args) => cli::check(args, &*http),
        Command::Demo(args) => demo::run(args, http),
    }
}
