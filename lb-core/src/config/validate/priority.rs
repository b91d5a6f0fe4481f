//! Semantic checks of a pool's priority-level keys: the pool's `overprovisioning` factor and
//! a backend's `zone` label. Pure; no I/O.

use super::super::diag::Diagnostic;
use super::super::model::{is_zone_label, MAX_ZONE_LEN};
use super::super::raw::RawPool;
use super::Ctx;
use crate::balance::priority::DEFAULT_OVERPROVISIONING_PCT;
use toml::Spanned as S;

/// The largest `overprovisioning` factor: a level of 100 equal members keeps all the
/// traffic while one of them is up. Beyond that the value means nothing more.
pub const MAX_OVERPROVISIONING: f64 = 100.0;

/// `overprovisioning` in hundredths (the default 140 when absent). `levels` is how many
/// priority levels the pool's configured members use; with one, the factor has no effect
/// unless members of other levels arrive by DNS SRV or the admin API, so it is a warning.
pub(super) fn overprovisioning(cx: &mut Ctx<'_>, p: &RawPool, key: &str, levels: usize) -> u32 {
    let Some(f) = &p.overprovisioning else {
        return DEFAULT_OVERPROVISIONING_PCT;
    };
    let v = *f.get_ref();
    if !(v.is_finite() && (1.0..=MAX_OVERPROVISIONING).contains(&v)) {
        cx.push(
            Diagnostic::error(format!(
                "expected a number from 1.0 to {MAX_OVERPROVISIONING} (e.g. 1.4), found {v}"
            ))
            .at(f.span())
            .key(format!("{key}.overprovisioning"))
            .help("a level takes all the traffic while overprovisioning × its healthy share ≥ 1; 1.0 spills as soon as a member fails"),
        );
        return DEFAULT_OVERPROVISIONING_PCT;
    }
    if levels < 2 && p.discovery.is_none() {
        cx.push(
            Diagnostic::warning(format!(
                "`overprovisioning` has no effect: every member of pool \"{}\" has the same priority",
                p.name.get_ref()
            ))
            .at(f.span())
            .key(format!("{key}.overprovisioning"))
            .help("give some backends `priority = 1` (or `backup = true`), or remove the key"),
        );
    }
    (v * 100.0).round() as u32
}

/// A backend's `zone`: a non-empty label of letters, digits and `-_.:/`.
pub(super) fn zone(cx: &mut Ctx<'_>, z: Option<&S<String>>, bkey: &str) -> Option<String> {
    let z = z?;
    let v = z.get_ref();
    if !is_zone_label(v) {
        cx.push(
            Diagnostic::error(format!(
                "expected a zone label (1 to {MAX_ZONE_LEN} letters, digits and - _ . : /), found \"{v}\""
            ))
            .at(z.span())
            .key(format!("{bkey}.zone"))
            .help("e.g. zone = \"eu-west-1a\""),
        );
        return None;
    }
    Some(v.clone())
}
