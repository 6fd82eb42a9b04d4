//! `duplex connect` on a terminal: run in a pseudo-terminal against
//! `duplex serve`, typing as a person would. Proves the prompt sends a
//! typed line and shows the echo with a timestamp and a direction marker,
//! `/ping` shows the pong, `/binary` sends bytes, a mistake is explained,
//! `/close 4000 bye` closes with that code, and the history is kept.

mod common;

use common::*;
use expectrl::{Eof, Expect, Regex, Session};

#[tokio::test(flavor = "multi_thread")]
async fn typing_at_the_prompt() {
    let serve = Serve::start().await;
    let url = serve.echo_url();
    let history = scratch_dir("interactive").join("history");
    let history_file = history.clone();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("duplex"));
        cmd.args(["connect", &url])
            .env("DUPLEX_HISTORY", &history)
            .env("NO_COLOR", "1")
            .env("TERM", "xterm");
        for var in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
            cmd.env_remove(var);
        }
        let mut p = Session::spawn(cmd).expect("spawn in a pty");
        p.set_expect_timeout(Some(LIMIT));

        p.expect("connected to").expect("the open notice");
        p.expect("> ").expect("the prompt");

        p.send("hello there\r").unwrap();
        p.expect(Regex(r"\d\d:\d\d:\d\d\.\d{3} < hello there"))
            .expect("the echo, timestamped and marked as received");

        p.send("/ping are you there\r").unwrap();
        p.expect(Regex(r#"< pong "are you there" \(\d+\.\d ms\)"#))
            .expect("the pong with its round trip time");

        p.send("/binary 68 69\r").unwrap();
        p.expect("< [binary, 2 bytes] 6869")
            .expect("the binary echo");

        p.send("/nonsense\r").unwrap();
        p.expect("unknown command /nonsense")
            .expect("an explanation");

        p.send("/close 4000 bye\r").unwrap();
        p.expect("closed by the client: 4000 bye")
            .expect("the close");
        p.expect(Eof).expect("the program ends");
        let status = p.get_process().wait().expect("wait");
        assert!(
            format!("{status:?}").ends_with(", 0)"),
            "exit status {status:?}"
        );
    })
    .await
    .expect("the terminal session");

    let kept = std::fs::read_to_string(&history_file).expect("a history file");
    assert!(kept.contains("hello there"), "{kept}");
}
