//! A listener's `max_connection_age`, `max_connection_age_jitter` and `age_grace`: long-lived
//! connections are closed (TCP, at a quiet moment) or told to reconnect (HTTP) once old, so a
//! pool that grew gets its share without a restart. Pure; no I/O.

use std::time::Duration;

use super::Ctx;
use crate::config::diag::Diagnostic;
use crate::config::model::MaxAge;
use crate::config::raw::RawListener;

/// Default quiet time a TCP connection past its age must show before it is closed.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

pub(super) fn max_age(cx: &mut Ctx<'_>, l: &RawListener, key: &str, udp: bool) -> Option<MaxAge> {
    let keys = [
        ("max_connection_age", l.max_connection_age.as_ref()),
        (
            "max_connection_age_jitter",
            l.max_connection_age_jitter.as_ref(),
        ),
        ("age_grace", l.age_grace.as_ref()),
    ];
    if udp {
        for (k, v) in keys {
            if let Some(v) = v {
                cx.push(
                    Diagnostic::error(format!("`{k}` applies only to tcp and http listeners"))
                        .at(v.span())
                        .key(format!("{key}.{k}"))
                        .help("udp flows end after udp_session_timeout of silence"),
                );
            }
        }
        return None;
    }
    let Some(age_v) = &l.max_connection_age else {
        for (k, v) in &keys[1..] {
            if let Some(v) = v {
                cx.push(
                    Diagnostic::error(format!("`{k}` does nothing without max_connection_age"))
                        .at(v.span())
                        .key(format!("{key}.{k}"))
                        .help("add max_connection_age = \"30m\", or remove it"),
                );
            }
        }
        return None;
    };
    let age = cx.duration(
        &l.max_connection_age,
        format!("{key}.max_connection_age"),
        Duration::ZERO,
    );
    if age.is_zero() {
        cx.push(
            Diagnostic::error("max_connection_age must be longer than zero")
                .at(age_v.span())
                .key(format!("{key}.max_connection_age"))
                .help("leave it out to let connections live as long as they are used"),
        );
        return None;
    }
    let grace = cx.duration(&l.age_grace, format!("{key}.age_grace"), DEFAULT_GRACE);
    let jitter = match &l.max_connection_age_jitter {
        None => 0.0,
        Some(v) => match parse_jitter(v.get_ref()) {
            Ok(j) => j,
            Err(e) => {
                cx.push(
                    Diagnostic::error(e)
                        .at(v.span())
                        .key(format!("{key}.max_connection_age_jitter"))
                        .help("a percentage below 100, e.g. \"10%\""),
                );
                0.0
            }
        },
    };
    Some(MaxAge { age, jitter, grace })
}

/// `"10%"` → 0.1. Below 100% so no connection's age can be zero.
fn parse_jitter(s: &str) -> Result<f64, String> {
    let Some(n) = s.trim().strip_suffix('%') else {
        return Err(format!(
            "expected a percentage such as \"10%\", found {s:?}"
        ));
    };
    match n.trim().parse::<f64>() {
        Ok(v) if (0.0..100.0).contains(&v) => Ok(v / 100.0),
        _ => Err(format!(
            "expected a percentage from 0% to below 100%, found {s:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_jitter;

    #[test]
    fn jitter_is_a_percentage_below_a_hundred() {
        assert_eq!(parse_jitter("10%"), Ok(0.1));
        assert_eq!(parse_jitter(" 0 %"), Ok(0.0));
        for bad in ["10", "100%", "-5%", "ten%", "nan%", ""] {
            assert!(parse_jitter(bad).is_err(), "{bad}");
        }
    }
}
