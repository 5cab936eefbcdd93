//! The signaling core driven through its public API on a virtual clock, as
//! the shell drives it, checked frame by frame against PROTOCOL.md.
#![allow(clippy::unwrap_used, missing_docs)]

mod admin;
mod calls;
mod caps;
mod classic;
mod harness;
mod media;
mod observe;
mod promise;
mod props;
mod rooms;
mod sessions;
