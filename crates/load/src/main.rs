//! Command line of the signaling load generator. The human summary goes to
//! stderr, one JSON line to stdout.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchboard_load::{
    IdleConfig, MediaConfig, MediaTarget, Protocol, Target, TrafficConfig, run_idle, run_media,
    run_traffic,
};

#[derive(Debug, Parser)]
#[command(name = "switchboard-load", version, about = "Signaling load generator")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Peers in rooms send messages; measure rate, latency, server CPU per message.
    Traffic(TrafficArgs),
    /// Hold many idle connections; measure server RSS per connection.
    Idle(IdleArgs),
    /// SFU rooms: str0m clients publish and receive video (or plain UDP
    /// through bench/fanout-floor); measure server CPU per forwarded packet.
    Media(MediaArgs),
}

#[derive(Debug, Args)]
struct MediaArgs {
    /// ws://HOST:PORT of a switchboard server.
    #[arg(long, conflicts_with = "floor")]
    url: Option<String>,
    /// UDP address of bench/fanout-floor instead of a server.
    #[arg(long)]
    floor: Option<std::net::SocketAddr>,
    /// Server (or floor) process id, for CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishing peers per room (each also receives the other publishers).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Receive-only peers per room.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Video bitrate of each publisher, bits/s.
    #[arg(long, default_value_t = 1_000_000)]
    bitrate: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// A key frame every this many frames (and whenever the server asks).
    #[arg(long, default_value_t = 300)]
    key_every: u64,
    /// Seconds of sending after everyone receives, before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Upper bound for everyone to connect and receive, seconds.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// Server dialect.
    #[arg(long, value_enum, default_value = "native")]
    protocol: Protocol,
    /// ws://HOST:PORT[/path]; without a path: /ws, /socket.io/?EIO=4&transport=websocket or /.
    #[arg(long)]
    url: String,
    /// Server process id, for CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Spread connections over 127.0.0.1..=127.0.0.N (loopback servers only).
    #[arg(long, default_value_t = 16)]
    source_ips: u8,
    /// Connections opened at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Upper bound for the whole run, seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Room name prefix (default: unique per process).
    #[arg(long)]
    room_prefix: Option<String>,
}

#[derive(Debug, Args)]
struct TrafficArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Number of rooms.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Peers per room.
    #[arg(long, default_value_t = 2)]
    peers_per_room: usize,
    /// Sending peers per room.
    #[arg(long, default_value_t = 1)]
    senders_per_room: usize,
    /// Length of each message's data, bytes.
    #[arg(long, default_value_t = 300)]
    size: usize,
    /// Undelivered messages each sender may have in flight.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Seconds of sending (an upper bound when --count is given).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages per sender.
    #[arg(long)]
    count: Option<u64>,
    /// Total messages/s offered by all senders, evenly paced (default: as fast as the window allows).
    #[arg(long)]
    rate: Option<f64>,
    /// Give messages an id (native) or an ack callback (socketio) and count the acks.
    #[arg(long)]
    with_id: bool,
    /// Seconds to wait for messages still on the way after sending stops.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// A second server (another node of the cluster): each room's peers at
    /// odd places connect there.
    #[arg(long)]
    url2: Option<String>,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections to hold.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Join rooms of this many peers (0: connect only).
    #[arg(long, default_value_t = 2)]
    peers_per_room: usize,
    /// Comma-separated connection counts at which to read RSS on the way.
    #[arg(long, value_delimiter = ',')]
    checkpoints: Vec<usize>,
    /// Seconds to let the server settle before each RSS reading.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Seconds to hold all connections.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
}

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{flag} must be a non-negative number of seconds"))
}

impl TargetArgs {
    fn target(&self) -> Result<Target, String> {
        Ok(Target {
            protocol: self.protocol,
            url: self.url.clone(),
            server_pid: self.server_pid,
            source_ips: self.source_ips,
            connect_concurrency: self.connect_concurrency,
            timeout: seconds(self.timeout, "--timeout")?,
        })
    }

    fn room_prefix(&self) -> String {
        self.room_prefix
            .clone()
            .unwrap_or_else(|| format!("load-{}-", std::process::id()))
    }
}

async fn run(cli: Cli) -> Result<(String, String), String> {
    match cli.mode {
        Mode::Traffic(args) => {
            let cfg = TrafficConfig {
                target: args.target.target()?,
                rooms: args.rooms,
                peers_per_room: args.peers_per_room,
                senders_per_room: args.senders_per_room,
                data_size: args.size,
                window: args.window,
                duration: seconds(args.duration, "--duration")?,
                count: args.count,
                rate: args.rate,
                with_id: args.with_id,
                room_prefix: args.target.room_prefix(),
                drain_timeout: seconds(args.drain, "--drain")?,
                url2: args.url2,
            };
            let report = run_traffic(&cfg).await.map_err(|e| e.to_string())?;
            let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
            Ok((report.summary(), json))
        }
        Mode::Idle(args) => {
            let cfg = IdleConfig {
                target: args.target.target()?,
                connections: args.connections,
                peers_per_room: args.peers_per_room,
                checkpoints: args.checkpoints,
                settle: seconds(args.settle, "--settle")?,
                hold: seconds(args.hold, "--hold")?,
                room_prefix: args.target.room_prefix(),
            };
            let report = run_idle(&cfg).await.map_err(|e| e.to_string())?;
            let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
            Ok((report.summary(), json))
        }
        Mode::Media(args) => {
            let target = match (args.url, args.floor) {
                (Some(url), None) => MediaTarget::Switchboard { url },
                (None, Some(addr)) => MediaTarget::Floor { addr },
                _ => return Err("give --url or --floor".into()),
            };
            let cfg = MediaConfig {
                target,
                server_pid: args.server_pid,
                rooms: args.rooms,
                publishers_per_room: args.publishers,
                subscribers_per_room: args.subscribers,
                bitrate: args.bitrate,
                fps: args.fps,
                key_every: args.key_every,
                warmup: seconds(args.warmup, "--warmup")?,
                duration: seconds(args.duration, "--duration")?,
                connect_timeout: seconds(args.connect_timeout, "--connect-timeout")?,
            };
            let report = run_media(&cfg).await.map_err(|e| e.to_string())?;
            let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
            Ok((report.summary(), json))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One runtime thread per core: the load tool must not starve the server
    // it measures on a small machine any more than it has to.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("switchboard-load: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok((summary, json)) => {
            eprint!("{summary}");
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("switchboard-load: {err}");
            ExitCode::FAILURE
        }
    }
}
