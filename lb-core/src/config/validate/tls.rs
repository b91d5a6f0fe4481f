//! Checks of a listener's `tls` table: certificates by server name and ALPN protocols (the
//! files themselves are read later, in `config::prepare`). Pure; no I/O.

use super::super::model::*;
use super::super::raw::RawTls;
use super::{file_ref, valid_host_name, Ctx};

pub(super) fn tls_settings(cx: &mut Ctx<'_>, t: &RawTls, key: &str) -> TlsSettings {
    let mut sni = Vec::new();
    for (i, c) in t.sni.iter().flatten().enumerate() {
        let c = c.get_ref();
        let ckey = format!("{key}.sni[{i}]");
        let name = c.server_name.get_ref();
        if !valid_host_name(name.strip_prefix("*.").unwrap_or(name)) {
            cx.err(
                c.server_name.span(),
                format!("{ckey}.server_name"),
                format!("expected a host name or \"*.domain\", found \"{name}\""),
            );
        }
        sni.push(CertPair {
            server_name: Some(name.to_ascii_lowercase()),
            cert: file_ref(&c.cert, format!("{ckey}.cert")),
            key: file_ref(&c.key, format!("{ckey}.key")),
        });
    }
    let mut alpn = Vec::new();
    for (i, p) in t.alpn.iter().flat_map(|a| a.get_ref().iter()).enumerate() {
        let v = p.get_ref();
        if v.is_empty() || v.len() > 255 {
            cx.err(
                p.span(),
                format!("{key}.alpn[{i}]"),
                "an ALPN protocol name is 1 to 255 bytes, e.g. \"h2\" or \"http/1.1\"",
            );
        }
        alpn.push(v.clone());
    }
    TlsSettings {
        default: CertPair {
            server_name: None,
            cert: file_ref(&t.cert, format!("{key}.cert")),
            key: file_ref(&t.key, format!("{key}.key")),
        },
        sni,
        alpn,
        client_ca: t
            .client_ca
            .as_ref()
            .map(|c| file_ref(c, format!("{key}.client_ca"))),
    }
}
