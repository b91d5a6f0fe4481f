//! SIGUSR2 starts the binary upgrade from inside (nginx's way): lb runs its own command line
//! again, so the new process starts as a child of the running one and inherits what systemd
//! gave it: the unit's cgroup, user, capabilities and `NOTIFY_SOCKET`. With
//! `--upgrade-socket` the child then takes the listening sockets over (see
//! `lb_core::runtime::upgrade`) and tells systemd `MAINPID=` itself; the old process drains.
//! Without `--upgrade-socket` there is nothing to hand over, so SIGUSR2 only says why not.

use std::ffi::OsString;
use std::process::{Command, Stdio};

/// Listens for SIGUSR2 until the process ends. `argv` is the command line lb was started
/// with; its first word is looked up again, so a binary replaced on disk (a package upgrade)
/// is the one started.
pub fn on_usr2(argv: Vec<OsString>, has_upgrade_socket: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        tracing::warn!("cannot listen for SIGUSR2; binary upgrades need a manual start");
        return;
    };
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            if !has_upgrade_socket {
                tracing::warn!("SIGUSR2 received: lb runs without --upgrade-socket, so there is no socket to hand over; ignoring");
                continue;
            }
            let Some((program, args)) = argv.split_first() else {
                continue;
            };
            tracing::info!("SIGUSR2 received: starting {program:?} to take over");
            let mut cmd = Command::new(program);
            cmd.args(args).stdin(Stdio::null());
            // systemd's watchdog watches this process by PID; the successor takes that role
            // over (it says MAINPID= itself), so it must not think the pings are someone
            // else's job.
            if std::env::var("WATCHDOG_PID").ok().as_deref()
                == Some(&*std::process::id().to_string())
            {
                cmd.env_remove("WATCHDOG_PID");
            }
            match cmd.spawn() {
                // Reaped when it exits (a failed upgrade leaves no zombie; the old process
                // then goes on serving). On success the old one exits first and the kernel
                // hands the child to its new parent (systemd).
                Ok(mut child) => {
                    let pid = child.id();
                    std::thread::spawn(move || {
                        if let Ok(status) = child.wait() {
                            if !status.success() {
                                tracing::error!(pid, %status, "the upgrade process failed; this one keeps serving");
                            }
                        }
                    });
                }
                Err(e) => tracing::error!(error = %e, "cannot start {program:?} for the upgrade"),
            }
        }
    });
}
