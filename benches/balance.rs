//! Micro-benchmarks of data-path primitives: one pick per algorithm at 3/100/1000 backends,
//! Maglev table builds, and parsing + validating the reference config.
//! Run: `cargo bench -p lb-core --bench balance`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb_core::balance::{self, table_size, Maglev, Member, Pick, Tried, View};
use lb_core::config::Algorithm;

struct Plain {
    weights: Vec<u32>,
    active: Vec<u64>,
}

impl View for Plain {
    fn len(&self) -> usize {
        self.weights.len()
    }
    fn available(&self, _: usize) -> bool {
        true
    }
    fn active(&self, i: usize) -> u64 {
        self.active[i]
    }
    fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }
}

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            id: format!("10.{}.{}.1:80", i / 250, i % 250),
            weight: 1 + (i % 3) as u32,
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [3usize, 100, 1000] {
        let ms = members(n);
        let view = Plain {
            weights: ms.iter().map(|m| m.weight).collect(),
            active: (0..n as u64).map(|i| i % 7).collect(),
        };
        for alg in [
            Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin,
            Algorithm::LeastConnections,
            Algorithm::Random,
            Algorithm::PowerOfTwo,
            Algorithm::ConsistentHash,
        ] {
            let sel = balance::build(alg, &ms, None);
            let mut rng = fastrand::Rng::with_seed(7);
            let tried = Tried::default();
            let mut key = 0u64;
            g.bench_with_input(BenchmarkId::new(alg.name(), n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    black_box(sel.select(Pick {
                        key,
                        view: &view,
                        tried: &tried,
                        rng: &mut rng,
                    }))
                })
            });
        }
    }
    g.finish();
}

fn maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(20);
    // The table grows past 3,276 backends (`table_size`): 100,000 build 2,000,003 slots.
    for n in [10usize, 100, 1000, 10_000, 100_000] {
        let ms = members(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &ms, |b, ms| {
            b.iter(|| black_box(Maglev::new(ms, table_size(ms.len()), None)))
        });
    }
    g.finish();
}

fn config_parse(c: &mut Criterion) {
    let text = include_str!("../conf/lb.toml");
    c.bench_function("config_parse_validate/reference", |b| {
        b.iter(|| black_box(lb_core::config::load_str("lb.toml", text).is_ok()))
    });
}

criterion_group!(benches, pick, maglev_build, config_parse);
criterion_main!(benches);
