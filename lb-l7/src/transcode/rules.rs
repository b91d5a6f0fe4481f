//! The HTTP rules of a route's gRPC services, read from their methods' `google.api.http`
//! options when the config loads and checked then: every method of a named service has a
//! rule, is unary, and its templates and `body` name fields that exist and can take a value.
//! Pure.

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};

use super::template::Template;

/// The `google.api.http` extension of `google.protobuf.MethodOptions` (field 72295728).
pub const HTTP_EXTENSION: &str = "google.api.http";

/// Where a rule takes the request body.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body: every field comes from the path and the query.
    None,
    /// `body = "*"`: the whole request message; the query is not read.
    Whole,
    /// `body = "field"`: that top-level field.
    Field(FieldDescriptor),
}

/// One HTTP binding of one gRPC method.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Method,
    pub template: Template,
    /// The fields each of the template's variables sets, resolved (outermost first).
    pub path_fields: Vec<Vec<FieldDescriptor>>,
    pub body: BodyRule,
    /// `response_body`: the output field that is the HTTP body, if not the whole message.
    pub response_body: Option<FieldDescriptor>,
    /// `/pkg.Service/Method`: the gRPC request path.
    pub grpc_path: String,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
}

/// The rules of `services` in `pool`, most specific first (a verb, then more literal
/// segments), or what is wrong with them.
pub fn build(pool: &DescriptorPool, services: &[String]) -> Result<Vec<Rule>, Vec<String>> {
    let mut errors = Vec::new();
    let Some(ext) = pool.get_extension_by_name(HTTP_EXTENSION) else {
        return Err(vec![format!(
            "the descriptor set does not define {HTTP_EXTENSION}: build it with --include_imports so google/api/annotations.proto is in it"
        )]);
    };
    let mut rules = Vec::new();
    for name in services {
        let Some(service) = pool.get_service_by_name(name) else {
            let known: Vec<String> = pool.services().map(|s| s.full_name().to_string()).collect();
            errors.push(format!(
                "service \"{name}\" is not in the descriptor set (it has: {})",
                if known.is_empty() {
                    "no services".to_string()
                } else {
                    known.join(", ")
                }
            ));
            continue;
        };
        for m in service.methods() {
            if let Err(e) = method_rules(&m, &ext, &mut rules) {
                errors.push(format!("{}: {e}", m.full_name()));
            }
        }
    }
    // Two rules of one shape: which method a request calls would be the descriptor's order.
    for (i, a) in rules.iter().enumerate() {
        for b in &rules[i + 1..] {
            let same = a.method == b.method
                && a.template.segments == b.template.segments
                && a.template.verb == b.template.verb;
            if same {
                errors.push(format!(
                    "{} and {} both take {} requests of the same path template",
                    a.grpc_path, b.grpc_path, a.method
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // A rule with a `:verb` first (`/v1/{name=books/*}` would also take `/v1/books/1:cancel`,
    // the verb in its variable), then more literal segments; a stable sort, so equally
    // specific rules keep the descriptor's order.
    rules.sort_by_key(|r| std::cmp::Reverse((r.template.verb.is_some(), r.template.literals())));
    Ok(rules)
}

fn method_rules(
    m: &MethodDescriptor,
    ext: &prost_reflect::ExtensionDescriptor,
    out: &mut Vec<Rule>,
) -> Result<(), String> {
    if m.is_client_streaming() || m.is_server_streaming() {
        return Err(
            "a streaming method cannot be transcoded (only unary methods map to one JSON request and answer)"
                .into(),
        );
    }
    let options = m.options();
    if !options.has_extension(ext) {
        return Err(format!(
            "has no ({HTTP_EXTENSION}) option: every method of a transcoded service needs one"
        ));
    }
    let Value::Message(rule) = options.get_extension(ext).into_owned() else {
        return Err(format!("its ({HTTP_EXTENSION}) option is not an HttpRule"));
    };
    out.push(one_rule(m, &rule)?);
    if let Some(Value::List(more)) = rule
        .get_field_by_name("additional_bindings")
        .map(|v| v.into_owned())
    {
        for b in more {
            if let Value::Message(b) = b {
                out.push(one_rule(m, &b)?);
            }
        }
    }
    Ok(())
}

fn text(rule: &DynamicMessage, field: &str) -> Option<String> {
    if !rule.has_field_by_name(field) {
        return None;
    }
    match rule.get_field_by_name(field)?.as_ref() {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn one_rule(m: &MethodDescriptor, rule: &DynamicMessage) -> Result<Rule, String> {
    let mut pattern = None;
    for (field, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if let Some(p) = text(rule, field) {
            pattern = Some((method, p));
        }
    }
    if rule.has_field_by_name("custom") {
        if let Some(Value::Message(c)) = rule.get_field_by_name("custom").map(|v| v.into_owned()) {
            let kind = text(&c, "kind").unwrap_or_default();
            let method = Method::from_bytes(kind.as_bytes())
                .map_err(|_| format!("custom method \"{kind}\" is not an HTTP method"))?;
            pattern = Some((method, text(&c, "path").unwrap_or_default()));
        }
    }
    let Some((method, path)) = pattern else {
        return Err("its HttpRule names no HTTP method and path".into());
    };
    let template = Template::parse(&path).map_err(|e| format!("path template \"{path}\": {e}"))?;
    let input = m.input();
    let mut path_fields = Vec::new();
    for v in &template.variables {
        let dotted = v.field.join(".");
        let chain = field_path(&input, &v.field)
            .map_err(|e| format!("path template \"{path}\" binds \"{dotted}\": {e}"))?;
        path_fields.push(chain);
    }
    let body = match text(rule, "body").as_deref() {
        None | Some("") => BodyRule::None,
        Some("*") => BodyRule::Whole,
        Some(f) => {
            let fd = input
                .get_field_by_name(f)
                .ok_or_else(|| format!("body \"{f}\" is not a field of {}", input.full_name()))?;
            BodyRule::Field(fd)
        }
    };
    // Two members of one oneof: setting one clears the other, so no request could be mapped.
    let body_field = match &body {
        BodyRule::Field(f) => Some(std::slice::from_ref(f)),
        _ => None,
    };
    for (i, a) in path_fields.iter().enumerate() {
        let mut others = path_fields[i + 1..]
            .iter()
            .map(Vec::as_slice)
            .chain(body_field);
        if let Some(b) = others.find(|b| super::message::oneof_sibling(a, b)) {
            return Err(format!(
                "path template \"{path}\" binds \"{}\", in a oneof with \"{}\", which it or the body also sets",
                a.iter().map(|f| f.name()).collect::<Vec<_>>().join("."),
                b.iter().map(|f| f.name()).collect::<Vec<_>>().join("."),
            ));
        }
    }
    if !matches!(body, BodyRule::None) && matches!(method, Method::GET | Method::DELETE) {
        return Err(format!("a {method} rule cannot take a body"));
    }
    let output = m.output();
    let response_body = match text(rule, "response_body").as_deref() {
        None | Some("") => None,
        Some(f) => Some(output.get_field_by_name(f).ok_or_else(|| {
            format!(
                "response_body \"{f}\" is not a field of {}",
                output.full_name()
            )
        })?),
    };
    Ok(Rule {
        method,
        template,
        path_fields,
        body,
        response_body,
        grpc_path: format!("/{}/{}", m.parent_service().full_name(), m.name()),
        input,
        output,
    })
}

/// The fields a dotted path names from `msg`: singular messages on the way, a singular
/// scalar (or enum) at the end, which a path or query text can set.
pub fn field_path(
    msg: &MessageDescriptor,
    names: &[String],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut out = Vec::with_capacity(names.len());
    let mut cur = msg.clone();
    for (i, n) in names.iter().enumerate() {
        let f = cur
            .get_field_by_name(n)
            .ok_or_else(|| format!("{} has no field \"{n}\"", cur.full_name()))?;
        let last = i + 1 == names.len();
        if f.is_list() || f.is_map() {
            return Err(format!("field \"{n}\" is repeated"));
        }
        match (f.kind(), last) {
            (Kind::Message(m), false) => cur = m,
            (Kind::Message(m), true) => {
                return Err(format!(
                    "field \"{n}\" is a message ({}), not a scalar",
                    m.full_name()
                ))
            }
            (_, false) => return Err(format!("field \"{n}\" is not a message")),
            (_, true) => {}
        }
        out.push(f);
    }
    Ok(out)
}
