//! Subcommands `run` and `check`, and exit codes (SPEC §1): 0 ok, 2 bad config, 1 other.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lb_core::config::{self, Loaded, Source};
use lb_core::proxy::handoff::HttpSide;

use lb_core::runtime::{self, BindOptions, Inherited, Shared, Threading};

use crate::logging::LogFormat;

pub const EXIT_BAD_CONFIG: u8 = 2;
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "lb",
    version,
    about = "A TCP/UDP load balancer and HTTP gateway"
)]
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
    /// Binary upgrade socket. If an lb already serves at PATH, take over its listening
    /// sockets (it then drains and exits); then serve PATH for the next upgrade.
    #[arg(long, value_name = "PATH")]
    pub upgrade_socket: Option<PathBuf>,
    /// Reload when the config file changes (checked every 500ms; a change must be stable
    /// for one more check before it is applied).
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML config file.
    #[arg(long, short, required_unless_present = "diff", conflicts_with = "diff")]
    pub config: Option<PathBuf>,
    /// Validate both configs and print what a reload from OLD to NEW changes: listeners,
    /// pool members, routes, policies, and for consistent-hash pools the share of keys that
    /// move (from the real Maglev tables).
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
    pub diff: Option<Vec<PathBuf>>,
    /// With --diff: exit 1 when a consistent-hash pool would move more than this share of
    /// its keys (e.g. 30%).
    #[arg(long, requires = "diff", value_parser = crate::diff::parse_percent)]
    pub max_moved: Option<f64>,
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
fn load(path: &PathBuf, http: &dyn HttpSide) -> Result<Loaded, ExitCode> {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read config file {name}: {e}");
            return Err(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    match config::load(Source { name, text }, Some(http)) {
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

pub fn check(args: CheckArgs, http: &dyn HttpSide) -> ExitCode {
    if let Some([old, new]) = args.diff.as_deref() {
        return check_diff(old, new, args.max_moved, http);
    }
    let Some(path) = &args.config else {
        unreachable!("clap requires --config without --diff")
    };
    if args.max_moved.is_some() {
        // clap's `requires` lets it through beside --config; say so rather than ignore it.
        eprintln!("error: --max-moved bounds the keys `--diff OLD NEW` moves; use it with --diff");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    match load(path, http) {
        Ok(l) => {
            print!("{}", crate::plan::plan(&l));
            let (_, report) = lb_core::discovery::resolve_blocking(&l.config, &Default::default());
            print!("{}", crate::plan::resolutions(&report));
            if report.iter().any(|r| r.result.is_err()) {
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `lb check --diff OLD NEW`: 2 when either is invalid, 1 when `--max-moved` is exceeded.
fn check_diff(old: &PathBuf, new: &PathBuf, max: Option<f64>, http: &dyn HttpSide) -> ExitCode {
    let (old, new) = match (load(old, http), load(new, http)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let report = crate::diff::diff(&old.config, &new.config);
    print!("{}", report.render());
    if let (Some(max), Some(worst)) = (max, report.worst()) {
        if worst.movement.moved > max {
            eprintln!(
                "error: {} moves {:.1}% of its keys, more than --max-moved {:.1}%",
                worst.group,
                worst.movement.moved * 100.0,
                max * 100.0
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    ExitCode::SUCCESS
}

pub fn run(args: RunArgs, http: Arc<dyn HttpSide>) -> ExitCode {
    let loaded = match load(&args.config, &*http) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // Host names resolve before anything binds: one that does not is an error at start-up
    // (on reload, a warning: its last good members stay).
    let (dynamic, report) =
        lb_core::discovery::resolve_blocking(&loaded.config, &Default::default());
    let failed: Vec<_> = report.iter().filter(|r| r.result.is_err()).collect();
    if !failed.is_empty() {
        for r in failed {
            if let Err(e) = &r.result {
                eprintln!(
                    "error: pool \"{}\": {} does not resolve: {e}",
                    r.pool, r.name
                );
            }
        }
        eprintln!(
            "error: {} does not start until every backend name resolves",
            args.config.display()
        );
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    for r in &report {
        if let Ok(m) = &r.result {
            tracing::info!(pool.name = %r.pool, name = %r.name, members = m.len(), "resolved");
        }
    }
    let mut opts = BindOptions {
        config_path: Some(args.config.clone()),
        threading: args.threading.into(),
        metrics: crate::logging::install_metrics(),
        inherited: Inherited::default(),
        http: Some(http),
        dynamic,
        notify: runtime::notify::Notifier::from_env(),
    };
    if let Some(path) = &args.upgrade_socket {
        match runtime::take_over(path) {
            Ok(i) => opts.inherited = i,
            Err(e) => {
                eprintln!("error: binary upgrade from {}: {e}", path.display());
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    let bound = match runtime::bind(loaded, &mut opts) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let shared = bound.shared().clone();
    let mut inherited = std::mem::take(&mut opts.inherited);
    let upgrade_socket = args.upgrade_socket.clone();
    let watch = args.watch;
    let has_upgrade_socket = args.upgrade_socket.is_some();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Runs once lb is ready: only then may an old process stop accepting.
    let after_ready = move || async move {
        inherited.ready(&shared);
        if let Some(path) = upgrade_socket {
            if let Err(e) = runtime::serve_upgrades(path.clone(), shared.clone()) {
                tracing::warn!(error = %e, "cannot serve binary upgrades on {}", path.display());
            }
        }
        if watch {
            tokio::spawn(runtime::watch(shared.clone(), Duration::from_millis(500)));
        }
        crate::reexec::on_usr2(argv, has_upgrade_socket);
        shutdown_signal(Some(shared)).await;
    };
    match bound.run(after_ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once. Meanwhile SIGHUP
/// reloads the config of `shared`.
pub async fn shutdown_signal(shared: Option<Arc<Shared>>) {
    let asked = shared
        .as_ref()
        .map(|s| s.shutdown.clone())
        .unwrap_or_default();
    reload_on_hangup(shared);
    // Registered once, before the first signal: a second one arriving at any moment after
    // the first is queued on the same streams, never lost between two registrations.
    let mut signals = Signals::new();
    tokio::select! {
        () = signals.next() => {}
        () = asked.cancelled() => tracing::info!("a new lb process took over the listening sockets; draining"),
    }
    tokio::spawn(async move {
        signals.next().await;
        eprintln!("second signal: exiting now without draining");
        std::process::exit(i32::from(EXIT_FAILURE));
    });
}

/// SIGHUP reloads (SPEC §5). Without a config file (lb demo) it only says why not; either
/// way it never kills lb, as its default action would.
fn reload_on_hangup(shared: Option<Arc<Shared>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let Some(shared) = &shared else {
                        tracing::warn!(
                            "SIGHUP received: this config is embedded; there is no file to reload"
                        );
                        continue;
                    };
                    tracing::info!("SIGHUP received: reloading the config");
                    {
                        // Reading and validating is quick; binding new listeners too. Errors
                        // are logged and counted by reload() itself.
                        let s = shared.clone();
                        let _ = tokio::task::spawn_blocking(move || s.reload()).await;
                    }
                }
            });
        }
    }
}

/// SIGTERM and SIGINT, listened to from creation on.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => None,
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.streams {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Parses `--duration` values with the config's duration syntax.
pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}
