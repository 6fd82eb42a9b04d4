//! Reading and writing HTTP/1.1 heads, with httparse doing the parsing.
//!
//! ```
//! use duplex_proto::handshake::{HeadLimits, head::{read_response, write_response}};
//! let response = http::Response::builder().status(101).body(()).unwrap();
//! let mut wire = Vec::new();
//! write_response(&response, &mut wire);
//! let (parsed, used) = read_response(&wire, &HeadLimits::default()).unwrap().unwrap();
//! assert_eq!((parsed.status().as_u16(), used), (101, wire.len()));
//! ```

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};

use super::HeadLimits;

/// Why a head could not be read.
///
/// ```
/// use duplex_proto::handshake::{HeadLimits, head::{HeadError, read_request}};
/// let limits = HeadLimits { max_head_size: 16, ..HeadLimits::default() };
/// let long = b"GET /a-very-long-path HTTP/1.1\r\n";
/// assert_eq!(read_request(long, &limits).unwrap_err(), HeadError::TooLarge(16));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// More bytes than [`HeadLimits::max_head_size`] without the end of the head.
    #[error("the HTTP head is larger than {0} bytes")]
    TooLarge(usize),
    /// More header lines than [`HeadLimits::max_headers`].
    #[error("more than {0} header lines")]
    TooManyHeaders(usize),
    /// Not HTTP/1.x.
    #[error("malformed HTTP head: {0}")]
    Malformed(String),
}

/// Parses a request head from the start of `buf`: `Ok(None)` while it is
/// incomplete, else the request and the number of bytes it took.
///
/// ```
/// use duplex_proto::handshake::{HeadLimits, head::read_request};
/// let raw = b"GET /chat HTTP/1.1\r\nHost: example.com\r\n\r\nrest";
/// let (req, used) = read_request(raw, &HeadLimits::default()).unwrap().unwrap();
/// assert_eq!(req.uri().path(), "/chat");
/// assert_eq!(used, raw.len() - 4);
/// assert!(read_request(&raw[..10], &HeadLimits::default()).unwrap().is_none());
/// ```
pub fn read_request(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(Request<()>, usize)>, HeadError> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut storage);
    let Some(used) = complete(req.parse(buf), buf, limits)? else {
        return Ok(None);
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method".into()))?;
    let mut out = Request::builder()
        .method(method)
        .uri(req.path.unwrap_or_default())
        .version(version(req.version))
        .body(())
        .map_err(|e| HeadError::Malformed(e.to_string()))?;
    *out.headers_mut() = headers(req.headers)?;
    Ok(Some((out, used)))
}

/// Whether a head could have ended in `buf` since the first `seen` bytes
/// were looked at: its blank line (`\r\n\r\n`) ends at or after `seen`, or
/// `buf` has grown past `limits` (so parsing will fail and say why).
///
/// Readers call this before parsing again after each read, so that a head
/// trickling in a byte at a time costs one scan of each new byte instead of
/// a parse of the whole buffer per read (quadratic in the head's size).
///
/// ```
/// use duplex_proto::handshake::HeadLimits;
/// use duplex_proto::handshake::head::head_may_be_complete;
///
/// let limits = HeadLimits::default();
/// let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r";
/// assert!(!head_may_be_complete(buf, 0, &limits));
/// let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
/// assert!(head_may_be_complete(buf, buf.len() - 1, &limits));
/// ```
pub fn head_may_be_complete(buf: &[u8], seen: usize, limits: &HeadLimits) -> bool {
    buf.len() > limits.max_head_size
        || buf[seen.saturating_sub(3).min(buf.len())..]
            .windows(4)
            .any(|w| w == b"\r\n\r\n")
}

/// Parses a response head from the start of `buf`, like [`read_request`].
///
/// ```
/// use duplex_proto::handshake::{HeadLimits, head::read_response};
/// let raw = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
/// let (response, used) = read_response(raw, &HeadLimits::default()).unwrap().unwrap();
/// assert_eq!((response.status().as_u16(), used), (403, raw.len()));
/// assert!(read_response(&raw[..12], &HeadLimits::default()).unwrap().is_none());
/// ```
pub fn read_response(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(Response<()>, usize)>, HeadError> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut resp = httparse::Response::new(&mut storage);
    let Some(used) = complete(resp.parse(buf), buf, limits)? else {
        return Ok(None);
    };
    let status = StatusCode::from_u16(resp.code.unwrap_or_default())
        .map_err(|_| HeadError::Malformed("invalid status code".into()))?;
    let mut out = Response::builder()
        .status(status)
        .version(version(resp.version))
        .body(())
        .map_err(|e| HeadError::Malformed(e.to_string()))?;
    *out.headers_mut() = headers(resp.headers)?;
    Ok(Some((out, used)))
}

/// The length of a complete head within the limits, `None` while it is
/// still arriving (and within them).
fn complete(
    parsed: httparse::Result<usize>,
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<usize>, HeadError> {
    let used = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_size => {
            return Err(HeadError::TooLarge(limits.max_head_size));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders(limits.max_headers));
        }
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if used > limits.max_head_size {
        return Err(HeadError::TooLarge(limits.max_head_size));
    }
    Ok(Some(used))
}

fn version(v: Option<u8>) -> Version {
    match v {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    }
}

fn headers(parsed: &[httparse::Header<'_>]) -> Result<HeaderMap, HeadError> {
    let mut map = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid header name".into()))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HeadError::Malformed("invalid header value".into()))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Serialises a response head (status line, headers, blank line).
///
/// ```
/// let resp = http::Response::builder().status(101).header("Upgrade", "websocket").body(()).unwrap();
/// let mut out = Vec::new();
/// duplex_proto::handshake::head::write_response(&resp, &mut out);
/// assert_eq!(out, b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n");
/// ```
pub fn write_response<B>(resp: &Response<B>, out: &mut Vec<u8>) {
    let status = resp.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    write_headers(resp.headers(), out);
}

/// Serialises a request head; the request's URI must be in origin form
/// (path and query).
///
/// ```
/// use duplex_proto::handshake::head::write_request;
/// let req = http::Request::get("/chat?room=1").header("Host", "a.test").body(()).unwrap();
/// let mut out = Vec::new();
/// write_request(&req, &mut out);
/// assert_eq!(out, b"GET /chat?room=1 HTTP/1.1\r\nhost: a.test\r\n\r\n");
/// ```
pub fn write_request<B>(req: &Request<B>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(req.headers(), out);
}

fn write_headers(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_headers_hit_the_size_limit() {
        let limits = HeadLimits {
            max_head_size: 1024,
            max_headers: 64,
        };
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(
            read_request(&raw, &limits).unwrap_err(),
            HeadError::TooLarge(1024)
        );
    }

    #[test]
    fn header_floods_hit_the_count_limit() {
        let limits = HeadLimits {
            max_head_size: 1 << 20,
            max_headers: 8,
        };
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..20 {
            raw.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(
            read_request(&raw, &limits).unwrap_err(),
            HeadError::TooManyHeaders(8)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            read_request(b"\x16\x03\x01\x02\x00\r\n\r\n", &HeadLimits::default()),
            Err(HeadError::Malformed(_))
        ));
    }
}
