//! Plain round-robin: each eligible backend in turn, weights ignored.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{eligible, Pick, Selector};

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
