//! `lb`: the command line. Parses arguments, loads the config, wires lb-core together, runs.

mod cli;
mod demo;
mod logging;
mod plan;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    lb_core::proxy::handoff::register_http(Box::new(lb_l7::gateway::Factory::default()));
    match cli.command {
        Command::Run(args) => cli::run(args),
        Command::Check(args) => cli::check(args),
        Command::Demo(args) => demo::run(args),
    }
}
