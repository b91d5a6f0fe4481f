//! Rules read from descriptor sets compiled from the fixtures in `lb-l7/tests/fixtures/
//! transcode` (protox, no protoc), and requests and answers mapped through them.

use http::Method;
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};

use super::*;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transcode")
}

/// The encoded descriptor set of a fixture `.proto`, imports included.
pub(crate) fn descriptor_set(file: &str) -> Vec<u8> {
    compiled(file, true)
}

/// Encoded by protox itself: prost-types' messages would drop the options' extensions.
fn compiled(file: &str, imports: bool) -> Vec<u8> {
    let mut c = protox::Compiler::new([fixtures()]).expect("fixtures");
    c.include_imports(imports);
    c.open_files([file]).expect("fixture compiles");
    c.encode_file_descriptor_set()
}

fn bookstore() -> &'static Transcoder {
    static T: std::sync::OnceLock<Transcoder> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        from_bytes(
            &descriptor_set("bookstore.proto"),
            &["bookstore.v1.Bookstore".into()],
        )
        .expect("bookstore rules")
    })
}

fn refusal(service: &str) -> String {
    let set = descriptor_set("refused.proto");
    match from_bytes(&set, &[format!("refused.v1.{service}")]) {
        Ok(_) => panic!("{service} was accepted"),
        Err(e) => e.join("; "),
    }
}

#[test]
fn config_load_refuses_what_cannot_be_transcoded() {
    let e = refusal("Streaming");
    assert!(
        e.contains("refused.v1.Streaming.Watch") && e.contains("streaming"),
        "{e}"
    );
    let e = refusal("Unannotated");
    assert!(
        e.contains("Unannotated.Plain") && e.contains("google.api.http"),
        "{e}"
    );
    let e = refusal("MissingField");
    assert!(e.contains("no field \"nope\""), "{e}");
    let e = refusal("MessageVariable");
    assert!(e.contains("is a message"), "{e}");
    let e = refusal("RepeatedVariable");
    assert!(e.contains("repeated"), "{e}");
    let e = refusal("MissingBody");
    assert!(e.contains("body \"nope\" is not a field"), "{e}");
    let e = refusal("BadTemplate");
    assert!(e.contains("'**' must be the last segment"), "{e}");
    let e = refusal("Clash");
    assert!(
        e.contains("/refused.v1.Clash/One and /refused.v1.Clash/Two both take GET"),
        "{e}"
    );
    let e = refusal("NoSuchService");
    assert!(e.contains("not in the descriptor set"), "{e}");
    let set = descriptor_set("refused.proto");
    assert!(from_bytes(&set, &["refused.v1.NestedOk".into()]).is_ok());
    let e = from_bytes(b"\xff\xff", &["x.Y".into()]).expect_err("garbage");
    assert!(e[0].contains("not a FileDescriptorSet"), "{e:?}");
}

#[test]
fn a_set_without_the_http_option_is_named() {
    // A set built without --include_imports lacks google/api/annotations.proto.
    let only = compiled("bookstore.proto", false);
    let e = from_bytes(&only, &["bookstore.v1.Bookstore".into()]).expect_err("refused");
    assert!(
        e[0].contains("--include_imports") || e[0].contains("FileDescriptorSet"),
        "{e:?}"
    );
}

fn call(
    t: &Transcoder,
    method: Method,
    path: &str,
    query: Option<&str>,
    body: &str,
) -> Result<(String, DynamicMessage), String> {
    let (rule, vars) = t.select(&method, path).map_err(|u| format!("{u:?}"))?;
    let msg = message::request(rule, &vars, query, body.as_bytes())?;
    Ok((rule.grpc_path.clone(), msg))
}

fn get<'m>(m: &'m DynamicMessage, name: &str) -> std::borrow::Cow<'m, Value> {
    m.get_field_by_name(name).expect("field")
}

#[test]
fn requests_map_to_methods_and_fields() {
    let t = bookstore();
    let (path, m) = call(t, Method::GET, "/v1/shelves/3/books/7", None, "").expect("get");
    assert_eq!(path, "/bookstore.v1.Bookstore/GetBook");
    assert_eq!(get(&m, "name").as_str(), Some("shelves/3/books/7"));

    let (path, m) = call(
        t,
        Method::GET,
        "/v1/shelves/3/books",
        Some("page.size=10&genres=FICTION&genres=2&archived=true&cursor=AAE%3D"),
        "",
    )
    .expect("list");
    assert_eq!(path, "/bookstore.v1.Bookstore/ListBooks");
    assert_eq!(get(&m, "shelf").as_i64(), Some(3));
    let page = get(&m, "page").as_message().cloned().expect("page");
    assert_eq!(
        page.get_field_by_name("size").and_then(|v| v.as_i32()),
        Some(10)
    );
    assert_eq!(get(&m, "genres").as_list().map(<[Value]>::len), Some(2));
    assert_eq!(
        get(&m, "cursor").as_bytes().map(|b| b.to_vec()),
        Some(vec![0, 1])
    );
    // The additional binding reaches the same method.
    let (path, _) = call(t, Method::GET, "/v1/books", None, "").expect("additional");
    assert_eq!(path, "/bookstore.v1.Bookstore/ListBooks");

    let (_, m) = call(
        t,
        Method::POST,
        "/v1/shelves/3/books",
        None,
        r#"{"title":"Dune","pages":"412","genre":"FICTION"}"#,
    )
    .expect("create");
    let book = get(&m, "book").as_message().cloned().expect("book");
    assert_eq!(
        book.get_field_by_name("pages").and_then(|v| v.as_i64()),
        Some(412)
    );

    let (_, m) = call(
        t,
        Method::PATCH,
        "/v1/shelves/1/books/2",
        None,
        r#"{"title":"New"}"#,
    )
    .expect("patch");
    assert_eq!(get(&m, "name").as_str(), Some("shelves/1/books/2"));
    assert_eq!(get(&m, "title").as_str(), Some("New"));

    let (path, _) = call(t, Method::POST, "/v1/shelves/1/books/2:archive", None, "").expect("verb");
    // The path may bind a field inside the body's message; the body may not set it too.
    let (path2, m) = call(
        t,
        Method::PATCH,
        "/v1/shelves/1/books/2:rename",
        None,
        r#"{"title":"T"}"#,
    )
    .expect("rename");
    assert_eq!(path2, "/bookstore.v1.Bookstore/RenameBook");
    let book = get(&m, "book").as_message().cloned().expect("book");
    assert_eq!(
        book.get_field_by_name("name")
            .and_then(|v| v.as_str().map(str::to_string))
            .as_deref(),
        Some("shelves/1/books/2")
    );
    assert_eq!(
        book.get_field_by_name("title")
            .and_then(|v| v.as_str().map(str::to_string))
            .as_deref(),
        Some("T")
    );
    let e = call(
        t,
        Method::PATCH,
        "/v1/shelves/1/books/2:rename",
        None,
        r#"{"name":"shelves/9/books/9"}"#,
    )
    .expect_err("conflict");
    assert!(e.contains("set by the path"), "{e}");
    assert_eq!(path, "/bookstore.v1.Bookstore/ArchiveBook");
}

#[test]
fn hostile_requests_are_refused() {
    let t = bookstore();
    let bad = |m: Method, p: &str, q: Option<&str>, b: &str| call(t, m, p, q, b).expect_err(p);
    assert_eq!(bad(Method::GET, "/v1/nothing", None, ""), "Path");
    assert_eq!(
        bad(Method::PUT, "/v1/shelves/3/books/7", None, ""),
        "Method"
    );
    // An encoded slash cannot stretch `*` over more segments to reach GetBook.
    assert_eq!(
        bad(Method::GET, "/v1/shelves/3%2Fbooks/7", None, ""),
        "Path"
    );
    assert!(bad(Method::GET, "/v1/shelves/x/books", None, "").contains("64-bit integer"));
    assert!(bad(Method::GET, "/v1/shelves/1/books", Some("nope=1"), "")
        .contains("unknown query parameter"));
    assert!(bad(Method::GET, "/v1/shelves/1/books", Some("shelf=2"), "").contains("path binds"));
    assert!(
        bad(Method::GET, "/v1/shelves/1/books", Some("archived=yes"), "").contains("true or false")
    );
    assert!(bad(
        Method::GET,
        "/v1/shelves/1/books",
        Some("archived=true&archived=false"),
        ""
    )
    .contains("twice"));
    assert!(bad(
        Method::GET,
        "/v1/shelves/1/books",
        Some("genres=HORROR"),
        ""
    )
    .contains("bookstore.v1.Genre"));
    assert!(bad(Method::GET, "/v1/shelves/1/books", Some("page=1"), "").contains("message"));
    assert!(bad(Method::GET, "/v1/shelves/1/books", None, "{}").contains("no request body"));
    assert!(bad(Method::POST, "/v1/shelves/1/books", None, "{\"title\":").contains("not JSON"));
    assert!(bad(Method::POST, "/v1/shelves/1/books", None, r#"{"bogus":1}"#).contains("bogus"));
    assert!(bad(
        Method::POST,
        "/v1/shelves/1/books",
        None,
        r#"{"pages":"many"}"#
    )
    .contains("does not fit"));
    assert!(bad(
        Method::POST,
        "/v1/shelves/1/books",
        Some("book.title=x"),
        "{}"
    )
    .contains("body binds"));
    assert!(bad(
        Method::PATCH,
        "/v1/shelves/1/books/2",
        Some("title=x"),
        "{}"
    )
    .contains("not the query"));
    assert!(bad(
        Method::PATCH,
        "/v1/shelves/1/books/2",
        None,
        r#"{"name":"shelves/9/books/9"}"#
    )
    .contains("set by the path"));
    assert!(bad(
        Method::PATCH,
        "/v1/shelves/1/books/2",
        None,
        r#"{"title":"a"} x"#
    )
    .contains("one JSON value"));
    assert!(bad(Method::PATCH, "/v1/shelves/1/books/2", None, "").contains("empty"));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(!bad(Method::POST, "/v1/shelves/1/books", None, &deep).is_empty());
    let many = vec!["genres=1"; message::MAX_QUERY_FIELDS + 1].join("&");
    assert!(bad(Method::GET, "/v1/shelves/1/books", Some(&many), "").contains("more than"));
}

#[test]
fn answers_map_back_to_json() {
    let t = bookstore();
    let (rule, _) = t
        .select(&Method::GET, "/v1/shelves/1/books/2")
        .expect("rule");
    let mut book = DynamicMessage::new(rule.output.clone());
    book.set_field_by_name("name", Value::String("shelves/1/books/2".into()));
    book.set_field_by_name("pages", Value::I64(12));
    book.set_field_by_name("genre", Value::EnumNumber(2));
    let out = message::response(rule, &book.encode_to_vec()).expect("json");
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        r#"{"name":"shelves/1/books/2","pages":"12","genre":"SCIENCE"}"#
    );
    assert!(message::response(rule, b"\xff\xff\xff").is_err());
    let (rule, _) = t
        .select(&Method::POST, "/v1/shelves/1/books/2:archive")
        .expect("rule");
    let mut book = DynamicMessage::new(rule.output.clone());
    book.set_field_by_name("title", Value::String("Dune".into()));
    let out = message::response(rule, &book.encode_to_vec()).expect("json");
    assert_eq!(out, br#""Dune""#);
    let empty = DynamicMessage::new(rule.output.clone()).encode_to_vec();
    assert_eq!(message::response(rule, &empty).expect("json"), b"\"\"");
}

proptest::proptest! {
    #[test]
    fn no_request_panics(path in "/v1/[a-z0-9/%:.]{0,30}", query in "[a-z.=&%0-9]{0,30}", body in "[{}\":a-z0-9, \\[\\]]{0,40}") {
        let t = bookstore();
        for m in [Method::GET, Method::POST, Method::PATCH] {
            let _ = call(t, m, &path, Some(&query), &body);
        }
    }
}

#[test]
fn a_query_cannot_clear_what_the_path_or_body_set_through_a_oneof() {
    let t = from_bytes(&descriptor_set("oneof.proto"), &["oneof.v1.Items".into()])
        .expect("oneof rules");
    let bad = |m: Method, p: &str, q: &str, b: &str| {
        call(&t, m, p, Some(q), b).expect_err(&format!("{p}?{q}"))
    };
    // Setting a oneof's other member would clear the path's (the one policies saw).
    assert!(bad(Method::GET, "/v1/items/mine", "id=theirs", "").contains("oneof"));
    assert!(bad(Method::GET, "/v1/held/mine", "item.id=theirs", "").contains("oneof"));
    assert!(bad(Method::GET, "/v1/held/mine", "other=x", "").contains("oneof"));
    // ... or the body's field.
    assert!(bad(Method::PUT, "/v1/put/l", "other=x", r#"{"name":"n"}"#).contains("oneof"));
    // A body member beside the path's would be cleared by it: refused, not dropped.
    let body = |b: &str| call(&t, Method::PATCH, "/v1/held/mine", None, b);
    assert!(body(r#"{"other":"x"}"#)
        .expect_err("other")
        .contains("oneof"));
    assert!(body(r#"{"item":{"id":"x"}}"#)
        .expect_err("item.id")
        .contains("oneof"));
    let (_, msg) = body(r#"{"item":{"note":"n"},"label":"l"}"#).expect("note");
    assert_eq!(get(&msg, "label").as_str(), Some("l"));
    // A rule that always binds two members of one oneof is refused when the config loads.
    let set = descriptor_set("oneof.proto");
    for service in ["PathClash", "BodyClash"] {
        let e = from_bytes(&set, &[format!("oneof.v1.{service}")]).expect_err(service);
        assert!(e.join("; ").contains("in a oneof with"), "{e:?}");
    }
    // A field outside the oneof is still the query's to set.
    let (_, msg) = call(&t, Method::GET, "/v1/items/mine", Some("note=n"), "").expect("note");
    assert_eq!(get(&msg, "name").as_str(), Some("mine"));
    assert_eq!(get(&msg, "note").as_str(), Some("n"));
}

#[test]
fn a_body_of_many_small_values_is_refused_before_it_is_built() {
    let t = bookstore();
    let post = |b: &str| call(t, Method::POST, "/v1/shelves/1/books", None, b);
    // 2 bytes of JSON each, 50–100 bytes each once built: bounded by count, not size.
    let many = format!(
        r#"{{"tags":[{}""]}}"#,
        r#""","#.repeat(message::MAX_JSON_VALUES)
    );
    assert!(post(&many).expect_err("many").contains("JSON values"));
    let books = format!("[{}{{}}]", "{},".repeat(message::MAX_JSON_VALUES));
    let e = call(t, Method::PATCH, "/v1/shelves/1/books/2", None, &books).expect_err("books");
    assert!(e.contains("JSON values"), "{e}");
    // Structure inside strings is data, not values.
    let title = format!(
        r#"{{"title":"{}"}}"#,
        ",:[{".repeat(message::MAX_JSON_VALUES)
    );
    assert!(post(&title).is_ok());
    let ok = format!(r#"{{"tags":[{}""]}}"#, r#""a\",","#.repeat(1000));
    let (_, msg) = post(&ok).expect("a thousand tags");
    assert_eq!(
        get(&msg, "book")
            .as_message()
            .expect("book")
            .get_field_by_name("tags")
            .expect("tags")
            .as_list()
            .map(<[_]>::len),
        Some(1001)
    );
    // An upper bound: five values here, one more for each container opened.
    assert_eq!(message::json_values(br#"{"a":[1,2],"b":"x,y"}"#), 7);
}

#[test]
fn an_answer_of_many_small_values_is_refused_before_it_is_built() {
    let t = bookstore();
    let (rule, _) = t.select(&Method::GET, "/v1/shelves/1/books").expect("rule");
    let n = message::MAX_JSON_VALUES;
    // Empty books, 2 bytes each on the wire.
    let books = [0x0a, 0x00].repeat(n);
    let e = message::response(rule, &books).expect_err("books");
    assert!(e.contains("values"), "{e}");
    // Tags of empty books: nested messages are counted inside.
    let tags = [0x2a, 0x00].repeat(n);
    let mut nested = vec![0x0a];
    prost::encoding::encode_varint(tags.len() as u64, &mut nested);
    nested.extend_from_slice(&tags);
    assert!(message::response(rule, &nested).is_err());
    // Within the bound, an answer is as it was.
    let few = [0x0a, 0x00].repeat(1000);
    let json = message::response(rule, &few).expect("a thousand books");
    assert!(json.starts_with(br#"{"books":[{},{}"#));
    // Packed elements count one each, whatever their width.
    let (list, _) = t.select(&Method::GET, "/v1/books").expect("list");
    let genres = [0x1a, 0x03, 0x01, 0x02, 0x01];
    assert_eq!(
        wire::values(&list.input, &genres),
        4,
        "the message and 3 genres"
    );
}

/// Every value of a JSON document, containers included.
fn json_count(v: &serde_json::Value) -> usize {
    1 + match v {
        serde_json::Value::Array(a) => a.iter().map(json_count).sum(),
        serde_json::Value::Object(o) => o.values().map(json_count).sum(),
        _ => 0,
    }
}

fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z,:\\[{\"\\\\ ]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z,:\"]{0,4}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// The count that bounds a body never undercounts it, whatever its strings hold.
    #[test]
    fn json_values_is_an_upper_bound(v in any_json(), pretty in proptest::bool::ANY) {
        let text = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) };
        let text = text.expect("json");
        proptest::prop_assert!(message::json_values(&text) >= json_count(&v));
    }
}

/// Bodies and answers as deep as the parsers allow, on a worker's 2 MiB stack: served or
/// refused, never a stack overflow (serde_json stops at 128 levels, prost at 100).
#[test]
fn deep_bodies_and_answers_fit_a_worker_stack() {
    let t = from_bytes(&descriptor_set("deep.proto"), &["deep.v1.Trees".into()]).expect("deep");
    let t: &'static Transcoder = Box::leak(Box::new(t));
    let nodes = |d: usize| format!("{}{{}}{}", r#"{"child":"#.repeat(d), "}".repeat(d));
    let lists = |d: usize| format!("{}1{}", "[".repeat(d), "]".repeat(d));
    let run = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let (rule, _) = t.select(&Method::POST, "/v1/nodes").expect("rule");
            let (_, deepest) = call(t, Method::POST, "/v1/nodes", None, &nodes(126)).expect("126");
            // Deeper than prost decodes: the backend's answer is refused, not built.
            let e = message::response(rule, &deepest.encode_to_vec()).expect_err("too deep");
            assert!(e.contains("recursion limit"), "{e}");
            let (_, ok) = call(t, Method::POST, "/v1/nodes", None, &nodes(90)).expect("90");
            assert!(message::response(rule, &ok.encode_to_vec()).is_ok());
            let e = call(t, Method::POST, "/v1/nodes", None, &nodes(200)).expect_err("200");
            assert!(e.contains("recursion limit"), "{e}");
            for d in [100, 200] {
                assert!(call(t, Method::PUT, "/v1/nodes/x", None, &lists(d)).is_err());
            }
        });
    run.expect("thread").join().expect("no overflow, no panic");
}
