//! `duplex publish URL CHANNEL DATA`: server push from the terminal,
//! through the HTTP API.

use anyhow::bail;
use serde_json::Value;

use super::ServerArgs;

/// Options of `duplex publish`.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The channel, e.g. news or chat:lobby
    pub channel: String,
    /// The data: JSON if it parses as JSON (42, {"a":1}, "quoted"), else a string
    pub data: String,
    /// Always send DATA as a JSON string
    #[arg(long)]
    pub string: bool,
    /// API key, needed when the server is not bound to loopback
    #[arg(long, env = "DUPLEX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Idempotency key: a retry with the same key publishes only once
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Print the server's JSON answer instead of a sentence
    #[arg(long)]
    pub json: bool,
}

/// Publishes once.
pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(publish(args))
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let data: Value = if args.string {
        Value::String(args.data)
    } else {
        serde_json::from_str(&args.data).unwrap_or(Value::String(args.data))
    };
    let body = serde_json::json!({"channel": args.channel, "data": data}).to_string();
    let mut headers = Vec::new();
    if let Some(key) = &args.api_key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    if let Some(key) = &args.idempotency_key {
        headers.push(("idempotency-key", key.clone()));
    }
    let (status, text) = super::http::request(
        &args.server,
        http::Method::POST,
        "/api/publish",
        &headers,
        Some(body),
    )
    .await?;
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        let hint = match status.as_u16() {
            401 => {
                " (pass --api-key or set DUPLEX_API_KEY; `duplex serve` printed the key at start)"
            }
            404 => " (is this a duplex server? check the URL)",
            _ => "",
        };
        bail!("the server answered {status}: {message}{hint}");
    }
    if args.json {
        println!("{}", text.trim());
    } else {
        let v: Value = serde_json::from_str(&text)?;
        println!(
            "published to {} at offset {} (epoch {})",
            v["channel"].as_str().unwrap_or(""),
            v["offset"],
            v["epoch"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
