//! `bench-echo IMPL --port N [--tls CERT KEY]`: one echo server on a
//! single-threaded tokio runtime, for `cargo xtask bench` to pin to one core
//! and load with `duplex bench`. Every implementation echoes text and binary
//! messages and answers a close; they differ only in the library under
//! them. With `--tls`, each connection is wrapped in TLS (rustls) first.

mod duplex_echo;
mod fastws;
mod tcp;
mod tungstenite;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// With `--features jemalloc`, every server allocates with jemalloc (the
/// same for all, so they stay comparable).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str =
    "usage: bench-echo tcp|duplex|tungstenite|fastwebsockets --port N [--tls CERT.pem KEY.pem]";

/// Which echo server.
#[derive(Clone, Copy)]
enum Kind {
    Tcp,
    Duplex,
    Tungstenite,
    Fastwebsockets,
}

/// Spawns the connection's task. Each kind gets a task of its own type, so
/// an idle connection holds only its own server's state (one future type
/// for all four would be as large as the largest, for every connection).
fn spawn<S>(kind: Kind, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match kind {
        Kind::Tcp => drop(tokio::spawn(tcp::serve(stream))),
        Kind::Duplex => drop(tokio::spawn(duplex_echo::serve(stream))),
        Kind::Tungstenite => drop(tokio::spawn(tungstenite::serve(stream))),
        Kind::Fastwebsockets => drop(tokio::spawn(fastws::serve(stream))),
    }
}

fn tls_acceptor(cert: &str, key: &str) -> std::io::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| std::io::Error::other(format!("{cert}: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| std::io::Error::other(format!("{key}: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(std::io::Error::other)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn run(kind: Kind, listener: TcpListener, tls: Option<TlsAcceptor>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        match &tls {
            None => spawn(kind, stream),
            Some(acceptor) => {
                // The TLS handshake in a task of its own, which then hands
                // the stream to the server's task.
                let accepting = acceptor.accept(stream);
                tokio::spawn(async move {
                    if let Ok(stream) = accepting.await {
                        spawn(kind, stream);
                    }
                });
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let after = |flag: &str, n: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + n))
            .cloned()
    };
    let port = after("--port", 1).and_then(|p| p.parse::<u16>().ok());
    let kind = match args.first().map(String::as_str) {
        Some("tcp") => Some(Kind::Tcp),
        Some("duplex") => Some(Kind::Duplex),
        Some("tungstenite") => Some(Kind::Tungstenite),
        Some("fastwebsockets") => Some(Kind::Fastwebsockets),
        _ => None,
    };
    let (Some(kind), Some(port)) = (kind, port) else {
        eprintln!("{USAGE}");
        return std::process::ExitCode::from(2);
    };
    let tls = match (after("--tls", 1), after("--tls", 2)) {
        (Some(cert), Some(key)) => match tls_acceptor(&cert, &key) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                eprintln!("bench-echo: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        (None, _) => None,
        _ => {
            eprintln!("{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        run(kind, listener, tls).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-echo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
