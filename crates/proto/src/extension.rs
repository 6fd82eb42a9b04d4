//! The `Sec-WebSocket-Extensions` header grammar (RFC 6455 §9.1).
//!
//! ```text
//! extension-list = 1#extension
//! extension      = token *( ";" token [ "=" ( token / quoted-string ) ] )
//! ```
//! A header may carry several offers, and a request may carry several
//! headers; values may be quoted (`client_max_window_bits="10"`). Parsing
//! this properly is what lets a server pick the first offer it can honour and
//! decline the rest instead of failing the handshake.
//!
//! ```
//! use duplex_proto::extension::{ExtensionSyntaxError, parse_extensions};
//! let offers = parse_extensions("permessage-deflate; client_max_window_bits, x-foo").unwrap();
//! assert_eq!(offers[1].name, "x-foo");
//! assert_eq!(parse_extensions(";"), Err(ExtensionSyntaxError("expected an extension name")));
//! ```

use std::fmt;

/// One extension offer or response: a name and its parameters in order.
///
/// ```
/// use duplex_proto::extension::parse_extensions;
/// let offers = parse_extensions(r#"permessage-deflate; client_max_window_bits="10", permessage-deflate"#).unwrap();
/// assert_eq!(offers.len(), 2);
/// assert_eq!(offers[0].name, "permessage-deflate");
/// assert_eq!(offers[0].params, vec![("client_max_window_bits".to_string(), Some("10".to_string()))]);
/// assert_eq!(offers[1].to_string(), "permessage-deflate");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters, with their values unquoted.
    pub params: Vec<(String, Option<String>)>,
}

/// The header value is not a valid extension list.
///
/// ```
/// use duplex_proto::extension::parse_extensions;
/// let error = parse_extensions("permessage-deflate; =1").unwrap_err();
/// assert_eq!(error.0, "expected a parameter name");
/// assert!(error.to_string().starts_with("malformed Sec-WebSocket-Extensions header"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Sec-WebSocket-Extensions header: {0}")]
pub struct ExtensionSyntaxError(pub &'static str);

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, "; {k}={v}")?,
                None => write!(f, "; {k}")?,
            }
        }
        Ok(())
    }
}

/// Parses one header value into its extensions.
///
/// ```
/// use duplex_proto::extension::parse_extensions;
/// let offers = parse_extensions(r#"permessage-deflate; server_max_window_bits="10""#).unwrap();
/// assert_eq!(offers[0].params[0], ("server_max_window_bits".into(), Some("10".into())));
/// assert!(parse_extensions("").is_err()); // an empty list
/// ```
pub fn parse_extensions(value: &str) -> Result<Vec<Extension>, ExtensionSyntaxError> {
    let mut p = Parser {
        s: value.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip_ws();
        if p.eat(b',') {
            continue; // empty list elements are allowed by the # rule
        }
        if p.at_end() {
            break;
        }
        let name = p
            .token()
            .ok_or(ExtensionSyntaxError("expected an extension name"))?;
        let mut params = Vec::new();
        loop {
            p.skip_ws();
            if p.at_end() || p.eat(b',') {
                break;
            }
            if !p.eat(b';') {
                return Err(ExtensionSyntaxError("expected ';' or ','"));
            }
            p.skip_ws();
            let key = p
                .token()
                .ok_or(ExtensionSyntaxError("expected a parameter name"))?;
            p.skip_ws();
            let value = if p.eat(b'=') {
                p.skip_ws();
                Some(
                    p.token()
                        .or_else(|| p.quoted())
                        .ok_or(ExtensionSyntaxError("expected a parameter value"))?,
                )
            } else {
                None
            };
            params.push((key, value));
        }
        out.push(Extension { name, params });
    }
    if out.is_empty() {
        return Err(ExtensionSyntaxError("empty extension list"));
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn skip_ws(&mut self) {
        while matches!(self.s.get(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(|&c| is_tchar(c)) {
            self.pos += 1;
        }
        (self.pos > start).then(|| String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    fn quoted(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out = Vec::new();
        loop {
            match *self.s.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    // RFC 6455 §9.1: a quoted value must still be a token.
                    return (!out.is_empty() && out.iter().all(|&c| is_tchar(c)))
                        .then(|| String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' => {
                    out.push(*self.s.get(self.pos + 1)?);
                    self.pos += 2;
                }
                c => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_offers_with_params() {
        let v = parse_extensions(
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10 ,x-foo",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].params.len(), 2);
        assert_eq!(
            v[0].params[1],
            ("server_max_window_bits".into(), Some("10".into()))
        );
        assert_eq!(v[1].name, "x-foo");
    }

    #[test]
    fn quoted_values_are_unquoted_and_must_be_tokens() {
        let v = parse_extensions(r#"a; b="1\0""#).unwrap();
        assert_eq!(v[0].params[0].1.as_deref(), Some("10"));
        assert!(parse_extensions(r#"a; b="x y""#).is_err());
        assert!(parse_extensions(r#"a; b="unterminated"#).is_err());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", " , ", "; x", "a; =3", "a b", "a;b=", "a;b=,"] {
            assert!(parse_extensions(bad).is_err(), "{bad:?}");
        }
    }
}
