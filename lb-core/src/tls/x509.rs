//! Just enough DER to read a certificate's validity period, for the "expired certificate"
//! warning at load time (rustls checks validity only on the peer's side). Pure; no I/O.

/// `notBefore` and `notAfter` of a DER certificate, as seconds since the Unix epoch.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    //   serialNumber INTEGER, signature AlgorithmIdentifier, issuer Name,
    //   validity SEQUENCE { notBefore Time, notAfter Time }, ... } ... }
    let (cert, _) = element(der, 0x30)?;
    let (mut tbs, _) = element(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs, 0xa0)?.1;
    }
    let rest = element(tbs, 0x02)?.1; // serial
    let rest = element(rest, 0x30)?.1; // signature algorithm
    let rest = element(rest, 0x30)?.1; // issuer
    let (validity, _) = element(rest, 0x30)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some((not_before, not_after))
}

/// One DER element of the expected tag: (its contents, what follows it).
fn element(buf: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *buf.first()? != tag {
        return None;
    }
    let first = *buf.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for &b in buf.get(2..2 + n)? {
            len = (len << 8) | usize::from(b);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((buf.get(header..end)?, buf.get(end..)?))
}

/// A UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ).
fn time(buf: &[u8]) -> Option<(i64, &[u8])> {
    let (text, year_digits, rest) = match buf.first()? {
        0x17 => {
            let (t, r) = element(buf, 0x17)?;
            (t, 2, r)
        }
        0x18 => {
            let (t, r) = element(buf, 0x18)?;
            (t, 4, r)
        }
        _ => return None,
    };
    if text.len() != year_digits + 11 || text.last() != Some(&b'Z') {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = std::str::from_utf8(text.get(from..from + len)?).ok()?;
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let mut year = num(0, year_digits)?;
    if year_digits == 2 {
        // RFC 5280: 50–99 are 19xx, 00–49 are 20xx.
        year += if year >= 50 { 1900 } else { 2000 };
    }
    let y = year_digits;
    let (month, day) = (num(y, 2)?, num(y + 2, 2)?);
    let (h, m, s) = (num(y + 4, 2)?, num(y + 6, 2)?, num(y + 8, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some((
        days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s,
        rest,
    ))
}

/// `YYYY-MM-DD` (UTC) of a Unix time, for messages.
pub fn date(unix: i64) -> String {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_dates_rcgen_wrote() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2001, 2, 3);
        params.not_after = rcgen::date_time_ymd(2051, 12, 31);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let (nb, na) = validity(cert.der()).expect("validity");
        assert_eq!(nb, 981_158_400); // 2001-02-03T00:00:00Z
        assert_eq!(na, 2_587_593_600); // 2051-12-31T00:00:00Z (GeneralizedTime)
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_782 * 86_400 + 5), "2024-02-29");
        assert_eq!(date(2_587_593_600), "2051-12-31");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = validity(&bytes);
        }
    }
}
