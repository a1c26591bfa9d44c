//! The one fact ringcast reads from its own certificate: when it expires
//! (`notAfter`), for `ringcast_tls_cert_not_after_seconds`. A DER walk of the
//! few fields in front of it, not an X.509 parser: rustls (webpki) has already
//! parsed and checked the certificate by the time this runs.
//!
//! ```text
//! Certificate  ::=  SEQUENCE  {
//!      tbsCertificate       TBSCertificate, ...
//! TBSCertificate  ::=  SEQUENCE  {
//!      version         [0]  EXPLICIT Version DEFAULT v1,
//!      serialNumber         CertificateSerialNumber,
//!      signature            AlgorithmIdentifier,
//!      issuer               Name,
//!      validity             Validity, ...
//! Validity ::= SEQUENCE {
//!      notBefore      Time,
//!      notAfter       Time }
//! Time ::= CHOICE {
//!      utcTime        UTCTime,
//!      generalTime    GeneralizedTime }
//! ```
//! (RFC 5280 §4.1)

/// Why the validity could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValidityError {
    /// The bytes end inside a field, or a length runs past its parent.
    #[error("truncated DER")]
    Truncated,
    /// A field is not the type RFC 5280 puts there.
    #[error("unexpected DER tag {0:#04x}")]
    UnexpectedTag(u8),
    /// A length in a form DER does not allow (indefinite, or over 4 bytes).
    #[error("bad DER length")]
    BadLength,
    /// The time is not `YYMMDDHHMMSSZ` (UTCTime) or `YYYYMMDDHHMMSSZ` (GeneralizedTime).
    #[error("bad certificate time")]
    BadTime,
}

const SEQUENCE: u8 = 0x30;
const CONTEXT_0: u8 = 0xa0;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element: its tag, its content, and what follows it.
fn element(der: &[u8]) -> Result<(u8, &[u8], &[u8]), ValidityError> {
    let (&tag, rest) = der.split_first().ok_or(ValidityError::Truncated)?;
    let (&first, rest) = rest.split_first().ok_or(ValidityError::Truncated)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // X.690 §8.1.3.5: long form, the low bits count the length bytes;
        // 0x80 alone is the indefinite form, which DER forbids.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(ValidityError::BadLength);
        }
        if rest.len() < n {
            return Err(ValidityError::Truncated);
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(ValidityError::Truncated);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// An element that must carry `tag`.
fn expect(der: &[u8], tag: u8) -> Result<(&[u8], &[u8]), ValidityError> {
    let (found, content, rest) = element(der)?;
    if found != tag {
        return Err(ValidityError::UnexpectedTag(found));
    }
    Ok((content, rest))
}

/// The certificate's `notAfter`, in seconds since the Unix epoch.
pub fn not_after(cert_der: &[u8]) -> Result<u64, ValidityError> {
    let (cert, _) = expect(cert_der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&CONTEXT_0) {
        rest = element(rest)?.2;
    }
    rest = expect(rest, INTEGER)?.1; // serialNumber
    rest = expect(rest, SEQUENCE)?.1; // signature
    rest = expect(rest, SEQUENCE)?.1; // issuer
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (_, _, after) = element(validity)?; // notBefore
    let (tag, time, _) = element(after)?;
    match tag {
        UTC_TIME => parse_time(time, false),
        GENERALIZED_TIME => parse_time(time, true),
        other => Err(ValidityError::UnexpectedTag(other)),
    }
}

/// `YYMMDDHHMMSSZ` or `YYYYMMDDHHMMSSZ` to Unix seconds. RFC 5280 §4.1.2.5.1:
/// a UTCTime year `YY` is 19YY when YY ≥ 50, else 20YY; both forms end in `Z`
/// and carry seconds.
fn parse_time(text: &[u8], four_digit_year: bool) -> Result<u64, ValidityError> {
    let digits = if four_digit_year { 14 } else { 12 };
    if text.len() != digits + 1 || text[digits] != b'Z' {
        return Err(ValidityError::BadTime);
    }
    let num = |range: std::ops::Range<usize>| -> Result<u64, ValidityError> {
        text[range].iter().try_fold(0u64, |acc, &b| {
            if b.is_ascii_digit() {
                Ok(acc * 10 + u64::from(b - b'0'))
            } else {
                Err(ValidityError::BadTime)
            }
        })
    };
    let (year, at) = if four_digit_year {
        (num(0..4)?, 4)
    } else {
        let yy = num(0..2)?;
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
    };
    let month = num(at..at + 2)?;
    let day = num(at + 2..at + 4)?;
    let (h, m, s) = (
        num(at + 4..at + 6)?,
        num(at + 6..at + 8)?,
        num(at + 8..at + 10)?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(ValidityError::BadTime);
    }
    if year < 1970 {
        return Ok(0);
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + h * 3600 + m * 60 + s)
}

/// Days from 1970-01-01 to the given date (proleptic Gregorian; H. Hinnant's
/// `days_from_civil`, for years from 1970 on).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_in_both_forms_and_both_utc_centuries() {
        assert_eq!(parse_time(b"700101000000Z", false), Ok(0));
        assert_eq!(parse_time(b"491231235959Z", false), Ok(2_524_607_999));
        assert_eq!(parse_time(b"20380119031408Z", true), Ok(2_147_483_648));
        assert_eq!(parse_time(b"000229120000Z", false), Ok(951_825_600));
        assert_eq!(parse_time(b"99991231235959Z", true), Ok(253_402_300_799));
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            &b"7001010000Z"[..],
            b"700101000000",
            b"701301000000Z",
            b"70010100000aZ",
            b"700101250000Z",
        ] {
            assert_eq!(
                parse_time(bad, false),
                Err(ValidityError::BadTime),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_truncation_of_a_certificate_is_an_error_not_a_panic() {
        // A minimal TBS: version, serial, algorithm, issuer, validity.
        let validity = [
            &[0x30, 30, UTC_TIME, 13][..],
            b"240101000000Z",
            &[UTC_TIME, 13],
            b"340101000000Z",
        ]
        .concat();
        let tbs_body = [
            &[CONTEXT_0, 3, INTEGER, 1, 2][..],
            &[INTEGER, 1, 7],
            &[SEQUENCE, 0],
            &[SEQUENCE, 0],
            &validity,
        ]
        .concat();
        let tbs = [&[SEQUENCE, tbs_body.len() as u8][..], &tbs_body].concat();
        let cert = [&[SEQUENCE, 0x81, tbs.len() as u8][..], &tbs].concat();
        assert_eq!(not_after(&cert), Ok(2_019_686_400));
        for cut in 0..cert.len() {
            assert!(not_after(&cert[..cut]).is_err(), "cut at {cut}");
        }
    }
}
