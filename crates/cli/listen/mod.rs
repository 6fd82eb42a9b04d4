//! `duplex listen`: the other end when you need one. Accepts WebSocket
//! clients and bridges them to stdin/stdout (the websocat `-s` habit), to
//! a command per connection (`--exec`, the websocketd habit), or to one
//! command shared by all (`--exec --shared`).
//!
//! Without `--exec`, each line of stdin goes to every connected client and
//! every message received is printed; with `--once` the first client is
//! served and its conversation's end is the command's.

mod exec;
mod hub;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duplex::{CloseCode, CloseFrame, ServerBuilder, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::conversation::event::{Event, Opened};
use crate::conversation::input::{self, Input};
use crate::conversation::output::{Console, Encoding, Format, Mode, Sink, Tag};
use crate::conversation::session::{self, Progress, Rules};
use crate::conversation::signal::Interrupt;
use crate::conversation::units::{self, Wait};
use crate::exit::{Failure, Status};
use hub::Hub;

const EXAMPLES: &str = "\
Examples:
  duplex listen --bind 127.0.0.1:9000              bridge clients to stdin/stdout
  duplex listen --bind 9000 --once > received.txt  serve one client, then exit
  duplex listen --bind 9000 --exec 'tr a-z A-Z'     a command per connection
  duplex listen --bind 9000 --exec ./chat-bot --shared
  duplex listen --bind 0.0.0.0:9443 --cert cert.pem --key key.pem --path /ws

The address actually bound is printed on stderr (`duplex: listening on ws://...`),
so `--bind 127.0.0.1:0` picks a free port.";

/// Options of `duplex listen`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct ListenArgs {
    /// Where to listen: HOST:PORT, or a bare PORT for 127.0.0.1:PORT. Port 0
    /// picks a free one.
    #[arg(short, long, default_value = "127.0.0.1:8080", value_parser = parse_bind)]
    pub bind: SocketAddr,
    /// Accept upgrades only on this path (others get 404). Default: any.
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Run CMD (with sh -c) for each connection, its stdin and stdout being
    /// the WebSocket: each received message is written to its stdin (text
    /// plus a newline), each line it prints is sent. The connection closes
    /// when it exits (1000 on success, 1011 otherwise); it is stopped when
    /// the client leaves.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// With --exec: start CMD once and share it: every client's messages go
    /// to its stdin, every line it prints goes to all clients. When it
    /// exits, all clients are closed and duplex exits.
    #[arg(long, requires = "exec")]
    pub shared: bool,
    /// Serve a single connection, then exit with its status (as
    /// `duplex connect` would).
    #[arg(long, conflicts_with = "shared")]
    pub once: bool,
    /// Accept this subprotocol if the client offers it (repeatable, most
    /// preferred first).
    #[arg(long, value_name = "NAME")]
    pub subprotocol: Vec<String>,
    /// Decline permessage-deflate (accepted by default when offered).
    #[arg(long)]
    pub no_compress: bool,
    /// Serve wss://: the certificate chain (PEM). Needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Serve wss://: the private key (PEM). Needs --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Messages are a byte stream: stdin (or the command's output) is sent
    /// as binary chunks, and received messages are written raw, with no
    /// separator.
    #[arg(long, help_heading = "Messages")]
    pub binary: bool,
    /// Print received binary messages as base64, one per line.
    #[arg(long, conflicts_with = "hex", help_heading = "Messages")]
    pub base64: bool,
    /// Print received binary messages as hex, one per line.
    #[arg(long, help_heading = "Messages")]
    pub hex: bool,
    /// Close each connection once N messages have arrived on it.
    #[arg(long, value_name = "N", help_heading = "Messages")]
    pub count: Option<u64>,
    /// Once the input has ended, keep a connection until SECS pass without
    /// traffic (`inf`: until the client closes). Applies with --once and
    /// --exec; without them input ending closes nothing.
    #[arg(long, value_name = "SECS", value_parser = units::wait, help_heading = "Messages")]
    pub wait: Option<Wait>,
    /// The largest message accepted (e.g. 65536, 64K, 16M).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = units::size, help_heading = "Messages")]
    pub max_message_size: usize,
    /// Ping a client after SECS without traffic; close it (1011) if no pong
    /// comes back within 20 s.
    #[arg(long, value_name = "SECS", value_parser = units::duration, help_heading = "Messages")]
    pub ping_interval: Option<Duration>,

    /// Print every event as one JSON object per line, with the client's
    /// number and address.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// Show control frames and handshake failures on stderr.
    #[arg(short, long, help_heading = "Output")]
    pub verbose: bool,
    /// No notices on stderr (the listening address and errors are still
    /// printed).
    #[arg(short, long, help_heading = "Output")]
    pub quiet: bool,
}

fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not HOST:PORT (e.g. 127.0.0.1:9000, [::1]:9000) or a port"))
}

/// What the connections talk to.
enum Backend {
    /// One client, with stdin as its input (`--once`).
    Single(Mutex<Option<Input>>),
    /// Every client shares a hub fed by stdin; messages go to stdout.
    Stdio(Arc<Hub>),
    /// A command per connection.
    Exec(String),
    /// One command for all: the hub is fed by its stdout.
    Shared {
        hub: Arc<Hub>,
        stdin: tokio::sync::mpsc::Sender<bytes::Bytes>,
    },
}

/// Resolves when the `--exec --shared` command exits, with its status.
type SharedExit = tokio::task::JoinHandle<Option<std::process::ExitStatus>>;

/// Everything a connection needs.
struct Context {
    server: ServerBuilder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    path: Option<String>,
    port: u16,
    backend: Backend,
    sink: Sink,
    rules: Rules,
    binary: bool,
    verbose: bool,
}

/// Runs `duplex listen`.
pub fn run(args: ListenArgs) -> Status {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("duplex: cannot start: {e}");
            return Status::Failure;
        }
    };
    let status = runtime.block_on(listen(args));
    // The stdin reader may be blocked in a read: do not wait for it.
    runtime.shutdown_background();
    status
}

async fn listen(args: ListenArgs) -> Status {
    let console = Arc::new(Console::new(args.quiet));
    let sink = Sink::console(console.clone(), format_of(&args), "server").with_lifecycle_notices();
    let started = match tls_acceptor(&args) {
        Ok(tls) => bind(&args)
            .await
            .and_then(|listener| Ok((tls, listener, backend_of(&args)?))),
        Err(f) => Err(f),
    };
    let (tls, listener, (backend, shared_child)) = match started {
        Ok(started) => started,
        Err(f) => {
            sink.fail(&f).await;
            return f.status;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.bind);
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let path = args.path.clone().unwrap_or_else(|| "/".to_owned());
    eprintln!("duplex: listening on {scheme}://{addr}{path}");
    let ctx = Arc::new(Context {
        server: server_of(&args),
        tls,
        path: args.path.clone(),
        port: addr.port(),
        backend,
        sink,
        rules: Rules {
            count: args.count,
            wait: args.wait,
            init: Vec::new(),
            on_interrupt: CloseFrame::new(CloseCode::GOING_AWAY, "server shutting down"),
        },
        binary: args.binary,
        verbose: args.verbose,
    });
    let interrupt = Interrupt::watch();
    if args.once {
        return once(listener, ctx, interrupt).await;
    }
    serve(listener, ctx, interrupt, shared_child).await
}

/// How messages are shown: `--json`, `--binary`, `--base64`/`--hex`.
fn format_of(args: &ListenArgs) -> Format {
    Format {
        mode: if args.json { Mode::Json } else { Mode::Plain },
        raw_stream: args.binary,
        encoding: Encoding::chosen(args.base64, args.hex),
        verbose: args.verbose,
    }
}

/// The listening socket, or what to do when the address is taken.
async fn bind(args: &ListenArgs) -> Result<TcpListener, Failure> {
    TcpListener::bind(args.bind).await.map_err(|e| {
        Failure::new(
            Status::Connect,
            format!(
                "cannot listen on {}: {e} (is another program using it? try another port, or --bind 127.0.0.1:0)",
                args.bind
            ),
        )
    })
}

/// The handshake every connection gets: limits, keepalive, compression,
/// subprotocols.
fn server_of(args: &ListenArgs) -> ServerBuilder {
    let mut config = duplex::Config::default()
        .with_max_message_size(args.max_message_size)
        .with_max_frame_size(args.max_message_size);
    config.ping_interval = args.ping_interval;
    config.deflate = (!args.no_compress).then(duplex::DeflateConfig::default);
    ServerBuilder::new().config(config).protocols(
        args.subprotocol
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim),
    )
}

/// Where messages come from and go to; with `--exec --shared`, the one
/// command's exit too.
fn backend_of(args: &ListenArgs) -> Result<(Backend, Option<SharedExit>), Failure> {
    let backend = match (&args.exec, args.shared) {
        (None, _) if args.once => Backend::Single(Mutex::new(Some(input::stdin(args.binary)))),
        (None, _) => Backend::Stdio(Hub::fed_by(input::stdin(args.binary))),
        (Some(cmd), false) => Backend::Exec(cmd.clone()),
        (Some(cmd), true) => {
            let exec::Running {
                output,
                stdin,
                exited,
            } = exec::spawn(cmd, &[], args.binary)
                .map_err(|e| Failure::new(Status::Failure, format!("cannot run {cmd:?}: {e}")))?;
            let backend = Backend::Shared {
                hub: Hub::fed_by(output),
                stdin,
            };
            return Ok((backend, Some(exited)));
        }
    };
    Ok((backend, None))
}

/// `--once`: the first connection that completes its handshake is served;
/// its end is ours.
async fn once(listener: TcpListener, ctx: Arc<Context>, mut interrupt: Interrupt) -> Status {
    let mut id = 0;
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(_) => continue,
            },
            () = interrupt.wait() => return Status::Interrupted,
        };
        id += 1;
        if let Some(status) = connection(tcp, peer, id, &ctx, interrupt.clone()).await {
            return status;
        }
    }
}

/// Serves connections until interrupted (or the shared command exits).
async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    mut interrupt: Interrupt,
    mut shared_child: Option<SharedExit>,
) -> Status {
    let mut tasks = JoinSet::new();
    let mut id = 0;
    let status = loop {
        let child_exit = async {
            match shared_child.as_mut() {
                Some(handle) => handle.await.ok().flatten(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                id += 1;
                let ctx = ctx.clone();
                let interrupt = interrupt.clone();
                tasks.spawn(async move { connection(tcp, peer, id, &ctx, interrupt).await });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = interrupt.wait() => break Status::Interrupted,
            status = child_exit => {
                let (status, frame) = match status {
                    Some(s) if s.success() => (Status::Ok, CloseFrame::new(CloseCode::NORMAL, "")),
                    Some(s) => (Status::Failure, CloseFrame::new(
                        CloseCode::INTERNAL_ERROR,
                        format!("the command {}", exec::describe(s)),
                    )),
                    None => (Status::Failure, CloseFrame::new(CloseCode::INTERNAL_ERROR, "the command ended")),
                };
                ctx.sink.console_ref().notice(&format!("the shared command ended; closing: {}", frame.reason));
                if let Backend::Shared { hub, .. } = &ctx.backend {
                    hub.close_all(frame).await;
                }
                break status;
            }
        }
    };
    drop(listener);
    // Every conversation closes by itself now (interrupt or close_all);
    // the close handshake is bounded by the close timeout.
    while tasks.join_next().await.is_some() {}
    status
}

/// Handles one accepted TCP connection: TLS, the WebSocket handshake, then
/// the conversation. `None` if it never became a WebSocket.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    ctx: &Context,
    interrupt: Interrupt,
) -> Option<Status> {
    let _ = tcp.set_nodelay(true);
    match &ctx.tls {
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(tls) => websocket(tls, peer, id, ctx, interrupt).await,
            Err(e) => {
                if ctx.verbose {
                    ctx.sink
                        .console_ref()
                        .diag(&format!("* [{id} {peer}] TLS handshake failed: {e}"));
                }
                None
            }
        },
        None => websocket(tcp, peer, id, ctx, interrupt).await,
    }
}

/// What a client asked for, for `--exec`'s environment.
#[derive(Default, Clone)]
struct RequestInfo {
    target: String,
    headers: Vec<(String, String)>,
}

impl RequestInfo {
    fn of(req: &http::Request<()>) -> Self {
        Self {
            target: req.uri().to_string(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }
}

async fn websocket<S>(
    stream: S,
    peer: SocketAddr,
    id: u64,
    ctx: &Context,
    mut interrupt: Interrupt,
) -> Option<Status>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws, info) = handshake(stream, peer, id, ctx).await?;
    let sink = ctx.sink.tagged(Tag { id, peer });
    let opened = Opened {
        url: info.target.clone(),
        peer: Some(peer),
        protocol: ws.protocol().map(str::to_owned),
        extensions: None,
        compressed: ws.is_compressed(),
    };
    // Join the input before announcing the connection: from then on it
    // receives everything.
    let (mut input, io_sink, command) = match join(ctx, &sink, &info, peer, id) {
        Ok(joined) => joined,
        Err(f) => {
            sink.fail(&f).await;
            let _ = ws
                .close(CloseCode::INTERNAL_ERROR, "cannot run the command")
                .await;
            return Some(f.status);
        }
    };
    sink.emit(&Event::Open(&opened)).await;
    let mut progress = Progress::default();
    let end = session::run(
        ws,
        &mut input,
        &io_sink,
        &ctx.rules,
        &mut progress,
        &mut interrupt,
    )
    .await;
    let status = session::report(&end, &io_sink).await.status;
    if let Backend::Stdio(hub) | Backend::Shared { hub, .. } = &ctx.backend {
        hub.leave(id);
    }
    if let Some(running) = command {
        running.finish().await;
    }
    Some(status)
}

/// Reads the request and accepts it, if it is for our path; `None` when the
/// connection ends here (the reason is shown with `--verbose`).
async fn handshake<S>(
    stream: S,
    peer: SocketAddr,
    id: u64,
    ctx: &Context,
) -> Option<(WebSocket<S>, RequestInfo)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let diag = |what: &str, e: &dyn std::fmt::Display| {
        if ctx.verbose {
            ctx.sink
                .console_ref()
                .diag(&format!("* [{id} {peer}] {what}: {e}"));
        }
    };
    let timeout = ctx.server.get_config().handshake_timeout;
    let incoming = match ctx.server.read_request(stream).await {
        Ok(incoming) => incoming,
        Err(no) => {
            diag("handshake failed", &no.answer(timeout).await);
            return None;
        }
    };
    if let Some(path) = &ctx.path {
        if incoming.request().uri().path() != path {
            let not_here = http::Response::builder()
                .status(404)
                .body(format!("no WebSocket here; try {path}\n"))
                .expect("a valid response");
            if let Err(e) = incoming.reject(not_here).await {
                diag("answering 404 failed", &e);
            } else {
                diag("refused", &format!("404: not {path}"));
            }
            return None;
        }
    }
    let info = RequestInfo::of(incoming.request());
    match incoming.accept(&ctx.server).await {
        Ok(ws) => Some((ws, info)),
        Err(e) => {
            diag("handshake failed", &e);
            None
        }
    }
}

/// Connects a new client to the backend: the input it sends from, where
/// what it receives goes, and its own command (`--exec`).
fn join(
    ctx: &Context,
    sink: &Sink,
    info: &RequestInfo,
    peer: SocketAddr,
    id: u64,
) -> Result<(Input, Sink, Option<exec::Running>), Failure> {
    Ok(match &ctx.backend {
        Backend::Single(stdin) => {
            let taken = stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
            (
                taken.unwrap_or_else(|| input::channel().1),
                sink.clone(),
                None,
            )
        }
        Backend::Stdio(hub) => (hub.join(id), sink.clone(), None),
        Backend::Shared { hub, stdin } => (hub.join(id), sink.pipe(stdin.clone()), None),
        Backend::Exec(cmd) => {
            let env = environment(info, peer, id, ctx.port);
            let mut running = exec::spawn(cmd, &env, ctx.binary)
                .map_err(|e| Failure::new(Status::Failure, format!("cannot run {cmd:?}: {e}")))?;
            let output = std::mem::replace(&mut running.output, input::channel().1);
            let io_sink = sink.pipe(running.stdin.clone());
            (output, io_sink, Some(running))
        }
    })
}

/// CGI-style variables describing the client to an `--exec` command.
fn environment(info: &RequestInfo, peer: SocketAddr, id: u64, port: u16) -> Vec<(String, String)> {
    let (path, query) = info
        .target
        .split_once('?')
        .unwrap_or((info.target.as_str(), ""));
    let mut env = vec![
        ("REMOTE_ADDR".to_owned(), peer.ip().to_string()),
        ("REMOTE_PORT".to_owned(), peer.port().to_string()),
        ("SERVER_PORT".to_owned(), port.to_string()),
        ("REQUEST_URI".to_owned(), info.target.clone()),
        ("PATH_INFO".to_owned(), path.to_owned()),
        ("QUERY_STRING".to_owned(), query.to_owned()),
        ("DUPLEX_CLIENT_ID".to_owned(), id.to_string()),
    ];
    for (name, value) in &info.headers {
        let var = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        env.push((var, value.clone()));
    }
    env
}

fn tls_acceptor(args: &ListenArgs) -> Result<Option<tokio_rustls::TlsAcceptor>, Failure> {
    let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
        return Ok(None);
    };
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p)
            .map_err(|e| Failure::usage(format!("cannot read --{what} {}: {e}", p.display())))
    };
    let config = duplex::tls::server_config(&read(cert, "cert")?, &read(key, "key")?)
        .map_err(|e| Failure::usage(format!("--cert/--key: {e}")))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(config)))
}
