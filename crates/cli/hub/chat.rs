//! `duplex chat URL --room R --name N`: the hub's chat from a terminal.
//!
//! Lines typed are sent as messages (`{"text": ...}` in channel
//! `chat:ROOM`, the same as the browser page); `/who`, `/older`, `/help`
//! and `/quit` are commands. History is shown on joining; after a dropped
//! connection the missed messages are recovered, in order, once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use duplex_hub::{Command, Members, Page, Publication, Published, Push};
use duplex_hub_client::{Event, Link};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use super::ServerArgs;

/// Options of `duplex chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The room to join
    #[arg(long, default_value = "lobby")]
    pub room: String,
    /// Your nickname in the room
    #[arg(long, env = "USER")]
    pub name: String,
    /// Messages of history shown on joining
    #[arg(long, default_value_t = 20)]
    pub history: usize,
}

const HELP: &str =
    "commands: /who (who is here), /older (earlier messages), /quit; anything else is sent";

/// Chats until `/quit`, end of input, or Ctrl-C.
pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(chat(args))
}

struct Room {
    channel: String,
    shown: BTreeSet<u64>,
    typing_shown: HashMap<String, Instant>,
    pending: HashSet<u64>,
    /// Offsets of our own messages, acknowledged but not yet shown.
    unseen_own: HashSet<u64>,
    /// Request id → what it was for.
    purposes: HashMap<u64, &'static str>,
}

async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let channel = format!("chat:{}", args.room);
    let url = args.server.ws_url()?;
    let mut link = Link::open(
        url,
        args.server.client()?,
        Some(args.name.clone()),
        vec![(channel.clone(), None)],
    )
    .await?;
    println!("* joined {} as {} ({HELP})", args.room, args.name);
    let mut room = Room {
        channel: channel.clone(),
        shown: BTreeSet::new(),
        typing_shown: HashMap::new(),
        pending: HashSet::new(),
        unseen_own: HashSet::new(),
        purposes: HashMap::new(),
    };
    let id = link
        .send(Command::History {
            channel: channel.clone(),
            limit: Some(args.history),
            before: None,
            after: None,
        })
        .await?;
    room.expect(id, "history");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    loop {
        // At the end of input, stay until every message sent is acknowledged
        // and shown, so a script's last line is not lost.
        if !input_open && room.pending.is_empty() && room.unseen_own.is_empty() {
            break;
        }
        tokio::select! {
            event = link.next() => room.show(event, &args.name),
            line = lines.next_line(), if input_open => match line {
                Ok(Some(line)) => {
                    if !room.command(&mut link, line.trim()).await {
                        break;
                    }
                }
                _ => input_open = false,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    link.close().await;
    Ok(())
}

impl Room {
    fn expect(&mut self, id: u64, purpose: &'static str) {
        self.pending.insert(id);
        self.purposes.insert(id, purpose);
    }

    /// Handles one input line; false means quit.
    async fn command(&mut self, link: &mut Link, line: &str) -> bool {
        let (cmd, purpose) = match line {
            "" => return true,
            "/quit" | "/exit" => return false,
            "/help" => {
                println!("* {HELP}");
                return true;
            }
            "/who" => (
                Command::Presence {
                    channel: self.channel.clone(),
                },
                "who",
            ),
            "/older" => {
                let before = self.shown.first().copied().unwrap_or(u64::MAX >> 1);
                let older = Command::History {
                    channel: self.channel.clone(),
                    limit: Some(20),
                    before: Some(before),
                    after: None,
                };
                (older, "history")
            }
            text if text.starts_with('/') && !text.starts_with("//") => {
                println!("* unknown command {text}; {HELP}");
                return true;
            }
            text => {
                let text = text
                    .strip_prefix('/')
                    .filter(|_| text.starts_with("//"))
                    .unwrap_or(text);
                let publish = Command::Publish {
                    channel: self.channel.clone(),
                    data: json!({ "text": text }),
                };
                (publish, "publish")
            }
        };
        match link.send(cmd).await {
            Ok(id) => self.expect(id, purpose),
            Err(e) => println!("! not sent: {e:#}"),
        }
        true
    }

    fn show(&mut self, event: Event, me: &str) {
        match event {
            Event::Publication(p) => self.message(&p),
            Event::Push(Push::Join(m)) => println!("* {} joined", m.member.name),
            Event::Push(Push::Leave(m)) => println!("* {} left", m.member.name),
            Event::Push(Push::Typing(m)) if *m.member.name != *me => {
                let name = m.member.name.to_string();
                let now = Instant::now();
                if self
                    .typing_shown
                    .get(&name)
                    .is_none_or(|t| now.duration_since(*t) > Duration::from_secs(5))
                {
                    println!("* {name} is typing…");
                    self.typing_shown.insert(name, now);
                }
            }
            Event::Push(Push::Kicked(k)) => {
                println!("! you were removed from the room: {}", k.reason)
            }
            Event::Push(_) => {}
            Event::Reply { id, result } => {
                self.pending.remove(&id);
                let purpose = self.purposes.remove(&id).unwrap_or("");
                match result {
                    Ok(result) => self.answer(purpose, result.get()),
                    Err(e) => println!("! {}: {}", e.code.name(), e.message),
                }
            }
            Event::Gap(_) => println!(
                "* some messages may be missing (the history did not reach back far enough)"
            ),
            Event::Disconnected(why, delay) => println!(
                "* disconnected ({why}); reconnecting in {:.1}s",
                delay.as_secs_f64()
            ),
            Event::Reconnected => println!("* reconnected"),
        }
    }

    /// Shows what a command of `purpose` returned.
    fn answer(&mut self, purpose: &str, result: &str) {
        match purpose {
            "history" => {
                let Ok(page) = serde_json::from_str::<Page>(result) else {
                    return;
                };
                if page.publications.is_empty() {
                    println!("* no earlier messages");
                }
                for p in &page.publications {
                    self.message(p);
                }
            }
            "publish" => {
                if let Ok(published) = serde_json::from_str::<Published>(result) {
                    if !self.shown.contains(&published.offset) {
                        self.unseen_own.insert(published.offset);
                    }
                }
            }
            "who" => {
                if let Ok(members) = serde_json::from_str::<Members>(result) {
                    let names: Vec<&str> = members.members.iter().map(|m| &*m.name).collect();
                    println!("* here: {}", names.join(", "));
                }
            }
            _ => {}
        }
    }

    fn message(&mut self, p: &Publication<'_>) {
        let offset = p.offset;
        if !self.shown.insert(offset) {
            return; // already shown (history and live overlap)
        }
        self.unseen_own.remove(&offset);
        let time = chrono::DateTime::parse_from_rfc3339(&p.ts)
            .ok()
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        let name = &p.from.name;
        let data: Value = serde_json::from_str(p.data.get()).unwrap_or_default();
        let text = match &data {
            Value::String(s) => s.clone(),
            Value::Object(o) if o.get("text").is_some_and(Value::is_string) => {
                o["text"].as_str().unwrap_or("").to_owned()
            }
            other => other.to_string(),
        };
        println!("[{time}] #{offset} {name}: {text}");
    }
}
