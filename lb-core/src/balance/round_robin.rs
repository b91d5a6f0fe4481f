//! Plain round-robin: each eligible backend in turn, weights ignored. A backend still ramping
//! up in slow start takes its turn with the probability of its share, and passes it on
//! otherwise.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{eligible, Pick, Selector};
use crate::health::state::FULL_SHARE;

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Selector for RoundRobin {
    fn select(&self, p: Pick<'_>) -> Option<usize> {
        let n = p.view.len();
        let mut passed = None;
        // Each turn passed on by a ramping backend goes to the next; if every eligible one
        // passed, the first of them takes it after all.
        for _ in 0..n {
            let i = self.turn(&p)?;
            let share = p.view.share(i);
            if share >= FULL_SHARE || p.rng.u32(0..FULL_SHARE) < share {
                return Some(i);
            }
            passed.get_or_insert(i);
        }
        passed
    }
}

impl RoundRobin {
    /// The eligible backend whose turn it is.
    fn turn(&self, p: &Pick<'_>) -> Option<usize> {
        let n = p.view.len();
        if n == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let i = turn % n;
        if eligible(p.view, p.tried, i) {
            return Some(i);
        }
        // Slow path: count eligible backends and take this turn's share among them, so a
        // down backend's turns spread evenly rather than all landing on its neighbour.
        let m = (0..n).filter(|&j| eligible(p.view, p.tried, j)).count();
        if m == 0 {
            return None;
        }
        (0..n)
            .filter(|&j| eligible(p.view, p.tried, j))
            .nth(turn % m)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use proptest::prelude::*;

    #[test]
    fn cycles_in_order() {
        let s = RoundRobin::new();
        let v = FakeView::uniform(3);
        let seq: Vec<_> = (0..6).filter_map(|_| pick(&s, &v)).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_down_and_tried() {
        let s = RoundRobin::new();
        let v = FakeView::uniform(3);
        v.set_up(1, false);
        let mut tried = Tried::default();
        tried.insert(2);
        for _ in 0..5 {
            assert_eq!(pick_with(&s, &v, &tried), Some(0));
        }
        tried.insert(0);
        assert_eq!(pick_with(&s, &v, &tried), None);
    }

    #[test]
    fn a_ramping_backend_takes_its_share_of_turns() {
        let s = RoundRobin::new();
        let v = FakeView::uniform(4);
        v.set_share(2, 250);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = [0u64; 4];
        for _ in 0..40_000 {
            let i = s
                .select(Pick {
                    key: 0,
                    view: &v,
                    tried: &Tried::default(),
                    rng: &mut rng,
                })
                .expect("some");
            counts[i] += 1;
        }
        // Turns come in order, so a quarter share of backend 2's turns is 1/4 of 1/4 of all,
        // and the turns it passes go to the others evenly.
        let share = counts[2] as f64 / 40_000.0;
        assert!(
            (share - 0.25 * 0.25 / (0.75 + 0.25 * 0.25)).abs() < 0.01,
            "{counts:?}"
        );
        v.set_up(0, false);
        v.set_up(1, false);
        v.set_up(3, false);
        assert_eq!(pick(&s, &v), Some(2), "alone, a ramping backend serves");
    }

    proptest! {
        #[test]
        fn spreads_evenly_over_up_backends(n in 2usize..12, down in 0usize..12) {
            let s = RoundRobin::new();
            let v = FakeView::uniform(n);
            let down = down % n;
            v.set_up(down, false);
            let mut counts = vec![0u64; n];
            let rounds = 1000 * (n as u64);
            for _ in 0..rounds {
                counts[pick(&s, &v).expect("some up")] += 1;
            }
            prop_assert_eq!(counts[down], 0);
            let mut w = vec![1u32; n];
            w[down] = 0;
            assert_shares(&counts, &w, 0.01);
        }
    }
}
