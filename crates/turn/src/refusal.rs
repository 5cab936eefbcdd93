//! [`Refusal`]: why a TURN request is answered with an error response.
//!
//! Handlers return `Result<_, Refusal>`; `TurnServer::refuse` is the one
//! place that turns a refusal into a STUN error response (or, for a
//! challenge beyond the source's rate, into silence).

use switchboard_stun::attr::default_reason;

/// Why a request was refused; each variant maps to one ERROR-CODE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A malformed or inconsistent request (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A request other than a Send indication over the size limit (400),
    /// refused before any HMAC is computed over it.
    #[error("request of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// Size of the request.
        len: usize,
        /// `ServerConfig::max_request_bytes`.
        max: usize,
    },
    /// No credentials yet, or wrong ones (401, with a challenge).
    #[error("unauthenticated")]
    Unauthenticated,
    /// A peer address the policy refuses (403).
    #[error("peer address forbidden")]
    ForbiddenPeer,
    /// Comprehension-required attributes the server does not know (420).
    #[error("unknown comprehension-required attributes {0:?}")]
    UnknownAttributes(Vec<u16>),
    /// An Allocate on a 5-tuple that has one, or a request on one that has
    /// none (437).
    #[error("allocation mismatch")]
    AllocationMismatch,
    /// A nonce that expired or is not ours (438, with a challenge).
    #[error("stale nonce")]
    StaleNonce,
    /// The host cannot relay over the requested address family (440).
    #[error("address family not supported")]
    AddressFamilyNotSupported,
    /// Another username or password algorithm than the allocation's (441).
    #[error("wrong credentials for this allocation")]
    WrongCredentials,
    /// REQUESTED-TRANSPORT other than UDP (442).
    #[error("unsupported transport protocol")]
    UnsupportedTransport,
    /// A peer or refresh of a family the allocation has no relay for (443).
    #[error("peer address family mismatch")]
    PeerAddressFamilyMismatch,
    /// `max_allocations` reached (486).
    #[error("server allocation quota reached")]
    ServerQuota,
    /// `max_allocations_per_user` reached for the credential's identity (486).
    #[error("per-user allocation quota reached")]
    UserQuota,
    /// `max_allocations_per_ip` reached for the client's source (486).
    #[error("per-source-IP allocation quota reached")]
    SourceQuota,
    /// The shell could not bind a relay socket (508).
    #[error("no relay port could be bound")]
    RelayUnavailable,
    /// An unknown, used or expired RESERVATION-TOKEN (508).
    #[error("reservation token unusable")]
    ReservationUnusable,
    /// The allocation holds as many permissions as it may (508).
    #[error("permission limit of the allocation reached")]
    PermissionLimit,
    /// The server is draining: it keeps its allocations and takes no new
    /// ones (508), so the client tries another server.
    #[error("the server is draining")]
    Draining,
}

impl Refusal {
    /// The STUN ERROR-CODE.
    pub fn code(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) | Refusal::TooLarge { .. } => 400,
            Refusal::Unauthenticated => 401,
            Refusal::ForbiddenPeer => 403,
            Refusal::UnknownAttributes(_) => 420,
            Refusal::AllocationMismatch => 437,
            Refusal::StaleNonce => 438,
            Refusal::AddressFamilyNotSupported => 440,
            Refusal::WrongCredentials => 441,
            Refusal::UnsupportedTransport => 442,
            Refusal::PeerAddressFamilyMismatch => 443,
            Refusal::ServerQuota | Refusal::UserQuota | Refusal::SourceQuota => 486,
            Refusal::RelayUnavailable
            | Refusal::ReservationUnusable
            | Refusal::PermissionLimit
            | Refusal::Draining => 508,
        }
    }

    /// The reason phrase sent on the wire (the RFCs' phrase for the code:
    /// the detail stays local, for logs).
    pub fn reason(&self) -> &'static str {
        default_reason(self.code())
    }

    /// Whether the answer carries REALM, a fresh NONCE and
    /// PASSWORD-ALGORITHMS (401 and 438): the answers that are larger than
    /// the request that caused them, and so rate-limited per source.
    pub fn is_challenge(&self) -> bool {
        matches!(self, Refusal::Unauthenticated | Refusal::StaleNonce)
    }

    /// Whether this is one of the allocation quotas (486).
    pub fn is_quota(&self) -> bool {
        self.code() == 486
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_reasons() {
        assert_eq!(Refusal::AllocationMismatch.code(), 437);
        assert_eq!(Refusal::AllocationMismatch.reason(), "Allocation Mismatch");
        assert_eq!(Refusal::SourceQuota.reason(), "Allocation Quota Reached");
        assert_eq!(Refusal::TooLarge { len: 9, max: 1 }.code(), 400);
        assert!(Refusal::StaleNonce.is_challenge());
        assert!(!Refusal::BadRequest("x").is_challenge());
        assert!(Refusal::UserQuota.is_quota());
    }
}
