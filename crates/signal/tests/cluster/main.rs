//! The clustered core on a simulated bus (PROTOCOL.md §6): three nodes and
//! the in-memory store, with delays, reordering between nodes, partitions
//! and deaths, on a virtual clock.

mod admin;
mod calls;
mod faults;
mod media;
mod props;
mod rooms;
mod routes;
mod sim;
