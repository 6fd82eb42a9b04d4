//! A minimal HTTP/1.1 client over hyper, for the hub's HTTP API.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ServerArgs;

/// Sends one request; returns the status and the body.
pub async fn request(
    server: &ServerArgs,
    method: http::Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<String>,
) -> anyhow::Result<(http::StatusCode, String)> {
    let (tls, authority, path) = server.http_url(path)?;
    let tcp = TcpStream::connect(&authority).await.with_context(|| {
        format!("cannot connect to {authority} (is `duplex serve` running there?)")
    })?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, &authority);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = if tls {
        let config = match server.tls()? {
            Some(c) => c,
            None => duplex::tls::client_config(&[])?,
        };
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&authority);
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = rustls_pki_name(&host)?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .context("TLS handshake failed")?;
        send(TokioIo::new(stream), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    Ok(resp)
}

fn rustls_pki_name(host: &str) -> anyhow::Result<duplex::tls::ServerName<'static>> {
    duplex::tls::ServerName::try_from(host.to_owned())
        .map_err(|_| anyhow::anyhow!("{host:?} is not a valid TLS name"))
}

async fn send<I>(
    io: I,
    req: http::Request<Full<Bytes>>,
) -> anyhow::Result<(http::StatusCode, String)>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .context("the server closed the connection")?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
