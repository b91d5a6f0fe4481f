//! Hot reload (SPEC §5): read and validate the whole new config first; only then swap it in.
//! Kept listeners keep their sockets (never re-bound), new ones are bound before anything
//! changes, removed ones stop accepting while their connections finish; pools are rebuilt,
//! and a backend present in both configs keeps its health, admin state and counters.

use serde_json::{json, Value};

use super::bind::{bind_listener, dup_fds, sockets_per_listener, BindError};
use super::notify::{self, Field};
use super::Shared;
use crate::config::{self, Source};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload is not possible: {0}")]
    Unavailable(&'static str),
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(config::Invalid),
    #[error("{0}")]
    Bind(BindError),
}

impl Shared {
    /// Reloads the config file. On any error nothing changes and the running config stays.
    /// Returns what changed, for the log and `POST /api/reload`.
    pub fn reload(&self) -> Result<Value, ReloadError> {
        // One at a time, notifications included: SIGHUP (on a blocking thread) and POST
        // /api/reload may come together, and systemd must see RELOADING=1, READY=1 in pairs,
        // never a READY=1 while another reload it was told of is still running.
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        tracing::info!("config reload started");
        // Once stopping (or draining) a reload still applies, so the listeners serving out
        // `shutdown_delay` use the newest backends, but it neither makes lb ready again (the
        // phase is not touched) nor tells systemd RELOADING=1/READY=1 after STOPPING=1.
        let leaving = self.phase.borrow().is_leaving();
        if !leaving {
            self.notify(&[
                Field::Reloading {
                    monotonic_usec: notify::monotonic_usec(),
                },
                Field::Status("reloading the config".into()),
            ]);
        }
        let result = self.try_reload();
        // READY=1 whatever the outcome: a refused reload leaves the old config serving, and
        // systemd must not think lb is still reloading. Asked again: a SIGTERM may have come
        // while reloading.
        if self.phase.borrow().is_leaving() {
            self.notify(&[Field::Status(self.status_line())]);
        } else {
            self.notify(&[Field::Ready, Field::Status(self.status_line())]);
        }
        // Parsing the new file (and, when the old config's pools went with the swap, the old
        // config) freed a lot; a big config's parse tree alone is ~1.5 KB per backend.
        crate::reclaim::release_freed_memory();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("lb_config_reloads_total", "result" => outcome).increment(1);
        match &result {
            Ok(changes) => tracing::info!(changes = %changes, "config reloaded"),
            Err(e) => tracing::error!("config reload refused; the running config stays:\n{e}"),
        }
        result
    }

    /// The reload itself; the caller holds `self.reloading`.
    fn try_reload(&self) -> Result<Value, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::Unavailable(
            "the config is embedded, not read from a file",
        ))?;
        let engine = self
            .engine
            .get()
            .ok_or(ReloadError::Unavailable("lb is not running yet"))?;
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ReloadError::Read {
            path: name.clone(),
            source,
        })?;
        let loaded = config::load(Source { name, text }, self.http.as_deref())
            .map_err(ReloadError::Invalid)?;
        let old = self.state.load_full();
        let cfg = &loaded.config;
        let mut notes: Vec<String> = Vec::new();
        let old_global = &old.loaded.config.global;
        if cfg.global.workers != old_global.workers {
            notes.push("global.workers changes take effect on restart".into());
        }
        if cfg.global.splice != old_global.splice {
            notes.push("global.splice changes take effect on restart".into());
        }
        let (new_admin, old_admin) = (&cfg.admin, &old.loaded.config.admin);
        // The admin socket stays where it is until restart, so the token that guards it off
        // loopback must stay too (moving `bind` to loopback or removing `[admin]` drops it).
        let running = self
            .admin_fd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, _, actual)| *actual);
        if running.is_some_and(|a| !a.ip().to_canonical().is_loopback())
            && new_admin.as_ref().is_none_or(|a| a.token.is_none())
        {
            return Err(ReloadError::Unavailable(
                "the admin API keeps listening on its non-loopback address until restart \
                 (admin.bind changes take effect on restart), so [admin] must keep a token",
            ));
        }
        if new_admin.as_ref().map(|a| a.bind) != old_admin.as_ref().map(|a| a.bind) {
            notes
                .push("admin.bind changes take effect on restart (admin.token applies now)".into());
        }
        let max = |a: &Option<config::Admin>| a.as_ref().map(|a| a.max_connections);
        if new_admin.is_some() && max(new_admin) != max(old_admin) {
            notes.push("admin.max_connections changes take effect on restart".into());
        }

        // Names are resolved again; one that fails keeps its last good members (a warning).
        let (dynamic, report) = crate::discovery::resolve_blocking(cfg, &old.dynamic);
        for r in &report {
            if let Err(e) = &r.result {
                notes.push(format!(
                    "pool \"{}\": {} does not resolve ({e}); its last good members stay",
                    r.pool, r.name
                ));
            }
        }
        // API changes are kept across a reload that leaves the pool unchanged; a pool the
        // reload changes is taken as the file says.
        let dynamic = dynamic
            .into_iter()
            .map(|(name, mut d)| {
                let same = old.loaded.config.pools.iter().find(|p| p.name == name)
                    == cfg.pools.iter().find(|p| p.name == name);
                if !same && d.api_changed() {
                    tracing::warn!(pool.name = %name, added = d.api.len(), removed = d.removed.len(), "the reload changed this pool in the file: members added or removed through the admin API are dropped");
                    notes.push(format!(
                        "pool \"{name}\" changed in the file: members added or removed through the API are dropped"
                    ));
                    d.api.clear();
                    d.removed.clear();
                }
                (name, d)
            })
            .filter(|(_, d)| *d != crate::discovery::Dynamic::default())
            .collect();

        // Bind new listeners first: if one fails, nothing has changed yet.
        let per = sockets_per_listener(self.threading, self.workers);
        let mut fresh_sockets = Vec::new();
        for l in &cfg.listeners {
            if old.kept_listener(l).is_none() {
                let (sockets, addr) = bind_listener(l, per).map_err(ReloadError::Bind)?;
                let fds = dup_fds(&sockets).map_err(|source| {
                    ReloadError::Bind(BindError::Listener {
                        listener: l.name.clone(),
                        addr,
                        source,
                    })
                })?;
                fresh_sockets.push((sockets, addr, fds));
            }
        }
        let hash = loaded.hash.clone();
        let done = self.commit(engine, &old, loaded, dynamic, fresh_sockets);
        let (kept_names, added, removed_names) = (done.kept, done.added, done.removed);
        Ok(json!({
            "result": "ok",
            "config_hash": hash,
            "listeners_kept": kept_names,
            "listeners_added": added,
            "listeners_removed": removed_names,
            "notes": notes,
        }))
    }
}
