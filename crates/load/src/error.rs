//! The load tool's own errors.

use std::io;

use tokio_tungstenite::tungstenite;

/// Everything that can stop a load run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The target URL is not a `ws://` URL we can connect to.
    #[error("invalid url {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The flags do not describe a run that can be made.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The TCP connection could not be opened.
    #[error("peer {peer}: tcp connect to {addr}: {source}")]
    Tcp {
        /// Index of the peer.
        peer: usize,
        /// Server address.
        addr: std::net::SocketAddr,
        /// Underlying error.
        source: io::Error,
    },
    /// The WebSocket upgrade or a later frame failed.
    #[error("peer {peer}: websocket: {source}")]
    Ws {
        /// Index of the peer.
        peer: usize,
        /// Underlying error.
        source: Box<tungstenite::Error>,
    },
    /// The server answered the handshake or the join with something else.
    #[error("peer {peer}: handshake: {reason}")]
    Handshake {
        /// Index of the peer.
        peer: usize,
        /// What the server did.
        reason: String,
    },
    /// Not every peer could connect and join.
    #[error("{ready} of {peers} peers joined; first error: {first_error}")]
    NotAllJoined {
        /// Peers that joined.
        ready: usize,
        /// Peers asked for.
        peers: usize,
        /// The first failure, as text.
        first_error: String,
    },
    /// The server closed a connection before the run ended.
    #[error("peer {peer}: connection closed by the server")]
    Closed {
        /// Index of the peer.
        peer: usize,
    },
    /// A phase did not finish within its time bound.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// `/proc/PID/...` could not be read.
    #[error("reading /proc for pid {pid}: {source}")]
    Proc {
        /// Process id.
        pid: u32,
        /// Underlying error.
        source: io::Error,
    },
    /// `/proc/PID/...` had an unexpected shape.
    #[error("unexpected format of /proc/{pid}/{file}")]
    ProcFormat {
        /// Process id.
        pid: u32,
        /// File under `/proc/PID`.
        file: &'static str,
    },
    /// A media client (the SFU benchmark) could not set up or keep its call.
    #[error("media: {0}")]
    Media(String),
}
