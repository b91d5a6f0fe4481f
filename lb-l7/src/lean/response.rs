//! A backend's response head on the lean path: how its body is framed, whether the
//! connection can carry another exchange, and the head the client gets (end-to-end fields
//! and framing kept, hop-by-hop fields dropped, lb's own added). Pure.

use super::head::{field, named_by_connection};
use crate::forward;
use crate::request::{digits, tokens};

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a HEAD request, 1xx, 204 or 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes: the client connection must close after it too.
    UntilClose,
}

/// A backend's response, as its head says.
#[derive(Debug)]
pub struct Response<'b> {
    pub status: u16,
    pub reason: &'b str,
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub reusable: bool,
    names_fields: bool,
    pub headers: &'b [httparse::Header<'b>],
}

/// Reads a parsed response head (to a HEAD request when `head`); `Err` when its framing is
/// ambiguous or malformed, which fails the exchange (502).
pub fn response<'b>(
    resp: &'b httparse::Response<'_, 'b>,
    head: bool,
) -> Result<Response<'b>, &'static str> {
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err("incomplete status line");
    };
    let mut length = None;
    let mut chunked = None;
    let mut close = version == 0;
    let mut names_fields = false;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Repeats and lists must agree.
            for part in h.value.split(|&b| b == b',') {
                let n = digits(part.trim_ascii()).ok_or("malformed Content-Length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length");
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = tokens(h.value)
                .last()
                .map(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close &= version != 0;
                } else {
                    names_fields = true;
                }
            }
        }
    }
    let framing = if head || status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(_), Some(_)) => return Err("both Content-Length and Transfer-Encoding"),
            (Some(true), None) => Framing::Chunked,
            (Some(false), None) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    Ok(Response {
        status,
        reason: resp.reason.unwrap_or(""),
        framing,
        reusable: !close && framing != Framing::UntilClose,
        names_fields,
        headers: resp.headers,
    })
}

/// What lb adds to a backend's response head.
#[derive(Debug, Clone, Copy, Default)]
pub struct Added<'a> {
    /// `Via`'s name for lb.
    pub via: Option<&'a str>,
    /// A sticky cookie to set.
    pub cookie: Option<&'a str>,
    /// The request's `X-Request-Id`, which replaces any the backend sent.
    pub request_id: Option<&'a str>,
    /// This is the connection's last exchange.
    pub close: bool,
}

impl Response<'_> {
    /// Writes the head the client gets: the backend's end-to-end fields and framing, and
    /// what lb adds (`Via`, a sticky cookie, the request ID, `Connection: close`).
    pub fn write(&self, out: &mut Vec<u8>, added: Added<'_>) {
        self.status_line(out);
        for h in self.headers {
            if added.request_id.is_some() && h.name.eq_ignore_ascii_case(crate::request_id::FIELD) {
                continue;
            }
            // The body is relayed as it came, so its framing goes with it, whatever the
            // backend's `Connection` names.
            let framing = h.name.eq_ignore_ascii_case("content-length")
                || (h.name.eq_ignore_ascii_case("transfer-encoding")
                    && self.framing == Framing::Chunked);
            if !framing
                && (forward::is_hop_by_hop(h.name)
                    || (self.names_fields && named_by_connection(self.headers, h.name)))
            {
                continue;
            }
            field(out, h.name.as_bytes(), h.value);
        }
        self.trailer_fields(out, added);
    }

    fn status_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 ");
        // httparse reads exactly three digits.
        let s = self.status;
        out.extend_from_slice(&[
            b'0' + (s / 100 % 10) as u8,
            b'0' + (s / 10 % 10) as u8,
            b'0' + (s % 10) as u8,
            b' ',
        ]);
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// What lb adds after the backend's fields, and the blank line.
    fn trailer_fields(&self, out: &mut Vec<u8>, added: Added<'_>) {
        if let Some(via) = added.via {
            field(out, b"via", forward::via_value(via).as_bytes());
        }
        if let Some(c) = added.cookie {
            field(out, b"set-cookie", c.as_bytes());
        }
        if let Some(id) = added.request_id {
            field(out, crate::request_id::FIELD.as_bytes(), id.as_bytes());
        }
        if added.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

impl Response<'_> {
    /// The response's end-to-end fields as a map, for the route's policies; framing fields
    /// stay out of it (they go with the body, see [`Response::write_mapped`]).
    pub fn end_to_end(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.headers.len());
        for h in self.headers {
            let framing = h.name.eq_ignore_ascii_case("content-length")
                || h.name.eq_ignore_ascii_case("transfer-encoding");
            if framing
                || forward::is_hop_by_hop(h.name)
                || (self.names_fields && named_by_connection(self.headers, h.name))
            {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(h.name.as_bytes()),
                http::HeaderValue::from_bytes(h.value),
            ) {
                map.append(n, v);
            }
        }
        map
    }

    /// [`Response::write`], with the end-to-end fields taken from `map` (after the policies)
    /// and the framing fields from the backend's head.
    pub fn write_mapped(&self, out: &mut Vec<u8>, map: &http::HeaderMap, added: Added<'_>) {
        self.status_line(out);
        for (name, value) in map {
            if added.request_id.is_some() && name.as_str() == crate::request_id::FIELD {
                continue;
            }
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        for h in self.headers {
            let keep = h.name.eq_ignore_ascii_case("content-length")
                || (h.name.eq_ignore_ascii_case("transfer-encoding")
                    && self.framing == Framing::Chunked);
            if keep {
                field(out, h.name.as_bytes(), h.value);
            }
        }
        self.trailer_fields(out, added);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lean::head::MAX_HEADERS;

    fn with_response<T>(
        raw: &[u8],
        head: bool,
        f: impl FnOnce(Result<Response<'_>, &str>) -> T,
    ) -> T {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(raw).expect("parses").is_complete());
        f(response(&resp, head))
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let cases: [(&[u8], bool, Framing, bool); 8] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                false,
                Framing::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n",
                true,
                Framing::Empty,
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                false,
                Framing::Length(1),
                false,
            ),
        ];
        for (raw, head, framing, reusable) in cases {
            with_response(raw, head, |r| {
                let r = r.expect("valid");
                assert_eq!(
                    (r.framing, r.reusable),
                    (framing, reusable),
                    "{:?}",
                    String::from_utf8_lossy(raw)
                );
            });
        }
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        ] {
            with_response(raw, false, |r| assert!(r.is_err()));
        }
    }

    #[test]
    fn connection_cannot_take_the_framing_a_body_is_relayed_by() {
        for (raw, kept) in [
            (&b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n"[..], "Content-Length: 5\r\n"),
            (b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding: chunked\r\n"),
        ] {
            with_response(raw, false, |r| {
                let mut out = Vec::new();
                r.expect("valid").write(&mut out, Added::default());
                let text = String::from_utf8(out).expect("utf-8");
                assert!(text.contains(kept), "{text}");
            });
        }
    }

    #[test]
    fn the_client_gets_end_to_end_fields_and_the_framing() {
        with_response(
            b"HTTP/1.1 200 Fine\r\nConnection: x-hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\nContent-Type: text/plain\r\n\r\n",
            false,
            |r| {
                let mut out = Vec::new();
                r.expect("valid").write(
                    &mut out,
                    Added {
                        via: Some("lb"),
                        cookie: Some("srv=ab; Path=/; HttpOnly"),
                        request_id: None,
                        close: true,
                    },
                );
                assert_eq!(
                    String::from_utf8(out).expect("utf-8"),
                    "HTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\
                     via: 1.1 lb\r\nset-cookie: srv=ab; Path=/; HttpOnly\r\nconnection: close\r\n\r\n"
                );
            },
        );
    }
}
