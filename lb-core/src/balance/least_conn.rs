//! Least connections per unit of weight. Ties are broken fairly: the scan starts one place
//! further each pick, so equally loaded backends take turns instead of the first winning.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{eligible, less_loaded, Pick, Selector};

#[derive(Debug, Default)]
pub struct LeastConnections {
    start: AtomicUsize,
}

impl LeastConnections {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Selector for LeastConnections {
    fn select(&self, p: Pick<'_>) -> Option<usize> {
        let n = p.view.len();
        if n == 0 {
            return None;
        }
        let start = self.start.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<usize> = None;
        for j in 0..n {
            let i = (start + j) % n;
            if eligible(p.view, p.tried, i) && best.is_none_or(|b| less_loaded(p.view, i, b)) {
                best = Some(i);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use proptest::prelude::*;

    #[test]
    fn picks_the_least_loaded() {
        let v = FakeView::uniform(3);
        v.active[0].set(5);
        v.active[1].set(1);
        v.active[2].set(3);
        let s = LeastConnections::new();
        assert_eq!(pick(&s, &v), Some(1));
    }

    #[test]
    fn ties_rotate() {
        let v = FakeView::uniform(3);
        let s = LeastConnections::new();
        let seq: Vec<_> = (0..6).filter_map(|_| pick(&s, &v)).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    }

    proptest! {
        /// With connections that never close, load per weight stays level, so the share of
        /// picks follows the weights.
        #[test]
        fn weights_respected_within_1_percent(weights in proptest::collection::vec(1u32..20, 1..8)) {
            let v = FakeView::new(&weights);
            let s = LeastConnections::new();
            let mut counts = vec![0u64; weights.len()];
            for _ in 0..100_000 {
                let i = pick(&s, &v).expect("some");
                v.active[i].set(v.active[i].get() + 1);
                counts[i] += 1;
            }
            assert_shares(&counts, &weights, 0.01);
        }
    }
}
