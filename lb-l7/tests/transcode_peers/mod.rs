//! The peers of the transcoding tests: the bookstore descriptor set compiled from the
//! fixtures (protox), a tonic bookstore service over it, and a liar that claims gRPC.
#![allow(dead_code)]

#[path = "../support/grpc_raw.rs"]
mod grpc_raw;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use grpc_raw::Raw;
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

pub fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transcode")
}

/// The bookstore descriptor set, imports included (encoded by protox so the methods'
/// `google.api.http` options survive).
pub fn descriptor_set() -> Vec<u8> {
    let mut c = protox::Compiler::new([fixtures()]).expect("fixtures");
    c.include_imports(true);
    c.open_files(["bookstore.proto", "refused.proto"])
        .expect("fixtures compile");
    c.encode_file_descriptor_set()
}

/// The descriptor set written where a config can name it (one file per test).
pub fn descriptor_file(test: &str) -> String {
    let path = std::env::temp_dir().join(format!("lb-transcode-{}-{test}.pb", std::process::id()));
    std::fs::write(&path, descriptor_set()).expect("write descriptor set");
    path.to_string_lossy().into_owned()
}

pub fn route(file: &str, services: &str) -> String {
    format!(
        "[[route]]\nlistener = \"web\"\nname = \"books\"\npool = \"p0\"\nmatch = {{ path_prefix = \"/v1\" }}\ntimeout = \"5s\"\ngrpc_transcode = {{ descriptor_set = \"{file}\", services = [{services}] }}\n"
    )
}

/// What the bookstore received: the gRPC method, its request in JSON, and `grpc-timeout`.
pub type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// One bookstore method: decodes its request, answers by the rules in [`answer`].
#[derive(Clone)]
struct Method {
    name: String,
    pool: DescriptorPool,
    seen: Seen,
}

fn msg(pool: &DescriptorPool, ty: &str, fields: &[(&str, Value)]) -> Bytes {
    let mut m = DynamicMessage::new(pool.get_message_by_name(ty).expect("type"));
    for (k, v) in fields {
        m.set_field_by_name(k, v.clone());
    }
    m.encode_to_vec().into()
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

impl Method {
    fn answer(&self, req: &DynamicMessage) -> Result<Bytes, Status> {
        let p = &self.pool;
        let text = |f: &str| {
            req.get_field_by_name(f)
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        match self.name.as_str() {
            "GetBook" => match text("name").as_str() {
                "shelves/1/books/1" => Ok(msg(
                    p,
                    "bookstore.v1.Book",
                    &[
                        ("name", s("shelves/1/books/1")),
                        ("title", s("Dune")),
                        ("pages", Value::I64(412)),
                    ],
                )),
                n if n.contains("bad") => Err(Status::invalid_argument(format!("bad name {n}"))),
                n => Err(Status::not_found(format!("no book \"{n}\" here"))),
            },
            "ListBooks" => {
                let shelf = req
                    .get_field_by_name("shelf")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0);
                let book = DynamicMessage::decode(
                    p.get_message_by_name("bookstore.v1.Book").expect("Book"),
                    msg(
                        p,
                        "bookstore.v1.Book",
                        &[("name", s(&format!("shelves/{shelf}/books/1")))],
                    ),
                )
                .expect("book");
                let next = serde_json::to_string(req).expect("json");
                Ok(msg(
                    p,
                    "bookstore.v1.ListBooksResponse",
                    &[
                        ("books", Value::List(vec![Value::Message(book)])),
                        ("next", s(&next)),
                    ],
                ))
            }
            "CreateBook" => {
                let shelf = req
                    .get_field_by_name("shelf")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0);
                let mut book = req
                    .get_field_by_name("book")
                    .and_then(|v| v.as_message().cloned())
                    .expect("book");
                book.set_field_by_name("name", s(&format!("shelves/{shelf}/books/new")));
                Ok(book.encode_to_vec().into())
            }
            "UpdateBook" => Ok(req.encode_to_vec().into()),
            "RenameBook" => Ok(req
                .get_field_by_name("book")
                .and_then(|v| v.as_message().map(|m| m.encode_to_vec().into()))
                .unwrap_or_default()),
            // DeleteBook of `shelves/1/books/N` fails with gRPC code N.
            "DeleteBook" => {
                let code: i32 = text("name")
                    .rsplit('/')
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                if code == 0 {
                    return Ok(Bytes::new());
                }
                Err(Status::new(
                    Code::from(code),
                    format!("code {code}: ünïcode"),
                ))
            }
            "ArchiveBook" => Ok(msg(p, "bookstore.v1.Book", &[("title", s("Archived"))])),
            _ => Err(Status::unimplemented("no such method")),
        }
    }
}

impl tonic::server::UnaryService<Bytes> for Method {
    type Response = Bytes;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<Bytes>, Status>> + Send>>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let timeout = req
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let svc = this
                .pool
                .get_service_by_name("bookstore.v1.Bookstore")
                .expect("service");
            let m = svc
                .methods()
                .find(|m| m.name() == this.name)
                .expect("method");
            let input = DynamicMessage::decode(m.input(), req.into_inner())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let json = serde_json::to_string(&input).expect("json");
            this.seen
                .lock()
                .expect("seen")
                .push((this.name.clone(), json, timeout));
            this.answer(&input).map(Response::new)
        })
    }
}

pub async fn bookstore() -> (SocketAddr, Seen) {
    let pool = DescriptorPool::decode(descriptor_set().as_slice()).expect("pool");
    let seen: Seen = Arc::default();
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let (pool, seen) = (pool.clone(), s2.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let (pool, seen) = (pool.clone(), seen.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let resp = match path.strip_prefix("/bookstore.v1.Bookstore/") {
                            Some(name) => {
                                let m = Method {
                                    name: name.to_string(),
                                    pool,
                                    seen,
                                };
                                tonic::server::Grpc::new(Raw).unary(m, req).await
                            }
                            None => Status::unimplemented("no such service").into_http(),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// An HTTP/2 backend that claims gRPC and answers each bookstore method with a broken
/// answer: GetBook a truncated frame, ListBooks no grpc-status, CreateBook a frame declaring
/// 64 MiB, UpdateBook a compressed message, DeleteBook a valid Trailers-Only NOT_FOUND,
/// ArchiveBook a message that is not a Book, RenameBook a 6 MiB body.
pub async fn liar() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<Incoming>| async move {
                    let ok = || {
                        let mut t = http::HeaderMap::new();
                        t.insert("grpc-status", http::HeaderValue::from_static("0"));
                        t
                    };
                    let (data, trailers): (Vec<u8>, Option<http::HeaderMap>) =
                        match req.uri().path() {
                            "/bookstore.v1.Bookstore/GetBook" => {
                                (b"\0\0\0\0\x10abc".to_vec(), Some(ok()))
                            }
                            "/bookstore.v1.Bookstore/ListBooks" => (b"\0\0\0\0\0".to_vec(), None),
                            "/bookstore.v1.Bookstore/CreateBook" => {
                                let mut d = b"\0\x04\0\0\0".to_vec();
                                d.extend(std::iter::repeat_n(0u8, 64 * 1024));
                                (d, Some(ok()))
                            }
                            "/bookstore.v1.Bookstore/UpdateBook" => {
                                (b"\x01\0\0\0\x01a".to_vec(), Some(ok()))
                            }
                            "/bookstore.v1.Bookstore/ArchiveBook" => {
                                (b"\0\0\0\0\x03\xff\xff\xff".to_vec(), Some(ok()))
                            }
                            "/bookstore.v1.Bookstore/RenameBook" => {
                                // 6 MiB of body, past any message lb reads.
                                let mut d = b"\0\0\x60\0\0".to_vec();
                                d.resize(5 + (6 << 20), b'x');
                                (d, Some(ok()))
                            }
                            _ => (Vec::new(), None),
                        };
                    let only = req.uri().path().ends_with("DeleteBook");
                    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> =
                        vec![Ok(Frame::data(Bytes::from(data)))];
                    if let Some(t) = trailers {
                        frames.push(Ok(Frame::trailers(t)));
                    }
                    let body = StreamBody::new(futures_util::stream::iter(frames));
                    let mut resp = http::Response::new(body);
                    resp.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    if only {
                        resp.headers_mut()
                            .insert("grpc-status", http::HeaderValue::from_static("5"));
                        resp.headers_mut()
                            .insert("grpc-message", http::HeaderValue::from_static("gone"));
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

/// An HTTP/2 server that answers every request with `status` and a text body, as an
/// intermediary in front of a gRPC service might.
pub async fn not_grpc(status: u16) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<Incoming>| async move {
                    let mut resp =
                        http::Response::new(http_body_util::Full::new(Bytes::from("busy")));
                    *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
                    Ok::<_, Infallible>(resp)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}
