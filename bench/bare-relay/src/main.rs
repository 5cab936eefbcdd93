//! bare-relay: the least a WebSocket signaling relay can do, as a floor for
//! the benchmarks. `{"type":"join","room":R}` is answered `{"type":"joined"}`;
//! `{"type":"message","room":R,..}` is forwarded verbatim to the other members
//! of R. No acks, no sequence numbers, no limits, no resume.
//!
//! Usage: `bare-relay [ADDR]` (default `127.0.0.1:0`); prints `READY <addr>`
//! once listening.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Frames queued for one connection; a reader that falls this far behind is
/// disconnected rather than slowing the room down.
const QUEUE: usize = 1024;
/// Frames written before one flush.
const BATCH: usize = 64;

type Members = Vec<(u64, mpsc::Sender<Message>)>;

#[derive(Default)]
struct Rooms {
    by_name: Mutex<HashMap<String, Members>>,
}

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Members>> {
        // A panic elsewhere cannot leave the map half-updated in a way that
        // matters to a benchmark floor, so keep serving.
        self.by_name
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn join(&self, room: &str, conn: u64, tx: &mpsc::Sender<Message>) {
        self.lock()
            .entry(room.to_owned())
            .or_default()
            .push((conn, tx.clone()));
    }

    /// Forwards to every other member. A member whose queue is full loses
    /// the frame; the load tool reports such losses, enough for a floor.
    fn forward(&self, room: &str, from: u64, frame: &Message) {
        if let Some(members) = self.lock().get(room) {
            for (_, tx) in members.iter().filter(|(conn, _)| *conn != from) {
                let _ = tx.try_send(frame.clone());
            }
        }
    }

    fn leave_all(&self, rooms: &[String], conn: u64) {
        let mut map = self.lock();
        for room in rooms {
            if let Some(members) = map.get_mut(room) {
                members.retain(|(member, _)| *member != conn);
                if members.is_empty() {
                    map.remove(room);
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(4096)
        .max_message_size(Some(64 << 10))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    let local: SocketAddr = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "READY {local}")?;
        stdout.flush()?;
    }
    let rooms = Arc::new(Rooms::default());
    let mut next_conn = 0u64;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and similar: keep the relay up.
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        next_conn += 1;
        tokio::spawn(serve(stream, next_conn, Arc::clone(&rooms)));
    }
}

async fn serve(stream: TcpStream, conn: u64, rooms: Arc<Rooms>) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await
    else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            for _ in 1..BATCH {
                let Ok(next) = rx.try_recv() else { break };
                if sink.feed(next).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut joined: Vec<String> = Vec::new();
    while let Some(Ok(frame)) = source.next().await {
        let Message::Text(text) = &frame else {
            if matches!(frame, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(text.as_str()) else {
            continue;
        };
        let Some(room) = envelope.room else { continue };
        match envelope.kind.as_ref() {
            "join" => {
                if !joined.iter().any(|r| r == room.as_ref()) {
                    rooms.join(&room, conn, &tx);
                    joined.push(room.into_owned());
                }
                if tx.try_send(Message::text(r#"{"type":"joined"}"#)).is_err() {
                    break;
                }
            }
            "message" if joined.iter().any(|r| r == room.as_ref()) => {
                rooms.forward(&room, conn, &frame);
            }
            _ => {}
        }
    }
    rooms.leave_all(&joined, conn);
    drop(tx);
    let _ = writer.await;
}
