//! `[global]`: process-wide settings. Pure; no I/O.

use super::members::MIN_INTERVAL;
use super::Ctx;
use crate::config::model::Global;
use crate::config::raw::RawGlobal;

/// Validates `[global]`; an absent table means every default.
pub(super) fn global(cx: &mut Ctx, raw: Option<&RawGlobal>) -> Global {
    let d = Global::default();
    let Some(g) = raw else { return d };
    let global = Global {
        workers: cx.int(&g.workers, "global.workers".into(), 0, 1024, 0) as usize,
        max_connections: cx.int(
            &g.max_connections,
            "global.max_connections".into(),
            1,
            i64::MAX,
            d.max_connections as i64,
        ) as u64,
        shutdown_delay: cx.duration(
            &g.shutdown_delay,
            "global.shutdown_delay".into(),
            d.shutdown_delay,
        ),
        shutdown_timeout: cx.duration(
            &g.shutdown_timeout,
            "global.shutdown_timeout".into(),
            d.shutdown_timeout,
        ),
        splice: g.splice.unwrap_or(d.splice),
        upgrade_handover: g.upgrade_handover.unwrap_or(d.upgrade_handover),
        resolve_interval_min: cx.duration(
            &g.resolve_interval_min,
            "global.resolve_interval_min".into(),
            d.resolve_interval_min,
        ),
        resolve_interval_max: cx.duration(
            &g.resolve_interval_max,
            "global.resolve_interval_max".into(),
            d.resolve_interval_max,
        ),
    };
    let span = g
        .resolve_interval_min
        .as_ref()
        .or(g.resolve_interval_max.as_ref());
    if global.resolve_interval_min < MIN_INTERVAL {
        cx.err(
            span.map_or(0..0, |s| s.span()),
            "global.resolve_interval_min",
            format!(
                "expected at least {MIN_INTERVAL:?}, found {:?}",
                global.resolve_interval_min
            ),
        );
    } else if global.resolve_interval_min > global.resolve_interval_max {
        cx.err(
            span.map_or(0..0, |s| s.span()),
            "global.resolve_interval_min",
            format!(
                "resolve_interval_min ({:?}) is above resolve_interval_max ({:?})",
                global.resolve_interval_min, global.resolve_interval_max
            ),
        );
    }
    global
}
