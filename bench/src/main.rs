//! `bench-echo IMPL --port N`: one echo server on a single-threaded tokio
//! runtime, for `cargo xtask bench` to pin to one core and load with
//! `duplex bench`. Every implementation echoes text and binary messages and
//! answers a close; they differ only in the library under them.

mod duplex_echo;
mod fastws;
mod tcp;
mod tungstenite;

use std::net::SocketAddr;

const USAGE: &str = "usage: bench-echo tcp|duplex|tungstenite|fastwebsockets --port N";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse::<u16>().ok());
    let (Some(kind), Some(port)) = (args.first(), port) else {
        eprintln!("{USAGE}");
        return std::process::ExitCode::from(2);
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        match kind.as_str() {
            "tcp" => tcp::serve(listener).await,
            "duplex" => duplex_echo::serve(listener).await,
            "tungstenite" => tungstenite::serve(listener).await,
            "fastwebsockets" => fastws::serve(listener).await,
            _ => Err(std::io::Error::other(USAGE)),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-echo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
