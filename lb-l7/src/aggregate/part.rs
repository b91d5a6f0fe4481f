//! One part of an aggregate request on the wire: a GET to the part's pool through the same
//! attempts as any request ([`crate::tries`]: the pool's balancer, failover, the route's
//! `retries`, passive health, in-flight counts and upstream error counters), each attempt
//! held to the part's `timeout` from its start until its whole body is read, the body read
//! up to [`MAX_PART_BODY`] bytes. Does I/O.

use std::time::Duration;

use http::request::Parts;
use http::Request;

use super::assemble::{decode, Kind, Outcome, PartError, MAX_PART_BODY};
use crate::body::empty;
use crate::body::read_whole;
use crate::conn_info::ConnInfo;
use crate::exchange_fault::root_cause;
use crate::gateway::{Gateway, PoolTarget, RouteTarget};
use crate::plan::Plan;
use crate::tries::{Failure, Tries};
use crate::upstream::SendError;

impl Gateway {
    /// Sends the part's request `head` (as [`Gateway::upstream_parts`] wrote it for `plan`)
    /// until a backend answers it or the attempts run out.
    pub(crate) async fn part_exchange(
        &self,
        target: &RouteTarget,
        pt: &PoolTarget,
        plan: &Plan<'_, '_>,
        head: Parts,
        info: &ConnInfo,
        timeout: Duration,
    ) -> Outcome {
        let upstream = self.upstream(pt, info);
        let mut tries = Tries::new(
            pt,
            &self.listener,
            &target.name,
            plan.key,
            plan.sticky,
            true,
            target.retries,
            timeout,
        );
        while let Some(mut t) = tries.pick() {
            let addr = pt.pool.backends[t.index].addr;
            let by = t.started + timeout;
            let send = async {
                // A kept connection the backend closed meanwhile: once more on a new one,
                // as for any replayable request.
                let mut fresh = false;
                loop {
                    let req = Request::from_parts(head.clone(), empty());
                    match upstream.send(t.index, addr, req, fresh).await {
                        Err(SendError::Stale(_)) if !fresh => fresh = true,
                        other => break other,
                    }
                }
            };
            let failure = match tokio::time::timeout_at(by, send).await {
                Ok(Ok((resp, pooled))) => {
                    let status = resp.status().as_u16();
                    if !tries.answered(&t, status) {
                        continue;
                    }
                    let limit = MAX_PART_BODY as u64;
                    let read = tokio::time::timeout_at(by, read_whole(resp.into_body(), limit));
                    let read = read.await;
                    if let Some(p) = pooled {
                        let (rx, tx) = p.moved();
                        t.flight.add_bytes(rx, tx);
                        match read {
                            Ok(Ok(_)) => p.release(),
                            _ => p.abort(),
                        }
                    }
                    return match read {
                        Ok(Ok(bytes)) => decode(status, &bytes),
                        Ok(Err(None)) => Err(PartError::new(
                            Kind::Invalid,
                            502,
                            format!("the backend's answer is over {MAX_PART_BODY} bytes"),
                        )),
                        Ok(Err(Some(_))) => Err(PartError::new(
                            Kind::Unreachable,
                            502,
                            "the backend's answer broke off",
                        )),
                        Err(_) => Err(PartError::new(
                            Kind::Timeout,
                            504,
                            "the backend's answer did not arrive in time",
                        )),
                    };
                }
                Ok(Err(SendError::Connect(e, _))) => Failure::Connect(e),
                Ok(Err(SendError::Unanswered(e))) => {
                    Failure::Unanswered(format!("closed without answering: {}", root_cause(&e)))
                }
                Ok(Err(SendError::Failed(e) | SendError::Stale(e))) => {
                    Failure::Exchange(format!("failed: {}", root_cause(&e)))
                }
                Err(_) => Failure::Timeout(format!("no answer within {timeout:?}")),
            };
            if !tries.failed(t, failure) {
                break;
            }
        }
        let (status, msg) = tries.answer();
        let kind = if status == 504 {
            Kind::Timeout
        } else {
            Kind::Unreachable
        };
        Err(PartError::new(kind, status, msg))
    }
}
