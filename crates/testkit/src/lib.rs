//! Test fixtures shared by switchboard's integration tests: a real server
//! process on ports picked at run time, and a scripted WebSocket client.
#![warn(missing_docs)]

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStderr, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A switchboard process started for one test; killed on drop.
pub struct Server {
    child: Child,
    /// Held open and never read, for [`Server::start_with_stalled_stderr`].
    _stderr: Option<ChildStderr>,
    /// The `READY` line's JSON: bound addresses.
    pub ready: Value,
    /// `127.0.0.1:PORT` of the HTTP listener.
    pub http: String,
}

impl Server {
    /// Starts `bin` on 127.0.0.1 with free ports, with extra `env` and
    /// `args`, and waits for its `READY` line.
    pub async fn start(bin: &str, env: &[(&str, &str)], args: &[&str]) -> Server {
        Self::start_with(bin, "127.0.0.1:0", env, args, false).await
    }

    /// Like [`Server::start`], with HTTP on `http` (e.g. `127.0.0.2:0`: a
    /// client that reaches another loopback address than the default).
    pub async fn start_with_http(
        bin: &str,
        http: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        Self::start_with(bin, http, env, args, false).await
    }

    /// Like [`Server::start`], with stderr a pipe that nobody reads: once
    /// its buffer (64 KiB) is full, every blocking write to it hangs.
    pub async fn start_with_stalled_stderr(
        bin: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        Self::start_with(bin, "127.0.0.1:0", env, args, true).await
    }

    async fn start_with(
        bin: &str,
        http: &str,
        env: &[(&str, &str)],
        args: &[&str],
        stall_stderr: bool,
    ) -> Server {
        let mut cmd = Command::new(bin);
        cmd.args(["--http-listen", http, "--turn-listen", "127.0.0.1:0"])
            .args(args)
            .env("SWITCHBOARD_LOG__LEVEL", "warn")
            // The admin API and the SFU's media socket on ports of their own,
            // never the fixed defaults.
            .env("SWITCHBOARD_ADMIN__LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_MEDIA__LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if stall_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning switchboard");
        let stderr = child.stderr.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("reading stdout") {
                if let Some(json) = line.strip_prefix("READY ") {
                    return serde_json::from_str::<Value>(json).expect("READY json");
                }
            }
            panic!("switchboard exited before READY");
        })
        .await
        .expect("switchboard did not become ready in 30 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = ready["http"].as_str().expect("http address").to_string();
        Server {
            child,
            _stderr: stderr,
            ready,
            http,
        }
    }

    /// `ws://127.0.0.1:PORT/ws` plus `query`.
    pub fn ws_url(&self, query: &str) -> String {
        if query.is_empty() {
            format!("ws://{}/ws", self.http)
        } else {
            format!("ws://{}/ws?{}", self.http, query)
        }
    }

    /// The process id (for signals and /proc).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// A scripted signaling client over a real WebSocket.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    /// The `welcome` (or `resumed`) frame this connection started with.
    pub hello: Value,
    /// The highest `seq` seen so far.
    pub last_seq: u64,
}

impl Client {
    /// Connects and reads the first frame (`welcome`, or `resumed` /
    /// `error` on a resume URL).
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("websocket connect");
        let mut c = Client {
            ws,
            pending: VecDeque::new(),
            hello: Value::Null,
            last_seq: 0,
        };
        c.hello = c.recv().await;
        c
    }

    /// The session id from `welcome`.
    pub fn session(&self) -> String {
        self.hello["session"].as_str().expect("session").to_string()
    }

    /// The peer id from `welcome`/`resumed`.
    pub fn peer(&self) -> String {
        self.hello["peer"].as_str().expect("peer").to_string()
    }

    /// The resume token from `welcome`.
    pub fn resume_token(&self) -> String {
        self.hello["resume_token"]
            .as_str()
            .expect("resume_token")
            .to_string()
    }

    /// Sends one JSON value as a text frame.
    pub async fn send(&mut self, v: Value) {
        self.send_raw(Message::text(v.to_string())).await;
    }

    /// Sends any WebSocket message.
    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    async fn read_frame(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg.expect("websocket read") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sent JSON");
                    if let Some(seq) = v["seq"].as_u64() {
                        assert_eq!(seq, self.last_seq + 1, "seq must grow by exactly 1: {v}");
                        self.last_seq = seq;
                    }
                    return Some(v);
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The next frame; fails the test after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        self.read_frame(WAIT)
            .await
            .expect("expected a frame, got none")
    }

    /// The next frame if one comes within `limit` (`None`: none did, or
    /// the connection closed). Cancel-safe: a frame half read stays in the
    /// WebSocket's buffer.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Value> {
        if let Some(v) = self.pending.pop_front() {
            return Some(v);
        }
        self.read_frame(limit).await
    }

    /// The next frame of `type`, keeping others for later `recv`s.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        if let Some(i) = self.pending.iter().position(|v| v["type"] == ty) {
            return self.pending.remove(i).expect("index is valid");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.read_frame(left).await.unwrap_or_else(|| {
                panic!("no {ty} frame within {WAIT:?}; kept: {:?}", self.pending)
            });
            if v["type"] == ty {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    /// Asserts that nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        assert!(
            self.pending.is_empty(),
            "unexpected frames: {:?}",
            self.pending
        );
        if let Some(v) = self.read_frame(d).await {
            panic!("expected silence, got {v}");
        }
    }

    /// Sends a request and returns the reply carrying `reply_to == id`.
    pub async fn request(&mut self, mut v: Value, id: u64) -> Value {
        v["id"] = id.into();
        self.send(v).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let reply = self.read_frame(left).await.expect("no reply");
            if reply["reply_to"] == id {
                return reply;
            }
            self.pending.push_back(reply);
        }
    }

    /// Joins `room` and returns `joined`.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(serde_json::json!({"type": "join", "room": room}))
            .await;
        self.recv_type("joined").await
    }

    /// A polite close with `code`.
    pub async fn close(mut self, code: u16) {
        let frame = CloseFrame {
            code: code.into(),
            reason: "".into(),
        };
        let _ = self.ws.close(Some(frame)).await;
        // Drain until the server's close answer, bounded.
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Drops the TCP connection with no close frame.
    pub fn cut(self) {
        drop(self);
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed_code(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("the server did not close the connection within {WAIT:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// A plain HTTP/1.1 GET over a real socket: `(status, body)`.
pub async fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = http_get_full(addr, path, headers).await;
    (status, body)
}

/// A plain HTTP/1.1 GET over a real socket: `(status, head, body)`, the
/// head being the status line and headers as sent.
pub async fn http_get_full(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("read timed out")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (format!("{h}\r\n"), b.to_string()))
        .unwrap_or_default();
    (status, head, body)
}

/// A `redis-server` started for one test on a free port of 127.0.0.1, with
/// no persistence; killed on drop.
pub struct Redis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts Debian's `redis-server` and waits until it answers `PING`.
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = Redis { child: None, port };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "redis-server did not answer PING on {} in {WAIT:?}",
            self.port
        );
    }

    /// Whether it answers `PING` now.
    pub async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_millis(500),
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        matches!(
            tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await,
            Ok(Ok(_)) if &buf == b"+PONG\r\n"
        )
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it (`SIGKILL`): everything it held is gone.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts it again, empty, on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}
