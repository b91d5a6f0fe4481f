//! gRPC through the gateway over HTTP/2 end to end: a tonic service behind lb and a tonic
//! client in front, unary, server-streaming and bidirectional calls, and error statuses
//! (which ride on trailers) reaching the client intact.

mod support;

#[path = "support/grpc_raw.rs"]
mod grpc_raw;

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use grpc_raw::Raw;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use support::*;
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// `Echo/Unary` echoes (or fails with NOT_FOUND for "missing"); `Echo/Count` streams
/// "1".."n"; `Echo/Chat` answers each message with its upper-case.
#[derive(Clone)]
struct Echo;

impl tonic::server::UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<Bytes>, Status>> + Send>>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        Box::pin(async move {
            let msg = req.into_inner();
            if msg.as_ref() == b"missing" {
                return Err(Status::not_found("no such thing"));
            }
            Ok(Response::new(msg))
        })
    }
}

impl tonic::server::ServerStreamingService<Bytes> for Echo {
    type Response = Bytes;
    type ResponseStream = BoxStream;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<BoxStream>, Status>> + Send>>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        Box::pin(async move {
            let n: u32 = String::from_utf8_lossy(&req.into_inner())
                .parse()
                .unwrap_or(0);
            let items = (1..=n).map(|i| Ok(Bytes::from(i.to_string())));
            Ok(Response::new(
                Box::pin(futures_util::stream::iter(items)) as BoxStream
            ))
        })
    }
}

impl tonic::server::StreamingService<Bytes> for Echo {
    type Response = Bytes;
    type ResponseStream = BoxStream;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<BoxStream>, Status>> + Send>>;
    fn call(&mut self, req: Request<tonic::Streaming<Bytes>>) -> Self::Future {
        Box::pin(async move {
            let replies = req
                .into_inner()
                .map(|m| m.map(|b| Bytes::from(b.to_ascii_uppercase())));
            Ok(Response::new(Box::pin(replies) as BoxStream))
        })
    }
}

async fn grpc_backend() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<Incoming>| async move {
                    let mut grpc = tonic::server::Grpc::new(Raw);
                    let resp = match req.uri().path() {
                        "/test.Echo/Unary" => grpc.unary(Echo, req).await,
                        "/test.Echo/Count" => grpc.server_streaming(Echo, req).await,
                        "/test.Echo/Chat" => grpc.streaming(Echo, req).await,
                        _ => Status::unimplemented("no such method").into_http(),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_unary_streaming_and_statuses_cross_lb() {
    let backend = grpc_backend().await;
    let (gw, _) = gateway(&config(
        &[(&[backend], "http2 = true")],
        "pool = \"p0\"",
        "",
    ))
    .await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<tonic::body::Body>();
    let origin: http::Uri = format!("http://{gw}").parse().expect("origin");
    let mut grpc = tonic::client::Grpc::with_origin(client, origin);

    grpc.ready().await.expect("ready");
    let resp = grpc
        .unary(
            Request::new(Bytes::from("hello")),
            PathAndQuery::from_static("/test.Echo/Unary"),
            Raw,
        )
        .await
        .expect("unary call");
    assert_eq!(resp.into_inner(), Bytes::from("hello"));

    grpc.ready().await.expect("ready");
    let err = grpc
        .unary(
            Request::new(Bytes::from("missing")),
            PathAndQuery::from_static("/test.Echo/Unary"),
            Raw,
        )
        .await
        .expect_err("NOT_FOUND");
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "no such thing")
    );

    grpc.ready().await.expect("ready");
    let mut stream = grpc
        .server_streaming(
            Request::new(Bytes::from("50")),
            PathAndQuery::from_static("/test.Echo/Count"),
            Raw,
        )
        .await
        .expect("server streaming call")
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.expect("message") {
        got.push(String::from_utf8_lossy(&m).into_owned());
    }
    assert_eq!(got, (1..=50).map(|i| i.to_string()).collect::<Vec<_>>());
    // The stream ended with grpc-status 0 in the trailers.
    let trailers = stream
        .trailers()
        .await
        .expect("trailers")
        .expect("some trailers");
    assert_eq!(
        trailers.get("grpc-status").and_then(|v| v.to_str().ok()),
        Some("0")
    );

    grpc.ready().await.expect("ready");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut replies = grpc
        .streaming(
            Request::new(outbound),
            PathAndQuery::from_static("/test.Echo/Chat"),
            Raw,
        )
        .await
        .expect("bidi call")
        .into_inner();
    // Each message is answered before the next is sent: both directions stream at once.
    for word in ["ping", "over", "lb"] {
        tx.send(Bytes::from(word)).await.expect("send");
        let reply = replies.message().await.expect("reply").expect("some reply");
        assert_eq!(reply, Bytes::from(word.to_ascii_uppercase()));
    }
    drop(tx);
    assert!(replies.message().await.expect("end").is_none());

    grpc.ready().await.expect("ready");
    let err = grpc
        .unary(
            Request::new(Bytes::new()),
            PathAndQuery::from_static("/test.Echo/Nope"),
            Raw,
        )
        .await
        .expect_err("UNIMPLEMENTED");
    assert_eq!(err.code(), Code::Unimplemented);
}
