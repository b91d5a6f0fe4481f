//! Power of two choices: draw two backends at random (in proportion to weight) and take the
//! one with fewer active connections per unit of weight. Near least-connections' balance at
//! a constant cost, and no herd onto one "least loaded" backend.

use super::{eligible, less_loaded, weighted_choice, Pick, Selector, Tried};

#[derive(Debug, Default)]
pub struct PowerOfTwo;

impl Selector for PowerOfTwo {
    fn select(&self, p: Pick<'_>) -> Option<usize> {
        let a = weighted_choice(p.view, p.tried, p.rng)?;
        let mut without_a: Tried = p.tried.clone();
        without_a.insert(a);
        let Some(b) = weighted_choice(p.view, &without_a, p.rng) else {
            return Some(a);
        };
        debug_assert!(eligible(p.view, p.tried, b));
        Some(if less_loaded(p.view, b, a) { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use proptest::prelude::*;

    #[test]
    fn prefers_the_less_loaded_of_two() {
        let v = FakeView::uniform(2);
        v.active[0].set(10);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..50 {
            let got = PowerOfTwo.select(Pick {
                key: 0,
                view: &v,
                tried: &Tried::default(),
                rng: &mut rng,
            });
            assert_eq!(got, Some(1));
        }
    }

    proptest! {
        #[test]
        fn weights_respected_within_1_percent(weights in proptest::collection::vec(1u32..20, 1..8), seed in any::<u64>()) {
            let v = FakeView::new(&weights);
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut counts = vec![0u64; weights.len()];
            for _ in 0..100_000 {
                let i = PowerOfTwo.select(Pick { key: 0, view: &v, tried: &Tried::default(), rng: &mut rng }).expect("some");
                v.active[i].set(v.active[i].get() + 1);
                counts[i] += 1;
            }
            assert_shares(&counts, &weights, 0.01);
        }
    }
}
