//! The per-request cost of `grpc_transcode` without I/O: picking the rule by method and path
//! template, building the gRPC request (JSON body + path variable → message → framed bytes),
//! and turning the unary answer back into JSON, for a typical small message.
//! Run: `cargo bench -p lb-l7 --bench transcode`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use lb_l7::transcode::{from_bytes, message, status};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};

/// conf/grpc-transcode.pb: the bookstore fixture's descriptor set.
static SET: &[u8] = include_bytes!("../../conf/grpc-transcode.pb");

const BODY: &[u8] =
    br#"{"title":"The Left Hand of Darkness","pages":"304","genre":"FICTION","tags":["hugo","nebula","classic"]}"#;

fn transcode(c: &mut Criterion) {
    let t = from_bytes(SET, &["bookstore.v1.Bookstore".into()]).expect("descriptor set");
    let path = "/v1/shelves/42/books";
    let (rule, _) = t.select(&Method::POST, path).expect("rule");
    let mut book = DynamicMessage::new(rule.output.clone());
    book.set_field_by_name("name", Value::String("shelves/42/books/7".into()));
    book.set_field_by_name("title", Value::String("The Left Hand of Darkness".into()));
    book.set_field_by_name("pages", Value::I64(304));
    book.set_field_by_name("genre", Value::EnumNumber(1));
    let tags = ["hugo", "nebula", "classic"].map(|s| Value::String(s.into()));
    book.set_field_by_name("tags", Value::List(tags.to_vec()));
    let answer = status::frame(&book.encode_to_vec());

    let mut g = c.benchmark_group("transcode");
    g.bench_function("select", |b| {
        b.iter(|| black_box(t.select(&Method::POST, black_box(path)).is_ok()))
    });
    g.bench_function("request", |b| {
        b.iter(|| {
            let (rule, vars) = t.select(&Method::POST, black_box(path)).expect("rule");
            let msg = message::request(rule, &vars, None, black_box(BODY)).expect("message");
            black_box(status::frame(&message::encode(&msg)))
        })
    });
    g.bench_function("response", |b| {
        b.iter(|| {
            let m = status::unframe(black_box(&answer))
                .expect("frame")
                .expect("message");
            black_box(message::response(rule, m).expect("json"))
        })
    });
    g.bench_function("round_trip", |b| {
        b.iter(|| {
            let (rule, vars) = t.select(&Method::POST, black_box(path)).expect("rule");
            let msg = message::request(rule, &vars, None, black_box(BODY)).expect("message");
            black_box(status::frame(&message::encode(&msg)));
            let m = status::unframe(black_box(&answer))
                .expect("frame")
                .expect("message");
            black_box(message::response(rule, m).expect("json"))
        })
    });
    g.finish();
}

criterion_group!(benches, transcode);
criterion_main!(benches);
