//! lb's HTTP side as lb-core sees it (`HttpSide`): each loaded config prepared (what its
//! policies name read and checked), and the gateways of its http listeners built from that,
//! with the stateful policies (rate-limit buckets, caches) kept across reloads that leave
//! their config unchanged, and the backends' connection pools kept across every rebuild
//! ([`crate::kept_conns`]).

use std::sync::Arc;

use lb_core::config::{self, Loaded};
use lb_core::pool::Pool;
use lb_core::proxy::handoff::{Handler, HttpPrepared, HttpSide};

use crate::gateway::{lock, Gateway};
use crate::policy;

/// lb's HTTP side, handed to lb-core by the binary: it prepares each loaded config (policy
/// key files read) and builds http listeners' gateways. It keeps the policies that hold
/// state (rate-limit buckets, caches) across reloads while their config is unchanged, shared
/// by every listener naming them.
#[derive(Debug, Clone, Default)]
pub struct Factory {
    kept: Kept,
    conns: Arc<crate::kept_conns::Kept>,
    /// The OTLP exporter, kept across reloads while `[tracing]` stays the same.
    exporter: KeptExporter,
}

/// The running exporter with the `[tracing]` it was built from.
type KeptExporter = Arc<std::sync::Mutex<Option<(config::Tracing, Arc<crate::spans::Exporter>)>>>;

/// Stateful policies by name, with the config they were built from.
pub type Kept = Arc<std::sync::Mutex<std::collections::HashMap<String, KeptPolicy>>>;

#[derive(Debug, Clone)]
pub struct KeptPolicy {
    pub(crate) config: config::Policy,
    pub(crate) policy: Arc<dyn policy::Policy>,
    pub(crate) cache: Option<Arc<policy::cache::Cache>>,
}

/// What the HTTP side read for one config, and the factory's kept policies.
#[derive(Debug)]
pub struct Prepared {
    pub policies: policy::Prepared,
    pub(crate) kept: Kept,
    /// Backend connection pools, shared by every generation's gateways.
    pub conns: Arc<crate::kept_conns::Kept>,
    /// `[tracing]`, with its exporter.
    pub tracing: Option<crate::spans::Tracing>,
    /// Each route's `grpc_transcode`, by config route index, its descriptor set read.
    pub transcoders: Vec<Option<Arc<crate::transcode::Transcoder>>>,
}

impl Factory {
    /// Reads what `config`'s policies name (key files, schemas); problems go to `diags`.
    pub fn prepare_typed(
        &self,
        config: &lb_core::config::Config,
        diags: &mut Vec<lb_core::config::Diagnostic>,
    ) -> Arc<Prepared> {
        // Policies gone from the config let go of their state.
        lock(&self.kept).retain(|name, _| config.policies.iter().any(|p| &p.name == name));
        Arc::new(Prepared {
            policies: policy::prepare(config, diags),
            kept: self.kept.clone(),
            conns: self.conns.clone(),
            tracing: config.tracing.as_ref().map(|t| self.tracing(t)),
            transcoders: config
                .routes
                .iter()
                .map(|r| {
                    let t = r.grpc_transcode.as_ref()?;
                    crate::transcode::load(t, diags).map(Arc::new)
                })
                .collect(),
        })
    }

    fn tracing(&self, t: &config::Tracing) -> crate::spans::Tracing {
        let mut kept = lock(&self.exporter);
        let exporter = t.otlp_endpoint.as_ref().map(|e| match &*kept {
            Some((c, x)) if c == t => x.clone(),
            _ => {
                let x = Arc::new(crate::spans::Exporter::new(
                    e.clone(),
                    t.service_name.clone(),
                ));
                *kept = Some((t.clone(), x.clone()));
                x
            }
        });
        crate::spans::Tracing { exporter }
    }

    /// Loads a config with this HTTP side, keeping the typed preparation (tests build
    /// gateways from it directly).
    pub fn load(
        &self,
        source: lb_core::config::Source,
    ) -> Result<(Loaded, Arc<Prepared>), lb_core::config::Invalid> {
        let v = lb_core::config::validate(source)?;
        let mut diags = Vec::new();
        let prepared = self.prepare_typed(&v.config, &mut diags);
        let loaded = lb_core::config::prepare(v, Some(prepared.clone()), diags)?;
        Ok((loaded, prepared))
    }
}

impl HttpSide for Factory {
    fn prepare(
        &self,
        config: &lb_core::config::Config,
        diags: &mut Vec<lb_core::config::Diagnostic>,
    ) -> Arc<dyn HttpPrepared> {
        self.prepare_typed(config, diags)
    }
}

impl HttpPrepared for Prepared {
    fn build(&self, loaded: &Loaded, listener: usize, pools: &[Arc<Pool>]) -> Arc<dyn Handler> {
        Arc::new(Gateway::build(loaded, self, listener, pools))
    }
}

/// Loads a config text with lb's HTTP side (tests; `lb` itself reads files).
pub fn load_str(
    name: &str,
    text: &str,
) -> Result<(Loaded, Arc<Prepared>), lb_core::config::Invalid> {
    Factory::default().load(lb_core::config::Source {
        name: name.to_string(),
        text: text.to_string(),
    })
}
