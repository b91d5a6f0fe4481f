//! Weighted random: each eligible backend with probability weight / total.

use super::{weighted_choice, Pick, Selector};

#[derive(Debug, Default)]
pub struct Random;

impl Selector for Random {
    fn select(&self, p: Pick<'_>) -> Option<usize> {
        weighted_choice(p.view, p.tried, p.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn weights_respected_within_1_percent(weights in proptest::collection::vec(1u32..20, 1..8), seed in any::<u64>()) {
            let v = FakeView::new(&weights);
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut counts = vec![0u64; weights.len()];
            for _ in 0..100_000 {
                let i = Random.select(Pick { key: 0, view: &v, tried: &Tried::default(), rng: &mut rng }).expect("some");
                counts[i] += 1;
            }
            assert_shares(&counts, &weights, 0.01);
        }

        #[test]
        fn never_picks_down_or_tried(n in 1usize..10, seed in any::<u64>()) {
            let v = FakeView::uniform(n);
            let mut tried = Tried::default();
            tried.insert(0);
            if n > 1 { v.set_up(n - 1, false); }
            let mut rng = fastrand::Rng::with_seed(seed);
            for _ in 0..200 {
                let got = Random.select(Pick { key: 0, view: &v, tried: &tried, rng: &mut rng });
                match got {
                    Some(i) => prop_assert!(i != 0 && i != n - 1),
                    None => prop_assert!(n <= 2),
                }
            }
        }
    }
}
