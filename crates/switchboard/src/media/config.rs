//! `[media]`: the SFU's media socket (PROTOCOL.md §7; docs/configuration.md).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::RoomMedia;

/// The address `media.listen` has by default.
pub const DEFAULT_MEDIA_LISTEN: &str = "0.0.0.0:3480";

/// `[media]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// The SFU's one UDP socket for every peer; `""` turns the SFU off.
    pub listen: String,
    /// The IP put in the server's ICE candidates; unset = the address each
    /// client's signaling connection reached.
    pub public_ip: Option<std::net::IpAddr>,
    /// A peer whose ICE and DTLS have not completed this long after it
    /// joined gets an `error` and its media ends.
    pub connect_timeout_secs: u64,
    /// A server offer left unanswered this long ends the peer's media the
    /// same way.
    pub answer_timeout_secs: u64,
    /// Bytes per second (in kbit/s) one peer may send to the media port;
    /// the excess is dropped. 0: no limit.
    pub peer_max_kbps: u64,
    /// Datagrams per second one peer may send to the media port. 0: no limit.
    pub peer_max_datagrams_per_sec: u64,
    /// A peer sending at least twice its budget for this long gets an
    /// `error` and its media ends. 0: only limited.
    pub peer_flood_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_MEDIA_LISTEN.to_owned(),
            public_ip: None,
            connect_timeout_secs: 30,
            answer_timeout_secs: 30,
            peer_max_kbps: 20_000,
            peer_max_datagrams_per_sec: 5_000,
            peer_flood_secs: 5,
        }
    }
}

/// A `[media]` that must not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaConfigError {
    /// `media.listen` is not an address.
    #[error("media.listen {0:?} is not an address like 0.0.0.0:3480 (or \"\" for no SFU)")]
    Listen(String),
    /// SFU rooms by default, and nowhere for their media to go.
    #[error("rooms.media = \"sfu\" needs the SFU: set media.listen (it is \"\", media off)")]
    SfuWithoutMedia,
    /// An address nobody could send to.
    #[error("media.public_ip {0} is not an address clients can reach (unspecified or multicast)")]
    PublicIp(std::net::IpAddr),
}

impl MediaConfig {
    /// The address to bind, `None` when the SFU is off.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, MediaConfigError> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        listen
            .parse()
            .map(Some)
            .map_err(|_| MediaConfigError::Listen(self.listen.clone()))
    }

    /// Whether `listen` is the default, which may be taken (two nodes on
    /// one host) without stopping the start.
    pub fn is_default_listen(&self) -> bool {
        self.listen.trim() == DEFAULT_MEDIA_LISTEN
    }

    /// Refuses what must not start: a bad address, SFU rooms by default
    /// with the SFU off, a public IP nobody can reach.
    pub fn validate(&self, rooms_media: RoomMedia) -> Result<(), MediaConfigError> {
        let listen = self.listen_addr()?;
        if listen.is_none() && rooms_media == RoomMedia::Sfu {
            return Err(MediaConfigError::SfuWithoutMedia);
        }
        if let Some(ip) = self.public_ip
            && (ip.is_unspecified() || ip.is_multicast())
        {
            return Err(MediaConfigError::PublicIp(ip));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Config};

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
    fn media_is_on_by_default_and_sfu_rooms_need_it() {
        figment::Jail::expect_with(|jail| {
            let cfg = Config::load(&Cli::default()).expect("defaults load");
            assert_eq!(
                cfg.media.listen_addr().expect("parses"),
                Some("0.0.0.0:3480".parse().expect("addr"))
            );
            assert!(cfg.media.is_default_listen());
            assert_eq!(cfg.rooms.media, RoomMedia::Mesh);
            jail.set_env("SWITCHBOARD_MEDIA__LISTEN", "127.0.0.1:0");
            jail.set_env("SWITCHBOARD_ROOMS__MEDIA", "sfu");
            let cfg = Config::load(&Cli::default()).expect("loads");
            assert_eq!(cfg.rooms.media, RoomMedia::Sfu);
            assert!(!cfg.media.is_default_listen());
            let off = Cli {
                media_listen: Some(String::new()),
                ..Cli::default()
            };
            let err = Config::load(&off).expect_err("sfu rooms without media");
            assert!(format!("{err:#}").contains("rooms.media"), "{err:#}");
            jail.set_env("SWITCHBOARD_ROOMS__MEDIA", "mesh");
            let cfg = Config::load(&off).expect("mesh rooms without media");
            assert_eq!(cfg.media.listen_addr().expect("parses"), None);
            jail.set_env("SWITCHBOARD_MEDIA__LISTEN", "port 3480");
            assert!(Config::load(&Cli::default()).is_err());
            jail.set_env("SWITCHBOARD_MEDIA__LISTEN", "127.0.0.1:0");
            jail.set_env("SWITCHBOARD_MEDIA__PUBLIC_IP", "0.0.0.0");
            assert!(Config::load(&Cli::default()).is_err());
            jail.set_env("SWITCHBOARD_MEDIA__PUBLIC_IP", "203.0.113.7");
            let cfg = Config::load(&Cli::default()).expect("loads");
            assert_eq!(
                cfg.media.public_ip,
                Some("203.0.113.7".parse().expect("ip"))
            );
            jail.set_env("SWITCHBOARD_ROOMS__MEDIA", "sfu");
            jail.set_env("SWITCHBOARD_CLUSTER__REDIS_URL", "redis://127.0.0.1:6379/0");
            // SFU rooms span a cluster (docs/scaling.md): each room's media
            // node is the store's choice.
            let cfg = Config::load(&Cli::default()).expect("sfu rooms in a cluster");
            assert_eq!(cfg.rooms.media, RoomMedia::Sfu);
            jail.set_env("SWITCHBOARD_ROOMS__MEDIA", "star");
            assert!(Config::load(&Cli::default()).is_err(), "an unknown kind");
            Ok(())
        });
    }
}
