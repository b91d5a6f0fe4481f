//! `lb run --watch`: reload when the config file changes. Polls the file's content rather
//! than relying on inotify, so editors that replace the file (write + rename), bind mounts
//! and ConfigMap symlink swaps all work; a change must read the same on two polls in a row
//! (debounce) before it is applied, so a half-written file is not loaded.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;

/// Polls every `every` until the process stops.
pub async fn watch(shared: Arc<Shared>, every: Duration) {
    let Some(path) = shared.config_path.clone() else {
        return;
    };
    tracing::info!("watching {} for changes", path.display());
    let mut pending: Option<String> = None;
    let mut refused: Option<String> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A config file is small: a plain read on the control thread is fine.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let running = shared.state.load().loaded.source.text == text;
        if running || refused.as_deref() == Some(text.as_str()) {
            pending = None;
            continue;
        }
        if pending.as_deref() != Some(text.as_str()) {
            pending = Some(text);
            continue;
        }
        pending = None;
        tracing::info!("{} changed: reloading", path.display());
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || s.reload()).await {
            Ok(Ok(_)) => refused = None,
            // Logged and counted by reload(); do not retry the same bad text every poll.
            _ => refused = Some(text),
        }
    }
}
